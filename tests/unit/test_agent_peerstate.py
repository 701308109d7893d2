"""PeerState: lease events turned into the changes the kernel needs, with no kernel and no etcd."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from overlayd.agent.holddown import HoldEnd
from overlayd.agent.peerstate import Held, OwnKeyLost, PeerChange, PeerState, Unchanged
from overlayd.backend.api import HostFacts
from overlayd.backend.vxlan.backend import Vxlan
from overlayd.etcd.api import LeaseEvent
from overlayd.subnet.lease import Lease, LeaseAttrs
from overlayd.subnet.leasecheck import BadLeaseLog, Underlay
from tests.integration.support import network_config


def lease(n: int, mac: str | None = None, revision: int = 1, subnet: str | None = None) -> Lease:
    attrs = LeaseAttrs(IPv4Address(f"192.0.2.{n}"), "vxlan", vni=1, vtep_mac=mac or f"0a:00:00:00:00:{n:02x}")
    return Lease(IPv4Network(subnet or f"198.18.{n}.0/24"), attrs, mod_revision=revision)


def key(n: int) -> str:
    return f"198.18.{n}.0-24"


def state_with(*peers: int) -> tuple[PeerState, list[str]]:
    """Our lease is 198.18.1.0/24 at 192.0.2.1; ``peers`` listed; the bad leases reported."""
    reported: list[str] = []
    state = PeerState(BadLeaseLog(reported.append))
    state.config, state.lease = network_config(), lease(1)
    state.underlay = Underlay(frozenset({IPv4Address("192.0.2.1")}))
    state.backend = Vxlan()
    ip = IPv4Address("192.0.2.1")
    state.host = HostFacts(ip, "u0", ip, 1500, (), Path("/nonexistent"))
    state.snapshot({key(1): state.lease, **{key(n): lease(n) for n in peers}}, 0.0)
    state.wanted()  # as the agent's first pass does; events then change it peer by peer
    return state, reported


def event(kind: str, n: int, new: Lease | None) -> LeaseEvent:
    return LeaseEvent(kind, key(n), new, 9)  # type: ignore[arg-type]


def applied(state: PeerState, update: object) -> PeerChange:
    assert isinstance(update, PeerChange), update
    state.settled(update, written=True)
    return update


def test_a_snapshot_wants_the_entries_of_every_peer_but_us() -> None:
    state, reported = state_with(2, 3)
    assert set(state.wanted().programmed_keys()) == {key(2), key(3)}
    assert state.peer_ips() == {IPv4Address("192.0.2.2"), IPv4Address("192.0.2.3")}
    plane = state.plane()
    assert len(plane.neighs) == len(plane.fdbs) == len(plane.routes) == 2 and not reported


def test_a_put_adds_one_peer_and_a_delete_is_held_then_removed() -> None:
    state, _ = state_with(2)
    added = applied(state, state.on_event(event("put", 3, lease(3)), 1.0))
    assert added.is_peer and not added.was_peer and added.held is None
    assert (len(added.diff.add.neighs), len(added.diff.add.fdbs), len(added.diff.add.routes)) == (1, 1, 1)
    assert not added.diff.remove and key(3) in state.programmed
    assert state.on_event(event("delete", 3, None), 2.0) == Held(key(3))
    assert key(3) not in state.peers and key(3) in state.wanted().programmed_keys()  # kept meanwhile
    assert state.release(2.0 + state.holds.seconds - 0.01) == []
    [held] = state.release(2.0 + state.holds.seconds)
    removed = applied(state, state.change(held.key, held.lease, None, held))
    assert removed.hold_end is HoldEnd.REMOVED and not removed.diff.add
    assert (len(removed.diff.remove.neighs), len(removed.diff.remove.routes)) == (1, 1)
    assert key(3) not in state.programmed and key(3) not in state.wanted().programmed_keys()


def test_a_changed_mac_is_one_change_replacing_neighbour_and_fdb() -> None:
    state, _ = state_with(2)
    change = applied(
        state, state.on_event(event("put", 2, lease(2, mac="0a:00:00:00:09:02", revision=5)), 1.0)
    )
    assert change.was_peer and change.is_peer
    assert (
        {n.mac for n in change.diff.add.neighs}
        == {f.mac for f in change.diff.add.fdbs}
        == {"0a:00:00:00:09:02"}
    )
    assert (
        {n.mac for n in change.diff.remove.neighs}
        == {f.mac for f in change.diff.remove.fdbs}
        == {"0a:00:00:00:00:02"}
    )
    assert not change.diff.add.routes and not change.diff.remove.routes  # the route stays


def test_a_lease_outside_the_network_is_not_programmed_and_reported_once() -> None:
    state, reported = state_with(2)
    outside = lease(9, subnet="198.19.9.0/24")
    change = applied(state, state.on_event(LeaseEvent("put", "198.19.9.0-24", outside, 9), 1.0))  # type: ignore[arg-type]
    assert not change.is_peer and change.diff.empty
    state.wanted()
    state.on_event(LeaseEvent("put", "198.19.9.0-24", outside, 9), 2.0)  # type: ignore[arg-type]
    assert reported == ["outside_network"]
    assert "198.19.9.0-24" not in state.programmed and state.peer_ips() == {IPv4Address("192.0.2.2")}


def test_a_relisting_after_compaction_drops_a_departed_peer() -> None:
    state, _ = state_with(2, 3)
    relisted = state.snapshot({key(1): lease(1), key(2): lease(2)}, 5.0)
    assert relisted.ended == [] and not relisted.own_missing
    assert set(state.wanted().programmed_keys()) == {key(2)} and not state.holds


def test_a_held_peer_that_returns_unchanged_is_kept_in_place() -> None:
    state, _ = state_with(2)
    assert isinstance(state.on_event(event("delete", 2, None), 1.0), Held)
    back = applied(state, state.on_event(event("put", 2, lease(2, revision=7)), 1.2))
    assert back.hold_end is HoldEnd.RETURNED and back.diff.empty and key(2) in state.programmed
    assert not state.holds
    assert isinstance(state.on_event(event("delete", 2, None), 2.0), Held)
    relisted = state.snapshot({key(1): lease(1), key(2): lease(2, mac="0a:00:00:00:09:02")}, 2.5)
    assert [(ended.held.key, ended.end) for ended in relisted.ended] == [(key(2), HoldEnd.REPLACED)]


def test_our_own_key_deleted_or_missing_is_a_lost_lease_and_a_renewal_is_nothing() -> None:
    state, _ = state_with(2)
    assert state.on_event(event("put", 1, lease(1, revision=4)), 1.0) == Unchanged()
    assert state.on_event(event("delete", 1, None), 1.0) == OwnKeyLost("key delete seen on the watch")
    assert state.snapshot({key(2): lease(2)}, 2.0).own_missing


def test_our_key_follows_a_new_lease_of_ours() -> None:
    """Our key is formatted once per lease of ours, not once per event: a new lease of ours is
    recognised at once, and the old key is a peer's from then on."""
    state, _ = state_with(2)
    assert state.on_event(event("put", 1, lease(1, revision=4)), 1.0) == Unchanged()
    state.lease = lease(3)
    assert state.on_event(event("delete", 3, None), 1.0) == OwnKeyLost("key delete seen on the watch")
    assert isinstance(state.on_event(event("put", 1, lease(1, revision=5)), 1.0), PeerChange)
    assert IPv4Network("198.18.1.0/24") in {other.subnet for other in state.others()}


def test_safe_peers_are_every_lease_but_ours_and_the_unsafe_ones() -> None:
    state, _ = state_with(2, 3)
    state.on_event(LeaseEvent("put", "198.19.9.0-24", lease(9, subnet="198.19.9.0/24"), 9), 1.0)  # type: ignore[arg-type]
    assert sorted(state.safe_peers()) == [key(2), key(3)]  # not ours, not one outside the Network
