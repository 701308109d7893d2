"""The hold-down of deleted peers: when each falls due, and which returning lease keeps its entries."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network

import pytest

from overlayd.agent.holddown import HOLD_DOWN, HoldDown, same_entries
from overlayd.subnet.lease import Lease, LeaseAttrs


def lease(n: int, public_ip: str = "192.0.2.2", mac: str = "02:00:00:00:00:02", revision: int = 5) -> Lease:
    attrs = LeaseAttrs(IPv4Address(public_ip), "vxlan", vni=1, vtep_mac=mac)
    return Lease(IPv4Network(f"198.18.{n}.0/24"), attrs, etcd_lease_id=7, mod_revision=revision)


def test_the_hold_down_is_short() -> None:
    assert 0 < HOLD_DOWN <= 1


def test_a_held_peer_falls_due_after_the_hold_down_and_only_then() -> None:
    holds = HoldDown(0.5)
    held = holds.hold("198.18.2.0-24", lease(2), deleted_at=100.0)
    assert held.due == 100.5 and "198.18.2.0-24" in holds and len(holds) == 1
    assert holds.timeout(100.1) == pytest.approx(0.4)
    assert holds.due(100.49) == []
    assert holds.due(100.5) == [held]
    assert len(holds) == 0 and holds.timeout(101.0) is None and holds.due(200.0) == []


def test_holds_fall_due_oldest_first_and_a_returned_one_never() -> None:
    holds = HoldDown(1.0)
    first = holds.hold("a", lease(2), 10.0)
    holds.hold("b", lease(3), 10.2)
    third = holds.hold("c", lease(4), 10.4)
    assert holds.take("b") is not None
    assert holds.take("b") is None  # taken once
    assert holds.due(11.1) == [first]
    assert holds.timeout(11.1) == pytest.approx(0.3)
    assert holds.due(12.0) == [third]


def test_a_deletion_stamped_earlier_than_the_one_before_falls_due_with_it() -> None:
    holds = HoldDown(1.0)
    holds.hold("a", lease(2), 10.0)
    late = holds.hold("b", lease(3), 9.5)  # a stamp that lags: kept in order, not due early
    assert late.due == 11.0
    assert [held.key for held in holds.due(11.0)] == ["a", "b"]


def test_a_key_held_again_is_due_from_its_newest_deletion() -> None:
    holds = HoldDown(1.0)
    holds.hold("a", lease(2), 10.0)
    holds.hold("b", lease(3), 10.5)
    again = holds.hold("a", lease(2), 10.8)
    assert [held.key for held in holds] == ["b", "a"] and again.due == 11.8
    assert [held.key for held in holds.due(11.6)] == ["b"]


@pytest.mark.parametrize("seconds", [-0.1, 1.5])
def test_a_hold_down_outside_0_to_1_s_is_refused(seconds: float) -> None:
    with pytest.raises(ValueError, match="use between 0 and 1 s"):
        HoldDown(seconds)


def test_a_re_created_lease_has_the_same_entries_despite_its_new_revision_and_etcd_lease() -> None:
    held = lease(2)
    assert same_entries(held, replace(held, etcd_lease_id=99, mod_revision=42))


@pytest.mark.parametrize(
    "other",
    [
        lease(2, public_ip="192.0.2.9"),
        lease(2, mac="02:00:00:00:00:09"),
        lease(3),
        replace(lease(2), attrs=replace(lease(2).attrs, vni=2)),
        replace(lease(2), attrs=replace(lease(2).attrs, backend_type="host-gw")),
    ],
    ids=["public-ip", "mac", "subnet", "vni", "backend"],
)
def test_another_public_ip_mac_subnet_or_backend_is_not_the_same(other: Lease) -> None:
    assert not same_entries(lease(2), other)
