"""A changed dual-stack config: turning IPv6 on or off applies, moving the IPv6Network holds."""

from __future__ import annotations

import json
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network, IPv6Network

from overlayd.backend.select import CONFIG_PARSERS
from overlayd.subnet.confchange import ConfigAction, decide, hold_message, leases_outside
from overlayd.subnet.config import NetworkConfig, parse_network_config
from overlayd.subnet.lease import Lease, LeaseAttrs


def config(**keys: object) -> NetworkConfig:
    return parse_network_config(json.dumps({"Network": "198.18.0.0/16", **keys}), backends=CONFIG_PARSERS)


IPV4 = config()
DUAL = config(EnableIPv6=True, IPv6Network="2001:db8:1000::/48")
MOVED6 = config(EnableIPv6=True, IPv6Network="2001:db8:2000::/48")


def lease(n: int, v6: bool = True) -> Lease:
    attrs = LeaseAttrs(IPv4Address(f"192.0.2.{n}"), "vxlan", vni=1, vtep_mac=f"02:00:00:00:00:{n:02x}")
    subnet6 = IPv6Network(f"2001:db8:1000:{n:x}::/64") if v6 else None
    return Lease(IPv4Network(f"198.18.{n}.0/24"), attrs, ipv6_subnet=subnet6)


def test_turning_ipv6_on_or_off_applies_in_place() -> None:
    own, peer = lease(5, v6=False), lease(6, v6=False)
    assert decide(IPV4, DUAL, own, [own, peer]).action is ConfigAction.APPLY
    own6, peer6 = lease(5), lease(6)
    assert decide(DUAL, IPV4, own6, [own6, peer6]).action is ConfigAction.APPLY
    # A node not yet on the dual-stack config (an IPv4-only lease) is not renumbered by it.
    assert not leases_outside(DUAL, replace(DUAL), [own6, peer])


def test_moving_the_ipv6_network_would_renumber_ipv6_halves_and_holds() -> None:
    own, peer = lease(5), lease(6)
    verdict = decide(DUAL, MOVED6, own, [own, peer])
    assert verdict.action is ConfigAction.HOLD and verdict.own_outside and verdict.others_outside == (peer,)
    message = hold_message(verdict, "network config", "etcdctl put ...")
    assert "IPv6Network 2001:db8:1000::/48" in message and "IPv6Network 2001:db8:2000::/48" in message
    assert leases_outside(DUAL, MOVED6, [peer, lease(7, v6=False)]) == [peer]
