"""LeaseManager against a real etcd: contention, exhaustion, restarts, lost keys, renewal."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network

import pytest

from overlayd.etcd.leasing import LeaseManager
from overlayd.etcd.registry import Registry
from overlayd.lab.etcdserver import EtcdServer
from overlayd.subnet.allocate import OutOfSubnets
from overlayd.subnet.lease import Lease

from .support import host_attrs, network_config

MakeRegistry = Callable[[EtcdServer], Registry]


def manager(registry: Registry, n: int, ttl: int = 600, seed: int | None = None) -> LeaseManager:
    return LeaseManager(registry, IPv4Address(f"192.0.2.{n}"), ttl=ttl, rng=random.Random(seed))


def net(cidr: str) -> IPv4Network:
    return IPv4Network(cidr)


def test_twenty_agents_at_once_get_twenty_distinct_subnets(
    make_registry: MakeRegistry, etcd_server: EtcdServer
):
    # 25 subnets for 20 agents: random picks collide, so agents lose races and must move on.
    config = network_config(subnet_min="198.18.1.0", subnet_max="198.18.25.0")
    agents = 20
    barrier = threading.Barrier(agents)
    results: dict[int, Lease] = {}
    errors: list[BaseException] = []
    registries = [make_registry(etcd_server) for _ in range(agents)]

    def agent(n: int) -> None:
        try:
            barrier.wait()
            results[n] = manager(registries[n - 1], n).acquire(config, host_attrs(n), previous=None)
        except BaseException as exc:  # reported below, with the agent's number
            errors.append(exc)

    threads = [threading.Thread(target=agent, args=(n,)) for n in range(1, agents + 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert not errors
    assert len({lease.subnet for lease in results.values()}) == agents
    stored, _ = registries[0].list_leases()
    assert {str(lease.subnet): lease.attrs.public_ip for lease in stored} == {
        str(lease.subnet): IPv4Address(f"192.0.2.{n}") for n, lease in results.items()
    }


def test_more_agents_than_subnets_is_out_of_subnets(registry: Registry):
    config = network_config(subnet_min="198.18.1.0", subnet_max="198.18.4.0")
    for n in range(1, 5):
        manager(registry, n).acquire(config, host_attrs(n), previous=None)
    before, _ = registry.list_leases()

    with pytest.raises(OutOfSubnets) as failure:
        manager(registry, 5).acquire(config, host_attrs(5), previous=None)

    message = str(failure.value)
    assert "198.18.0.0/16" in message and "4 leases" in message
    after, _ = registry.list_leases()
    assert [(lease.key, lease.mod_revision) for lease in after] == [
        (lease.key, lease.mod_revision) for lease in before
    ]


def test_restart_with_the_same_public_ip_takes_over_its_subnet(registry: Registry):
    config = network_config()
    first = manager(registry, 7).acquire(config, host_attrs(7), previous=None)
    for n in (8, 9):
        manager(registry, n).acquire(config, host_attrs(n), previous=None)

    # A restarted agent: new manager, no subnet.env, a new VTEP MAC.
    restarted_attrs = replace(host_attrs(7), vtep_mac="02:00:00:00:07:77")
    again = manager(registry, 7).acquire(config, restarted_attrs, previous=None)

    assert again.subnet == first.subnet
    assert again.etcd_lease_id != first.etcd_lease_id
    stored = {lease.key: lease for lease in registry.list_leases()[0]}
    assert stored[first.key].attrs.vtep_mac == "02:00:00:00:07:77"
    assert len(stored) == 3


def test_the_listing_a_lease_was_chosen_from_is_handed_over_once(registry: Registry):
    config = network_config()
    other = manager(registry, 8).acquire(config, host_attrs(8), previous=None)
    leases_manager = manager(registry, 7)
    assert leases_manager.take_listing() is None  # nothing acquired yet
    ours = leases_manager.acquire(config, host_attrs(7), previous=None)

    listing = leases_manager.take_listing()
    assert listing is not None
    leases, revision = listing
    assert revision < ours.mod_revision, "read before our own lease was written"
    assert leases == [other, ours], "and our lease added as granted"
    assert leases[-1].etcd_lease_id == ours.etcd_lease_id
    assert leases_manager.take_listing() is None


def test_a_taken_over_lease_replaces_its_old_self_in_the_listing(registry: Registry):
    config = network_config()
    first = manager(registry, 7).acquire(config, host_attrs(7), previous=None)
    restarted = manager(registry, 7)
    again = restarted.acquire(config, replace(host_attrs(7), vtep_mac="02:00:00:00:07:77"), previous=None)
    listing = restarted.take_listing()
    assert listing is not None
    assert [(lease.key, lease.attrs.vtep_mac) for lease in listing[0]] == [(first.key, "02:00:00:00:07:77")]
    assert listing[0][0].etcd_lease_id == again.etcd_lease_id != first.etcd_lease_id


def test_our_lease_outside_a_changed_config_is_deleted_as_flanneld_does(registry: Registry):
    """Left alone it would keep peers routing a subnet we no longer serve, and hold it, for a day."""
    old = manager(registry, 7).acquire(network_config(), host_attrs(7), previous=net("198.18.3.0/24"))
    theirs = manager(registry, 8).acquire(network_config(), host_attrs(8), previous=net("198.18.4.0/24"))
    narrowed = network_config(subnet_min="198.18.100.0")
    again = manager(registry, 7).acquire(narrowed, host_attrs(7), previous=None)
    assert narrowed.contains_subnet(again.subnet)
    stored = {lease.key for lease in registry.list_leases()[0]}
    assert stored == {again.key, theirs.key}, f"{old.key} deleted, the other host's kept"


def test_a_dual_stack_lease_flanneld_left_is_deleted_and_its_ipv4_subnet_taken_back(
    registry: Registry, etcd_server: EtcdServer, prefix: str
):
    """A node switched from dual-stack flanneld (the config's EnableIPv6 since removed): as
    flanneld does with an own lease the config no longer fits, it is deleted first, so peers see
    it go before our lease comes (left to expire, it would take our VTEP MAC's FDB entry with it
    on flanneld peers), and subnet.env's subnet, its IPv4 half, is ours again."""
    key = f"{prefix}/subnets/198.18.46.0-24&2001:db8:0:2e::-64"
    value = (
        '{"PublicIP":"192.0.2.7","PublicIPv6":"2001:db8::7","BackendType":"vxlan",'
        '"BackendData":{"VNI":1,"VtepMAC":"02:42:c0:00:02:07"},'
        '"BackendV6Data":{"VNI":1,"VtepMAC":"02:42:c0:00:02:77"}}'
    )
    etcd_lease = etcd_server.etcdctl("lease", "grant", "600").split()[1]
    etcd_server.etcdctl("put", f"--lease={etcd_lease}", key, value)

    lease = manager(registry, 7).acquire(network_config(), host_attrs(7), previous=net("198.18.46.0/24"))

    assert lease.key == "198.18.46.0-24" and lease.etcd_lease_id
    assert [stored.key for stored in registry.list_leases()[0]] == ["198.18.46.0-24"]


def test_a_stale_lease_rewritten_since_the_listing_is_not_deleted(registry: Registry):
    stale = manager(registry, 7).acquire(network_config(), host_attrs(7), previous=net("198.18.3.0/24"))
    rewritten = registry.take_over(stale, host_attrs(7), ttl=600)
    assert rewritten is not None
    assert registry.delete_lease(stale) is False
    assert registry.delete_lease(rewritten) is True
    assert registry.list_leases()[0] == []


def test_previous_subnet_is_reused_when_free(registry: Registry):
    previous = IPv4Network("198.18.200.0/24")

    lease = manager(registry, 1).acquire(network_config(), host_attrs(1), previous=previous)

    assert lease.subnet == previous


def test_previous_subnet_taken_by_another_host_is_not_stolen(registry: Registry):
    config = network_config()
    theirs = IPv4Network("198.18.200.0/24")
    manager(registry, 2).acquire(config, host_attrs(2), previous=theirs)

    lease = manager(registry, 1).acquire(config, host_attrs(1), previous=theirs)

    assert lease.subnet != theirs


def test_deleted_own_key_is_acquired_again_preferring_the_old_subnet(
    registry: Registry, etcd_server: EtcdServer, prefix: str
):
    config = network_config()
    leases = manager(registry, 1)
    lease = leases.acquire(config, host_attrs(1), previous=None)
    etcd_server.etcdctl("del", f"{prefix}/subnets/{lease.key}")

    assert leases.renew(lease) is None
    again = leases.acquire(config, host_attrs(1), previous=lease.subnet)

    assert again.subnet == lease.subnet
    assert registry.lease_remaining(again) is not None


def test_renew_extends_the_lease_and_schedules_before_expiry(registry: Registry):
    leases = LeaseManager(registry, IPv4Address("192.0.2.1"), ttl=40, renew_margin=10.0)
    lease = leases.acquire(network_config(), host_attrs(1), previous=None)
    now = time.monotonic()
    assert 29 <= leases.renew_at(lease) - now <= 30.5

    time.sleep(1.1)
    renewed = leases.renew(lease)

    assert renewed is not None
    assert (registry.lease_remaining(renewed) or 0) >= 39
    assert 29 <= leases.renew_at(renewed) - time.monotonic() <= 30.5


def test_renew_at_with_a_margin_longer_than_the_ttl_waits_half_the_ttl(registry: Registry):
    leases = LeaseManager(registry, IPv4Address("192.0.2.1"), ttl=60, renew_margin=3600.0)
    lease = leases.acquire(network_config(), host_attrs(1), previous=None)

    assert 29 <= leases.renew_at(lease) - time.monotonic() <= 30.5


def test_a_reservation_written_by_hand_is_taken_by_its_host(
    registry: Registry, etcd_server: EtcdServer, prefix: str
):
    """flanneld's reservations doc: a key without an etcd lease, here the minimal
    ``{"PublicIP": ...}``. Its host takes it (and it stays a reservation); no other host does."""
    config = network_config()
    etcd_server.etcdctl("put", f"{prefix}/subnets/198.18.200.0-24", '{"PublicIP":"192.0.2.7"}')

    others = [manager(registry, n, seed=n).acquire(config, host_attrs(n), previous=None) for n in (8, 9)]
    mine = manager(registry, 7).acquire(config, host_attrs(7), previous=None)

    assert mine.subnet == net("198.18.200.0/24") and mine.etcd_lease_id == 0
    assert net("198.18.200.0/24") not in {lease.subnet for lease in others}
    stored = {lease.key: lease for lease in registry.list_leases()[0]}
    assert stored["198.18.200.0-24"].attrs == host_attrs(7)  # now with its VXLAN attributes
