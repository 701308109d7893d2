"""LeaseManager's decisions on an in-memory registry: acquire, renew, lost and re-acquired, races, outages.

MemoryRegistry keeps etcd's semantics (tests/integration/test_registry_contract.py proves it), so
these run in milliseconds without etcd or root; tests/integration/test_leasing.py keeps the
real-etcd ones.
"""

from __future__ import annotations

import math
import random
import time
from ipaddress import IPv4Address, IPv4Network

import pytest

from overlayd.etcd.api import RegistryError
from overlayd.etcd.leasing import LeaseManager
from overlayd.etcd.memory import ManualClock, MemoryEtcd, MemoryRegistry
from overlayd.subnet.allocate import OutOfSubnets
from overlayd.subnet.lease import Lease, LeaseAttrs, encode_attrs
from tests.integration.support import host_attrs, network_config

TTL = 600


@pytest.fixture
def etcd() -> MemoryEtcd:
    return MemoryEtcd(ManualClock())


def host(etcd: MemoryEtcd, n: int, seed: int = 0) -> LeaseManager:
    return LeaseManager(MemoryRegistry(etcd), IPv4Address(f"192.0.2.{n}"), ttl=TTL, rng=random.Random(seed))


def stored(etcd: MemoryEtcd) -> dict[str, LeaseAttrs]:
    return {lease.key: lease.attrs for lease in MemoryRegistry(etcd).list_leases()[0]}


def test_acquire_leases_a_subnet_of_the_network_and_hands_its_listing_over_once(etcd: MemoryEtcd) -> None:
    host(etcd, 2).registry.create_lease(IPv4Network("198.18.9.0/24"), host_attrs(2), TTL)
    manager = host(etcd, 1)
    lease = manager.acquire(network_config(), host_attrs(1), previous=None)
    assert network_config().contains_subnet(lease.subnet) and lease.subnet != IPv4Network("198.18.9.0/24")
    assert stored(etcd)[lease.key] == host_attrs(1)
    listing = manager.take_listing()
    assert listing is not None
    leases, revision = listing
    assert {known.key for known in leases} == {lease.key, "198.18.9.0-24"}
    assert revision < lease.mod_revision, "the listing predates our write; the watch starts after it"
    assert manager.take_listing() is None


def test_the_previous_subnet_is_preferred_and_our_own_lease_taken_over(etcd: MemoryEtcd) -> None:
    previous = IPv4Network("198.18.77.0/24")
    first = host(etcd, 1).acquire(network_config(), host_attrs(1), previous=previous)
    assert first.subnet == previous
    restarted = host(etcd, 1, seed=5).acquire(network_config(), host_attrs(1), previous=None)
    assert restarted.subnet == previous, "the lease carrying our PublicIP wins over a random subnet"
    assert restarted.etcd_lease_id != first.etcd_lease_id and restarted.mod_revision > first.mod_revision
    assert list(stored(etcd)) == [first.key]


def test_renew_extends_our_lease_and_moves_its_deadline(etcd: MemoryEtcd) -> None:
    manager = host(etcd, 1)
    lease = manager.acquire(network_config(), host_attrs(1), previous=None)
    due = manager.renew_at(lease) - time.monotonic()
    # A margin (an hour) longer than the TTL: renewal at half the TTL, not constantly.
    assert due == pytest.approx(TTL / 2, abs=5)
    etcd.advance(TTL - 10)
    renewed = manager.renew(lease)
    assert renewed is not None and renewed.mod_revision > lease.mod_revision
    etcd.advance(20)  # past the first lease's TTL: the renewed one still holds the key
    assert manager.registry.lease_remaining(renewed) == TTL - 20
    assert manager.registry.lease_remaining(lease) is None
    assert not manager.expired(renewed)
    assert manager.renew_at(lease) <= time.monotonic(), "a lease this manager no longer holds is due now"


def test_a_lease_that_expired_is_lost_then_acquired_again_on_the_same_subnet(etcd: MemoryEtcd) -> None:
    manager = host(etcd, 1)
    lease = manager.acquire(network_config(), host_attrs(1), previous=None)
    etcd.advance(TTL + 1)  # etcd unreachable for a day, say: the key expired
    assert stored(etcd) == {}
    assert manager.registry.lease_remaining(lease) is None
    assert manager.renew(lease) is None
    again = manager.acquire(network_config(), host_attrs(1), previous=lease.subnet)
    assert again.subnet == lease.subnet and again.etcd_lease_id != lease.etcd_lease_id


def test_a_lease_taken_by_another_host_is_lost_and_another_subnet_acquired(etcd: MemoryEtcd) -> None:
    manager, other = host(etcd, 1), host(etcd, 2)
    lease = manager.acquire(network_config(), host_attrs(1), previous=None)
    [listed], _ = other.registry.list_leases()
    assert other.registry.take_over(listed, host_attrs(2), TTL) is not None
    assert manager.renew(lease) is None
    again = manager.acquire(network_config(), host_attrs(1), previous=lease.subnet)
    assert again.subnet != lease.subnet
    assert stored(etcd) == {lease.key: host_attrs(2), again.key: host_attrs(1)}


class RacedRegistry(MemoryRegistry):
    """A registry where another host creates each subnet just before we do, ``races`` times."""

    def __init__(self, etcd: MemoryEtcd, races: int) -> None:
        super().__init__(etcd)
        self.rival = MemoryRegistry(etcd)
        self.races = races
        self.lost: list[IPv4Network] = []

    def create_lease(self, subnet: IPv4Network, lease_attrs: LeaseAttrs, ttl: int) -> Lease | None:
        if self.races:
            self.races -= 1
            assert self.rival.create_lease(subnet, host_attrs(9), ttl) is not None
            self.lost.append(subnet)
        return super().create_lease(subnet, lease_attrs, ttl)


def test_a_race_lost_on_create_moves_on_to_the_next_subnet(etcd: MemoryEtcd) -> None:
    registry = RacedRegistry(etcd, races=2)
    manager = LeaseManager(registry, IPv4Address("192.0.2.1"), ttl=TTL, rng=random.Random(1))
    lease = manager.acquire(network_config(), host_attrs(1), previous=IPv4Network("198.18.5.0/24"))
    assert registry.lost[0] == IPv4Network("198.18.5.0/24") and len(registry.lost) == 2
    assert lease.subnet not in registry.lost
    assert stored(etcd)[lease.key] == host_attrs(1)
    assert all(stored(etcd)[f"{subnet.network_address}-24"] == host_attrs(9) for subnet in registry.lost)


def test_races_past_a_whole_listing_list_again(etcd: MemoryEtcd) -> None:
    """Three lost races in one listing (CHOICES_PER_LISTING) mean it is stale: the next try re-lists."""
    registry = RacedRegistry(etcd, races=4)
    manager = LeaseManager(registry, IPv4Address("192.0.2.1"), ttl=TTL, rng=random.Random(2))
    lease = manager.acquire(network_config(), host_attrs(1), previous=None)
    assert len(registry.lost) == 4 and lease.subnet not in registry.lost


def test_out_of_subnets_when_the_pool_is_leased_and_a_race_for_the_last_one(etcd: MemoryEtcd) -> None:
    small = network_config("198.18.1.0", "198.18.2.0")
    host(etcd, 2).acquire(small, host_attrs(2), previous=None)
    registry = RacedRegistry(etcd, races=1)
    manager = LeaseManager(registry, IPv4Address("192.0.2.1"), ttl=TTL, rng=random.Random(3))
    with pytest.raises(OutOfSubnets, match=r"SubnetMin 198\.18\.1\.0 and SubnetMax 198\.18\.2\.0"):
        manager.acquire(small, host_attrs(1), previous=None)


def test_a_config_that_no_longer_hands_out_our_subnet_deletes_it_and_leases_another(etcd: MemoryEtcd) -> None:
    manager = host(etcd, 1)
    lease = manager.acquire(network_config(), host_attrs(1), previous=IPv4Network("198.18.200.0/24"))
    narrower = network_config("198.18.1.0", "198.18.100.0")
    again = manager.acquire(narrower, host_attrs(1), previous=lease.subnet)
    assert narrower.contains_subnet(again.subnet)
    assert list(stored(etcd)) == [again.key], "the old lease is deleted, not left to expire"


def test_a_reservation_is_kept_and_never_expires(etcd: MemoryEtcd) -> None:
    etcd.put("/coreos.com/network/subnets/198.18.3.0-24", encode_attrs(host_attrs(1)).encode())
    manager = host(etcd, 1)
    lease = manager.acquire(network_config(), host_attrs(1), previous=None)
    assert (lease.subnet, lease.etcd_lease_id) == (IPv4Network("198.18.3.0/24"), 0)
    etcd.advance(10 * TTL)
    assert not manager.expired(lease)
    assert manager.registry.lease_remaining(lease) == math.inf
    assert manager.renew(lease) is not None


def test_etcd_down_fails_acquire_and_renew_alike_and_both_work_once_it_is_back(etcd: MemoryEtcd) -> None:
    manager = host(etcd, 1)
    lease = manager.acquire(network_config(), host_attrs(1), previous=None)
    etcd.set_unreachable(True)
    calls = (lambda: manager.renew(lease),
             lambda: manager.acquire(network_config(), host_attrs(1), previous=None))
    for call in calls:
        with pytest.raises(RegistryError) as raised:
            call()
        assert raised.value.unreachable
    assert not manager.expired(lease), "our clock, not etcd's answer, says when the lease runs out"
    etcd.set_unreachable(False)
    renewed = manager.renew(lease)
    assert renewed is not None and renewed.subnet == lease.subnet
