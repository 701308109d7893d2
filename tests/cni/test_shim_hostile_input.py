"""Hostile input to the installed shim: the spec's error codes, and nothing written anywhere.

Huge, truncated, absurdly nested or mistyped stdin, path-like container IDs or interface
names, plugin types that are paths and a ``subnetFile`` that is some other file must be refused
before the shim touches ``dataDir`` or delegates (so no root is needed).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from .conftest import Node


def files(node: Node) -> list[Path]:
    """Every file under the node's directory but the guard delegates ``Node.call`` puts there."""
    return sorted(p for p in node.tmp.rglob("*") if p.is_file() and "no-delegation" not in p.parts)


@pytest.mark.parametrize(
    ("stdin", "code"),
    [
        (" " * (10 << 20) + "{", 7),  # 10 MB: over the 1 MiB cap, refused unread
        ('{"cniVersion": "1.0.0", "name": "n", "type": "flannel", "pad": "' + "x" * (10 << 20), 7),
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


def test_stdin_over_the_cap_is_refused_without_reading_it_all(node: Node) -> None:
    """200 MB once took 5.5 s and 400 MB of memory; now the first MiB decides."""
    before = files(node)
    conf = json.dumps(node.conf(pad="x" * (50 << 20)))
    error = node.call("ADD", conf, netns="x").error(7)
    assert "larger than 1048576 bytes" in error["msg"], error
    assert files(node) == before


def test_stdin_at_the_cap_is_still_read(node: Node) -> None:
    conf = node.conf(pad="")
    conf["pad"] = "x" * ((1 << 20) - len(json.dumps(conf)))
    text = json.dumps(conf)
    assert len(text.encode()) == 1 << 20
    # Read and parsed: it gets as far as delegating (to the stand-in that refuses outside a netns).
    assert "delegated outside a test netns" in node.call("ADD", text, netns="x").error(999)["msg"]


@pytest.mark.parametrize(
    "ifname",
    [
        "eth\x010",  # a control character
        "eth0\n",
        "eth0\x1b[2J",  # a terminal escape
        "a" * 16,  # one byte over IFNAMSIZ - 1
        "\u00e9" * 8,  # 8 characters, 16 bytes: the kernel counts bytes
        ".",
        "..",
        "eth 0",
        "eth\t0",
        "a:b",
        "eth\u200b0",  # zero-width space: not printable
    ],
)
@pytest.mark.parametrize("command", ["ADD", "DEL", "CHECK"])
def test_a_bad_interface_name_is_code_4_and_writes_nothing(node: Node, ifname: str, command: str) -> None:
    before = files(node)
    error = node.call(command, node.conf(), netns="x", CNI_IFNAME=ifname).error(4)
    assert error["msg"].startswith(f"CNI_IFNAME {ifname!r} is not a valid interface name"), error
    assert "control characters" in error["msg"]
    assert files(node) == before


def test_the_longest_interface_name_the_kernel_takes_passes_validation(node: Node) -> None:
    # 15 bytes, non-ASCII included: refused only later, by the stand-in delegate.
    for ifname in ("a" * 15, "\u00e9" * 7 + "a"):
        reply = node.call("ADD", node.conf(), netns="x", CNI_IFNAME=ifname)
        assert "delegated outside a test netns" in reply.error(999)["msg"]
        node.call("DEL", node.conf(), netns="x", CNI_IFNAME=ifname)


def evil_plugin(node: Node) -> tuple[Path, Path]:
    """An executable that leaves a marker file when run; (the program, the marker)."""
    marker = node.tmp / "evil-ran"
    evil = node.tmp / "x" / "evil"
    evil.parent.mkdir(exist_ok=True)
    evil.write_text(f"#!/bin/sh\ntouch {marker}\necho '{{}}'\n")
    evil.chmod(0o755)
    return evil, marker


def plugin_names_for(node: Node, evil: Path) -> list[str]:
    """Names that reach ``evil`` from the first CNI_PATH directory, and other non-names."""
    return [os.path.relpath(evil, node.plugin_dir), "../../../../../../.." + str(evil), str(evil)]


@pytest.mark.parametrize("key", ["delegate", "ipam"])
@pytest.mark.parametrize("command", ["ADD", "DEL", "CHECK"])
def test_a_plugin_type_that_is_a_path_is_refused_and_never_run(node: Node, key: str, command: str) -> None:
    """flannel's plugin and libcni say "invalid plugin name"; this once ran the file as root."""
    evil, marker = evil_plugin(node)
    for name in plugin_names_for(node, evil):
        section = {"delegate": {"bridge": node.bridge}, "ipam": {"dataDir": str(node.ipam_dir)}}[key]
        conf = node.conf(prevResult={"cniVersion": "1.0.0"}, **{key: {**section, "type": name}})
        before = files(node)
        reply = node.call(command, conf, netns="x")
        if command == "DEL":
            # DEL must still tear down what ADD made: the default plugin stands in, and the
            # refusal is said on stderr (the stand-in delegate here refuses outside a netns).
            assert f'"{key}.type" {name!r} is not a plugin name' in reply.stderr, reply
            assert "defaults stand in" in reply.stderr
            assert "delegated outside a test netns" in reply.error(999)["msg"]
        else:
            error = reply.error(7)
            assert error["msg"].startswith(f'"{key}.type" {name!r} is not a plugin name'), error
            assert 'without "/"' in error["msg"]
        assert not marker.exists()
        assert files(node) == before
        assert node.allocations() == {}


@pytest.mark.parametrize("name", ["", ".", "..", "bridge\n", "br\x00idge"])
def test_other_non_names_are_refused_as_plugin_types(node: Node, name: str) -> None:
    before = files(node)
    error = node.call("ADD", node.conf(delegate={"type": name}), netns="x").error(7)
    assert error["msg"].startswith(f'"delegate.type" {name!r} is not a plugin name'), error
    assert files(node) == before


def test_a_saved_state_naming_a_path_is_not_run_on_del(node: Node) -> None:
    """State written before this check existed (or planted in dataDir) is checked on replay."""
    evil, marker = evil_plugin(node)
    node.data_dir.mkdir(parents=True)
    for name in plugin_names_for(node, evil):
        saved = node.data_dir / "ovctest+ctr1+eth0"
        saved.write_text(json.dumps({"cniVersion": "1.0.0", "name": "ovctest", "type": name}))
        error = node.call("DEL", node.conf(), netns="x").error(7)
        assert error["msg"].startswith(f'"delegate.type" {name!r} is not a plugin name'), error
        assert not marker.exists()
        assert saved.exists()  # nothing was released, so the record of it stays
    ipam = {"type": os.path.relpath(evil, node.plugin_dir)}
    saved.write_text(json.dumps({"cniVersion": "1.0.0", "name": "ovctest", "type": "bridge", "ipam": ipam}))
    assert node.call("DEL", node.conf(), netns="x").error(7)["msg"].startswith('"ipam.type"')
    assert not marker.exists()


SECRET = "root:$6$s3cr3tHash:19000:0:99999:7:::"


@pytest.mark.parametrize("command", ["ADD", "DEL", "CHECK", "STATUS"])
def test_a_subnet_file_that_is_another_file_is_not_quoted(node: Node, command: str) -> None:
    """An error names the line and why, never its content: the file may be /etc/shadow."""
    node.subnet_file.write_text(f"# comment\n\n{SECRET}\nFLANNEL_MTU=1450\n")
    version = "1.1.0" if command == "STATUS" else "1.0.0"
    conf = node.conf(version, prevResult={"cniVersion": version})
    before = files(node)
    reply = node.call(command, conf, netns="x")
    assert "s3cr3t" not in reply.stdout + reply.stderr
    if command == "DEL":  # DEL succeeds: nothing was saved, and nothing can be rebuilt
        assert reply.returncode == 0, reply
        assert f"{node.subnet_file}: line 3 is not KEY=VALUE" in reply.stderr
    else:
        error = reply.error({"ADD": 7, "CHECK": 999, "STATUS": 50}[command])
        assert f"{node.subnet_file}: line 3 is not KEY=VALUE (it has no '=')" in error["msg"], error
    assert files(node) == before


def test_a_huge_subnet_file_is_refused_unread(node: Node) -> None:
    node.subnet_file.write_text("FLANNEL_MTU=1450\n" + "#" * (1 << 20))
    error = node.call("ADD", node.conf(), netns="x").error(7)
    assert "larger than 65536 bytes, not a subnet.env" in error["msg"], error
