"""Peer leases in an IPv6-only network (EnableIPv4 false): which are skipped, each with a message
naming the bad value."""

from __future__ import annotations

import json
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

import pytest

from overlayd.backend.select import CONFIG_PARSERS
from overlayd.subnet.config import parse_network_config
from overlayd.subnet.lease import NO_IPV4_SUBNET, NO_PUBLIC_IP, Lease, LeaseAttrs
from overlayd.subnet.leasecheck import Underlay, ipv6_only_problem, lease_problem

V6_ONLY = parse_network_config(
    json.dumps({"EnableIPv4": False, "EnableIPv6": True, "IPv6Network": "2001:db8:1000::/48",
                "Backend": {"Type": "vxlan"}}),
    backends=CONFIG_PARSERS,
)  # fmt: skip
UNDERLAY = Underlay(frozenset({IPv6Address("2001:db8::10"), NO_PUBLIC_IP}))


def v6_lease(
    cidr6: str = "2001:db8:1000:6::/64", public_ipv6: str | None = "2001:db8::12", **attrs: object
) -> Lease:
    fields = LeaseAttrs(
        NO_PUBLIC_IP, "vxlan", vni=1, vtep_mac_v6="02:00:00:00:00:02",
        public_ipv6=IPv6Address(public_ipv6) if public_ipv6 else None,
    )  # fmt: skip
    return Lease(NO_IPV4_SUBNET, replace(fields, **attrs), ipv6_subnet=IPv6Network(cidr6), etcd_lease_id=3)


OWN = v6_lease("2001:db8:1000:5::/64", "2001:db8::10", vtep_mac_v6="02:00:00:00:00:01")


def test_a_good_peer_and_our_own_lease_pass() -> None:
    assert lease_problem(v6_lease(), V6_ONLY, OWN, UNDERLAY) is None
    assert lease_problem(OWN, V6_ONLY, OWN, UNDERLAY) is None
    # Before our own lease is known (start-up), peers are judged alone.
    assert lease_problem(v6_lease(), V6_ONLY, None, UNDERLAY) is None


@pytest.mark.parametrize(
    ("lease", "reason", "named"),
    [
        # Left from an IPv4 or dual-stack config: its IPv4 subnet is named.
        (
            Lease(
                IPv4Network("198.18.6.0/24"),
                LeaseAttrs(IPv4Address("192.0.2.12"), "vxlan", vni=1, vtep_mac="02:00:00:00:00:02"),
            ),
            "outside_network",
            "IPv4 subnet 198.18.6.0/24",
        ),
        (
            Lease(
                IPv4Network("198.18.6.0/24"),
                LeaseAttrs(
                    IPv4Address("192.0.2.12"),
                    "vxlan",
                    vni=1,
                    vtep_mac="02:00:00:00:00:02",
                    public_ipv6=IPv6Address("2001:db8::12"),
                    vtep_mac_v6="02:00:00:00:00:03",
                ),
                ipv6_subnet=IPv6Network("2001:db8:1000:6::/64"),
            ),
            "outside_network",
            "IPv4 subnet 198.18.6.0/24",
        ),
        (v6_lease(public_ipv6=None), "bad_public_ip", "0.0.0.0-0&2001:db8:1000:6::-64 has no PublicIPv6"),
        # Another host writing our key.
        (v6_lease("2001:db8:1000:5::/64", "2001:db8::12"), "own_subnet", "PublicIPv6 2001:db8::12"),
        (v6_lease("2001:db8:1000:5::/64", "2001:db8::12"), "own_subnet", "IPv6 subnet 2001:db8:1000:5::/64"),
        (v6_lease("2001:db8:1000:6::/80"), "subnet_size", "2001:db8:1000:6::/80 is not a /64"),
        (v6_lease("2001:db8:1000:4::/63"), "own_subnet", "2001:db8:1000:4::/63 overlaps"),
        (v6_lease("2001:db8:2000:6::/64"), "outside_network", "2001:db8:2000:6::/64 is outside IPv6Network"),
        (
            v6_lease(vtep_mac_v6="01:00:5e:00:00:01"),
            "bad_vtep_mac",
            "VtepMAC 01:00:5e:00:00:01 is a multicast",
        ),
        (
            v6_lease(vtep_mac_v6="00:00:00:00:00:00"),
            "bad_vtep_mac",
            "VtepMAC 00:00:00:00:00:00 is the all-zero",
        ),
        (v6_lease(public_ipv6="::1"), "bad_public_ip", "PublicIPv6 ::1"),
        (v6_lease(public_ipv6="fe80::1"), "bad_public_ip", "PublicIPv6 fe80::1"),
        (v6_lease(public_ipv6="ff02::1"), "bad_public_ip", "PublicIPv6 ff02::1"),
        (v6_lease(public_ipv6="2001:db8::10"), "own_public_ip", "PublicIPv6 2001:db8::10 is this host's"),
    ],
)
def test_a_bad_lease_is_skipped_naming_the_bad_value(lease: Lease, reason: str, named: str) -> None:
    problem = lease_problem(lease, V6_ONLY, OWN, UNDERLAY)
    assert problem is not None and problem.reason == reason
    assert named in problem.message
    assert ipv6_only_problem(lease, V6_ONLY, OWN, UNDERLAY) == problem


def test_an_ipv4_lease_tells_the_operator_to_delete_it_or_let_it_expire() -> None:
    lease = Lease(IPv4Network("198.18.6.0/24"), LeaseAttrs(IPv4Address("192.0.2.12"), "vxlan", vni=1,
                  vtep_mac="02:00:00:00:00:02"))  # fmt: skip
    problem = lease_problem(lease, V6_ONLY, OWN)
    assert problem is not None
    assert problem.message == (
        "lease 198.18.6.0-24 has IPv4 subnet 198.18.6.0/24 in an IPv6-only network (EnableIPv4 false); "
        "it is left from an IPv4 or dual-stack config: delete it, or let it expire"
    )


def test_the_ipv6_length_we_hold_is_accepted_after_an_ipv6_subnet_len_change() -> None:
    """IPv6SubnetLen changed to 80 while the nodes still hold /64s: they keep reaching each other."""
    config = replace(V6_ONLY, ipv6=replace(V6_ONLY.ipv6, subnet_len=80))
    assert lease_problem(v6_lease(), config, OWN, UNDERLAY) is None
    assert lease_problem(v6_lease("2001:db8:1000:6::/80"), config, OWN, UNDERLAY) is None
    problem = lease_problem(v6_lease("2001:db8:1000:6::/96"), config, OWN, UNDERLAY)
    assert problem is not None and problem.reason == "subnet_size" and "is not a /80" in problem.message
