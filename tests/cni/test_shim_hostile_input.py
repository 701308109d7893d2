"""Hostile input to the installed shim: the spec's error codes, and nothing written anywhere.

Huge, truncated, absurdly nested or mistyped stdin and path-like container IDs or interface
names must be refused before the shim touches ``dataDir`` or delegates (so no root is needed).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import Node


def files(node: Node) -> list[Path]:
    """Every file under the node's directory but the guard delegates ``Node.call`` puts there."""
    return sorted(p for p in node.tmp.rglob("*") if p.is_file() and "no-delegation" not in p.parts)


@pytest.mark.parametrize(
    ("stdin", "code"),
    [
        (" " * (10 << 20) + "{", 6),  # 10 MB that never becomes JSON
        ('{"cniVersion": "1.0.0", "name": "n", "type": "flannel", "pad": "' + "x" * (10 << 20), 6),
        ('{"cniVersion": "1.0.0", "name": "n", "type": "flan', 6),  # truncated
        ("[" * 100_000 + "]" * 100_000, 6),  # nesting deeper than any parser's stack
        ("\x00\xff garbage", 6),
        ('{"cniVersion": ["1.0.0"], "name": "n", "type": "flannel"}', 6),
        ('{"cniVersion": "1.0.0", "name": 7, "type": "flannel"}', 7),
        ('{"cniVersion": "1.0.0", "name": "n", "type": {"x": 1}}', 7),
    ],
)
def test_hostile_stdin_gets_its_code_and_writes_nothing(node: Node, stdin: str, code: int) -> None:
    before = files(node)
    node.call("ADD", stdin, netns="x").error(code)
    assert files(node) == before


@pytest.mark.parametrize(
    ("key", "value", "code"),
    [
        ("dataDir", "relative/dir", 7),
        ("delegate", "bridge", 7),
        ("ipam", ["host-local"], 7),
        ("subnetFileTimeout", "soon", 7),
        ("ipam", {"routes": "198.18.0.0/16"}, 7),
    ],
)
def test_wrong_types_in_the_config_are_code_7(node: Node, key: str, value: object, code: int) -> None:
    before = files(node)
    node.call("ADD", node.conf(**{key: value}), netns="x").error(code)
    assert files(node) == before


@pytest.mark.parametrize(
    "env",
    [
        {"CNI_CONTAINERID": "../escape"},
        {"CNI_CONTAINERID": "a/b"},
        {"CNI_CONTAINERID": "ok/../../escape"},
        {"CNI_IFNAME": "../x"},
        {"CNI_IFNAME": "a/b"},
    ],
)
@pytest.mark.parametrize("command", ["ADD", "DEL", "CHECK"])
def test_path_traversal_is_code_4_and_writes_nothing(node: Node, env: dict[str, str], command: str) -> None:
    before = files(node)
    reply = node.call(command, node.conf(), netns="x", **env)
    assert next(iter(env)) in reply.error(4)["msg"]
    assert files(node) == before
    assert not (node.tmp / "escape").exists() and not (node.data_dir.parent / "escape").exists()
