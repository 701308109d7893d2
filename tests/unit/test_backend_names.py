"""Nothing outside ``overlayd/backend/`` names VXLAN, in identifiers or string constants.

A second backend must be a new folder under ``backend/``, not an ``if`` in every layer, and the
surest sign that the other layers are free of VXLAN is that they do not spell it. Comments and
docstrings may (they explain the one backend we have); code may not, except where the word is
what an operator sees: a flag, a metric, a status line, a config's ``"Type": "vxlan"``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "overlayd"
WORD = re.compile("vxlan", re.IGNORECASE)

# (file relative to overlayd/, the identifier or string) -> why it stays.
USER_VISIBLE: dict[tuple[str, str], str] = {
    ("options.py", "vxlan_ingress_allowlist"): "flanneld's flag --vxlan-ingress-allowlist",
    ("option_specs.py", "vxlan_ingress_allowlist"): "flanneld's flag --vxlan-ingress-allowlist",
    ("option_specs.py", "IPv4 address peers send VXLAN traffic to"): "--help text (docs/configuration.md)",
    ("option_specs.py", "drop VXLAN packets from addresses that hold no peer lease"): "--help text",
    ("ops/status.py", "overlayd_vxlan_ingress_dropped_sources"): "the metric's name",
    ("ops/status.py", "vxlan_dropped_sources"): "the metric's figure in `overlayd status --json`",
    ("ops/status.py", "VXLAN DROPPED from "): "`overlayd status` output",
    ("netfilter/dropnotice.py", "VXLAN ingress allowlist dropped UDP port "): "the log line operators grep",
    (
        "netfilter/dropnotice.py",
        ": no peer lease has that PublicIP. If one is a node of this network whose VXLAN leaves from "
        "another address than the PublicIP in its lease (flanneld's --public-ip set to a second address, "
        "or a NAT), its pods cannot reach this host's: give that node --public-ip of the address it sends "
        "from, or run this agent with --vxlan-ingress-allowlist=false",
    ): "the same log line, naming the flag",
    ("lab/hosts.py", "vxlan"): "the lab's default backend (`overlayd lab up --backend`)",
    ("bench/peers.py", "vxlan"): "the bench's config",
    ("bench/udpforward.py", "vxlan"): "the backend the udp bench compares with",
    (
        "bench/kernel.py",
        " type vxlan id 4242 dev eth0 local 192.0.2.11 dstport 4799 nolearning",
    ): "benchmarks the kernel's own device with ip(8), as a baseline",
    ("agent/reconciler.py", "vxlan_ingress_allowlist"): "flanneld's flag --vxlan-ingress-allowlist",
    ("agent/daemon.py", "stopped; the VXLAN device, routes, rules and lease are left in place"): (
        "the log line operators grep at shutdown"
    ),
    ("agent/drops.py", "could not read the VXLAN sources the allowlist dropped"): "a log line operators grep",
    ("agent/drops.py", "vxlan_dropped_sources"): "the dropped-sources metric's attribute",
    ("agent/metrics.py", "vxlan_dropped_sources"): "the dropped-sources metric's attribute",
    ("agent/metrics.py", "overlayd_vxlan_ingress_dropped_sources"): "the metric's name",
    ("agent/metrics.py", "VXLAN peer leases known from etcd"): "the metric's help text (/metrics)",
    (
        "agent/metrics.py",
        "Sources that hold no peer lease (nor did just before) whose VXLAN the allowlist dropped lately",
    ): "the metric's help text (/metrics)",
}


def _docstrings(tree: ast.AST) -> set[int]:
    """The string constants that stand alone as statements: docstrings (and the like)."""
    return {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
    }


def spellings(source: str) -> list[tuple[int, str]]:
    """Every identifier and string constant (not docstrings) in ``source`` that names VXLAN."""
    tree = ast.parse(source)
    skip = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Name):
            names = [node.id]
        elif isinstance(node, ast.Attribute):
            names = [node.attr]
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names = [node.name]
        elif isinstance(node, ast.arg) or (isinstance(node, ast.keyword) and node.arg):
            names = [node.arg]
        elif isinstance(node, ast.alias):
            names = [node.name, node.asname or ""]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            names = [node.value]
        found += [(getattr(node, "lineno", 0), name) for name in names if WORD.search(name)]
    return found


def test_nothing_outside_backend_names_vxlan() -> None:
    allowed = USER_VISIBLE.keys()
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative.startswith("backend/"):
            continue
        for line, name in spellings(path.read_text()):
            if (relative, name) not in allowed:
                problems.append(f"overlayd/{relative}:{line} names {name!r}; ask the backend seam instead")
    assert not problems, "\n".join(problems)


def test_every_allowance_is_still_needed() -> None:
    """An allowance whose spelling is gone is removed, so the lists only shrink."""
    stale = [
        f"{file}: {name!r}"
        for file, name in USER_VISIBLE
        if name not in {found for _, found in spellings((PACKAGE / file).read_text())}
    ]
    assert not stale, "\n".join(stale)


def test_identifiers_and_strings_are_found_but_not_comments_or_docstrings() -> None:
    source = (
        '"""About VXLAN."""\n'
        "# vxlan in a comment\n"
        "def f(vxlan_port: int) -> str:\n"
        '    """A VXLAN docstring."""\n'
        "    return Spec(port=1).vxlan_peers or f'{vxlan_port} VXLAN'\n"
    )
    assert sorted(name for _, name in spellings(source)) == [
        " VXLAN",
        "vxlan_peers",
        "vxlan_port",
        "vxlan_port",
    ]
