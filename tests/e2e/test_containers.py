"""Containers on different lab hosts, attached by the installed CNI plugin, reach each other."""

from __future__ import annotations

import os
import subprocess
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path

import pytest
from labtools import needs_lab

from overlayd.lab import Lab

pytestmark = [
    needs_lab,
    pytest.mark.root,
    pytest.mark.skipif(not os.path.exists("/usr/lib/cni/bridge"), reason="needs containernetworking-plugins"),
]


def test_containers_on_two_hosts_ping_across_the_overlay(lab: Lab) -> None:
    h1, h2 = lab.hosts[0], lab.hosts[1]
    names = {h1.name: "c1", h2.name: "c2"}
    addresses = {}
    for host in (h1, h2):
        address = lab.add_container(host, names[host.name])
        subnet = IPv4Interface(host.subnet_env()["FLANNEL_SUBNET"]).network
        assert IPv4Address(address) in subnet, f"IP {address} not from {host.name}'s subnet {subnet}"
        addresses[host.name] = address
    ping = ["ping", "-n", "-q", "-c", "3", "-W", "1", addresses[h2.name]]
    c1 = lab.container_ns(names[h1.name])
    done = subprocess.run(["ip", "netns", "exec", c1, *ping], capture_output=True, text=True)
    assert done.returncode == 0, f"container on h1 cannot reach container on h2: {done.stdout}"
    for host in (h1, h2):
        lab.del_container(host, names[host.name])
        leftover = [p.name for p in (Path(host.dir) / "ipam").rglob("*") if p.name[0].isdigit()]
        assert not leftover, f"IP allocations left on {host.name} after DEL: {leftover}"
