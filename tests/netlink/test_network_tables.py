"""Several networks' firewalls on one host, the kube-proxy mark's exemption from masquerading and
the blackhole route, against the real nft, iptables and kernel in namespaces."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network, IPv6Network
from pathlib import Path

import pytest
from nsutil import in_netns

from overlayd.backend.blackhole import METRIC, BlackholeRoute
from overlayd.base.headerfield import HeaderField
from overlayd.netfilter.firewall import Firewall
from overlayd.netfilter.names import LEGACY, names_for_prefix
from overlayd.netfilter.rules import FirewallSpec, IngressGuard

RED = FirewallSpec(IPv4Network("198.18.0.0/16"), IPv4Network("198.18.5.0/24"), ip_masq=True,
                   forward_rules=True)
BLUE = FirewallSpec(IPv4Network("198.19.0.0/16"), IPv4Network("198.19.9.0/24"), ip_masq=True,
                    forward_rules=True)
BLUE_PREFIX = "/example.net/blue"
BLUE_DUAL = replace(BLUE, ipv6_network=IPv6Network("2001:db8:19::/48"),
                    ipv6_own_subnet=IPv6Network("2001:db8:19:9::/64"))


def sh(command: str) -> str:
    return subprocess.run(command, shell=True, capture_output=True, text=True, check=False).stdout


def test_names_are_stable_distinct_and_fit_the_limits() -> None:
    assert names_for_prefix("/coreos.com/network") == LEGACY == names_for_prefix("/coreos.com/network/")
    blue = names_for_prefix(BLUE_PREFIX)
    assert blue == names_for_prefix(BLUE_PREFIX + "/")
    assert blue.table.startswith("overlayd_example_net_blue_")
    assert blue.forward_chain.startswith("OVERLAYD-FWD-")
    assert names_for_prefix("/a.b") != names_for_prefix("/a_b"), "alike to read, still distinct"
    for prefix in ("/", "/" + "x" * 500, "/ünï/cödé", BLUE_PREFIX):
        names = names_for_prefix(prefix)
        assert len(names.forward_chain) <= 28 and len(names.table) <= 255
        assert names.table.replace("_", "").isalnum() and names.table.isascii()


def two_networks_steps() -> dict[str, object]:
    red, blue = Firewall(LEGACY), Firewall(names_for_prefix(BLUE_PREFIX))
    steps: dict[str, object] = {"first": (red.ensure(RED), blue.ensure(BLUE))}
    steps["passes"] = [(red.ensure(RED), blue.ensure(BLUE)) for _ in range(3)]
    steps["red table"] = sh("nft list table ip overlayd")
    steps["blue table"] = sh(f"nft list table ip {names_for_prefix(BLUE_PREFIX).table}")
    steps["iptables"] = sh("iptables -S")
    blue.remove()
    steps["after blue removed"] = (sh("nft list tables"), sh("iptables -S"), red.ensure(RED))
    red.remove()
    return steps


@pytest.mark.root
def test_two_networks_keep_their_own_tables_without_flapping(netns: str) -> None:
    steps = in_netns(netns, two_networks_steps)
    blue = names_for_prefix(BLUE_PREFIX)
    assert steps["first"] == (True, True)
    assert steps["passes"] == [(False, False)] * 3, "neither rewrites the other's table"
    assert "198.18.0.0/16" in steps["red table"] and "198.19.0.0/16" not in steps["red table"]
    assert "198.19.0.0/16" in steps["blue table"] and "198.18.0.0/16" not in steps["blue table"]
    assert "-A OVERLAYD-FWD -s 198.18.0.0/16 -j ACCEPT" in steps["iptables"]
    assert f"-A {blue.forward_chain} -s 198.19.0.0/16 -j ACCEPT" in steps["iptables"]
    tables, iptables, red_changed = steps["after blue removed"]
    assert "table ip overlayd" in tables and blue.table not in tables
    assert "-N OVERLAYD-FWD" in iptables and blue.forward_chain not in iptables
    assert red_changed is False, "removing one network's rules leaves the other's as they were"


def migration_steps() -> dict[str, object]:
    Firewall(LEGACY).ensure(BLUE)  # what an earlier release wrote for the blue network
    steps: dict[str, object] = {"changed": Firewall(names_for_prefix(BLUE_PREFIX)).ensure(BLUE)}
    steps["tables"], steps["iptables"] = sh("nft list tables"), sh("iptables -S")
    Firewall(LEGACY).ensure(RED)  # the default network's own table: another network's agent leaves it
    steps["restart"] = Firewall(names_for_prefix(BLUE_PREFIX)).ensure(BLUE)
    steps["red kept"] = sh("nft list table ip overlayd")
    return steps


@pytest.mark.root
def test_an_upgraded_agent_removes_the_single_table_it_wrote_before(netns: str) -> None:
    steps = in_netns(netns, migration_steps)
    blue = names_for_prefix(BLUE_PREFIX)
    assert steps["changed"] is True
    assert f"table ip {blue.table}\n" in steps["tables"] and "table ip overlayd\n" not in steps["tables"]
    assert "OVERLAYD-FWD " not in steps["iptables"] + " " and "-N OVERLAYD-FWD\n" not in steps["iptables"]
    assert f"-A {blue.forward_chain} -d 198.19.0.0/16 -j ACCEPT" in steps["iptables"]
    assert steps["restart"] is False
    assert "198.18.0.0/16" in steps["red kept"], "another network's legacy table is not ours to delete"


def receive_counters() -> None:
    """Count, before any routing decision, UDP to port 9999 by source address."""
    sh("nft add table ip probe "
       "&& nft add chain ip probe pre '{ type filter hook prerouting priority -300; }' "
       "&& nft add rule ip probe pre ip saddr 192.0.2.1 udp dport 9999 counter "
       "&& nft add rule ip probe pre ip saddr 198.18.5.1 udp dport 9999 counter")


def send_marked_and_unmarked() -> None:
    Firewall(LEGACY).ensure(RED)
    sh("ip addr add 198.18.5.1/32 dev lo && ip link set lo up")
    for mark, sport in ((0, 40001), (0x4000, 40002), (0x4000 | 0x1, 40003)):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
            sock.bind(("198.18.5.1", sport))
            sock.sendto(b"x", ("192.0.2.2", 9999))


def counters() -> dict[str, int]:
    found = {}
    for line in sh("nft list chain ip probe pre").splitlines():
        if "counter packets" in line:
            source = line.split("ip saddr ")[1].split()[0]
            found[source] = int(line.split("counter packets ")[1].split()[0])
    return found


@pytest.mark.root
def test_packets_kube_proxy_marked_are_not_masqueraded(netns_pair: tuple[str, str]) -> None:
    sender, receiver = netns_pair
    in_netns(receiver, receive_counters)
    in_netns(sender, send_marked_and_unmarked)
    for _ in range(50):  # the first packets wait for ARP
        seen = in_netns(receiver, counters)
        if sum(seen.values()) >= 3:
            break
        time.sleep(0.1)
    assert seen == {"192.0.2.1": 1, "198.18.5.1": 2}, "unmarked masqueraded, both marked ones kept"


def blackhole_steps() -> dict[str, object]:
    route, network = BlackholeRoute(), IPv4Network("198.18.0.0/16")
    other_network = BlackholeRoute()  # another network's agent on this host
    steps: dict[str, object] = {"add": route.ensure(network, IPv4Network("198.18.5.0/24"))}
    steps["again"] = route.ensure(network, IPv4Network("198.18.5.0/24"))
    steps["other"] = other_network.ensure(IPv4Network("198.19.0.0/16"), IPv4Network("198.19.9.0/24"))
    sh("ip route del blackhole 198.19.9.0/24 metric 4294967295")  # only to keep the listings short
    steps["listing"] = sh("ip route show type blackhole")
    steps["unassigned"] = subprocess.run("ip route get 198.18.5.7", shell=True, capture_output=True,
                                         text=True, check=False).returncode  # fmt: skip
    sh("ip link add c0 type veth peer name c1 && ip link set c0 up && ip link set c1 up "
       "&& ip addr add 198.18.5.1/24 dev c0")
    steps["bridge wins"] = sh("ip route get 198.18.5.7")
    sh("ip route add blackhole 198.18.7.0/24")  # an operator's: another metric, not ours
    other_network.ensure(IPv4Network("198.19.0.0/16"), IPv4Network("198.19.9.0/24"))
    steps["moved"] = route.ensure(network, IPv4Network("198.18.6.0/24"))
    steps["moved listing"] = sh("ip route show type blackhole")
    steps["off"] = route.ensure(network, None)
    steps["off listing"] = sh("ip route show type blackhole")
    route.close()
    other_network.close()
    return steps


@pytest.mark.root
def test_blackhole_route_for_our_subnet_yields_to_any_container_route(netns: str) -> None:
    steps = in_netns(netns, blackhole_steps)
    assert (steps["add"], steps["again"], steps["other"]) == (True, False, True)
    assert steps["listing"].strip() == f"blackhole 198.18.5.0/24 metric {METRIC}"
    assert steps["unassigned"] != 0, "an address of our subnet that no route takes is dropped"
    assert "dev c0" in steps["bridge wins"]
    assert steps["moved"] is True
    assert [line.strip() for line in steps["moved listing"].splitlines()] == [
        f"blackhole 198.18.6.0/24 metric {METRIC}",
        "blackhole 198.18.7.0/24",
        f"blackhole 198.19.9.0/24 metric {METRIC}",
    ], "the operator's and the other network's are left alone"
    assert steps["off"] is True
    assert [line.strip() for line in steps["off listing"].splitlines()] == [
        "blackhole 198.18.7.0/24", f"blackhole 198.19.9.0/24 metric {METRIC}",
    ]


def ipv6_blackhole_steps() -> dict[str, object]:
    route = BlackholeRoute()
    network4, network6 = IPv4Network("198.18.0.0/16"), IPv6Network("2001:db8:1000::/48")
    steps: dict[str, object] = {"add4": route.ensure(network4, IPv4Network("198.18.5.0/24"))}
    steps["add6"] = route.ensure(network6, IPv6Network("2001:db8:1000:5::/64"))
    steps["again6"] = route.ensure(network6, IPv6Network("2001:db8:1000:5::/64"))
    sh("ip -6 route add blackhole 2001:db8:1000:7::/64")  # an operator's: another metric, not ours
    steps["listing6"] = sh("ip -6 route show type blackhole")
    steps["moved6"] = route.ensure(network6, IPv6Network("2001:db8:1000:6::/64"))
    steps["moved listing6"] = sh("ip -6 route show type blackhole")
    steps["off6"] = route.ensure(network6, None)
    steps["off listing6"] = sh("ip -6 route show type blackhole")
    steps["listing4"] = sh("ip route show type blackhole")  # the IPv4 one untouched by the IPv6 work
    route.close()
    return steps


@pytest.mark.root
def test_an_ipv6_blackhole_route_is_kept_beside_the_ipv4_one(netns: str) -> None:
    steps = in_netns(netns, ipv6_blackhole_steps)
    assert (steps["add4"], steps["add6"], steps["again6"], steps["moved6"], steps["off6"]) == (
        True, True, False, True, True,
    )  # fmt: skip
    lines = lambda key: [line.split(" pref")[0].strip() for line in str(steps[key]).splitlines()]  # noqa: E731
    operators = "blackhole 2001:db8:1000:7::/64 dev lo metric 1024"
    assert lines("listing6") == [f"blackhole 2001:db8:1000:5::/64 dev lo metric {METRIC}", operators]
    assert lines("moved listing6") == [f"blackhole 2001:db8:1000:6::/64 dev lo metric {METRIC}", operators]
    assert lines("off listing6") == [operators]
    assert lines("listing4") == [f"blackhole 198.18.5.0/24 metric {METRIC}"]


def overlayd(netns: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = ["ip", "netns", "exec", netns, sys.executable, "-m", "overlayd", *args]
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=60,
                          env={**os.environ, **(env or {})})  # fmt: skip


def both_networks() -> None:
    """Red IPv4-only under the default prefix, blue dual-stack under its own."""
    Firewall(LEGACY).ensure(RED)
    Firewall(names_for_prefix(BLUE_PREFIX)).ensure(BLUE_DUAL)


@pytest.mark.root
def test_cleanup_removes_one_network_s_table_named_by_its_prefix(netns: str) -> None:
    blue = names_for_prefix(BLUE_PREFIX)
    in_netns(netns, both_networks)
    before = in_netns(netns, lambda: sh("nft list tables"))
    done = overlayd(netns, "cleanup", f"--etcd-prefix={BLUE_PREFIX}")
    assert done.returncode == 0, done.stderr
    assert f"removed nftables table ip {blue.table} and iptables chain {blue.forward_chain}" in done.stdout
    assert f"table ip6 {blue.table} of a dual-stack network" in done.stdout
    tables = in_netns(netns, lambda: sh("nft list tables"))
    assert f"table ip6 {blue.table}\n" in before and "table ip6 overlayd\n" not in before
    assert blue.table not in tables and "table ip overlayd\n" in tables, "the other network's stays"
    in_netns(netns, both_networks)
    done = overlayd(netns, "cleanup", env={"FLANNELD_ETCD_PREFIX": BLUE_PREFIX})  # a flanneld env file's
    assert done.returncode == 0 and blue.table in done.stdout
    done = overlayd(netns, "cleanup")
    assert done.returncode == 0 and "table ip overlayd and iptables chain OVERLAYD-FWD" in done.stdout
    assert "overlayd" not in in_netns(netns, lambda: sh("nft list tables"))


def test_status_names_the_table_of_its_prefix(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "overlayd", "status", "--etcd-endpoints=http://127.0.0.1:9",
               f"--etcd-prefix={BLUE_PREFIX}", f"--subnet-file={tmp_path}/subnet.env",
               "--metrics-address=off"]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)
    blue = names_for_prefix(BLUE_PREFIX)
    assert f"firewall    nftables table ip {blue.table}, iptables chain {blue.forward_chain}" in done.stdout
    (tmp_path / "subnet.env").write_text("FLANNEL_NETWORK=198.19.0.0/16\nFLANNEL_SUBNET=198.19.9.1/24\n"
                                         "FLANNEL_IPV6_NETWORK=2001:db8:19::/48\n"
                                         "FLANNEL_IPV6_SUBNET=2001:db8:19:9::1/64\n")
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)
    assert f"nftables table ip {blue.table}, ip6 {blue.table}, iptables chain" in done.stdout, done.stdout


def vxlan_packet(vni: int) -> bytes:
    """A VXLAN header (flags: VNI present) and a few bytes of inner frame."""
    return bytes([0x08, 0, 0, 0]) + vni.to_bytes(3, "big") + b"\0" + b"\0" * 14


def shared_port_steps() -> dict[str, object]:
    """Red (VNI 1) and blue (VNI 2) share UDP 8472; 192.0.2.60 is a peer of blue only."""
    guard = {vni: IngressGuard("udp", 8472, "vxlan", HeaderField(96, 24, vni)) for vni in (1, 2)}
    red, blue = Firewall(LEGACY), Firewall(names_for_prefix(BLUE_PREFIX))
    red.ensure(replace(RED, ingress_allowlist=True, ingress=guard[1],
                       ingress_sources=frozenset({IPv4Address("192.0.2.50")})))
    blue.ensure(replace(BLUE, ingress_allowlist=True, ingress=guard[2],
                        ingress_sources=frozenset({IPv4Address("192.0.2.60")})))
    sh("ip link set lo up && ip addr add 192.0.2.60/32 dev lo && ip addr add 192.0.2.70/32 dev lo")
    steps: dict[str, object] = {}
    for source, vni in (("192.0.2.60", 2), ("192.0.2.70", 1)):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((source, 0))
            sock.sendto(vxlan_packet(vni), ("192.0.2.60", 8472))
    steps["red dropped"], steps["blue dropped"] = red.dropped_sources(), blue.dropped_sources()
    return steps


@pytest.mark.root
def test_allowlists_sharing_a_port_judge_only_their_own_network_s_packets(netns: str) -> None:
    steps = in_netns(netns, shared_port_steps)
    assert steps["blue dropped"] == frozenset(), "blue's peer sending blue's VNI passes both tables"
    assert steps["red dropped"] == frozenset({IPv4Address("192.0.2.70")}), "a stranger with red's VNI"
