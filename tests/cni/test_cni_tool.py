"""``overlayd cni``: the deploy conflist (flannel + portmap) run against namespaces."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REFERENCE_PLUGINS, SUBNET_ENV, Node, run_netns

pytestmark = pytest.mark.root

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


def _tool(host: Node, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the helper in the host namespace, as an operator on that host would."""
    assert host.host_ns
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "CNI_PATH": f"{host.plugin_dir}:{REFERENCE_PLUGINS}",
        "CNI_CACHE_DIR": str(host.tmp / "results"),
        "CAP_ARGS": json.dumps({"portMappings": PORT_MAPPINGS}),
    }
    cmd = ["ip", "netns", "exec", host.host_ns, sys.executable, "-m", "overlayd.cni_tool"]
    return subprocess.run([*cmd, *args], env=env, capture_output=True, text=True, timeout=30)


def _nat_rules(host: Node) -> str:
    assert host.host_ns
    return run_netns(["ip", "netns", "exec", host.host_ns, "iptables", "-t", "nat", "-S"]).stdout


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


def test_check_without_a_cached_result_explains(host: Node) -> None:
    checked = _tool(host, "check", host.netns(), "--conflist", str(_conflist(host)))
    assert checked.returncode == 1
    assert "run `overlayd cni add` first" in checked.stderr
