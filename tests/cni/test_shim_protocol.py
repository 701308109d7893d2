"""Black-box protocol tests: the installed shim answers every malformed call with the spec's
error JSON and code, before any delegation (so no root is needed)."""

from __future__ import annotations

import json
import time

import pytest

from .conftest import Node

SUPPORTED = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]


def test_version_lists_exactly_the_supported_versions(node: Node) -> None:
    reply = node.call("VERSION", "this stdin is never read")
    assert reply.returncode == 0
    assert reply.json == {"cniVersion": "1.1.0", "supportedVersions": SUPPORTED}


@pytest.mark.parametrize(
    ("command", "unset", "named"),
    [
        ("ADD", ["CNI_NETNS", "CNI_PATH"], "[CNI_NETNS,CNI_PATH]"),
        ("ADD", ["CNI_CONTAINERID"], "[CNI_CONTAINERID]"),
        ("CHECK", ["CNI_IFNAME"], "[CNI_IFNAME]"),
        ("DEL", ["CNI_CONTAINERID", "CNI_IFNAME"], "[CNI_CONTAINERID,CNI_IFNAME]"),
        (None, ["CNI_COMMAND"], "[CNI_COMMAND]"),
    ],
)
def test_missing_environment_is_code_4_naming_the_variables(
    node: Node, command: str | None, unset: list[str], named: str
) -> None:
    overrides = dict.fromkeys(unset, "")  # empty counts as unset, as the runtime sends it
    reply = node.call(command or "", node.conf(), netns="x", **overrides)
    assert named in reply.error(4)["msg"]


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"CNI_COMMAND": "ATTACH"}, "ATTACH"),
        ({"CNI_CONTAINERID": "-starts-with-dash"}, "CNI_CONTAINERID"),
        ({"CNI_CONTAINERID": "has/slash"}, "CNI_CONTAINERID"),
        ({"CNI_IFNAME": "sixteen-chars-xx"}, "CNI_IFNAME"),
        ({"CNI_IFNAME": "eth:0"}, "CNI_IFNAME"),
        ({"CNI_IFNAME": ".."}, "CNI_IFNAME"),
    ],
)
def test_bad_environment_is_code_4(node: Node, env: dict[str, str], named: str) -> None:
    command = env.pop("CNI_COMMAND", "ADD")
    reply = node.call(command, node.conf(), netns="x", **env)
    assert named in reply.error(4)["msg"]


@pytest.mark.parametrize(
    ("stdin", "code", "says"),
    [
        ("", 6, "not valid JSON"),
        ("{not json", 6, "not valid JSON"),
        ("[1, 2]", 6, "JSON object"),
        ('{"cniVersion": 1.0, "name": "n", "type": "flannel"}', 6, "cniVersion"),
        ('{"cniVersion": "2.0.0", "name": "n", "type": "flannel"}', 1, "incompatible"),
        ('{"cniVersion": "1.0.0", "type": "flannel"}', 7, '"name"'),
        ('{"cniVersion": "1.0.0", "name": "bad name", "type": "flannel"}', 7, "bad name"),
        ('{"cniVersion": "1.0.0", "name": "n"}', 7, '"type"'),
    ],
)
def test_undecodable_or_invalid_stdin(node: Node, stdin: str, code: int, says: str) -> None:
    assert says in node.call("ADD", stdin, netns="x").error(code)["msg"]


@pytest.mark.parametrize(("command", "version"), [("CHECK", "0.3.1"), ("STATUS", "1.0.0"), ("GC", "0.4.0")])
def test_command_newer_than_the_config_version_is_code_1(node: Node, command: str, version: str) -> None:
    reply = node.call(command, node.conf(version), netns="x")
    error = reply.error(1)
    assert command in error["msg"] and error["cniVersion"] == version  # the config's own version


@pytest.mark.parametrize(
    ("extra", "code", "says"),
    [
        ({"delegate": {"name": "other"}}, 2, "delegate.name"),
        ({"delegate": {"ipam": {"type": "dhcp"}}}, 2, "delegate.ipam"),
        ({"delegate": {"type": "flannel"}}, 7, "delegate.type"),
        ({"delegate": "bridge"}, 7, '"delegate"'),
        ({"subnetFile": "relative/subnet.env"}, 7, "subnetFile"),
        ({"subnetFileTimeout": "5s"}, 7, "subnetFileTimeout"),
        ({"prevResult": []}, 7, "prevResult"),
        ({"ipam": {"routes": "198.18.0.0/16"}}, 7, "ipam.routes"),
    ],
)
def test_invalid_plugin_config(node: Node, extra: dict, code: int, says: str) -> None:
    reply = node.call("ADD", node.conf(**extra), netns="x")
    error = reply.error(code)
    assert says in error["msg"]
    assert error["cniVersion"] == "1.0.0"  # errors are printed in the config's version too


def test_add_waits_for_subnet_env_then_asks_to_try_again(node: Node) -> None:
    node.subnet_file.unlink()
    started = time.monotonic()
    reply = node.call("ADD", node.conf(subnetFileTimeout=0.5), netns="x")
    assert time.monotonic() - started >= 0.5
    msg = reply.error(11)["msg"]
    assert str(node.subnet_file) in msg
    assert "overlayd agent on this host is not ready" in msg
    assert node.state_files() == []


def test_malformed_subnet_env_names_the_key(node: Node) -> None:
    node.subnet_file.write_text("FLANNEL_NETWORK=198.18.0.0/16\nFLANNEL_SUBNET=198.18.5.1/24\n")
    msg = node.call("ADD", node.conf(), netns="x").error(7)["msg"]
    assert "FLANNEL_MTU missing" in msg
    assert str(node.subnet_file) in msg


def test_status(node: Node) -> None:
    conf = node.conf("1.1.0")
    assert node.call("STATUS", conf, CNI_CONTAINERID="", CNI_IFNAME="").returncode == 0
    node.subnet_file.unlink()
    msg = node.call("STATUS", conf).error(50)["msg"]
    assert "not ready" in msg and "waited" not in msg  # STATUS does not wait; only ADD does
    without_bridge = node.call("STATUS", conf, CNI_PATH=str(node.plugin_dir))
    assert '"bridge" not found in CNI_PATH' in without_bridge.error(51)["msg"]


def test_check_needs_prev_result_and_a_config_to_check_with(node: Node) -> None:
    assert "prevResult" in node.call("CHECK", node.conf(), netns="x").error(7)["msg"]
    prev = {"cniVersion": "1.0.0", "ips": [{"address": "198.18.5.2/24"}]}
    node.subnet_file.unlink()
    reply = node.call("CHECK", node.conf(prevResult=prev), netns="x", container_id="unknown")
    msg = reply.error(999)["msg"]  # not 3, "container unknown": that would tell the runtime to skip DEL
    assert "no saved config for ovctest+unknown+eth0" in msg and "none can be built" in msg


@pytest.mark.parametrize(
    "extra",
    [
        {"delegate": {"ipam": {"type": "dhcp"}}},
        {"delegate": {"type": "flannel"}},
        {"subnetFileTimeout": "5s"},
    ],
)
def test_del_with_an_invalid_config_still_succeeds(node: Node, extra: dict) -> None:
    """The runtime DELs after an ADD this config failed; refusing would leave its sandbox stuck."""
    node.subnet_file.unlink()
    reply = node.call("DEL", node.conf(**extra), netns="x")
    assert (reply.returncode, reply.stdout) == (0, "")
    assert "DEL with an invalid config" in reply.stderr and "nothing to release" in reply.stderr
    assert node.call("CHECK", node.conf(**extra, prevResult={}), netns="x").returncode == 1


def test_error_output_is_one_json_document(node: Node) -> None:
    reply = node.call("ADD", "{", netns="x")
    assert set(json.loads(reply.stdout)) >= {"cniVersion", "code", "msg"}


def test_unexpected_failures_are_still_cni_errors(node: Node) -> None:
    # Converting this prevResult for the delegate fails before any plugin runs.
    broken_prev = {"cniVersion": "0.4.0", "ips": [{"no-address": True}]}
    node.data_dir.mkdir()
    (node.data_dir / "ovctest+ctr1+eth0").write_text('{"type": "bridge"}')
    reply = node.call("CHECK", node.conf("0.4.0", prevResult=broken_prev), netns="x")
    assert "internal error" in reply.error(999)["msg"]


@pytest.mark.parametrize("key", ["cni.dev/valid-attachments", "cni.dev/attachments"])
def test_gc_with_a_malformed_attachment_list_names_its_key(node: Node, key: str) -> None:
    reply = node.call("GC", {**node.conf("1.1.0"), key: "all"}, CNI_CONTAINERID="", CNI_IFNAME="")
    assert f'"{key}" must be a list of objects' in reply.error(7)["msg"]
