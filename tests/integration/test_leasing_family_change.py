"""A network's EnableIPv4 changed under a node: the node's lease of the old form is deleted and
replaced, keeping its IPv6 subnet, through ``LeaseManager`` against a real etcd."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address, IPv6Network

from overlayd.backend.select import CONFIG_PARSERS
from overlayd.etcd.leasing import LeaseManager
from overlayd.etcd.registry import Registry
from overlayd.lab.etcdserver import EtcdServer
from overlayd.subnet.config import parse_network_config
from overlayd.subnet.lease import NO_PUBLIC_IP, LeaseAttrs, is_ipv6_only

MakeRegistry = Callable[[EtcdServer], Registry]
V6 = {"EnableIPv6": True, "IPv6Network": "2001:db8:1000::/60", "Backend": {"Type": "vxlan"}}
IPV6_ONLY = parse_network_config(json.dumps({"EnableIPv4": False, **V6}), backends=CONFIG_PARSERS)
DUAL = parse_network_config(json.dumps({"Network": "198.18.0.0/16", **V6}), backends=CONFIG_PARSERS)
PUBLIC_IP, PUBLIC_IPV6 = IPv4Address("192.0.2.21"), IPv6Address("2001:db8::21")
V6_ONLY_ATTRS = LeaseAttrs(
    NO_PUBLIC_IP, "vxlan", vni=1, public_ipv6=PUBLIC_IPV6, vtep_mac_v6="02:42:00:00:06:21"
)
DUAL_ATTRS = LeaseAttrs(PUBLIC_IP, "vxlan", vni=1, vtep_mac="02:42:00:00:00:21", public_ipv6=PUBLIC_IPV6,
                        vtep_mac_v6="02:42:00:00:06:21")  # fmt: skip


def keys(registry: Registry) -> list[str]:
    return sorted(lease.key for lease in registry.list_leases()[0])


def test_ipv6_only_to_dual_stack_replaces_the_lease_keeping_the_ipv6_subnet(
    make_registry: MakeRegistry, etcd_server: EtcdServer
) -> None:
    registry = make_registry(etcd_server)
    first = LeaseManager(registry, NO_PUBLIC_IP, ttl=600, rng=random.Random(1))
    before = first.acquire(IPV6_ONLY, V6_ONLY_ATTRS, None)
    assert is_ipv6_only(before) and before.key.startswith("0.0.0.0-0&2001:db8:1000:")
    # The restarted agent: dual-stack config, its subnet.env's IPv6 subnet as the previous one.
    manager = LeaseManager(registry, PUBLIC_IP, ttl=600, rng=random.Random(2))
    after = manager.acquire(DUAL, DUAL_ATTRS, None, previous_ipv6=before.ipv6_subnet)
    assert after.ipv6_subnet == before.ipv6_subnet and after.subnet.subnet_of(DUAL.network)
    assert keys(registry) == [after.key]  # the IPv6-only key is gone, not left to expire in a day


def test_dual_stack_to_ipv6_only_replaces_the_lease_keeping_the_ipv6_subnet(
    make_registry: MakeRegistry, etcd_server: EtcdServer
) -> None:
    registry = make_registry(etcd_server)
    before = LeaseManager(registry, PUBLIC_IP, ttl=600, rng=random.Random(3)).acquire(DUAL, DUAL_ATTRS, None)
    assert not is_ipv6_only(before)
    manager = LeaseManager(registry, NO_PUBLIC_IP, ttl=600, rng=random.Random(4))
    after = manager.acquire(IPV6_ONLY, V6_ONLY_ATTRS, None, previous_ipv6=before.ipv6_subnet)
    assert is_ipv6_only(after) and after.ipv6_subnet == before.ipv6_subnet
    assert keys(registry) == [after.key]
    # Taken again as its own on the next start, by PublicIPv6 (every such lease's PublicIP is 0.0.0.0).
    again = LeaseManager(registry, NO_PUBLIC_IP, ttl=600).acquire(IPV6_ONLY, V6_ONLY_ATTRS, None)
    assert again.key == after.key and isinstance(after.ipv6_subnet, IPv6Network)
