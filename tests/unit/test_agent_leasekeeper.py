"""LeaseKeeper's decisions on an in-memory registry and a clock the test moves: acquire, renew,
lost and re-acquired, etcd down past expiry, and what a changed network config means."""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv4Network

import pytest

from overlayd.agent.leasekeeper import Acquired, LeaseAction, LeaseKeeper
from overlayd.etcd.api import RegistryError
from overlayd.etcd.leasing import LeaseManager
from overlayd.etcd.memory import ManualClock, MemoryEtcd, MemoryRegistry
from overlayd.subnet.confchange import ConfigAction
from overlayd.subnet.config import ConfigError
from tests.integration.support import host_attrs

TTL, MARGIN, PREFIX = 600, 60.0, "/coreos.com/network"
CONFIG = {"Network": "198.18.0.0/16", "SubnetLen": 24, "Backend": {"Type": "vxlan", "VNI": 1}}


def put_config(etcd: MemoryEtcd, **changes: object) -> None:
    MemoryRegistry(etcd).put_config(json.dumps({**CONFIG, **changes}).encode())


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def etcd(clock: ManualClock) -> MemoryEtcd:
    store = MemoryEtcd(clock)
    put_config(store)
    return store


def keeper_of(etcd: MemoryEtcd, clock: ManualClock) -> LeaseKeeper:
    registry = MemoryRegistry(etcd)
    manager = LeaseManager(registry, IPv4Address("192.0.2.1"), ttl=TTL, renew_margin=MARGIN, clock=clock)
    return LeaseKeeper(manager, registry, PREFIX, clock=clock)


def started(etcd: MemoryEtcd, clock: ManualClock) -> tuple[LeaseKeeper, Acquired]:
    keeper = keeper_of(etcd, clock)
    config = keeper.read_config()
    return keeper, keeper.acquire(config, host_attrs(1), [IPv4Network("198.18.5.0/24")])


def test_acquire_holds_the_earlier_subnet_and_schedules_the_renewal(
    etcd: MemoryEtcd, clock: ManualClock
) -> None:
    keeper, acquired = started(etcd, clock)
    assert acquired.lease.subnet == IPv4Network("198.18.5.0/24") and acquired.moved_from is None
    assert keeper.lease == acquired.lease
    assert keeper.renew_at == clock() + TTL - MARGIN
    assert keeper.remaining() == TTL


def test_renewal_only_when_due_and_the_time_to_live_check_once_a_minute(
    etcd: MemoryEtcd, clock: ManualClock
) -> None:
    keeper, acquired = started(etcd, clock)
    assert keeper.check().action is LeaseAction.ALIVE  # the first check asks etcd
    assert keeper.check().action is LeaseAction.WAIT  # not again within the minute
    clock.advance(TTL - MARGIN - 1)
    assert keeper.check().action is LeaseAction.ALIVE
    clock.advance(1)
    renewed = keeper.check()
    assert renewed.action is LeaseAction.RENEWED and renewed.lease is not None
    assert renewed.lease.subnet == acquired.lease.subnet
    assert renewed.lease.mod_revision > acquired.lease.mod_revision
    assert keeper.lease is renewed.lease and keeper.renew_at == clock() + TTL - MARGIN


def test_a_revoked_lease_is_lost_and_re_acquired_on_the_same_subnet(
    etcd: MemoryEtcd, clock: ManualClock
) -> None:
    keeper, acquired = started(etcd, clock)
    keeper.check()
    etcd.revoke(acquired.lease.etcd_lease_id)
    clock.advance(61)
    lost = keeper.check()
    assert lost.action is LeaseAction.LOST and lost.why == "its etcd lease expired or was revoked"
    assert not lost.renewal_failed
    assert keeper.config is not None
    again = keeper.acquire(keeper.config, host_attrs(1), [acquired.lease.subnet])
    assert again.lease.subnet == acquired.lease.subnet and again.moved_from is None
    assert again.lease.etcd_lease_id != acquired.lease.etcd_lease_id


def test_a_renewal_that_finds_the_key_gone_reports_it_lost(etcd: MemoryEtcd, clock: ManualClock) -> None:
    keeper, acquired = started(etcd, clock)
    assert MemoryRegistry(etcd).delete_lease(acquired.lease)
    clock.advance(TTL - MARGIN)
    lost = keeper.check()
    assert (
        lost.action is LeaseAction.LOST and lost.why == "renewal found our key gone" and lost.renewal_failed
    )


def test_etcd_down_past_expiry_says_so_then_the_lease_is_lost_once_etcd_answers(
    etcd: MemoryEtcd, clock: ManualClock
) -> None:
    keeper, acquired = started(etcd, clock)
    etcd.set_unreachable(True)
    clock.advance(TTL - MARGIN)
    early = keeper.check()
    assert early.action is LeaseAction.UNREACHABLE and early.renewal_failed and early.why == ""
    etcd.advance(MARGIN)
    expired = keeper.check()
    assert expired.action is LeaseAction.UNREACHABLE
    assert expired.why.startswith(f"lease {acquired.lease.key} expired while etcd was unreachable")
    etcd.set_unreachable(False)
    back = keeper.check()
    assert back.action is LeaseAction.LOST and back.why == "renewal found our key gone"


def test_config_unchanged_and_broken_are_kept(etcd: MemoryEtcd, clock: ManualClock) -> None:
    keeper, acquired = started(etcd, clock)
    in_force = keeper.config
    assert keeper.recheck([acquired.lease]).decision is None
    MemoryRegistry(etcd).put_config(b'{"Network": "198.18.0.0/16", "SubnetLen": 40}')
    broken = keeper.recheck([acquired.lease])
    assert broken.valid is False and broken.decision is None and keeper.config is in_force
    etcd.set_unreachable(True)
    unknown = keeper.recheck([acquired.lease])
    assert unknown.valid is None and keeper.config is in_force


def test_a_new_vni_means_a_restart_and_another_change_is_applied(
    etcd: MemoryEtcd, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    keeper, acquired = started(etcd, clock)
    in_force = keeper.config
    put_config(etcd, SubnetMax="198.18.200.0")
    applied = keeper.recheck([acquired.lease]).decision
    assert applied is not None and applied.action is ConfigAction.APPLY
    assert keeper.config == applied.stored and keeper.config != in_force
    put_config(etcd, SubnetMax="198.18.200.0", Backend={"Type": "vxlan", "VNI": 2})
    restart = keeper.recheck([acquired.lease]).decision
    assert restart is not None and restart.action is ConfigAction.RESTART
    assert keeper.config is not None and keeper.config.backend.vni == 1  # in force until the restart
    assert "network config changed VNI 1 -> 2; restarting to rebuild the device" in caplog.text


def test_a_renumbering_network_is_held_once_announced_and_cleared_on_revert(
    etcd: MemoryEtcd, clock: ManualClock
) -> None:
    keeper, acquired = started(etcd, clock)
    in_force = keeper.config
    put_config(etcd, Network="198.19.0.0/16")
    held = keeper.recheck([acquired.lease]).decision
    assert held is not None and held.action is ConfigAction.HOLD and held.announce and held.own_outside
    again = keeper.recheck([acquired.lease]).decision
    assert again is not None and again.action is ConfigAction.HOLD and not again.announce
    assert keeper.config is in_force and keeper.hold is again
    put_config(etcd)
    reverted = keeper.recheck([acquired.lease]).decision
    assert reverted is not None and reverted.action is ConfigAction.UNCHANGED and reverted.cleared
    assert keeper.hold is None and keeper.config is in_force


def test_config_read_reports_valid_or_not_only_when_etcd_answered(
    etcd: MemoryEtcd, clock: ManualClock
) -> None:
    keeper = keeper_of(etcd, clock)
    seen: list[bool] = []
    keeper.on_config_read = seen.append
    etcd.set_unreachable(True)
    with pytest.raises(RegistryError):
        keeper.read_config()
    assert seen == [], "an unreachable etcd says nothing about the config"
    etcd.set_unreachable(False)
    keeper.read_config()
    assert seen == [True]
    etcd.put(f"{PREFIX}/config", b'{"Network": "not a network"}')
    with pytest.raises(ConfigError):
        keeper.read_config()
    assert seen == [True, False]
