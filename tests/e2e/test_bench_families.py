"""`overlayd bench --only families` measures a dual-stack and an IPv6-only network against an
IPv4-only one in one run, a lab each, and leaves nothing behind (no figure asserted: the machine is
shared)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from labtools import needs_lab

from overlayd.lab.namespaces import lab_namespaces

pytestmark = [
    needs_lab,
    pytest.mark.root,
    pytest.mark.skipif(not os.path.exists("/usr/lib/cni/bridge"), reason="needs containernetworking-plugins"),
]

ROWS = (
    "cold start, 5 peers, all entries: dual-stack (both families) vs IPv4-only, median",
    "event latency, 5 peers: IPv6 half's entries vs IPv4's, p50",
    "event latency, 5 peers: IPv6 half's entries vs IPv4's, p95",
    "cold start, 5 peers, all entries: IPv6-only vs IPv4-only, median",
    "event latency, 5 peers: IPv6-only peer's entries vs IPv4's, p50",
    "event latency, 5 peers: IPv6-only peer's entries vs IPv4's, p95",
)


# Each row's value, its IPv4-only baseline, the ratio and the goal.
MEASURED = r"\d+(\.\d+)? m?s +\d+(\.\d+)? m?s +\d+\.\d\dx +within 10 % of IPv4"


def bench_families() -> str:
    """The output of a tiny families run: 5 peers, 3 events, one cold start per family."""
    argv = ["--only", "families", "--peers", "5", "--events", "3", "--runs", "1"]
    done = subprocess.run([sys.executable, "-m", "overlayd", "bench", *argv], capture_output=True,
                          text=True, timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout


def test_families_prints_the_ipv6_only_rows_beside_the_dual_stack_ones() -> None:
    out = bench_families()
    rows = {figure: line[len(figure) :].strip() for line in out.splitlines() for figure in ROWS
            if line.startswith(figure)}  # fmt: skip
    assert sorted(rows) == sorted(ROWS), out[-3000:]
    unmeasured = {figure: rest for figure, rest in rows.items() if not re.fullmatch(MEASURED, rest)}
    assert not unmeasured, f"rows without a measured ratio: {unmeasured}"
    assert "events not seen" not in out, out[-3000:]
    labs = re.findall(r"^lab (\w+): ([\w-]+) network, 5 peers$", out, re.MULTILINE)
    assert [family for _, family in labs] == ["IPv4-only", "dual-stack", "IPv6-only"], out
    for name, _ in labs:
        assert not lab_namespaces(name), f"lab {name} left namespaces behind"
