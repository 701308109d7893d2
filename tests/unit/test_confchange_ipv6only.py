"""Config changes judged in an IPv6-only network: every lease has the same IPv4 half
(``0.0.0.0-0``), so peers are told from this node by their IPv6 subnet."""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv6Address, IPv6Network

from overlayd.backend.select import CONFIG_PARSERS
from overlayd.subnet.confchange import ConfigAction, decide
from overlayd.subnet.config import parse_network_config
from overlayd.subnet.lease import NO_IPV4_SUBNET, Lease, LeaseAttrs


def v6_only(network6: str) -> object:
    raw = {"EnableIPv4": False, "EnableIPv6": True, "IPv6Network": network6, "Backend": {"Type": "vxlan"}}
    return parse_network_config(json.dumps(raw), backends=CONFIG_PARSERS)


def lease(subnet6: str, n: int) -> Lease:
    attrs = LeaseAttrs(IPv4Address("0.0.0.0"), "vxlan", vni=1, public_ipv6=IPv6Address(f"2001:db8::{n}"),
                       vtep_mac_v6=f"02:00:00:00:06:{n:02x}")  # fmt: skip
    return Lease(NO_IPV4_SUBNET, attrs, ipv6_subnet=IPv6Network(subnet6), etcd_lease_id=n)


def test_a_new_ipv6_network_leaving_peers_outside_is_held_naming_them() -> None:
    in_force, stored = v6_only("2001:db8:1000::/48"), v6_only("2001:db8:2000::/48")
    own, peer = lease("2001:db8:1000:1::/64", 1), lease("2001:db8:1000:2::/64", 2)
    decision = decide(in_force, stored, own, [own, peer])  # type: ignore[arg-type]
    assert decision.action is ConfigAction.HOLD
    assert decision.own_outside and decision.others_outside == (peer,)
    assert decision.own_subnet == IPv6Network("2001:db8:1000:1::/64")


def test_a_wider_ipv6_network_is_applied() -> None:
    in_force, stored = v6_only("2001:db8:1000::/48"), v6_only("2001:db8:1000::/44")
    own, peer = lease("2001:db8:1000:1::/64", 1), lease("2001:db8:1000:2::/64", 2)
    assert decide(in_force, stored, own, [own, peer]).action is ConfigAction.APPLY  # type: ignore[arg-type]
