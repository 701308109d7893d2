"""Dual-stack leases in a real etcd: flanneld's key and value, created and renewed as one, an own
IPv4-only lease replaced, flanneld's dual-stack lease reused."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import replace
from ipaddress import IPv4Address, IPv6Address, IPv6Network

from overlayd.backend.select import CONFIG_PARSERS
from overlayd.etcd.leasing import LeaseManager
from overlayd.etcd.registry import Registry
from overlayd.lab.etcdserver import EtcdServer
from overlayd.subnet.config import parse_network_config

from .support import host_attrs

MakeRegistry = Callable[[EtcdServer], Registry]
DUAL = parse_network_config(
    json.dumps({"Network": "198.18.0.0/16", "EnableIPv6": True, "IPv6Network": "2001:db8:1000::/48",
                "Backend": {"Type": "vxlan"}}),
    backends=CONFIG_PARSERS,
)  # fmt: skip


def dual_attrs(n: int):
    return replace(
        host_attrs(n), public_ipv6=IPv6Address(f"2001:db8::{n}"), vtep_mac_v6=f"02:42:20:01:0d:{n:02x}"
    )


def stored(etcd: EtcdServer, key: str) -> str:
    return etcd.etcdctl("get", "--print-value-only", key).strip()


def test_a_dual_stack_lease_is_one_key_in_flanneld_form(
    make_registry: MakeRegistry, etcd_server: EtcdServer, prefix: str
) -> None:
    registry = make_registry(etcd_server)
    manager = LeaseManager(registry, IPv4Address("192.0.2.5"), ttl=600, rng=random.Random(3))
    lease = manager.acquire(DUAL, dual_attrs(5), previous=None)
    assert lease.ipv6_subnet is not None and DUAL.ipv6.contains_subnet(lease.ipv6_subnet)
    key = f"{lease.subnet.network_address}-24&{lease.ipv6_subnet.network_address}-64"
    assert lease.key == key
    assert stored(etcd_server, f"{prefix}/subnets/{key}") == (
        '{"PublicIP":"192.0.2.5","PublicIPv6":"2001:db8::5","BackendType":"vxlan",'
        '"BackendData":{"VNI":1,"VtepMAC":"02:42:c0:00:02:05"},'
        '"BackendV6Data":{"VNI":1,"VtepMAC":"02:42:20:01:0d:05"}}'
    )
    renewed = manager.renew(lease)
    assert renewed is not None and renewed.key == key and renewed.etcd_lease_id != lease.etcd_lease_id
    # A restart finds it again, both halves.
    again = LeaseManager(make_registry(etcd_server), IPv4Address("192.0.2.5"), ttl=600).acquire(
        DUAL, dual_attrs(5), previous=None
    )
    assert again.key == key
    assert [listed.key for listed in registry.list_leases()[0]] == [key]


def test_an_own_ipv4_only_lease_is_replaced_keeping_its_ipv4_subnet(
    make_registry: MakeRegistry, etcd_server: EtcdServer, prefix: str
) -> None:
    """The path of a live change from IPv4-only to dual-stack: the IPv4 half stays (subnet.env
    names it), the key gains the IPv6 half, the old key is gone."""
    registry = make_registry(etcd_server)
    ipv4_config = replace(DUAL, ipv6=None)
    manager = LeaseManager(registry, IPv4Address("192.0.2.6"), ttl=600)
    old = manager.acquire(ipv4_config, host_attrs(6), previous=None)
    assert old.ipv6_subnet is None
    new = manager.acquire(DUAL, dual_attrs(6), previous=old.subnet)
    assert new.subnet == old.subnet and new.ipv6_subnet is not None
    assert [listed.key for listed in registry.list_leases()[0]] == [new.key]
    assert stored(etcd_server, f"{prefix}/subnets/{old.key}") == ""


def test_flanneld_dual_stack_lease_of_ours_is_reused_and_an_ipv4_only_peer_is_avoided(
    make_registry: MakeRegistry, etcd_server: EtcdServer, prefix: str
) -> None:
    ttl_lease = etcd_server.etcdctl("lease", "grant", "600").split()[1]
    flanneld_key = f"{prefix}/subnets/198.18.46.0-24&2001:db8:1000:2e::-64"
    etcd_server.etcdctl(
        "put", f"--lease={ttl_lease}", flanneld_key,
        '{"PublicIP":"192.0.2.7","PublicIPv6":"2001:db8::7","BackendType":"vxlan",'
        '"BackendData":{"VNI":1,"VtepMAC":"8a:da:7f:e8:8a:5f"},'
        '"BackendV6Data":{"VNI":1,"VtepMAC":"8a:da:7f:e8:8a:60"}}',
    )  # fmt: skip
    etcd_server.etcdctl(
        "put", f"{prefix}/subnets/198.18.47.0-24", '{"PublicIP":"192.0.2.8","PublicIPv6":null}'
    )  # fmt: skip
    registry = make_registry(etcd_server)
    mine = LeaseManager(registry, IPv4Address("192.0.2.7"), ttl=600).acquire(
        DUAL, dual_attrs(7), previous=None
    )
    assert mine.key == "198.18.46.0-24&2001:db8:1000:2e::-64"
    assert json.loads(stored(etcd_server, flanneld_key))["BackendV6Data"]["VtepMAC"] == "02:42:20:01:0d:07"
    other = LeaseManager(registry, IPv4Address("192.0.2.9"), ttl=600).acquire(
        DUAL, dual_attrs(9), previous=None
    )
    assert str(other.subnet) not in ("198.18.46.0/24", "198.18.47.0/24")
    assert other.ipv6_subnet != IPv6Network("2001:db8:1000:2e::/64")
