"""The package layout keeps its layers: no module imports a layer above its own or a forbidden sibling.

Layers, lowest first (a module may import its own package and the layers below it):

    0  base/        1  subnet/        2  etcd/ backend/ netfilter/ (siblings: not each other)
    3  options.py (with option_specs.py, option_sources.py)
    4  agent/ ops/ dockerplugin/ (siblings)   5  lab/
    6  bench/   7  cli.py __main__.py logsetup.py

The package root (``overlayd/__init__.py``: the version constant) may be imported by every layer.
Imports inside functions count too. ``etcd3`` is imported by ``etcd/registry.py`` only (bench gets
the same module object through it, so protobuf is set up once, the agent's way). And modules
stay short: at most 400 lines in ``agent/``, 500 elsewhere.
"""

from __future__ import annotations

import ast
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "overlayd"

# unit -> layer; a unit is a subpackage, or one of the top-level modules.
LAYERS: dict[str, int] = {
    "base": 0,
    "subnet": 1,
    "etcd": 2,
    "backend": 2,
    "netfilter": 2,
    "options": 3,
    "option_specs": 3,  # the option table and the readers options.py merges: the same layer
    "option_sources": 3,
    "agent": 4,
    "ops": 4,
    "dockerplugin": 4,
    "lab": 5,
    "bench": 6,
    "cli": 7,
    "__main__": 7,
    "logsetup": 7,
}
# Layers whose units are independent of each other; the composition root's modules (layer 7) are not.
APART = {2, 4}
ROOT_UNIT = "overlayd"  # overlayd/__init__.py: importable from everywhere, imports nothing
ETCD3_ALLOWED = {"etcd/registry.py"}


@dataclass(frozen=True)
class Import:
    where: str  # "overlayd/agent/daemon.py:57"
    importer: str  # unit of the importing file
    module: str  # the dotted module imported
    unit: str  # unit of the imported module


def unit_of_path(relative: Path) -> str:
    """The unit of a file given relative to the package directory."""
    if len(relative.parts) > 1:
        return relative.parts[0]
    return ROOT_UNIT if relative.stem == "__init__" else relative.stem


def unit_of_module(dotted: str) -> str:
    parts = dotted.split(".")
    return ROOT_UNIT if len(parts) == 1 else parts[1]


def _module_name(relative: Path) -> str:
    parts = ["overlayd", *relative.with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(package: Path) -> tuple[list[Import], list[str]]:
    """Every import of an overlayd module in the package; every ``etcd3`` import outside the allow-list."""
    found: list[Import] = []
    etcd3: list[str] = []
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package)
        importer = unit_of_path(relative)
        this = _module_name(relative)
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            where = f"overlayd/{relative}:{getattr(node, 'lineno', 0)}"
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: resolve against this module's package
                    anchor = this.split(".")
                    anchor = anchor[: len(anchor) - node.level + (relative.stem == "__init__")]
                    base = ".".join([*anchor, *([base] if base else [])])
                # `from overlayd import status` imports the module overlayd.status
                targets = [f"{base}.{alias.name}" for alias in node.names] if base == "overlayd" else [base]
            for target in targets:
                if target == "etcd3" or target.startswith("etcd3."):
                    if relative.as_posix() not in ETCD3_ALLOWED:
                        etcd3.append(f"{where} imports {target}; only overlayd/etcd/registry.py may")
                elif target == "overlayd" or target.startswith("overlayd."):
                    unit = unit_of_module(target)
                    known = unit in LAYERS or (package / unit).is_dir() or (package / f"{unit}.py").exists()
                    if not known:
                        unit = ROOT_UNIT  # a name defined in the package root, e.g. __version__
                    found.append(Import(where, importer, target, unit))
    return found, etcd3


def layer_violations(found: list[Import]) -> list[str]:
    problems = []
    for imp in found:
        if imp.unit == ROOT_UNIT or imp.unit == imp.importer:
            continue
        if imp.importer == ROOT_UNIT:
            problems.append(f"{imp.where} imports {imp.module}: the package root must import nothing")
            continue
        if imp.unit not in LAYERS or imp.importer not in LAYERS:
            unknown = imp.unit if imp.unit not in LAYERS else imp.importer
            problems.append(f"{imp.where} imports {imp.module}: {unknown!r} has no layer; add it to LAYERS")
            continue
        mine, theirs = LAYERS[imp.importer], LAYERS[imp.unit]
        if theirs > mine:
            problems.append(
                f"{imp.where} imports {imp.module} of layer {theirs} ({imp.unit}) above its own layer "
                f"{mine} ({imp.importer})"
            )
        elif theirs == mine and mine in APART:
            problems.append(
                f"{imp.where} imports {imp.module} of its sibling {imp.unit} on layer {mine} "
                f"({imp.importer} and {imp.unit} may not import each other)"
            )
    return problems


def unit_cycles(found: list[Import]) -> list[list[str]]:
    """Cycles in the graph of units (subpackages and top-level modules), self-imports left out."""
    edges: dict[str, set[str]] = {}
    for imp in found:
        if imp.unit != imp.importer:
            edges.setdefault(imp.importer, set()).add(imp.unit)
    cycles: list[list[str]] = []
    state: dict[str, str] = {}  # "open" while on the DFS stack, "done" after

    def visit(unit: str, stack: list[str]) -> None:
        state[unit] = "open"
        for nxt in sorted(edges.get(unit, ())):
            if state.get(nxt) == "open":
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[unit] = "done"

    for unit in sorted(edges):
        if unit not in state:
            visit(unit, [unit])
    return cycles


def test_no_module_imports_a_higher_layer_or_a_sibling() -> None:
    found, _ = imports_of(PACKAGE)
    assert found, "no overlayd import found: the walk is broken"
    problems = layer_violations(found)
    assert not problems, "\n".join(problems)


def test_only_the_etcd_registry_imports_etcd3() -> None:
    _, etcd3 = imports_of(PACKAGE)
    assert not etcd3, "\n".join(etcd3)


def test_no_import_cycle_between_subpackages() -> None:
    found, _ = imports_of(PACKAGE)
    cycles = unit_cycles(found)
    assert not cycles, "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_every_subpackage_has_a_layer_and_an_import_free_init() -> None:
    for init in sorted(PACKAGE.glob("*/__init__.py")):
        unit = init.parent.name
        assert unit in LAYERS, f"overlayd/{unit}/ has no layer in tests/unit/test_layers.py"
    for init in sorted(PACKAGE.rglob("__init__.py")):
        tree = ast.parse(init.read_text())
        assert ast.get_docstring(tree), f"{init.relative_to(PACKAGE.parent)} lacks its docstring"
        statements = [node for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)]
        if init.parent != PACKAGE:  # subpackages stay cheap to import: no re-exports
            assert not statements, f"{init.relative_to(PACKAGE.parent)}:{statements[0].lineno} imports"


@pytest.mark.parametrize(
    ("path", "source", "expected"),
    [
        ("base/x.py", "from overlayd.subnet import lease\n", "of layer 1 (subnet) above its own layer 0"),
        ("backend/x.py", "def f():\n    import overlayd.etcd.api\n", "of its sibling etcd on layer 2"),
        ("etcd/x.py", "from overlayd.options import AgentOptions\n", "of layer 3 (options) above its own"),
        ("agent/x.py", "from overlayd.ops import status\n", "of its sibling ops on layer 4"),
        ("subnet/x.py", "from .. import cli\n", "of layer 7 (cli) above its own layer 1 (subnet)"),
    ],
)
def test_a_bad_import_is_named_with_file_line_and_both_layers(
    tmp_path: Path, path: str, source: str, expected: str
) -> None:
    (tmp_path / path).parent.mkdir(parents=True)
    (tmp_path / path).write_text(source)
    problems = layer_violations(imports_of(tmp_path)[0])
    assert len(problems) == 1 and expected in problems[0] and problems[0].startswith(f"overlayd/{path}:")


def test_etcd3_outside_the_registry_and_a_cycle_are_named(tmp_path: Path) -> None:
    for name, source in [
        ("ops/x.py", "import etcd3\n"),
        ("etcd/registry.py", "import etcd3.exceptions\n"),
        ("etcd/y.py", "from overlayd.backend import z\n"),
        ("backend/z.py", "from overlayd.etcd import y\n"),
    ]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(source)
    found, etcd3 = imports_of(tmp_path)
    assert etcd3 == ["overlayd/ops/x.py:1 imports etcd3; only overlayd/etcd/registry.py may"]
    assert unit_cycles(found) == [["backend", "etcd", "backend"]]


def test_pyproject_ships_every_subpackage() -> None:
    """A package missing from pyproject.toml works in the editable install and fails in a wheel."""
    config = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = {name for name in config["packages"] if name.split(".")[0] == "overlayd"}
    inits = PACKAGE.rglob("__init__.py")
    present = {".".join(init.relative_to(PACKAGE.parent).parent.parts) for init in inits}
    missing, extra = sorted(present - listed), sorted(listed - present)
    assert listed == present, f"pyproject.toml lacks {missing}, lists {extra} that do not exist"


AGENT_MAX_LINES = 400  # overlayd/agent/: one job per module, each read in one sitting
MAX_LINES = 500  # any other module of the package


def too_long(package: Path) -> list[str]:
    """The modules over their length limit, with their length and the limit."""
    problems = []
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package).as_posix()
        limit = AGENT_MAX_LINES if relative.startswith("agent/") else MAX_LINES
        lines = len(path.read_text().splitlines())
        if lines > limit:
            problems.append(f"overlayd/{relative} has {lines} lines, over {limit}: split it by job")
    return problems


def test_modules_stay_short() -> None:
    problems = too_long(PACKAGE)
    assert not problems, "\n".join(problems)


def test_a_long_module_is_named_with_its_length_and_limit(tmp_path: Path) -> None:
    (tmp_path / "agent").mkdir()
    (tmp_path / "agent" / "x.py").write_text("pass\n" * 401)
    (tmp_path / "ops.py").write_text("pass\n" * 401)
    (tmp_path / "options.py").write_text("pass\n" * 501)
    assert too_long(tmp_path) == [
        "overlayd/agent/x.py has 401 lines, over 400: split it by job",
        "overlayd/options.py has 501 lines, over 500: split it by job",
    ]
