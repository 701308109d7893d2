"""The IPv6 half's lease checks run on plain ints and compare keys without formatting them; they
agree with ``ipaddress``'s ``subnet_of`` and ``overlaps`` and with the formatted keys."""

from __future__ import annotations

import json
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from hypothesis import given, settings
from hypothesis import strategies as st

from overlayd.backend.select import CONFIG_PARSERS
from overlayd.subnet.config import parse_network_config
from overlayd.subnet.lease import NO_IPV4_SUBNET, NO_PUBLIC_IP, Lease, LeaseAttrs
from overlayd.subnet.leasecheck import Underlay, lease_problem

V6_ONLY = parse_network_config(
    json.dumps({"EnableIPv4": False, "EnableIPv6": True, "IPv6Network": "2001:db8:1000::/48",
                "Backend": {"Type": "vxlan"}}),
    backends=CONFIG_PARSERS,
)  # fmt: skip
OUR_IP = IPv6Address("2001:db8::b")
UNDERLAY = Underlay(frozenset({OUR_IP}))

networks = st.builds(
    lambda address, prefixlen: IPv6Network((address, prefixlen), strict=False),
    st.integers(0, 2**128 - 1) | st.sampled_from([0x20010DB8_1000_0000 << 64, 0x20010DB8_1000_0005 << 64]),
    st.integers(0, 128),
)


def v6_only(subnet: IPv6Network, ip: IPv6Address) -> Lease:
    attrs = LeaseAttrs(NO_PUBLIC_IP, "vxlan", vni=1, public_ipv6=ip, vtep_mac_v6="02:00:00:00:00:02")
    return Lease(NO_IPV4_SUBNET, attrs, ipv6_subnet=subnet)


@settings(max_examples=500, deadline=None)
@given(networks, networks, networks, st.booleans())
def test_ipv6_only_checks_agree_with_ipaddress_and_formatted_keys(
    subnet: IPv6Network, network: IPv6Network, own: IPv6Network, ours: bool
) -> None:
    config = replace(V6_ONLY, ipv6=replace(V6_ONLY.ipv6, network=network))
    own_lease = v6_only(own, OUR_IP)
    lease = v6_only(subnet, OUR_IP if ours else IPv6Address("2001:db8::c"))
    problem = lease_problem(lease, config, own_lease, UNDERLAY)
    same_key = lease.key == own_lease.key
    if same_key and not ours:
        expected = "own_subnet"  # another PublicIPv6 writing our key
    elif not subnet.subnet_of(network):
        expected = "outside_network"
    elif subnet.overlaps(own) and not same_key:
        expected = "own_subnet"
    elif subnet.prefixlen not in (config.ipv6.subnet_len, own.prefixlen):
        expected = "subnet_size"
    elif ours and not same_key:
        expected = "own_public_ip"
    else:
        expected = None
    assert (problem.reason if problem else None) == expected


def test_a_dual_stack_peer_is_told_from_our_lease_by_both_halves() -> None:
    """Same IPv6 subnet, another IPv4 one: not our key, so its IPv6 half overlaps ours."""
    dual = parse_network_config(
        json.dumps({"Network": "198.18.0.0/16", "EnableIPv6": True, "IPv6Network": "2001:db8:1000::/48"}),
        backends=CONFIG_PARSERS,
    )
    attrs = LeaseAttrs(IPv4Address("192.0.2.11"), "vxlan", 1, "02:00:00:00:00:01", public_ipv6=OUR_IP,
                       vtep_mac_v6="02:00:00:00:00:02")  # fmt: skip
    own = Lease(IPv4Network("198.18.5.0/24"), attrs, ipv6_subnet=IPv6Network("2001:db8:1000:5::/64"))
    peer_attrs = replace(attrs, public_ip=IPv4Address("192.0.2.12"), public_ipv6=IPv6Address("2001:db8::c"))
    peer = Lease(IPv4Network("198.18.6.0/24"), peer_attrs, ipv6_subnet=own.ipv6_subnet)
    problem = lease_problem(peer, dual, own, UNDERLAY)
    assert problem is not None and problem.reason == "own_subnet"
    assert "IPv6 subnet 2001:db8:1000:5::/64 overlaps our IPv6 subnet" in problem.message
    assert lease_problem(own, dual, own, UNDERLAY) is None
