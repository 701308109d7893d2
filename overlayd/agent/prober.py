"""The probe thread: pings every peer's overlay addresses (one per family the network carries)
within the budget, keeps their verdicts, reports them (metrics, the ``/peers`` snapshot, the log)
and stores this node's view in etcd.

It runs beside the loop, never in it: the loop hands in the peers to probe (``feed``, an atomic
reference), and the HTTP thread asks for a ``snapshot``, built on request under a lock that this
thread holds only while it updates verdicts (building one walks every peer: too dear to do on
every turn at 1000 peers). The probe's path is the containers' path: the backend names the addresses
each peer answers on through the overlay (``backend.api.probe_targets``). One raw socket per family:
the ICMPv6 one is opened at start too, and a host that cannot open it has every IPv6 path reported
unreachable (the IPv6 overlay cannot work there either).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from overlayd.agent.icmp import Address, EchoSocket
from overlayd.agent.metrics import Metrics
from overlayd.agent.reach import Family, PeerReach, ProbeBudget, ProbeSchedule, Reach, Transition, family_of
from overlayd.etcd.api import RegistryError, SubnetRegistry
from overlayd.subnet.healthview import NodeView, Partial, encode_view

log = logging.getLogger(__name__)
# Seconds between two turns: probes due are sent and answers read in batches (the kernel stamps
# each answer's arrival), so the thread wakes twice a second whatever the traffic.
TICK = 0.5
# Seconds between two looks at whether this node's view in etcd needs rewriting, when no peer
# changed state (a change is looked at at once).
PUBLISH_INTERVAL = 5.0
# Each node's view in etcd lives this long unless rewritten; it is rewritten when it changes and
# halfway through its TTL, so 5000 nodes write about 8 times a second in all when nothing changes.
VIEW_TTL = 1200
VIEW_RETRY = 10.0  # seconds before a failed write of the view is tried again
VIEW_MIN_GAP = 2.0  # seconds between two writes of the view: a flapping peer costs etcd little


@dataclass(frozen=True)
class ProbeTargets:
    """What the loop hands the probe thread: whom to probe, and what to say when one fails."""

    node: str | None  # this node's lease key (None: no lease yet, nothing to store in etcd)
    targets: Mapping[str, tuple[Address, ...]]  # lease key -> the overlay addresses it answers on
    programmed: frozenset[str]  # keys of peers whose kernel entries are in place here
    causes: str  # the likely causes of a loss on this backend, for the log line


@dataclass(frozen=True)
class ReachSnapshot:
    """What ``/peers`` serves."""

    peers: tuple[PeerReach, ...] = ()
    unreachable: int = 0
    rate: float = 0.0
    period: float = 0.0  # seconds between two probes of one healthy path (a peer's address)
    problem: str = ""  # why nothing is probed ("" while probing)
    taken: float = field(default_factory=time.time)


class ViewPublisher:
    """Stores this node's unreachable peers in etcd when they change, and before its TTL runs out.

    Each write runs on a short-lived thread of its own (``background``), one at a time: an etcd
    that does not answer must not hold up the probes."""

    def __init__(self, registry: SubnetRegistry, ttl: int = VIEW_TTL, background: bool = True) -> None:
        self.registry, self.ttl, self.background = registry, ttl, background
        self._written: tuple[str, tuple[str, ...]] | None = None
        self._refresh_at = 0.0  # monotonic time the stored view needs rewriting, changed or not
        self._not_before = 0.0  # no write before this (after a failure, or a write just done)
        self._writing = threading.Event()

    def step(
        self, node: str | None, probed: int, unreachable: list[str], now: float,
        partial: dict[str, tuple[str, ...]] | None = None,
    ) -> None:
        """Store the view if it changed (or is due for its TTL); ``partial``: the unreachable
        peers reached over some families, and the families that fail."""
        if node is None or now < self._not_before or self._writing.is_set():
            return
        current = (node, tuple(unreachable), tuple(sorted((partial or {}).items())))
        if current == self._written and now < self._refresh_at:
            return
        self._writing.set()
        if self.background:
            args = (current, probed, now)
            threading.Thread(target=self._write, args=args, name="view", daemon=True).start()
        else:
            self._write(current, probed, now)

    def _write(self, current: tuple[str, tuple[str, ...], Partial], probed: int, now: float) -> None:
        node, unreachable, partial = current
        try:
            view = encode_view(NodeView(node, probed, unreachable, time.time(), partial))
            self.registry.put_health(node, view, self.ttl)
        except RegistryError as exc:
            log.debug("could not store the data path view of %s: %s", node, exc)
            self._not_before = now + VIEW_RETRY
        else:
            self._written, self._refresh_at = current, now + self.ttl / 2
            self._not_before = now + VIEW_MIN_GAP
        finally:
            self._writing.clear()


class Prober:
    """One thread, a raw socket per family; see the module docstring."""

    def __init__(self, metrics: Metrics, budget: ProbeBudget, publisher: ViewPublisher | None = None) -> None:
        self.metrics = metrics
        self.budget = budget
        self.publisher = publisher
        self.schedule = ProbeSchedule(budget)
        self._problem = ""
        self._lock = threading.Lock()
        self.tid = 0  # the thread's id in /proc/self/task, for measuring its CPU
        self._targets = ProbeTargets(None, {}, frozenset(), "")
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._ident = 0
        self._sequence = 0
        self._outstanding: dict[int, tuple[str, Address, float]] = {}  # sequence: key, target, sent
        self._sockets: dict[Family, EchoSocket] = {}
        self._no_ipv6 = ""  # why no ICMPv6 socket could be opened ("" while there is one)
        self._no_ipv6_told = False

    def feed(self, targets: ProbeTargets) -> None:
        """Probe these peers from now on (called from the loop's thread)."""
        self._targets = targets

    def start(self) -> None:
        try:
            self._sockets[Family.IPV4] = EchoSocket()
        except OSError as exc:
            problem = f"cannot open a raw ICMP socket ({exc.strerror}): the data path is not probed"
            log.warning("%s; run the agent as root or with CAP_NET_RAW", problem)
            self._problem = problem
            return
        try:
            self._sockets[Family.IPV6] = EchoSocket(ipv6=True)
        except OSError as exc:  # a kernel without IPv6; told when an IPv6 path is to be probed
            self._no_ipv6 = exc.strerror or str(exc)
        self._ident = (os.getpid() ^ id(self)) & 0xFFFF
        self._thread = threading.Thread(target=self._run, name="probe", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            for sock in self._sockets.values():
                sock.close()

    def snapshot(self) -> ReachSnapshot:
        """Every peer's verdict now (called from the HTTP thread)."""
        if self._problem:
            return ReachSnapshot(rate=self.budget.rate, problem=self._problem)
        with self._lock:
            peers = self.schedule.snapshot()
            unreachable = self.schedule.unreachable_count
            period = self.budget.period(self.schedule.path_count)
        return ReachSnapshot(peers, unreachable, self.budget.rate, period)

    def _run(self) -> None:
        self.tid = threading.get_native_id()
        applied: ProbeTargets | None = None
        last_publish = 0.0
        while not self._stopping.is_set():
            now, wall = time.monotonic(), time.time()
            targets = self._targets
            fed = targets is not applied
            with self._lock:
                if fed:
                    self.schedule.set_targets(targets.targets, now, wall)
                    applied = targets
                self._send(now, wall)
            self._stopping.wait(TICK)
            with self._lock:
                changed = self._receive(time.time(), targets)
                changed = self._expire(time.monotonic(), time.time(), targets) or changed
            if changed or fed or now - last_publish >= PUBLISH_INTERVAL:
                self._publish(targets, now)
                last_publish = now

    def _send(self, now: float, wall: float) -> None:
        for key, target in self.schedule.due(now):
            self._sequence = (self._sequence + 1) & 0xFFFF
            self._outstanding[self._sequence] = (key, target, wall)
            self.metrics.probes_sent.inc()
            sock = self._sockets.get(family_of(target))
            if sock is None:
                self._tell_no_ipv6()
            if sock is None or not sock.send(target, self._ident, self._sequence):
                self._outstanding[self._sequence] = (key, target, wall - self.budget.timeout)  # lost now

    def _tell_no_ipv6(self) -> None:
        if not self._no_ipv6_told:
            self._no_ipv6_told = True
            log.warning(
                "cannot open a raw ICMPv6 socket (%s): every peer's IPv6 path is reported unreachable; "
                "does this kernel have IPv6 (ipv6.disable=1)?", self._no_ipv6,
            )  # fmt: skip

    def _receive(self, wall: float, targets: ProbeTargets) -> bool:
        changed = False
        replies = [reply for sock in self._sockets.values() for reply in sock.replies()]
        for reply in replies:
            if reply.ident != self._ident:
                continue
            sent = self._outstanding.get(reply.sequence)
            if sent is None or sent[1] != reply.source:
                continue
            del self._outstanding[reply.sequence]
            key, target, at = sent
            rtt = max(0.0, (reply.received or wall) - at)
            self.metrics.probes_answered.inc()
            self.metrics.probe_rtt.observe(rtt)
            changed = self._report(self.schedule.answered(key, target, rtt, wall), targets) or changed
        return changed

    def _expire(self, now: float, wall: float, targets: ProbeTargets) -> bool:
        changed = False
        late = [seq for seq, (_, _, at) in self._outstanding.items() if wall - at >= self.budget.timeout]
        for sequence in late:
            key, target, _ = self._outstanding.pop(sequence)
            self.metrics.probes_lost.inc()
            changed = self._report(self.schedule.lost(key, target, now, wall), targets) or changed
        return changed

    def _report(self, transition: Transition | None, targets: ProbeTargets) -> bool:
        if transition is None:
            return False
        log_transition(transition, targets, self.budget)
        return True

    def _publish(self, targets: ProbeTargets, now: float) -> None:
        with self._lock:  # a healthy node walks no peer list here
            unreachable = self.schedule.unreachable() if self.schedule.unreachable_count else []
            partial = self.schedule.partly_unreachable() if unreachable else {}
        self.metrics.peers_unreachable.set(len(unreachable))
        for family, count in self.schedule.unreachable_paths.items():
            self.metrics.peers_unreachable_by_family.labels(family=family.value).set(count)
        if self.publisher is not None:
            self.publisher.step(targets.node, len(self.schedule.peers), unreachable, now, partial)


def log_transition(transition: Transition, targets: ProbeTargets, budget: ProbeBudget) -> None:
    """One line when a peer's path of one family stops or starts answering through the overlay."""
    key, target, family = transition.key, transition.target, transition.family.title
    if transition.state is Reach.REACHABLE:
        log.warning("peer %s answers through the overlay again over %s (probe to %s)", key, family, target)
        return
    lost = f"{transition.misses} probes in a row to {target} unanswered ({budget.timeout:g}s timeout)"
    if key in targets.programmed:
        log.warning(
            "peer %s unreachable through the overlay over %s: %s while its kernel entries here are "
            "right (checked against its lease on the last pass); likely causes: %s",
            key, family, lost, targets.causes,
        )  # fmt: skip
    else:
        log.warning(
            "peer %s unreachable through the overlay over %s: %s, and its kernel entries here are "
            "not all programmed yet (the log above names the failing entry)",
            key, family, lost,
        )  # fmt: skip
