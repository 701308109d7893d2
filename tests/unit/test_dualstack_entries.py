"""A dual-stack peer's entries: the IPv6 half through the same desired state, diff and checks."""

from __future__ import annotations

import json
import socket
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

import pytest

from overlayd.backend.desired import DesiredEntries, entries_for
from overlayd.backend.plane import DirectRoute, Fdb, Neigh, Plane, Route, diff_planes
from overlayd.backend.rtnl.codec import RTM_NEWNEIGH, RTM_NEWROUTE, Message, decode_entry, encode_entry
from overlayd.backend.select import CONFIG_PARSERS
from overlayd.backend.vxlan.family import union_planes
from overlayd.backend.vxlan.peers import reached_directly
from overlayd.subnet.config import parse_network_config
from overlayd.subnet.lease import Lease, LeaseAttrs
from overlayd.subnet.leasecheck import Underlay, lease_problem, missing_ipv6

DUAL = parse_network_config(
    json.dumps({"Network": "198.18.0.0/16", "EnableIPv6": True, "IPv6Network": "2001:db8:1000::/48"}),
    backends=CONFIG_PARSERS,
)
MAC4, MAC6 = "02:00:00:00:00:0a", "02:00:00:00:00:6a"


def peer(
    v4: str = "198.18.47.0/24",
    v6: str | None = "2001:db8:1000:2f::/64",
    ip6: str | None = "2001:db8::c",
    mac6: str | None = MAC6,
    public_ip: str = "192.0.2.12",
) -> Lease:
    attrs = LeaseAttrs(IPv4Address(public_ip), "vxlan", vni=1, vtep_mac=MAC4,
                       public_ipv6=IPv6Address(ip6) if ip6 else None, vtep_mac_v6=mac6)  # fmt: skip
    return Lease(IPv4Network(v4), attrs, ipv6_subnet=IPv6Network(v6) if v6 else None)


OWN = peer("198.18.46.0/24", "2001:db8:1000:2e::/64", "2001:db8::b", public_ip="192.0.2.11")
V6_ENTRIES = (
    Neigh(IPv6Address("2001:db8:1000:2f::"), MAC6),
    Fdb(MAC6, IPv6Address("2001:db8::c")),
    Route(IPv6Network("2001:db8:1000:2f::/64"), IPv6Address("2001:db8:1000:2f::")),
)


def test_a_dual_stack_peer_wants_three_entries_per_family_as_flanneld_programs_them() -> None:
    got = entries_for(peer(), direct=False, ipv6=True)
    assert got[3:] == V6_ENTRIES
    assert entries_for(peer(), direct=False) == got[:3]  # an IPv4-only network: the IPv4 half only


@pytest.mark.parametrize("incomplete", [peer(v6=None), peer(ip6=None), peer(mac6=None)])
def test_a_peer_without_a_complete_ipv6_half_gets_its_ipv4_entries_only(incomplete: Lease) -> None:
    assert len(entries_for(incomplete, direct=False, ipv6=True)) == 3


def test_entries_of_two_families_never_collide_and_diff_as_one_plane() -> None:
    """A key carries the family: an IPv6 address whose integer equals an IPv4 one is another entry."""
    assert Neigh(IPv4Address("198.18.0.1"), MAC4) != Neigh(IPv6Address("::c612:1"), MAC4)
    desired = DesiredEntries(ipv6=True)
    desired.set_peer("k", peer())
    plane = desired.plane()
    assert len(plane) == 6 and desired.public_ips() == {IPv4Address("192.0.2.12"), IPv6Address("2001:db8::c")}
    actual = replace(plane, routes=frozenset(r for r in plane.routes if r.dst.version == 4))
    diff = diff_planes(plane, actual)
    assert diff.add.routes == {V6_ENTRIES[2]} and not diff.remove


def test_union_reads_both_devices_as_one_plane() -> None:
    desired = DesiredEntries(ipv6=True)
    plane = desired.set_peer("k", peer()).add
    v4 = Plane(*(frozenset(e for e in kind if getattr(e, "ip", getattr(e, "dst", None)).version == 4)
                 for kind in (plane.neighs, plane.fdbs, plane.routes, plane.direct)))  # fmt: skip
    v6 = Plane(*(kind - v4_kind for kind, v4_kind in zip(
        (plane.neighs, plane.fdbs, plane.routes, plane.direct), (v4.neighs, v4.fdbs, v4.routes, v4.direct),
        strict=True)))  # fmt: skip
    assert len(v4) == len(v6) == 3
    assert union_planes(v4, v6) == plane
    assert union_planes(v4, Plane()) is v4


@pytest.mark.parametrize("entry", V6_ENTRIES)
def test_ipv6_entries_round_trip_through_the_codec(entry: Neigh | Fdb | Route) -> None:
    request = encode_entry(entry, 9, True, 1)
    kind = RTM_NEWROUTE if isinstance(entry, Route) else RTM_NEWNEIGH
    assert decode_entry(Message(kind, 1, request[16:]), 9) == entry
    if not isinstance(entry, Fdb):
        assert request[16] == socket.AF_INET6  # family


@pytest.mark.parametrize(
    ("lease", "reason", "needle"),
    [
        (peer(v6="2001:db8:2000:2f::/64"), "outside_network", "IPv6 subnet 2001:db8:2000:2f::/64 is outside"),
        (peer(v6="2001:db8:1000:2e::/64"), "own_subnet", "overlaps our IPv6 subnet 2001:db8:1000:2e::/64"),
        (peer(v6="2001:db8:1000:2f::/80"), "subnet_size", "is not a /64 (IPv6SubnetLen"),
        (
            peer(mac6="01:00:5e:00:00:01"),
            "bad_vtep_mac",
            "BackendV6Data VtepMAC 01:00:5e:00:00:01 is a multicast",
        ),
        (peer(ip6="fe80::1"), "bad_public_ip", "PublicIPv6 fe80::1 is a loopback"),
        (peer(ip6="::1"), "bad_public_ip", "PublicIPv6 ::1"),
        (peer(ip6="2001:db8::b"), "own_public_ip", "PublicIPv6 2001:db8::b is this host's own address"),
    ],
)
def test_a_bad_ipv6_half_makes_the_lease_skipped_naming_it(lease: Lease, reason: str, needle: str) -> None:
    underlay = Underlay(frozenset({IPv4Address("192.0.2.11"), IPv6Address("2001:db8::b")}))
    problem = lease_problem(lease, DUAL, OWN, underlay)
    assert problem is not None and problem.reason == reason and needle in problem.message
    assert lease_problem(peer(), DUAL, OWN, underlay) is None


def test_an_ipv4_only_peer_in_a_dual_stack_network_is_named_not_skipped() -> None:
    message = missing_ipv6(peer(v6=None), DUAL)
    assert message is not None and "no IPv6 subnet in a dual-stack network" in message
    assert "PublicIPv6" in (missing_ipv6(peer(ip6=None), DUAL) or "")
    assert (
        missing_ipv6(peer(), DUAL) is None and missing_ipv6(peer(v6=None), replace(DUAL, ipv6=None)) is None
    )
    assert lease_problem(peer(v6=None), DUAL, OWN) is None


def test_a_directly_reached_peer_gets_a_direct_route_per_family() -> None:
    """The hook of backends that route on the underlay (host-gw, vxlan's DirectRouting): the IPv6
    half is routed via the peer's PublicIPv6 as the IPv4 one via its PublicIP."""
    got = entries_for(peer(), direct=True, ipv6=True)
    assert got == (
        DirectRoute(IPv4Network("198.18.47.0/24"), IPv4Address("192.0.2.12")),
        DirectRoute(IPv6Network("2001:db8:1000:2f::/64"), IPv6Address("2001:db8::c")),
    )
    assert entries_for(peer(ip6=None), direct=True, ipv6=True) == got[:1]
    assert entries_for(peer(), direct=True) == got[:1]


def test_direct_routing_needs_both_public_addresses_on_this_hosts_segments() -> None:
    v4, v6 = (IPv4Network("192.0.2.0/24"),), (IPv6Network("2001:db8::/64"),)
    assert reached_directly(v4, v6)(peer())
    assert not reached_directly(v4, (IPv6Network("2001:db8:9::/64"),))(peer())  # IPv6 via VXLAN: both
    assert reached_directly(v4, v6)(peer(ip6=None))  # no IPv6 half to route
    assert reached_directly(v4)(peer())  # an IPv4-only network looks at the PublicIP alone
