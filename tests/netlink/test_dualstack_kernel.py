"""A dual-stack VXLAN host against a real kernel: flannel-v6.<VNI> beside flannel.<VNI>, each
family's peer entries on its own device, read back and repaired as one plane, the ip6 table of
the firewall beside the ip one, and the IPv6 device gone when the network is IPv4-only again."""

from __future__ import annotations

import json
import subprocess
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from pathlib import Path

import pytest
from nsutil import in_netns, run

from overlayd.backend.api import HostFacts
from overlayd.backend.desired import DesiredEntries
from overlayd.backend.plane import PlaneDiff, diff_planes
from overlayd.backend.select import CONFIG_PARSERS, backend_for
from overlayd.netfilter.firewall import Firewall
from overlayd.netfilter.rules import FirewallSpec, IngressGuard
from overlayd.subnet.config import parse_network_config
from overlayd.subnet.lease import Lease, LeaseAttrs

pytestmark = pytest.mark.root

DUAL = parse_network_config(
    json.dumps({"Network": "198.18.0.0/16", "EnableIPv6": True, "IPv6Network": "2001:db8:1000::/48",
                "Backend": {"Type": "vxlan", "VNI": 3}}),
    backends=CONFIG_PARSERS,
)  # fmt: skip
PEER = Lease(
    IPv4Network("198.18.7.0/24"),
    LeaseAttrs(
        IPv4Address("192.0.2.7"),
        "vxlan",
        3,
        "0a:00:00:00:00:07",
        public_ipv6=IPv6Address("2001:db8::7"),
        vtep_mac_v6="0a:00:00:00:06:07",
    ),
    ipv6_subnet=IPv6Network("2001:db8:1000:7::/64"),
)


def host(state_dir: Path) -> HostFacts:
    address, address6 = IPv4Address("192.0.2.1"), IPv6Address("2001:db8::1")
    return HostFacts(address, "u0", address, 1500, (IPv4Network("192.0.2.0/24"),), state_dir,
                     address6, address6, (IPv6Network("2001:db8::/64"),))  # fmt: skip


def dual_stack_steps(state_dir: Path) -> dict[str, object]:
    run("ip", "-6", "addr", "add", "2001:db8::1/64", "dev", "u0", "nodad")
    backend = backend_for("vxlan")
    steps: dict[str, object] = {}
    try:
        attrs = backend.lease_data(DUAL, host(state_dir))
        own = Lease(IPv4Network("198.18.1.0/24"), attrs, ipv6_subnet=IPv6Network("2001:db8:1000:1::/64"))
        device, actions = backend.ensure(DUAL, own, host(state_dir))
        steps |= {"attrs": attrs, "device": device, "actions": actions, "names": backend.device_names(DUAL),
                  "mtu": backend.container_mtu(DUAL, 1500)}  # fmt: skip
        desired = DesiredEntries(ipv6=True)
        desired.set_peer(PEER.key, PEER)
        backend.apply(device, PlaneDiff(add=desired.plane()))
        steps["read"] = backend.read_entries(device, DUAL.network)
        steps["same object"] = backend.read_entries(device, DUAL.network) is steps["read"]
        steps["links"] = run("ip", "-d", "-j", "link", "show", "flannel-v6.3").stdout
        steps["addresses6"] = run("ip", "-6", "-j", "addr", "show", "dev", "flannel-v6.3").stdout
        steps["neigh6"] = run("ip", "-6", "neigh", "show", "dev", "flannel-v6.3").stdout
        steps["fdb6"] = run("bridge", "fdb", "show", "dev", "flannel-v6.3").stdout
        steps["routes6"] = run("ip", "-6", "route", "show", "dev", "flannel-v6.3").stdout
        # Someone deletes the IPv6 route and neighbour: the diff brings them back on that device.
        run("ip", "-6", "route", "del", "2001:db8:1000:7::/64", "dev", "flannel-v6.3")
        run("ip", "-6", "neigh", "del", "2001:db8:1000:7::", "dev", "flannel-v6.3")
        repair = diff_planes(desired.plane(), backend.read_entries(device, DUAL.network))
        steps["repair"] = repair
        backend.apply(device, repair)
        steps["repaired"] = backend.read_entries(device, DUAL.network) == desired.plane()
        # IPv4-only again: the IPv6 device goes, the IPv4 one stays.
        ipv4_only = replace(DUAL, ipv6=None)
        _, steps["ipv4-only actions"] = backend.ensure(
            ipv4_only, replace(own, ipv6_subnet=None), host(state_dir)
        )
        steps["links after"] = run("ip", "-j", "link", "show").stdout
    finally:
        backend.close()
    return steps


def test_the_ipv6_device_and_entries_beside_the_ipv4_ones(netns: str, tmp_path: Path) -> None:
    steps = in_netns(netns, dual_stack_steps, tmp_path)
    attrs, device = steps["attrs"], steps["device"]
    mac6 = (tmp_path / "vtep-mac-v6-3").read_text().strip()
    assert attrs.public_ipv6 == IPv6Address("2001:db8::1") and attrs.vtep_mac_v6 == mac6 != attrs.vtep_mac
    assert steps["names"] == ("flannel.3", "flannel-v6.3") and steps["mtu"] == 1430
    assert device.ipv6_ifindex and "created flannel-v6.3" in steps["actions"]
    [link] = json.loads(steps["links"])
    info = link["linkinfo"]["info_data"]
    assert (info["id"], info["local6"], info["port"], link["address"], link["mtu"]) == (
        3,
        "2001:db8::1",
        8472,
        mac6,
        1430,
    )
    global_addresses = [a["local"] for a in json.loads(steps["addresses6"])[0]["addr_info"]
                        if a["scope"] == "global"]  # fmt: skip
    assert global_addresses == ["2001:db8:1000:1::"]
    assert "2001:db8:1000:7:: lladdr 0a:00:00:00:06:07 PERMANENT" in steps["neigh6"]
    assert "0a:00:00:00:06:07 dst 2001:db8::7 self permanent" in steps["fdb6"]
    assert "2001:db8:1000:7::/64 via 2001:db8:1000:7:: metric 1024 onlink" in steps["routes6"]
    read = steps["read"]
    assert len(read) == 6 and steps["same object"]
    assert {route.dst for route in read.routes} == {PEER.subnet, PEER.ipv6_subnet}
    repair = steps["repair"]
    assert len(repair.add) == 2 and not repair.remove and steps["repaired"]
    assert "deleted flannel-v6.3 (the network is IPv4-only)" in steps["ipv4-only actions"]
    names = {link["ifname"] for link in json.loads(steps["links after"])}
    assert "flannel.3" in names and "flannel-v6.3" not in names


SPEC = FirewallSpec(
    network=IPv4Network("198.18.0.0/16"), own_subnet=IPv4Network("198.18.5.0/24"), ip_masq=True,
    forward_rules=False, ingress_allowlist=True, ingress=IngressGuard("udp", 8472, "vxlan"),
    ingress_sources=frozenset({IPv4Address("192.0.2.7"), IPv6Address("2001:db8::7")}),
    ipv6_network=IPv6Network("2001:db8:1000::/48"), ipv6_own_subnet=IPv6Network("2001:db8:1000:5::/64"),
)  # fmt: skip


def nft(*argv: str) -> str:
    return subprocess.run(["nft", *argv], capture_output=True, text=True, check=False).stdout


def firewall_steps() -> dict[str, object]:
    firewall = Firewall()
    steps: dict[str, object] = {"first": firewall.ensure(SPEC), "second": firewall.ensure(SPEC)}
    steps["ip"], steps["ip6"] = (
        nft("list", "table", "ip", "overlayd"),
        nft("list", "table", "ip6", "overlayd"),
    )
    firewall.allow_peer(IPv6Address("2001:db8::8"))
    steps["after allow"] = nft("list", "set", "ip6", "overlayd", "vxlan_peers")
    subprocess.run(["nft", "delete", "table", "ip6", "overlayd"], check=True)
    steps["repaired"] = firewall.ensure(SPEC) and "ip6 saddr" in nft("list", "table", "ip6", "overlayd")
    steps["ipv4 only"] = firewall.ensure(replace(SPEC, ipv6_network=None, ipv6_own_subnet=None))
    steps["ip6 after"] = nft("list", "table", "ip6", "overlayd")
    firewall.remove()
    return steps


def test_the_ip6_table_has_the_same_rules_for_the_ipv6_half(netns: str) -> None:
    steps = in_netns(netns, firewall_steps)
    assert (steps["first"], steps["second"]) == (True, False)
    ip6 = steps["ip6"]
    assert "type ipv6_addr" in ip6 and "elements = { 2001:db8::7 }" in ip6
    assert "udp dport 8472 ip6 saddr != @vxlan_peers counter packets 0 bytes 0 drop" in ip6
    assert "ip6 saddr 2001:db8:1000::/48 ip6 daddr != ff00::/8 masquerade fully-random" in ip6
    assert "ip6 saddr != 2001:db8:1000::/48 ip6 daddr 2001:db8:1000:5::/64 return" in ip6
    assert "elements = { 192.0.2.7 }" in steps["ip"] and "2001:db8" not in steps["ip"]
    assert "2001:db8::8" in steps["after allow"]
    assert steps["repaired"] and steps["ipv4 only"] and steps["ip6 after"] == ""


DIRECT = parse_network_config(
    json.dumps({"Network": "198.18.0.0/16", "EnableIPv6": True, "IPv6Network": "2001:db8:1000::/48",
                "Backend": {"Type": "vxlan", "VNI": 3, "DirectRouting": True}}),
    backends=CONFIG_PARSERS,
)  # fmt: skip
NEAR = Lease(
    IPv4Network("198.18.8.0/24"),
    LeaseAttrs(IPv4Address("192.0.2.8"), "vxlan", 3, "0a:00:00:00:00:08",
               public_ipv6=IPv6Address("2001:db8::8"), vtep_mac_v6="0a:00:00:00:06:08"),
    ipv6_subnet=IPv6Network("2001:db8:1000:8::/64"),
)


def direct_routing_steps(state_dir: Path) -> dict[str, object]:
    run("ip", "-6", "addr", "add", "2001:db8::1/64", "dev", "u0", "nodad")
    backend = backend_for("vxlan")
    try:
        attrs = backend.lease_data(DIRECT, host(state_dir))
        own = Lease(IPv4Network("198.18.1.0/24"), attrs, ipv6_subnet=IPv6Network("2001:db8:1000:1::/64"))
        device, _ = backend.ensure(DIRECT, own, host(state_dir))
        desired = DesiredEntries(backend.reached_directly(DIRECT, host(state_dir)), ipv6=True)
        desired.set_peer(NEAR.key, NEAR)
        backend.apply(device, PlaneDiff(add=desired.plane()))
        read = backend.read_entries(device, DIRECT.network)
        return {"wanted": desired.plane(), "read": read,
                "routes6": run("ip", "-6", "route", "show", "dev", "u0").stdout}  # fmt: skip
    finally:
        backend.close()


def test_direct_routing_routes_both_halves_of_a_peer_on_both_segments(netns: str, tmp_path: Path) -> None:
    steps = in_netns(netns, direct_routing_steps, tmp_path)
    wanted = steps["wanted"]
    assert {str(route.dst) for route in wanted.direct} == {"198.18.8.0/24", "2001:db8:1000:8::/64"}
    assert steps["read"] == wanted  # the IPv6 direct route is read back: no rewrite on every pass
    assert "2001:db8:1000:8::/64 via 2001:db8::8" in steps["routes6"]
