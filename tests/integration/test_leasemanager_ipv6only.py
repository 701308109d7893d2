"""LeaseManager.acquire in an IPv6-only network against a real etcd: two hosts (each with the
PublicIP 0.0.0.0) get two subnets, a host's dual-stack lease of before is deleted as stale, and a
restart takes its own lease back."""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable
from dataclasses import replace
from ipaddress import IPv4Address, IPv6Address

import pytest

from overlayd.backend.select import CONFIG_PARSERS
from overlayd.etcd.leasing import LeaseManager
from overlayd.etcd.registry import Registry
from overlayd.lab.etcdserver import EtcdServer
from overlayd.subnet.config import parse_network_config
from overlayd.subnet.lease import NO_IPV4_SUBNET, NO_PUBLIC_IP, Lease, LeaseAttrs, is_ipv6_only

from .support import host_attrs

MakeRegistry = Callable[[EtcdServer], Registry]
V6_ONLY = parse_network_config(
    json.dumps({"EnableIPv4": False, "EnableIPv6": True, "IPv6Network": "2001:db8:1000::/56",
                "Backend": {"Type": "vxlan"}}),
    backends=CONFIG_PARSERS,
)  # fmt: skip
DUAL = parse_network_config(
    json.dumps({"Network": "198.18.0.0/16", "EnableIPv6": True, "IPv6Network": "2001:db8:1000::/56",
                "Backend": {"Type": "vxlan"}}),
    backends=CONFIG_PARSERS,
)  # fmt: skip
POOL = V6_ONLY.ipv6
assert POOL is not None


def v6_only_attrs(n: int) -> LeaseAttrs:
    """What an IPv6-only vxlan host publishes: no IPv4 address, its VTEP MAC in BackendV6Data."""
    return LeaseAttrs(
        NO_PUBLIC_IP, "vxlan", vni=1, public_ipv6=IPv6Address(f"2001:db8::{n}"),
        vtep_mac_v6=f"02:42:20:01:0d:{n:02x}",
    )  # fmt: skip


def manager(registry: Registry, seed: int) -> LeaseManager:
    """The agent's manager in an IPv6-only network: its PublicIP is flannel's unset 0.0.0.0."""
    return LeaseManager(registry, NO_PUBLIC_IP, ttl=600, rng=random.Random(seed))


def dual_stack_lease(registry: Registry, n: int) -> Lease:
    """Host ``n``'s lease under the dual-stack config of before (PublicIP 192.0.2.n, PublicIPv6
    2001:db8::n)."""
    attrs = replace(
        host_attrs(n), public_ipv6=IPv6Address(f"2001:db8::{n}"), vtep_mac_v6=f"02:42:20:01:0d:{n:02x}"
    )
    return LeaseManager(registry, IPv4Address(f"192.0.2.{n}"), ttl=600).acquire(DUAL, attrs, previous=None)


def stored(etcd: EtcdServer, prefix: str, key: str) -> str:
    return etcd.etcdctl("get", "--print-value-only", f"{prefix}/subnets/{key}").strip()


def test_two_hosts_acquire_two_ipv6_only_leases_in_flanneld_form(
    make_registry: MakeRegistry, etcd_server: EtcdServer, prefix: str
) -> None:
    # One seed for both: the second must still see the first's lease as taken, not as its own.
    first = manager(make_registry(etcd_server), seed=5).acquire(V6_ONLY, v6_only_attrs(1), previous=None)
    second = manager(make_registry(etcd_server), seed=5).acquire(V6_ONLY, v6_only_attrs(2), previous=None)
    assert first.ipv6_subnet != second.ipv6_subnet
    for lease, n in ((first, 1), (second, 2)):
        assert is_ipv6_only(lease) and lease.subnet == NO_IPV4_SUBNET and lease.etcd_lease_id
        assert lease.ipv6_subnet is not None and POOL.contains_subnet(lease.ipv6_subnet)
        assert lease.key == f"0.0.0.0-0&{lease.ipv6_subnet.network_address}-64"
        assert stored(etcd_server, prefix, lease.key) == (
            f'{{"PublicIP":"0.0.0.0","PublicIPv6":"2001:db8::{n}","BackendType":"vxlan",'
            f'"BackendV6Data":{{"VNI":1,"VtepMAC":"02:42:20:01:0d:{n:02x}"}}}}'
        )
    listed, _ = make_registry(etcd_server).list_leases()
    assert sorted(lease.key for lease in listed) == sorted([first.key, second.key])


def test_a_restart_takes_its_own_ipv6_only_lease_back(
    make_registry: MakeRegistry, etcd_server: EtcdServer, prefix: str
) -> None:
    first = manager(make_registry(etcd_server), seed=1).acquire(V6_ONLY, v6_only_attrs(3), previous=None)
    other = manager(make_registry(etcd_server), seed=1).acquire(V6_ONLY, v6_only_attrs(4), previous=None)
    # The restarted agent has a new VTEP MAC and another seed: same key, the new MAC published.
    restarted = replace(v6_only_attrs(3), vtep_mac_v6="02:42:20:01:0d:33")
    again = manager(make_registry(etcd_server), seed=99).acquire(V6_ONLY, restarted, previous=None)
    assert again.key == first.key and again.ipv6_subnet == first.ipv6_subnet
    assert (
        json.loads(stored(etcd_server, prefix, first.key))["BackendV6Data"]["VtepMAC"] == "02:42:20:01:0d:33"
    )
    listed, _ = make_registry(etcd_server).list_leases()
    assert sorted(lease.key for lease in listed) == sorted([first.key, other.key])
    # A renewal keeps the key and moves it to a new etcd lease.
    mgr = manager(make_registry(etcd_server), seed=2)
    held = mgr.acquire(V6_ONLY, restarted, previous=None)
    renewed = mgr.renew(held)
    assert renewed is not None and renewed.key == first.key and renewed.etcd_lease_id != held.etcd_lease_id


def test_the_previous_ipv6_subnet_is_taken_back_when_free(
    make_registry: MakeRegistry, etcd_server: EtcdServer, prefix: str
) -> None:
    """subnet.env's FLANNEL_IPV6_SUBNET, when its lease expired meanwhile."""
    previous = list(POOL.network.subnets(new_prefix=64))[77]
    lease = manager(make_registry(etcd_server), seed=3).acquire(
        V6_ONLY, v6_only_attrs(5), previous=None, previous_ipv6=previous
    )
    assert lease.ipv6_subnet == previous


def test_an_own_dual_stack_lease_is_deleted_as_stale_when_the_network_turns_ipv6_only(
    make_registry: MakeRegistry, etcd_server: EtcdServer, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    registry = make_registry(etcd_server)
    old = dual_stack_lease(registry, 6)
    assert old.ipv6_subnet is not None and not is_ipv6_only(old)
    # Another host's dual-stack lease is not ours to delete (it has another PublicIPv6).
    peer = dual_stack_lease(registry, 8)
    with caplog.at_level(logging.WARNING, logger="overlayd.etcd.leasing"):
        new = manager(registry, seed=4).acquire(
            V6_ONLY, v6_only_attrs(6), previous=None, previous_ipv6=old.ipv6_subnet
        )
    # The IPv6 subnet stays this host's (containers keep their addresses), in the IPv6-only key.
    assert is_ipv6_only(new) and new.ipv6_subnet == old.ipv6_subnet
    assert stored(etcd_server, prefix, old.key) == ""
    listed, _ = registry.list_leases()
    assert sorted(lease.key for lease in listed) == sorted([new.key, peer.key])
    assert f"deleted lease {old.key}, which carries our PublicIP" in caplog.text
    assert "the network is IPv6-only (EnableIPv4 false)" in caplog.text


def test_the_deleted_dual_stack_lease_is_explained_by_its_ipv4_half(
    make_registry: MakeRegistry, etcd_server: EtcdServer, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    registry = make_registry(etcd_server)
    old = dual_stack_lease(registry, 7)
    with caplog.at_level(logging.WARNING, logger="overlayd.etcd.leasing"):
        manager(registry, seed=4).acquire(
            V6_ONLY, v6_only_attrs(7), previous=None, previous_ipv6=old.ipv6_subnet
        )
    assert "which carries our PublicIPv6 2001:db8::7" in caplog.text
    assert f"does not hand out its IPv6 subnet {old.ipv6_subnet}" not in caplog.text
    assert f"IPv4 subnet {old.subnet}" in caplog.text


def test_a_reservation_carrying_our_public_ipv6_is_left_alone(
    make_registry: MakeRegistry, etcd_server: EtcdServer, prefix: str
) -> None:
    """An operator's reservation (no etcd lease) outside the pool stays, as in the other families."""
    key = "198.18.9.0-24&2001:db8:2000::-64"
    etcd_server.etcdctl(
        "put", f"{prefix}/subnets/{key}",
        '{"PublicIP":"192.0.2.9","PublicIPv6":"2001:db8::9","BackendType":"vxlan",'
        '"BackendData":{"VNI":1,"VtepMAC":"02:42:c0:00:02:09"}}',
    )  # fmt: skip
    lease = manager(make_registry(etcd_server), seed=6).acquire(V6_ONLY, v6_only_attrs(9), previous=None)
    assert is_ipv6_only(lease)
    assert stored(etcd_server, prefix, key) != ""
