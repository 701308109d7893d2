"""A changed config to or from an IPv6-only network (EnableIPv4 false): IPv4 -> IPv6-only holds
(every IPv4 subnet is renumbered), IPv6-only -> dual-stack restarts (the lease key changes form),
a narrowed IPv6 pool holds for the peers it leaves out, and what the messages name."""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

import pytest

from overlayd.backend.select import CONFIG_PARSERS
from overlayd.subnet.confchange import ConfigAction, decide, describe, hold_message, leases_outside
from overlayd.subnet.config import NetworkConfig, parse_network_config
from overlayd.subnet.lease import NO_IPV4_SUBNET, NO_PUBLIC_IP, Lease, LeaseAttrs

V6NET = "2001:db8:1000::/48"


def config(**keys: object) -> NetworkConfig:
    return parse_network_config(json.dumps({"Backend": {"Type": "vxlan"}, **keys}), backends=CONFIG_PARSERS)


IPV4 = config(Network="198.18.0.0/16")
DUAL = config(Network="198.18.0.0/16", EnableIPv6=True, IPv6Network=V6NET)
V6_ONLY = config(EnableIPv4=False, EnableIPv6=True, IPv6Network=V6NET)
V6_MOVED = config(EnableIPv4=False, EnableIPv6=True, IPv6Network="2001:db8:2000::/48")
# The last hosts' subnets (from :11:) no longer handed out; the first ones' still are.
V6_NARROWED = config(EnableIPv4=False, EnableIPv6=True, IPv6Network=V6NET, IPv6SubnetMax="2001:db8:1000:10::")


def v4_lease(n: int, v6: bool = False) -> Lease:
    attrs = LeaseAttrs(IPv4Address(f"192.0.2.{n}"), "vxlan", vni=1, vtep_mac=f"02:00:00:00:00:{n:02x}",
                       public_ipv6=IPv6Address(f"2001:db8::{n:x}") if v6 else None)  # fmt: skip
    subnet6 = IPv6Network(f"2001:db8:1000:{n:x}::/64") if v6 else None
    return Lease(IPv4Network(f"198.18.{n}.0/24"), attrs, ipv6_subnet=subnet6)


def v6_lease(n: int) -> Lease:
    attrs = LeaseAttrs(NO_PUBLIC_IP, "vxlan", vni=1, public_ipv6=IPv6Address(f"2001:db8::{n:x}"),
                       vtep_mac_v6=f"02:00:00:00:06:{n:02x}")  # fmt: skip
    return Lease(NO_IPV4_SUBNET, attrs, ipv6_subnet=IPv6Network(f"2001:db8:1000:{n:x}::/64"))


@pytest.mark.parametrize("in_force", [IPV4, DUAL], ids=["ipv4", "dual"])
def test_turning_ipv4_off_holds_since_every_ipv4_subnet_is_renumbered(in_force: NetworkConfig) -> None:
    dual = in_force.ipv6 is not None
    own, peer = v4_lease(5, dual), v4_lease(6, dual)
    verdict = decide(in_force, V6_ONLY, own, [own, peer])
    assert verdict.action is ConfigAction.HOLD
    assert verdict.own_outside and verdict.others_outside == (peer,)
    assert leases_outside(in_force, V6_ONLY, [own, peer]) == [own, peer]
    message = hold_message(verdict, "network config", "etcdctl put ...")
    assert f"changed from Network 198.18.0.0/16{' IPv6Network ' + V6NET if dual else ''} to IPv6-only " \
           f"IPv6Network {V6NET}" in message  # fmt: skip
    assert "does not hand out this node's subnet 198.18.5.0/24" in message
    assert "198.18.6.0/24 (192.0.2.6)" in message


def test_an_ipv6_only_lease_of_a_restarted_node_is_not_outside_the_ipv4_config() -> None:
    """A node renumbered onto the IPv6-only config while the others hold: nothing of theirs moves."""
    own = v4_lease(5, v6=True)
    assert leases_outside(DUAL, V6_ONLY, [v6_lease(7)]) == []
    verdict = decide(DUAL, V6_ONLY, own, [own, v6_lease(7)])
    assert verdict.action is ConfigAction.HOLD and verdict.others_outside == ()


@pytest.mark.parametrize("stored", [DUAL, IPV4], ids=["dual", "ipv4"])
def test_turning_ipv4_on_restarts_since_the_lease_key_changes_form(stored: NetworkConfig) -> None:
    own, peer = v6_lease(5), v6_lease(6)
    verdict = decide(V6_ONLY, stored, own, [own, peer])
    assert verdict.action is ConfigAction.RESTART
    assert not verdict.own_outside and verdict.others_outside == ()


def test_an_unchanged_ipv6_only_config_is_unchanged() -> None:
    own = v6_lease(5)
    assert decide(V6_ONLY, config(EnableIPv4=False, EnableIPv6=True, IPv6Network=V6NET), own, [own]).action \
        is ConfigAction.UNCHANGED  # fmt: skip


def test_moving_the_ipv6_network_of_an_ipv6_only_network_holds() -> None:
    own, peer = v6_lease(5), v6_lease(6)
    verdict = decide(V6_ONLY, V6_MOVED, own, [own, peer])
    assert verdict.action is ConfigAction.HOLD and verdict.own_outside
    assert leases_outside(V6_ONLY, V6_MOVED, [own, peer]) == [own, peer]
    message = hold_message(verdict, "network config", "etcdctl put ...")
    assert (
        f"changed from IPv6-only IPv6Network {V6NET} to IPv6-only IPv6Network 2001:db8:2000::/48" in message
    )


def test_narrowing_an_ipv6_only_pool_holds_for_the_peers_it_no_longer_hands_out() -> None:
    own, peer = v6_lease(5), v6_lease(0x11)
    assert leases_outside(V6_ONLY, V6_NARROWED, [own, peer]) == [peer]
    verdict = decide(V6_ONLY, V6_NARROWED, own, [own, peer])
    assert verdict.action is ConfigAction.HOLD and verdict.others_outside == (peer,)


def test_a_hold_in_an_ipv6_only_network_names_this_node_s_ipv6_subnet() -> None:
    own = v6_lease(5)
    message = hold_message(decide(V6_ONLY, V6_MOVED, own, [own]), "network config", "etcdctl put ...")
    assert "this node's subnet 2001:db8:1000:5::/64" in message


def test_describe_names_what_tells_the_configs_apart() -> None:
    assert describe(V6_ONLY, IPV4) == f"IPv6-only IPv6Network {V6NET}"
    assert describe(IPV4, V6_ONLY) == "Network 198.18.0.0/16"
    assert describe(DUAL, V6_ONLY) == f"Network 198.18.0.0/16 IPv6Network {V6NET}"
    assert describe(V6_ONLY, V6_MOVED) == f"IPv6-only IPv6Network {V6NET}"


def test_describe_tells_two_ipv6_only_pools_of_one_network_apart() -> None:
    """The hold message names what changed, not one IPv6Network twice."""
    assert describe(V6_NARROWED, V6_ONLY) == f"IPv6-only IPv6Network {V6NET} IPv6SubnetMax 2001:db8:1000:10::"
    assert describe(V6_ONLY, V6_NARROWED) == f"IPv6-only IPv6Network {V6NET}"
    narrower = config(EnableIPv4=False, EnableIPv6=True, IPv6Network=V6NET, IPv6SubnetLen=80)
    assert describe(narrower, V6_ONLY) == f"IPv6-only IPv6Network {V6NET} IPv6SubnetLen 80"
