"""Containers on different lab hosts, attached by the installed CNI plugin, reach each other."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from labtools import needs_lab

from overlayd.install_cni import install_cni
from overlayd.lab import Lab, LabHost, sh

pytestmark = [
    needs_lab,
    pytest.mark.root,
    pytest.mark.skipif(not os.path.exists("/usr/lib/cni/bridge"), reason="needs containernetworking-plugins"),
]


def conflist(lab: Lab, host: LabHost) -> Path:
    """deploy/10-flannel.conflist with this host's subnet.env and state kept under the lab dir."""
    shipped = json.loads((Path(__file__).parents[2] / "deploy" / "10-flannel.conflist").read_text())
    flannel = shipped["plugins"][0]
    flannel["subnetFile"] = str(host.subnet_file)
    flannel["dataDir"] = str(Path(host.dir) / "cni-state")
    flannel["ipam"] = {"dataDir": str(Path(host.dir) / "ipam")}
    path = Path(host.dir) / "net.conflist"
    path.write_text(json.dumps(shipped))
    return path


def cni(lab: Lab, host: LabHost, command: str, container_ns: str) -> str:
    """`overlayd cni <command>` run in the host's namespace, as a runtime on that host would."""
    env = {
        **os.environ,
        "CNI_PATH": f"{lab.dir / 'cni-bin'}:/usr/lib/cni",
        "CNI_CACHE_DIR": str(Path(host.dir) / "cni-cache"),
    }
    argv = [sys.executable, "-m", "overlayd", "cni", command, container_ns]
    argv += ["--conflist", str(conflist(lab, host))]
    done = subprocess.run(
        ["ip", "netns", "exec", host.netns, *argv], capture_output=True, text=True, env=env, check=False
    )
    assert done.returncode == 0, f"overlayd cni {command} on {host.name}: {done.stderr}"
    return done.stdout


def test_containers_on_two_hosts_ping_across_the_overlay(lab: Lab) -> None:
    install_cni(lab.dir / "cni-bin")
    h1, h2 = lab.hosts[0], lab.hosts[1]
    containers = {h1.name: f"{lab.name}-c1", h2.name: f"{lab.name}-c2"}
    addresses = {}
    for host in (h1, h2):
        sh("ip", "netns", "add", containers[host.name])
        result = json.loads(cni(lab, host, "add", containers[host.name]))
        address = result["ips"][0]["address"].split("/")[0]
        subnet = host.subnet_env()["FLANNEL_SUBNET"]
        assert address.rsplit(".", 1)[0] == subnet.rsplit(".", 1)[0], "IP not from the host's subnet"
        addresses[host.name] = address
    ping = ["ping", "-n", "-q", "-c", "3", "-W", "1", addresses[h2.name]]
    done = subprocess.run(["ip", "netns", "exec", containers[h1.name], *ping], capture_output=True, text=True)
    assert done.returncode == 0, f"container on h1 cannot reach container on h2: {done.stdout}"
    for host in (h1, h2):
        cni(lab, host, "del", containers[host.name])
        leftover = [p.name for p in (Path(host.dir) / "ipam").rglob("*") if p.name[0].isdigit()]
        assert not leftover, f"IP allocations left on {host.name} after DEL: {leftover}"
        sh("ip", "netns", "del", containers[host.name])
