"""The udp backend in the lab: a network config without Backend, as flanneld reads it, runs udp.

Three hosts, a container on each, real agents and forwarders: flanneld's device, route, MTU and
lease value; all-pairs pings; repair of a deleted flannel0, of drifted kernel state and of a killed
forwarder; a peer gone is no longer forwarded to; an agent SIGKILL and restart loses no ping;
a bad lease is named and ignored; a datagram from a non-peer is not injected; a taken port and a
foreign ``flannel0`` are named, and the host joins once they are gone.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network

import pytest
from labtools import log_mark, log_since, needs_lab, running_lab, wait_for

from overlayd.lab.hosts import LAB_NETWORK
from overlayd.lab.namespaces import ETCD_PREFIX, Lab, LabHost, sh
from overlayd.lab.traffic import PingProbe

pytestmark = [needs_lab, pytest.mark.root]

NO_BACKEND = json.dumps({"Network": LAB_NETWORK})
NOTICE = "names no Backend.Type: running the udp backend, as flanneld does"
FIX = 'add "Backend": {"Type": "vxlan"} to the config'
INTRUDER_IP = "192.0.2.250"
FAKE_SUBNET = "198.18.250.0/24"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    # No data path probes: the forwarder's counters are compared exactly, and probes are packets too.
    quiet = ("--probe-rate=0",)
    with running_lab(tmp_path_factory, hosts=3, agent_args=quiet, network_config=NO_BACKEND) as lab:
        for host in lab.hosts:
            lab.add_container(host, f"{host.name}c1")
        yield lab


def forwarder(host: LabHost, op: str = "hello") -> dict:
    """The answer of ``host``'s forwarder to ``op``, asked over its control socket."""
    code = ("import json, sys; from overlayd.backend.udp.control import request; "
            "print(json.dumps(request('flannel0', {'op': sys.argv[1]})))")  # fmt: skip
    return json.loads(sh(sys.executable, "-c", code, op, netns=host.netns)) or {}


def peer_table(host: LabHost) -> dict[IPv4Network, str]:
    rows = forwarder(host, "table").get("table", [])
    return {IPv4Network((network, prefixlen)): ip for network, prefixlen, ip in rows}


def subnet_of(host: LabHost) -> IPv4Network:
    return IPv4Network(host.subnet_env()["FLANNEL_SUBNET"], strict=False)


def container_ip(host: LabHost) -> str:
    return host.containers[f"{host.name}c1"]


def container_ping(lab: Lab, source: LabHost, target: LabHost, count: int = 1) -> bool:
    out = sh("ping", "-c", str(count), "-i", "0.2", "-W", "1", container_ip(target),
             netns=lab.container_ns(f"{source.name}c1"), check=False)  # fmt: skip
    return f"{count} received" in out


def flannel0(host: LabHost) -> dict:
    listing = sh("ip", "-j", "-d", "addr", "show", "flannel0", netns=host.netns, check=False)
    return json.loads(listing or "[{}]")[0]


def device_ok(host: LabHost) -> bool:
    """flannel0 as flanneld sets it up: up, MTU 1500 - 28, <subnet>.0/32, the Network routed into it."""
    link = flannel0(host)
    addresses = {(a["local"], a["prefixlen"]) for a in link.get("addr_info", []) if a.get("family") == "inet"}
    listing = sh("ip", "-j", "route", "show", "dev", "flannel0", netns=host.netns, check=False)
    routes = json.loads(listing or "[]")
    return (
        "UP" in link.get("flags", [])
        and link.get("mtu") == 1472
        and addresses == {(str(subnet_of(host).network_address), 32)}
        and [route.get("dst") for route in routes] == [LAB_NETWORK]
    )


def test_no_backend_runs_udp_as_flanneld_does_and_says_so_once(lab: Lab) -> None:
    for host in lab.hosts:
        notices = [line for line in host.log_file.read_text().splitlines() if NOTICE in line]
        assert len(notices) == 1 and FIX in notices[0], notices
        assert flannel0(host)["linkinfo"]["info_kind"] == "tun"
        assert device_ok(host), flannel0(host)
        assert host.subnet_env()["FLANNEL_MTU"] == "1472"
        key = str(subnet_of(host)).replace("/", "-")
        value = lab.etcd().etcdctl("get", "--print-value-only", f"{ETCD_PREFIX}/subnets/{key}").strip()
        assert value == json.dumps({"PublicIP": host.ip, "PublicIPv6": None}, separators=(",", ":"))
        others = {subnet_of(peer): peer.ip for peer in lab.hosts if peer is not host}
        assert peer_table(host) == others


def test_all_pairs_of_containers_and_hosts_ping(lab: Lab) -> None:
    table, ok = lab.container_ping_table()
    assert ok, table
    table, ok = lab.ping_table()
    assert ok, table


def test_deleted_flannel0_is_made_again_and_configured(lab: Lab) -> None:
    h1, h2 = lab.hosts[:2]
    pid = forwarder(h1)["pid"]
    sh("ip", "link", "del", "flannel0", netns=h1.netns)
    wait_for(lambda: device_ok(h1), 10, "flannel0 on h1 to be made and configured again")
    assert forwarder(h1)["pid"] == pid and forwarder(h1)["counters"]["reopened"] >= 1
    wait_for(lambda: container_ping(lab, h1, h2), 10, "h1c1 to reach h2c1 again")


def test_drifted_address_route_and_mtu_are_repaired(lab: Lab) -> None:
    h1 = lab.hosts[0]
    sh("ip", "route", "del", LAB_NETWORK, "dev", "flannel0", netns=h1.netns)
    sh("ip", "addr", "add", "198.18.254.254/32", "dev", "flannel0", netns=h1.netns)
    sh("ip", "link", "set", "flannel0", "mtu", "1300", netns=h1.netns)
    wait_for(lambda: device_ok(h1), 10, "h1's flannel0 to be repaired")


def test_a_killed_forwarder_is_started_again(lab: Lab) -> None:
    h1, h3 = lab.hosts[0], lab.hosts[2]
    old = forwarder(h1)["pid"]
    sh("kill", "-9", str(old))
    wait_for(lambda: forwarder(h1).get("pid") not in (None, old), 15, "a new forwarder on h1")
    wait_for(lambda: device_ok(h1) and len(peer_table(h1)) == 2, 10, "h1's device and peer table back")
    wait_for(lambda: container_ping(lab, h3, h1), 10, "h3c1 to reach h1c1 again")


def put_lease(lab: Lab, subnet: str, value: str) -> str:
    key = f"{ETCD_PREFIX}/subnets/{subnet.replace('/', '-')}"
    lab.etcd().etcdctl("put", key, value)
    return key


def test_a_peer_gone_is_no_longer_forwarded_to(lab: Lab) -> None:
    h1 = lab.hosts[0]
    key = put_lease(lab, FAKE_SUBNET, json.dumps({"PublicIP": "192.0.2.99", "PublicIPv6": None}))
    try:
        wait_for(lambda: IPv4Network(FAKE_SUBNET) in peer_table(h1), 10, "the fake peer in h1's table")
    finally:
        lab.etcd().etcdctl("del", key)
    wait_for(lambda: IPv4Network(FAKE_SUBNET) not in peer_table(h1), 15, "the fake peer gone from h1's table")
    sent = forwarder(h1)["counters"]["unreachable"]
    target = str(IPv4Network(FAKE_SUBNET).network_address + 1)
    out = sh("ping", "-c", "1", "-W", "1", target, netns=lab.container_ns("h1c1"), check=False)
    assert "Net Unreachable" in out, out  # the forwarder's ICMP, as flanneld's proxy answers
    assert forwarder(h1)["counters"]["unreachable"] > sent


def test_agent_sigkill_and_restart_lose_no_ping(lab: Lab) -> None:
    h1, h2 = lab.hosts[:2]
    pid = forwarder(h1)["pid"]
    mark = log_mark(h1)
    with PingProbe(lab.container_ns("h1c1"), container_ip(h2), lab.dir / "udp-restart.ping", 0.05) as ping:
        wait_for(lambda: ping.stats().received >= 10, 10, "pings flowing")
        lab.stop_agent(h1, signal.SIGKILL)
        wait_for(lambda: ping.stats().received >= 30, 10, "pings flowing with no agent")
        lab.start_agent(h1)
        wait_for(lambda: "holding subnet" in log_since(h1, mark), 30, "the restarted agent to hold its lease")
        lab.wait_converged(timeout=30)
        wait_for(lambda: ping.stats().received >= 80, 10, "pings after the restart")
        stats = ping.stop()
    assert stats.received and stats.lost == 0, f"pings lost across the agent restart: {stats}"
    assert forwarder(h1)["pid"] == pid, "the restarted agent must re-attach to the running forwarder"
    assert "started the forwarder" not in log_since(h1, mark)


def test_a_bad_lease_is_named_and_ignored(lab: Lab) -> None:
    h1, h2 = lab.hosts[:2]
    mark = log_mark(h1)
    key = put_lease(lab, FAKE_SUBNET, json.dumps({"PublicIP": "192.0.2.300", "PublicIPv6": None}))
    try:
        wait_for(lambda: "198.18.250.0-24" in log_since(h1, mark) and "192.0.2.300" in log_since(h1, mark),
                 10, "h1 to name the bad lease")  # fmt: skip
        assert IPv4Network(FAKE_SUBNET) not in peer_table(h1)
        assert len(peer_table(h1)) == 2 and container_ping(lab, h1, h2)
    finally:
        lab.etcd().etcdctl("del", key)


def send_datagram(netns: str, target: LabHost, inner_dst: str) -> None:
    """One udp-backend datagram (an ICMP echo from 198.19.250.1 to ``inner_dst``) from ``netns``."""
    code = (
        "import socket, struct, sys\n"
        "src, dst = socket.inet_aton('198.19.250.1'), socket.inet_aton(sys.argv[2])\n"
        "icmp = struct.pack('!BBHHH', 8, 0, 0, 1, 1) + b'x' * 8\n"
        "ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(icmp), 0, 0, 64, 1, 0, src, dst)\n"
        "socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(ip + icmp, (sys.argv[1], 8285))\n"
    )
    sh(sys.executable, "-c", code, target.ip, inner_dst, netns=netns)


def test_a_datagram_from_a_non_peer_is_not_injected(lab: Lab) -> None:
    h1, h2 = lab.hosts[:2]
    intruder = f"{lab.name}-intruder"
    lab._make_node(intruder, "intruder", IPv4Address(INTRUDER_IP))
    mark = log_mark(h1)
    before = forwarder(h1)["counters"]["from_peers"]
    for _ in range(3):
        send_datagram(intruder, h1, container_ip(h1))
    wait_for(lambda: INTRUDER_IP in log_since(h1, mark), 20, "h1 to name the dropped source")
    assert forwarder(h1)["counters"]["from_peers"] == before, "a non-peer's datagram reached flannel0"
    # The same datagram from a peer's address is injected: the check above can fail.
    send_datagram(h2.netns, h1, container_ip(h1))
    wait_for(lambda: forwarder(h1)["counters"]["from_peers"] > before, 5, "a peer's datagram to be injected")


def started_alone(lab: Lab) -> LabHost:
    """One more host, its agent not started yet."""
    return lab.add_host(start_agent=False)


def test_a_taken_port_is_named_and_the_host_joins_once_it_is_free(lab: Lab) -> None:
    host = started_alone(lab)
    code = ("import socket, time; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
            f"s.bind(('{host.ip}', 8285)); time.sleep(600)")  # fmt: skip
    blocker = subprocess.Popen(["ip", "netns", "exec", host.netns, sys.executable, "-c", code])
    try:
        time.sleep(0.5)
        lab.start_agent(host)
        wait_for(lambda: f"is UDP port 8285 on {host.ip} taken" in host.log_file.read_text(), 30,
                 "the agent to name the taken port")  # fmt: skip
        assert "Address already in use" in host.log_file.read_text()
    finally:
        blocker.kill()
        blocker.wait()
    wait_for(lambda: device_ok(host), 20, "the host's flannel0 once the port is free")
    lab.add_container(host, f"{host.name}c1")
    wait_for(lambda: container_ping(lab, host, lab.hosts[0]), 20, "the new host's container to reach h1c1")


def test_a_foreign_flannel0_is_named_and_replaced_once_deleted(lab: Lab) -> None:
    host = started_alone(lab)
    sh("ip", "link", "add", "flannel0", "type", "bridge", netns=host.netns)
    lab.start_agent(host)
    wait_for(lambda: "flannel0 exists but is a bridge device" in host.log_file.read_text(), 30,
             "the agent to name the foreign flannel0")  # fmt: skip
    assert "ip link del flannel0" in host.log_file.read_text()
    sh("ip", "link", "del", "flannel0", netns=host.netns)
    wait_for(lambda: device_ok(host), 20, "the agent's own flannel0")


# flanneld's udp data path, as far as a takeover sees it: a process named flanneld holding
# flannel0 and a UDP socket on the port, both non-blocking as its C proxy leaves them,
# forwarding in flanneld's wire format (our forwarder's loops, which speak it).
STAND_IN = """
import ctypes, json, os, sys, threading, time
from overlayd.backend.udp.forwarder import Forwarder
ctypes.CDLL(None).prctl(15, b"flanneld", 0, 0, 0)
ip, subnet, network, table = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
proxy = Forwarder("flannel0", ip, 8285)
os.set_blocking(proxy.tun, False)
proxy.sock.setblocking(False)
proxy.handle({"op": "subnet", "subnet": subnet, "network": network})
proxy.peers.update(table, [])
for loop in (proxy.tun_to_udp, proxy.udp_to_tun):
    threading.Thread(target=loop, daemon=True).start()
print("ready", flush=True)
time.sleep(3600)
"""


def test_a_node_is_taken_over_from_flanneld_without_a_lost_ping(lab: Lab) -> None:
    h1 = lab.hosts[0]
    host = started_alone(lab)
    subnet = IPv4Network("198.18.241.0/24")
    peers = [peer for peer in lab.hosts if peer.pid]
    table = [[int(subnet_of(p).network_address), 24, p.ip] for p in peers]
    etcd_lease = lab.etcd().etcdctl("lease", "grant", "600").split()[1]
    key = f"{ETCD_PREFIX}/subnets/198.18.241.0-24"
    value = json.dumps({"PublicIP": host.ip, "PublicIPv6": None}, separators=(",", ":"))
    lab.etcd().etcdctl("put", "--lease", etcd_lease, key, value)
    flanneld = subprocess.Popen(
        ["ip", "netns", "exec", host.netns, sys.executable, "-c", STAND_IN, host.ip, str(subnet), LAB_NETWORK,
         json.dumps(table)], stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert flanneld.stdout is not None and flanneld.stdout.readline() == b"ready\n"
        for args in (("addr", "add", "198.18.241.0/32", "dev", "flannel0"),
                     ("link", "set", "flannel0", "mtu", "1472", "up"),
                     ("route", "add", LAB_NETWORK, "dev", "flannel0")):  # fmt: skip
            sh("ip", *args, netns=host.netns)
        wait_for(lambda: subnet in peer_table(h1), 15, "h1 forwarding to the flanneld node")
        with PingProbe(lab.container_ns("h1c1"), "198.18.241.0", lab.dir / "udp-takeover.ping", 0.05) as ping:
            wait_for(lambda: ping.stats().received >= 10, 10, "pings reaching the flanneld node")
            lab.start_agent(host)
            wait_for(lambda: forwarder(host).get("adopted_from") == flanneld.pid, 30,
                     "overlayd's forwarder to take flannel0 over from flanneld")  # fmt: skip
            wait_for(lambda: len(peer_table(host)) == len(peers) and device_ok(host), 30,
                     "the agent to program its forwarder")  # fmt: skip
            flanneld.terminate()
            flanneld.wait(10)
            seen = ping.stats().received
            wait_for(lambda: ping.stats().received >= seen + 40, 10, "pings after flanneld stopped")
            stats = ping.stop()
        assert stats.lost == 0, f"pings lost in the takeover: {stats}"
        assert "holding subnet 198.18.241.0/24" in host.log_file.read_text()
        assert forwarder(host)["counters"]["from_peers"] > 0
    finally:
        if flanneld.poll() is None:
            flanneld.kill()
            flanneld.wait()
