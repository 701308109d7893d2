"""Which peers answer a probe through the overlay: the schedule, the budget and the verdicts (pure).

Each peer is probed in turn, at most ``ProbeBudget.rate`` probes a second for the whole node, so a
cycle through N peers takes ``max(min_period, N / rate)`` seconds: at the default 20/s, 5000 peers
are each probed every 250 s and the node sends 20 small packets a second whatever the cluster's
size. A peer whose probe was lost is probed again after ``retry`` seconds, and an unreachable one
every ``retry`` seconds too, so failure and recovery are seen in seconds, not a cycle; the budget
still caps the total, so a cluster-wide outage cannot make a node flood. A peer turns unreachable
after ``misses`` lost probes in a row and reachable again on the first answer. Memory is one small
record per peer. The caller (the probe thread) hands in the time; nothing here does I/O.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from ipaddress import IPv4Address


class Reach(Enum):
    UNKNOWN = "unknown"  # not probed yet
    REACHABLE = "reachable"
    UNREACHABLE = "unreachable"


@dataclass(frozen=True)
class ProbeBudget:
    """How often this node probes (``--probe-rate`` probes a second at most)."""

    rate: float = 20.0  # probes a second, for all peers together
    min_period: float = 5.0  # seconds between two probes of one healthy peer, in small clusters
    retry: float = 2.0  # seconds before a lost probe's peer, or an unreachable one, is probed again
    timeout: float = 1.0  # seconds an answer may take
    misses: int = 3  # lost probes in a row that make a peer unreachable

    def period(self, peers: int) -> float:
        """Seconds between two probes of one healthy peer among ``peers``."""
        return max(self.min_period, peers / self.rate) if self.rate > 0 else float("inf")


@dataclass(frozen=True)
class PeerReach:
    """One peer's verdict, as ``/peers`` and ``overlayd status`` show it."""

    key: str  # its lease key, e.g. 198.18.7.0-24
    target: str  # the overlay address probed
    state: Reach
    since: float  # unix time of the last change of state (the first probe's, for the first)
    rtt: float | None  # seconds, of the last answer
    misses: int  # lost probes in a row


@dataclass(frozen=True)
class Transition:
    """A peer that changed between reachable and unreachable (not from UNKNOWN to reachable)."""

    key: str
    target: IPv4Address
    state: Reach
    previous: Reach
    misses: int


class _Peer:
    __slots__ = ("due", "misses", "rtt", "since", "state", "target")

    def __init__(self, target: IPv4Address, due: float, wall: float) -> None:
        self.target = target
        self.state = Reach.UNKNOWN
        self.since = wall
        self.rtt: float | None = None
        self.misses = 0
        self.due = due  # monotonic time of its next probe


class ProbeSchedule:
    """The peers to probe, when each is due, and what their answers make of them."""

    def __init__(self, budget: ProbeBudget) -> None:
        self.budget = budget
        self.peers: dict[str, _Peer] = {}
        self._queue: list[tuple[float, str]] = []  # (due, key); stale entries skipped on pop
        self._tokens = 0.0
        self._refilled: float | None = None
        self.unreachable_count = 0  # kept as verdicts change: counting would walk every peer

    def set_targets(self, targets: Mapping[str, IPv4Address], now: float, wall: float) -> None:
        """Probe exactly ``targets`` (lease key -> overlay address) from now on; new peers are
        spread over the first cycle so a large cluster's start is no burst."""
        for key in self.peers.keys() - targets.keys():
            self._forget(key)
        spread = self.budget.period(len(targets))
        new = [key for key in targets if key not in self.peers]
        for index, key in enumerate(sorted(new)):
            due = now + spread * index / max(1, len(new))
            self.peers[key] = _Peer(targets[key], due, wall)
            heapq.heappush(self._queue, (due, key))
        for key, target in targets.items():
            peer = self.peers[key]
            if peer.target != target:  # a new address is a new peer: its history says nothing
                self._forget(key)
                self.peers[key] = _Peer(target, now, wall)
                heapq.heappush(self._queue, (now, key))
        if len(self._queue) > 4 * len(self.peers) + 64:  # drop stale entries, bounding memory
            self._queue = [(p.due, k) for k, p in self.peers.items()]
            heapq.heapify(self._queue)

    def _forget(self, key: str) -> None:
        if self.peers.pop(key).state is Reach.UNREACHABLE:
            self.unreachable_count -= 1

    def due(self, now: float) -> list[tuple[str, IPv4Address]]:
        """The peers to probe now, within the budget; each is rescheduled a cycle on (an answer
        or a loss brings it forward)."""
        budget = self.budget
        if self._refilled is None:
            self._refilled = now
        self._tokens = min(budget.rate, self._tokens + (now - self._refilled) * budget.rate)
        self._refilled = now
        period = budget.period(len(self.peers))
        chosen: list[tuple[str, IPv4Address]] = []
        while self._queue and self._tokens >= 1.0 and self._queue[0][0] <= now:
            due, key = heapq.heappop(self._queue)
            peer = self.peers.get(key)
            if peer is None or peer.due != due:
                continue
            self._tokens -= 1.0
            chosen.append((key, peer.target))
            self._reschedule(key, peer, now + period)
        return chosen

    def _reschedule(self, key: str, peer: _Peer, due: float) -> None:
        peer.due = due
        heapq.heappush(self._queue, (due, key))

    def answered(self, key: str, target: IPv4Address, rtt: float, wall: float) -> Transition | None:
        """Record an answer from ``key`` (ignored when that peer or its address is gone)."""
        peer = self.peers.get(key)
        if peer is None or peer.target != target:
            return None
        previous = peer.state
        peer.rtt, peer.misses, peer.state = rtt, 0, Reach.REACHABLE
        if previous is Reach.REACHABLE:
            return None
        peer.since = wall
        if previous is not Reach.UNREACHABLE:
            return None  # a first answer is no news
        self.unreachable_count -= 1
        return Transition(key, target, Reach.REACHABLE, previous, 0)

    def lost(self, key: str, target: IPv4Address, now: float, wall: float) -> Transition | None:
        """Record a probe of ``key`` that got no answer in time; it is probed again soon."""
        peer = self.peers.get(key)
        if peer is None or peer.target != target:
            return None
        peer.misses += 1
        self._reschedule(key, peer, min(peer.due, now + self.budget.retry))
        if peer.misses < self.budget.misses or peer.state is Reach.UNREACHABLE:
            return None
        previous, peer.state, peer.since = peer.state, Reach.UNREACHABLE, wall
        self.unreachable_count += 1
        return Transition(key, target, Reach.UNREACHABLE, previous, peer.misses)

    def unreachable(self) -> list[str]:
        return sorted(key for key, peer in self.peers.items() if peer.state is Reach.UNREACHABLE)

    def snapshot(self) -> tuple[PeerReach, ...]:
        """Every peer's verdict, by key."""
        return tuple(
            PeerReach(key, str(p.target), p.state, p.since, p.rtt, p.misses)
            for key, p in sorted(self.peers.items())
        )
