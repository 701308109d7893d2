"""``overlayd cni``: the deploy conflist (flannel + portmap) run against namespaces, and what
the tool sends and caches, recorded by stub plugins (no root needed)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from overlayd.ops.cni_tool import ToolError, choose_version, run_cni_command

from .conftest import REFERENCE_PLUGINS, SUBNET_ENV, Node, run_netns

DEPLOY_CONFLIST = Path(__file__).parents[2] / "deploy" / "10-flannel.conflist"
PORT_MAPPINGS = [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]


def _conflist(host: Node, *, with_portmap: bool = True) -> Path:
    """deploy/10-flannel.conflist, with the flannel entry pointed into the test's tmp dir."""
    conflist = json.loads(DEPLOY_CONFLIST.read_text())
    if not with_portmap:
        # portmap 1.1.1's CHECK looks for its IPv4 rules in ip6tables and always fails.
        del conflist["plugins"][1:]
    flannel = conflist["plugins"][0]
    test_conf = host.conf()
    for key in ("subnetFile", "dataDir", "ipam"):
        flannel[key] = test_conf[key]
    flannel["delegate"]["bridge"] = host.bridge
    path = host.tmp / f"{len(conflist['plugins'])}-plugins.conflist"
    path.write_text(json.dumps(conflist))
    return path


def _tool(host: Node, *args: str, port_mappings: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the helper in the host namespace, as an operator on that host would."""
    assert host.host_ns
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "CNI_PATH": f"{host.plugin_dir}:{REFERENCE_PLUGINS}",
        "CNI_CACHE_DIR": str(host.tmp / "results"),
    }
    if port_mappings:
        env["CAP_ARGS"] = json.dumps({"portMappings": PORT_MAPPINGS})
    cmd = ["ip", "netns", "exec", host.host_ns, sys.executable, "-m", "overlayd.ops.cni_tool"]
    return subprocess.run([*cmd, *args], env=env, capture_output=True, text=True, timeout=30)


def _nat_rules(host: Node) -> str:
    assert host.host_ns
    return run_netns(["ip", "netns", "exec", host.host_ns, "iptables", "-t", "nat", "-S"]).stdout


@pytest.mark.root
def test_add_check_del_with_portmap_chain(host: Node) -> None:
    conflist, netns = _conflist(host), host.netns()
    added = _tool(host, "add", netns, "--conflist", str(conflist))
    assert added.returncode == 0, added.stderr
    result = json.loads(added.stdout)
    assert result["ips"][0]["address"] == "198.18.5.2/24"
    assert "198.18.5.2:80" in _nat_rules(host)  # portmap got runtimeConfig and prevResult
    assert host.ping(netns, "198.18.5.1")
    (cached,) = (host.tmp / "results").iterdir()
    assert cached.name.startswith("cbr0-overlayd-") and cached.name.endswith("-eth0")

    flannel_only = str(_conflist(host, with_portmap=False))
    checked = _tool(host, "check", netns, "--conflist", flannel_only)
    assert checked.returncode == 0, checked.stderr

    twice = _tool(host, "add", netns, "--conflist", str(conflist))
    assert twice.returncode == 1 and "already has eth0" in twice.stderr
    assert host.ping(netns, "198.18.5.1")

    deleted = _tool(host, "del", netns, "--conflist", str(conflist))
    assert deleted.returncode == 0, deleted.stderr
    assert "198.18.5.2:80" not in _nat_rules(host)
    assert list((host.tmp / "results").iterdir()) == []
    assert host.allocations("cbr0") == {}
    assert host.links(netns) == ["lo"]
    assert _tool(host, "del", netns, "--conflist", str(conflist)).returncode == 0


@pytest.mark.root
def test_del_without_cap_args_removes_the_portmap_rules_of_add(host: Node) -> None:
    conflist, netns = _conflist(host), host.netns()
    assert _tool(host, "add", netns, "--conflist", str(conflist)).returncode == 0
    assert "198.18.5.2:80" in _nat_rules(host)
    deleted = _tool(host, "del", netns, "--conflist", str(conflist), port_mappings=False)
    assert deleted.returncode == 0, deleted.stderr
    assert "198.18.5.2:80" not in _nat_rules(host)  # portmap's DEL got the cached portMappings


@pytest.mark.root
def test_failed_add_rolls_the_chain_back(host: Node) -> None:
    conflist, netns = _conflist(host), host.netns()
    host.write_subnet_env({**SUBNET_ENV, "FLANNEL_SUBNET": "198.18.5.1/30"})
    assert _tool(host, "add", host.netns(), "--conflist", str(conflist)).returncode == 0
    failed = _tool(host, "add", netns, "--conflist", str(conflist))
    assert failed.returncode == 1
    assert "no IP addresses available" in failed.stderr
    assert len(list((host.tmp / "results").iterdir())) == 1
    assert len(host.allocations("cbr0")) == 1
    assert host.links(netns) == ["lo"]


@pytest.mark.root
def test_check_without_a_cached_result_explains(host: Node) -> None:
    checked = _tool(host, "check", host.netns(), "--conflist", str(_conflist(host)))
    assert checked.returncode == 1
    assert "run `overlayd cni add` first" in checked.stderr


# A plugin that records each call (command, CNI_ARGS, stdin) next to itself and answers ADD.
STUB_PLUGIN = """\
import json, os, sys
config = json.load(sys.stdin)
call = {"command": os.environ["CNI_COMMAND"], "cniArgs": os.environ["CNI_ARGS"], "config": config}
with open(os.path.join(os.path.dirname(sys.argv[0]), "calls.jsonl"), "a") as log:
    log.write(json.dumps(call) + "\\n")
if call["command"] == "ADD":
    print(json.dumps({"cniVersion": config["cniVersion"], "ips": [{"address": "198.18.5.9/24"}]}))
"""
CAP_ARGS = json.dumps({"portMappings": PORT_MAPPINGS})


@dataclass
class Outcome:
    status: int
    stderr: str


class StubRuntime:
    """``overlayd cni`` run in-process on a list of two stub plugins, the second like portmap."""

    def __init__(self, tmp: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
        self.tmp, self.monkeypatch, self.capsys = tmp, monkeypatch, capsys
        plugin = tmp / "bin" / "logger"
        plugin.parent.mkdir()
        plugin.write_text(f"#!{sys.executable}\n{STUB_PLUGIN}")
        plugin.chmod(0o755)
        self.log = plugin.with_name("calls.jsonl")
        monkeypatch.setenv("CNI_PATH", str(plugin.parent))
        monkeypatch.setenv("CNI_CACHE_DIR", str(tmp / "results"))

    def conflist(self, **keys: Any) -> Path:
        conflist = {
            "name": "stubnet",
            "cniVersion": "1.0.0",
            "plugins": [
                {"type": "logger", "role": "main"},
                {"type": "logger", "role": "portmap", "capabilities": {"portMappings": True}},
            ],
            **keys,
        }
        path = self.tmp / "stub.conflist"
        path.write_text(json.dumps(conflist, indent=2))
        return path

    def run(self, command: str, conflist: Path, **env: str) -> Outcome:
        """One ``overlayd cni`` call with exactly ``env``'s CNI_ARGS and CAP_ARGS."""
        for variable in ("CNI_ARGS", "CAP_ARGS"):
            if variable in env:
                self.monkeypatch.setenv(variable, env[variable])
            else:
                self.monkeypatch.delenv(variable, raising=False)
        self.capsys.readouterr()
        status = run_cni_command([command, "/var/run/netns/stubctr", "--conflist", str(conflist)])
        return Outcome(status, self.capsys.readouterr().err)

    def calls(self, command: str, role: str | None = None) -> list[dict[str, Any]]:
        calls = [json.loads(line) for line in self.log.read_text().splitlines()] if self.log.exists() else []
        return [
            call for call in calls if call["command"] == command and role in (None, call["config"]["role"])
        ]

    def cache_file(self) -> Path:
        (path,) = (self.tmp / "results").iterdir()
        return path


@pytest.fixture
def stub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> StubRuntime:
    return StubRuntime(tmp_path, monkeypatch, capsys)


def test_del_and_check_replay_the_args_cached_at_add(stub: StubRuntime) -> None:
    conflist = stub.conflist()
    assert stub.run("add", conflist, CNI_ARGS="K8S_POD_NAME=web", CAP_ARGS=CAP_ARGS).status == 0
    assert stub.run("check", conflist).status == 0
    assert stub.run("del", conflist).status == 0
    for command in ("CHECK", "DEL"):
        assert [call["cniArgs"] for call in stub.calls(command)] == ["K8S_POD_NAME=web"] * 2
        (portmap,) = stub.calls(command, "portmap")
        assert portmap["config"]["runtimeConfig"] == {"portMappings": PORT_MAPPINGS}


def test_a_plugin_type_that_is_a_path_is_refused_and_never_run(stub: StubRuntime) -> None:
    marker = stub.tmp / "evil-ran"
    evil = stub.tmp / "x" / "evil"
    evil.parent.mkdir()
    evil.write_text(f"#!/bin/sh\ntouch {marker}\necho '{{}}'\n")
    evil.chmod(0o755)
    conflist = stub.conflist(plugins=[{"type": "logger", "role": "main"}, {"type": "../x/evil"}])
    added = stub.run("add", conflist)
    assert added.status != 0
    assert "\"plugins[].type\" '../x/evil' is not a plugin name" in added.stderr
    assert not marker.exists()
    assert stub.run("del", conflist).status != 0
    assert not marker.exists()
    assert not (stub.tmp / "results").exists() or not list((stub.tmp / "results").iterdir())


def test_cached_args_win_and_the_environment_fills_in(stub: StubRuntime) -> None:
    conflist = stub.conflist()
    other = json.dumps({"portMappings": [{"hostPort": 9090, "containerPort": 90, "protocol": "tcp"}]})
    stub.run("add", conflist, CAP_ARGS=CAP_ARGS)
    deleted = stub.run("del", conflist, CAP_ARGS=other, CNI_ARGS="K8S_POD_NAME=web")
    assert deleted.status == 0
    assert "CAP_ARGS differs from ADD's" in deleted.stderr
    (portmap,) = stub.calls("DEL", "portmap")
    assert portmap["config"]["runtimeConfig"] == {"portMappings": PORT_MAPPINGS}
    assert portmap["cniArgs"] == "K8S_POD_NAME=web"  # ADD had none, so the environment's is used


def test_cache_entry_is_what_libcni_reads(stub: StubRuntime) -> None:
    conflist = stub.conflist()
    stub.run("add", conflist, CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAME=web", CAP_ARGS=CAP_ARGS)
    entry = json.loads(stub.cache_file().read_text())
    assert entry["kind"] == "cniCacheV1"
    assert base64.b64decode(entry["config"]) == conflist.read_bytes()
    assert entry["cniArgs"] == [["IgnoreUnknown", "1"], ["K8S_POD_NAME", "web"]]
    assert entry["capabilityArgs"] == {"portMappings": PORT_MAPPINGS}
    assert entry["result"]["ips"] == [{"address": "198.18.5.9/24"}]
    assert (entry["networkName"], entry["ifName"]) == ("stubnet", "eth0")
    assert entry["netns"] == "/var/run/netns/stubctr"
    assert stub.cache_file().name == f"stubnet-{entry['containerId']}-eth0"


def test_cache_entry_leaves_out_empty_args(stub: StubRuntime) -> None:
    stub.run("add", stub.conflist())
    entry = json.loads(stub.cache_file().read_text())
    assert "cniArgs" not in entry and "capabilityArgs" not in entry


def test_cni_args_that_are_not_pairs_are_refused(stub: StubRuntime) -> None:
    added = stub.run("add", stub.conflist(), CNI_ARGS="K8S_POD_NAME=web;IgnoreUnknown")
    assert added.status == 1
    assert "pair 'IgnoreUnknown' is not KEY=VALUE" in added.stderr
    assert stub.calls("ADD") == []


def test_del_reads_a_cache_with_cni_args_as_a_string(stub: StubRuntime) -> None:
    conflist = stub.conflist()
    stub.run("add", conflist)
    entry = json.loads(stub.cache_file().read_text())
    stub.cache_file().write_text(json.dumps({**entry, "cniArgs": "K8S_POD_NAME=web"}))
    assert stub.run("del", conflist).status == 0
    assert [call["cniArgs"] for call in stub.calls("DEL")] == ["K8S_POD_NAME=web"] * 2
    assert all("prevResult" in call["config"] for call in stub.calls("DEL"))


@pytest.mark.parametrize("disable_check", [True, "true", "TRUE", "True"], ids=repr)
def test_disable_check_runs_no_plugin(stub: StubRuntime, disable_check: bool | str) -> None:
    conflist = stub.conflist(disableCheck=disable_check)
    checked = stub.run("check", conflist)
    assert checked.status == 0, checked.stderr
    assert "sets disableCheck" in checked.stderr
    stub.run("add", conflist)
    assert stub.run("check", conflist).status == 0
    assert stub.calls("CHECK") == []


@pytest.mark.parametrize("disable_check", [False, "false", "FALSE"], ids=repr)
def test_disable_check_false_checks(stub: StubRuntime, disable_check: bool | str) -> None:
    conflist = stub.conflist(disableCheck=disable_check)
    stub.run("add", conflist)
    assert stub.run("check", conflist).status == 0
    assert len(stub.calls("CHECK")) == 2


def test_disable_check_that_is_not_a_boolean_is_refused(stub: StubRuntime) -> None:
    checked = stub.run("check", stub.conflist(disableCheck="yes"))
    assert checked.status == 1
    assert "\"disableCheck\" is 'yes'; use true or false" in checked.stderr


@pytest.mark.parametrize(
    ("versions", "chosen"),
    [
        ({"cniVersion": "1.0.0", "cniVersions": ["0.4.0"]}, "1.0.0"),
        ({"cniVersion": "1.0.0", "cniVersions": ["1.2.0"]}, "1.0.0"),
        ({"cniVersion": "0.3.1", "cniVersions": ["1.2.0", "1.1.0", "0.4.0"]}, "1.1.0"),
        ({"cniVersions": ["0.4.0", "1.0.0"]}, "1.0.0"),
        ({"cniVersion": "9.0.0", "cniVersions": ["1.0.0"]}, "1.0.0"),
        ({"cniVersion": "0.4.0"}, "0.4.0"),
        ({}, "0.1.0"),
    ],
)
def test_choose_version_takes_the_highest_candidate_we_speak(versions: dict[str, Any], chosen: str) -> None:
    assert choose_version(versions) == chosen


@pytest.mark.parametrize(
    ("versions", "message"),
    [
        ({"cniVersion": "1.0.0", "cniVersions": "1.1.0"}, "\"cniVersions\" is '1.1.0'; use a list"),
        ({"cniVersion": "1.0.0", "cniVersions": ["1.1.0", 1]}, "\"cniVersions\" is ['1.1.0', 1]; use a list"),
        ({"cniVersions": []}, "offers CNI versions [], none of which"),
        ({"cniVersion": "9.0.0", "cniVersions": ["1.2.0"]}, "offers CNI versions ['1.2.0', '9.0.0']"),
        ({"cniVersion": "9.0.0"}, "set cniVersion to one of ['0.1.0',"),
    ],
)
def test_choose_version_refuses_what_leaves_no_candidate(versions: dict[str, Any], message: str) -> None:
    with pytest.raises(ToolError) as raised:
        choose_version(versions)
    assert message in str(raised.value)


@pytest.mark.parametrize(("version", "del_gets_it"), [("0.3.1", False), ("0.4.0", True), ("1.0.0", True)])
def test_del_gets_the_cached_result_from_0_4_0(stub: StubRuntime, version: str, del_gets_it: bool) -> None:
    conflist = stub.conflist(cniVersion=version)
    stub.run("add", conflist)
    assert stub.run("del", conflist).status == 0
    (chained_add,) = stub.calls("ADD", "portmap")
    assert "prevResult" in chained_add["config"]  # ADD chains results from 0.3.0 on
    assert ["prevResult" in call["config"] for call in stub.calls("DEL")] == [del_gets_it] * 2


def test_del_with_an_unreadable_cache_still_deletes(stub: StubRuntime) -> None:
    conflist = stub.conflist()
    stub.run("add", conflist, CAP_ARGS=CAP_ARGS)
    stub.cache_file().write_text("garbage")
    checked = stub.run("check", conflist)
    assert checked.status == 1 and "is unreadable" in checked.stderr
    assert "`overlayd cni del` removes it" in checked.stderr
    deleted = stub.run("del", conflist)
    assert deleted.status == 0, deleted.stderr
    assert "warning:" in deleted.stderr and "is unreadable" in deleted.stderr
    assert [call["config"]["role"] for call in stub.calls("DEL")] == ["portmap", "main"]
    assert not any("prevResult" in call["config"] for call in stub.calls("DEL"))
    assert list((stub.tmp / "results").iterdir()) == []


def test_plugin_config_keeps_capabilities(stub: StubRuntime) -> None:
    stub.run("add", stub.conflist(), CAP_ARGS=CAP_ARGS)
    (portmap,) = stub.calls("ADD", "portmap")
    assert portmap["config"]["capabilities"] == {"portMappings": True}
    assert portmap["config"]["runtimeConfig"] == {"portMappings": PORT_MAPPINGS}
