"""Which peers answer a probe through the overlay: the schedule, the budget and the verdicts (pure).

A peer is probed on each of its overlay addresses, one per address family the network carries
(its IPv4 and, in a dual-stack network, its IPv6 one; in an IPv6-only network the IPv6 one alone):
each address is a *path*, with a verdict of its own. Paths are probed in turn, at most
``ProbeBudget.rate`` probes a second for the whole node, so a cycle through P paths takes
``max(min_period, P / rate)`` seconds: at the default 20/s, 5000 IPv4 peers are each probed every
250 s (5000 dual-stack peers: each family every 500 s) and the node sends 20 small packets a second
whatever the cluster's size. A path whose probe was lost is probed again after ``retry`` seconds,
and an unreachable one every ``retry`` seconds too, so failure and recovery are seen in seconds,
not a cycle; the budget still caps the total, so a cluster-wide outage cannot make a node flood. A
path turns unreachable after ``misses`` lost probes in a row and reachable again on the first
answer; a peer is unreachable while any of its paths is. Memory is one small record per path. The
caller (the probe thread) hands in the time; nothing here does I/O.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from ipaddress import IPv4Address, IPv6Address

Address = IPv4Address | IPv6Address


class Reach(Enum):
    UNKNOWN = "unknown"  # not probed yet
    REACHABLE = "reachable"
    UNREACHABLE = "unreachable"


class Family(Enum):
    """The address family of a path, as ``/peers`` and the ``family`` metric label spell it."""

    IPV4 = "ipv4"
    IPV6 = "ipv6"

    @property
    def title(self) -> str:
        """As a log line or ``overlayd status`` writes it."""
        return "IPv4" if self is Family.IPV4 else "IPv6"


def family_of(address: Address) -> Family:
    return Family.IPV6 if address.version == 6 else Family.IPV4


# A peer's line shows its worst path: unreachable before unknown before reachable.
_RANK = {Reach.UNREACHABLE: 0, Reach.UNKNOWN: 1, Reach.REACHABLE: 2}


@dataclass(frozen=True)
class ProbeBudget:
    """How often this node probes (``--probe-rate`` probes a second at most)."""

    rate: float = 20.0  # probes a second, for all peers together
    min_period: float = 5.0  # seconds between two probes of one healthy path, in small clusters
    retry: float = 2.0  # seconds before a lost probe's path, or an unreachable one, is probed again
    timeout: float = 1.0  # seconds an answer may take
    misses: int = 3  # lost probes in a row that make a path unreachable

    def period(self, paths: int) -> float:
        """Seconds between two probes of one healthy path among ``paths``."""
        return max(self.min_period, paths / self.rate) if self.rate > 0 else float("inf")


@dataclass(frozen=True)
class PathReach:
    """One family of one peer: its address and verdict."""

    family: Family
    target: str  # the overlay address probed
    state: Reach
    since: float  # unix time of the last change of state (the first probe's, for the first)
    rtt: float | None  # seconds, of the last answer
    misses: int  # lost probes in a row


@dataclass(frozen=True)
class PeerReach:
    """One peer's verdict, as ``/peers`` and ``overlayd status`` show it: the fields of its worst
    path (the only one, in a single-family network), the families that fail, and every path."""

    key: str  # its lease key, e.g. 198.18.7.0-24
    target: str  # the overlay address probed
    state: Reach
    since: float  # unix time of the last change of state (the first probe's, for the first)
    rtt: float | None  # seconds, of the last answer
    misses: int  # lost probes in a row
    failing: tuple[Family, ...] = ()  # the families whose path is unreachable
    paths: tuple[PathReach, ...] = ()


@dataclass(frozen=True)
class Transition:
    """A path that changed between reachable and unreachable (not from UNKNOWN to reachable)."""

    key: str
    target: Address
    state: Reach
    previous: Reach
    misses: int

    @property
    def family(self) -> Family:
        return family_of(self.target)


class _Path:
    __slots__ = ("due", "family", "misses", "rtt", "since", "state", "target")

    def __init__(self, target: Address, due: float, wall: float) -> None:
        self.target = target
        self.family = family_of(target)
        self.state = Reach.UNKNOWN
        self.since = wall
        self.rtt: float | None = None
        self.misses = 0
        self.due = due  # monotonic time of its next probe

    def reach(self) -> PathReach:
        return PathReach(self.family, str(self.target), self.state, self.since, self.rtt, self.misses)


class _Peer:
    __slots__ = ("bad", "paths", "targets")

    def __init__(self, targets: tuple[Address, ...], paths: list[_Path]) -> None:
        self.targets = targets
        self.paths = paths
        self.bad = 0  # how many of its paths are unreachable


class ProbeSchedule:
    """The paths to probe, when each is due, and what their answers make of them."""

    def __init__(self, budget: ProbeBudget) -> None:
        self.budget = budget
        self.peers: dict[str, _Peer] = {}
        self.path_count = 0
        # (due, key, index of the path in its peer's); stale entries are skipped on pop
        self._queue: list[tuple[float, str, int]] = []
        self._tokens = 0.0
        self._refilled: float | None = None
        # Kept as verdicts change: counting would walk every peer.
        self.unreachable_count = 0  # peers with an unreachable path
        self.unreachable_paths = dict.fromkeys(Family, 0)

    def set_targets(self, targets: Mapping[str, Sequence[Address]], now: float, wall: float) -> None:
        """Probe exactly ``targets`` (lease key -> its overlay addresses, one per family) from now
        on; new peers' paths are spread over the first cycle so a large cluster's start is no burst.
        A path whose address changed is a new path: its history says nothing."""
        for key in self.peers.keys() - targets.keys():
            self._forget(key)
        new: list[tuple[str, int]] = []  # paths of new peers, spread over the first cycle
        for key, addresses in targets.items():
            wanted = tuple(addresses)
            peer = self.peers.get(key)
            if peer is None:
                self.peers[key] = _Peer(wanted, [_Path(address, now, wall) for address in wanted])
                self.path_count += len(wanted)
                new += [(key, index) for index in range(len(wanted))]
            elif peer.targets != wanted:
                self._replace(key, peer, wanted, now, wall)
        spread = self.budget.period(self.path_count)
        for order, (key, index) in enumerate(sorted(new)):
            path = self.peers[key].paths[index]
            path.due = now + spread * order / len(new)
            heapq.heappush(self._queue, (path.due, key, index))
        if len(self._queue) > 4 * self.path_count + 64:  # drop stale entries, bounding memory
            self._queue = [(p.due, k, i) for k, peer in self.peers.items() for i, p in enumerate(peer.paths)]
            heapq.heapify(self._queue)

    def _replace(self, key: str, peer: _Peer, wanted: tuple[Address, ...], now: float, wall: float) -> None:
        """Give ``key`` the paths ``wanted``: those to an address it had keep their history, the
        others are probed now (within the budget)."""
        kept = {path.target: path for path in peer.paths}
        self._forget(key)
        paths = [kept.get(address) or _Path(address, now, wall) for address in wanted]
        self.peers[key] = replaced = _Peer(wanted, paths)
        self.path_count += len(paths)
        for index, path in enumerate(paths):  # a kept path may have moved in the list
            heapq.heappush(self._queue, (path.due, key, index))
            if path.state is Reach.UNREACHABLE:
                self._count_bad(replaced, path, 1)

    def _forget(self, key: str) -> None:
        peer = self.peers.pop(key)
        self.path_count -= len(peer.paths)
        for path in peer.paths:
            if path.state is Reach.UNREACHABLE:
                self._count_bad(peer, path, -1)

    def _count_bad(self, peer: _Peer, path: _Path, change: int) -> None:
        before = peer.bad
        peer.bad += change
        self.unreachable_paths[path.family] += change
        if (before == 0) != (peer.bad == 0):
            self.unreachable_count += change

    def due(self, now: float) -> list[tuple[str, Address]]:
        """The paths to probe now, within the budget, as (lease key, address); each is rescheduled
        a cycle on (an answer or a loss brings it forward)."""
        budget = self.budget
        if self._refilled is None:
            self._refilled = now
        self._tokens = min(budget.rate, self._tokens + (now - self._refilled) * budget.rate)
        self._refilled = now
        period = budget.period(self.path_count)
        chosen: list[tuple[str, Address]] = []
        queue = self._queue
        while queue and self._tokens >= 1.0 and queue[0][0] <= now:
            due, key, index = heapq.heappop(queue)
            peer = self.peers.get(key)
            if peer is None or index >= len(peer.paths) or peer.paths[index].due != due:
                continue
            path = peer.paths[index]
            self._tokens -= 1.0
            chosen.append((key, path.target))
            path.due = now + period
            heapq.heappush(queue, (path.due, key, index))
        return chosen

    def _path(self, key: str, target: Address) -> tuple[_Peer, _Path, int] | None:
        peer = self.peers.get(key)
        if peer is None:
            return None
        for index, path in enumerate(peer.paths):
            if path.target == target:
                return peer, path, index
        return None

    def answered(self, key: str, target: Address, rtt: float, wall: float) -> Transition | None:
        """Record an answer from ``key`` at ``target`` (ignored when that peer or address is gone)."""
        found = self._path(key, target)
        if found is None:
            return None
        peer, path, _ = found
        previous = path.state
        path.rtt, path.misses, path.state = rtt, 0, Reach.REACHABLE
        if previous is Reach.REACHABLE:
            return None
        path.since = wall
        if previous is not Reach.UNREACHABLE:
            return None  # a first answer is no news
        self._count_bad(peer, path, -1)
        return Transition(key, target, Reach.REACHABLE, previous, 0)

    def lost(self, key: str, target: Address, now: float, wall: float) -> Transition | None:
        """Record a probe of ``key`` at ``target`` that got no answer in time; it is probed again
        soon."""
        found = self._path(key, target)
        if found is None:
            return None
        peer, path, index = found
        path.misses += 1
        path.due = min(path.due, now + self.budget.retry)
        heapq.heappush(self._queue, (path.due, key, index))
        if path.misses < self.budget.misses or path.state is Reach.UNREACHABLE:
            return None
        previous, path.state, path.since = path.state, Reach.UNREACHABLE, wall
        self._count_bad(peer, path, 1)
        return Transition(key, target, Reach.UNREACHABLE, previous, path.misses)

    def unreachable(self) -> list[str]:
        """The keys of the peers with an unreachable path."""
        return sorted(key for key, peer in self.peers.items() if peer.bad)

    def partly_unreachable(self) -> dict[str, tuple[str, ...]]:
        """The peers reached over some families but not all: the families that fail, by key."""
        return {
            key: tuple(path.family.value for path in peer.paths if path.state is Reach.UNREACHABLE)
            for key, peer in self.peers.items() if 0 < peer.bad < len(peer.paths)
        }  # fmt: skip

    def snapshot(self) -> tuple[PeerReach, ...]:
        """Every peer's verdict, by key."""
        return tuple(_peer_reach(key, peer) for key, peer in sorted(self.peers.items()))


def _peer_reach(key: str, peer: _Peer) -> PeerReach:
    paths = tuple(path.reach() for path in peer.paths)
    failing = tuple(path.family for path in paths if path.state is Reach.UNREACHABLE)
    if not paths:
        return PeerReach(key, "", Reach.UNKNOWN, 0.0, None, 0)
    worst = min(paths, key=lambda path: _RANK[path.state])  # the first family among equals
    return PeerReach(key, worst.target, worst.state, worst.since, worst.rtt, worst.misses, failing, paths)
