"""Containers on different lab hosts, attached by the installed CNI plugin, reach each other."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path

import pytest
from labtools import needs_lab, wait_for

from overlayd.lab.namespaces import Lab, lab_namespaces, random_lab_name
from overlayd.lab.traffic import TcpProbe

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


_LISTEN = """
import socket, sys
server = socket.create_server((sys.argv[1], 5302))
server.settimeout(10)
print(server.accept()[1][0], flush=True)
"""
_CONNECT = """
import socket, sys, time
for _ in range(50):
    try:
        socket.create_connection((sys.argv[1], 5302), 2).close()
        break
    except ConnectionRefusedError:
        time.sleep(0.1)
"""


def _source_seen(server_ns: str, server_ip: str, client_ns: str) -> str:
    """The source address a TCP listener at ``server_ip`` sees for a connection from ``client_ns``."""
    server = subprocess.Popen(["ip", "netns", "exec", server_ns, sys.executable, "-c", _LISTEN, server_ip],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        client = ["ip", "netns", "exec", client_ns, sys.executable, "-c", _CONNECT, server_ip]
        subprocess.run(client, check=True, timeout=30)
        seen, _ = server.communicate(timeout=15)
    finally:
        server.kill()
        server.wait()
    return seen.strip()


def test_ip_masq_keeps_overlay_sources_and_masquerades_the_rest(lab: Lab) -> None:
    """With --ip-masq (issue 6's recommended settings) a container's traffic to another container
    keeps its own source address; traffic leaving the overlay gets the host's underlay address."""
    h1 = lab.hosts[0]
    masq_host = lab.add_host(agent_args=["--ip-masq"])
    lab.wait_converged(timeout=60)
    mine = lab.add_container(masq_host, "masq")
    other = lab.add_container(h1, "target")
    try:
        assert _source_seen(lab.container_ns("target"), other, lab.container_ns("masq")) == mine
        assert _source_seen(h1.netns, h1.ip, lab.container_ns("masq")) == masq_host.ip
    finally:
        lab.del_container(masq_host, "masq")
        lab.del_container(h1, "target")


def test_lab_up_attaches_two_containers_per_host_that_all_reach_each_other(tmp_path: Path) -> None:
    """The demo's path: `overlayd lab up --ping` with 3 hosts, 2 containers each; then TCP across
    hosts, and a container DEL that frees its IP."""
    name, root = random_lab_name(), tmp_path / "labs"
    overlayd = [sys.executable, "-m", "overlayd", "lab"]
    where = ["--name", name, "--root", str(root)]
    try:
        up = subprocess.run([*overlayd, "up", *where, "--hosts", "3", "--ping"],
                            capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
        assert up.returncode == 0, up.stdout + up.stderr
        table = up.stdout.split("ping between containers", 1)[1]
        rows = [line for line in table.splitlines() if re.fullmatch(r"h\dc\d", line.split(" ", 1)[0])]
        assert len(rows) == 6 and "FAIL" not in table, table
        assert all(row.split()[1:].count("ok") == 5 for row in rows), table

        lab = Lab.load(name, root)
        assert lab is not None
        h1, h3 = lab.hosts[0], lab.hosts[2]
        server_ip = h3.containers["h3c1"]
        client, server = lab.container_ns("h1c1"), lab.container_ns("h3c1")
        tcp = TcpProbe(client, server, server_ip, 3, tmp_path / "tcp.json")
        stats = tcp.start().wait()
        assert not stats.error and stats.bytes_received > 0, stats

        freed = h1.containers["h1c2"]
        lab.del_container(h1, "h1c2")
        allocated = {p.name for p in (Path(h1.dir) / "ipam").rglob("*") if p.name[0].isdigit()}
        assert freed not in allocated and h1.containers.keys() == {"h1c1"}
    finally:
        down = subprocess.run([*overlayd, "down", *where], capture_output=True, text=True, timeout=120)
        assert down.returncode == 0, down.stderr
        assert not lab_namespaces(name), "lab down left namespaces behind"


def test_lab_up_leaves_a_running_lab_alone_and_clears_a_dead_ones_leftovers(tmp_path: Path) -> None:
    """A second `lab up` under a running lab's name changes nothing and exits 3; once the lab's
    processes are gone (a crashed run), `lab up` removes its leftovers and builds it anew."""
    name, root = random_lab_name(), tmp_path / "labs"
    overlayd = [sys.executable, "-m", "overlayd", "lab"]
    up = [*overlayd, "up", "--name", name, "--root", str(root), "--hosts", "1", "--containers", "0"]
    try:
        first = subprocess.run(up, capture_output=True, text=True, timeout=120, check=False)
        assert first.returncode == 0, first.stdout + first.stderr
        lab = Lab.load(name, root)
        assert lab is not None
        before = lab.running_pids()
        assert lab.hosts[0].pid in before and lab.etcd_pids[0] in before

        again = subprocess.run(up, capture_output=True, text=True, timeout=60, check=False)
        assert again.returncode == 3, again.stdout + again.stderr
        assert f"lab {name} is running" in again.stderr and f"lab down --name {name}" in again.stderr
        assert Lab.load(name, root) == lab and lab.running_pids() == before

        for pid in before:  # the run that owned the lab crashed and took its processes with it
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not lab.running_pids(), 10, "the killed lab's processes to be gone")
        rebuilt = subprocess.run(up, capture_output=True, text=True, timeout=120, check=False)
        assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
        assert f"lab {name}: removed what an earlier run left behind" in rebuilt.stdout
        fresh = Lab.load(name, root)
        assert fresh is not None and fresh.hosts[0].pid not in before
        assert fresh.hosts[0].pid in fresh.running_pids()
    finally:
        down = [*overlayd, "down", "--name", name, "--root", str(root)]
        subprocess.run(down, capture_output=True, timeout=120, check=False)
        assert not lab_namespaces(name), "lab down left namespaces behind"
