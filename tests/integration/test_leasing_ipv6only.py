"""IPv6-only leases in a real etcd: flanneld's key and value form, and two hosts (each PublicIP
0.0.0.0) holding two different subnets, each recognising its own by its PublicIPv6."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address

from overlayd.backend.select import CONFIG_PARSERS
from overlayd.etcd.leasing import LeaseManager
from overlayd.etcd.registry import Registry
from overlayd.lab.etcdserver import EtcdServer
from overlayd.subnet.config import parse_network_config
from overlayd.subnet.ipv6only import choose_ipv6_only_subnets
from overlayd.subnet.lease import NO_PUBLIC_IP, Lease, LeaseAttrs

from .support import host_attrs, network_config

MakeRegistry = Callable[[EtcdServer], Registry]
POOL = parse_network_config(
    json.dumps({"Network": "198.18.0.0/16", "EnableIPv6": True, "IPv6Network": "2001:db8:1000::/60"}),
    backends=CONFIG_PARSERS,
).ipv6
assert POOL is not None
FLANNELD_V6_ONLY = (
    '{"PublicIP":"0.0.0.0","PublicIPv6":"2001:db8::11","BackendType":"vxlan",'
    '"BackendV6Data":{"VNI":1,"VtepMAC":"6e:2b:01:9c:44:d0"}}'
)


def v6_only_attrs(n: int) -> LeaseAttrs:
    return LeaseAttrs(
        NO_PUBLIC_IP,
        "vxlan",
        vni=1,
        public_ipv6=IPv6Address(f"2001:db8::{n}"),
        vtep_mac_v6=f"02:42:20:01:0d:{n:02x}",
    )


def acquire(registry: Registry, attrs: LeaseAttrs, seed: int) -> Lease:
    """One host's acquisition: take back the lease it holds, else create the first free option."""
    leases, _ = registry.list_leases()
    for choice in choose_ipv6_only_subnets(POOL, leases, attrs.public_ipv6, rng=random.Random(seed)):  # type: ignore[arg-type]
        if choice.existing is not None:
            lease = registry.take_over(choice.existing, attrs, 600)
        else:
            lease = registry.create_lease(choice.subnet, attrs, 600, ipv6_subnet=choice.ipv6_subnet)
        if lease is not None:
            return lease
    raise AssertionError("no subnet leased")


def test_two_ipv6_only_hosts_hold_two_subnets_in_flanneld_form(
    make_registry: MakeRegistry, etcd_server: EtcdServer, prefix: str
) -> None:
    # The same seed for both hosts: the second must still end up on a subnet of its own.
    first = acquire(make_registry(etcd_server), v6_only_attrs(1), seed=4)
    second = acquire(make_registry(etcd_server), v6_only_attrs(2), seed=4)
    assert first.ipv6_subnet != second.ipv6_subnet
    for lease, n in ((first, 1), (second, 2)):
        assert lease.key == f"0.0.0.0-0&{lease.ipv6_subnet.network_address}-64"  # type: ignore[union-attr]
        stored = etcd_server.etcdctl("get", "--print-value-only", f"{prefix}/subnets/{lease.key}").strip()
        assert stored == (
            f'{{"PublicIP":"0.0.0.0","PublicIPv6":"2001:db8::{n}","BackendType":"vxlan",'
            f'"BackendV6Data":{{"VNI":1,"VtepMAC":"02:42:20:01:0d:{n:02x}"}}}}'
        )
    # A restart of each host finds its own lease again; renewal keeps the key.
    registry = make_registry(etcd_server)
    assert acquire(registry, v6_only_attrs(1), seed=9).key == first.key
    assert acquire(registry, v6_only_attrs(2), seed=9).key == second.key
    renewed = registry.renew(first, 600)
    assert renewed is not None and renewed.key == first.key
    listed, _ = registry.list_leases()
    assert sorted(lease.key for lease in listed) == sorted([first.key, second.key])


def test_flanneld_ipv6_only_lease_of_another_host_is_not_taken_for_ours(
    make_registry: MakeRegistry, etcd_server: EtcdServer, prefix: str
) -> None:
    """flanneld v0.20.2 on the first host wrote this; a second flanneld took it as its own."""
    key = "0.0.0.0-0&2001:db8:1000:1::-64"
    etcd_server.etcdctl("put", f"{prefix}/subnets/{key}", FLANNELD_V6_ONLY)
    ours = acquire(make_registry(etcd_server), v6_only_attrs(3), seed=1)
    assert ours.key != key and ours.ipv6_subnet is not None and POOL.contains_subnet(ours.ipv6_subnet)
    listed, _ = make_registry(etcd_server).list_leases()
    assert {lease.key: lease.attrs.public_ipv6 for lease in listed} == {
        key: IPv6Address("2001:db8::11"),
        ours.key: IPv6Address("2001:db8::3"),
    }


def test_an_ipv6_only_lease_left_in_an_ipv4_network_does_not_stop_leasing(
    make_registry: MakeRegistry, etcd_server: EtcdServer, prefix: str
) -> None:
    """flanneld counts its 0.0.0.0-0 as all of IPv4 and reports "out of subnets"."""
    key = "0.0.0.0-0&2001:db8:1000:1::-64"
    etcd_server.etcdctl("put", f"{prefix}/subnets/{key}", FLANNELD_V6_ONLY)
    manager = LeaseManager(make_registry(etcd_server), IPv4Address("192.0.2.7"), ttl=600)
    lease = manager.acquire(network_config(), host_attrs(7), previous=None)
    assert network_config().contains_subnet(lease.subnet)
    listed, _ = make_registry(etcd_server).list_leases()
    assert sorted(listed_lease.key for listed_lease in listed) == sorted([key, lease.key])
