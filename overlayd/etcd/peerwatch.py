"""Peer leases as a stream for the reconciler: a full snapshot, then incremental events.

List at revision R, hand over the whole set, watch from R+1. Any watch failure (compaction, an
etcd restart, a consumer error) ends that watch; after a jittered, capped backoff we list again
and hand over a new full snapshot. The consumer diffs snapshots against what it has, so nothing
depends on having seen every event (level-triggered), and a missed delete cannot leak.

This thread never touches kernel state: it only puts items on the caller's queue.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from dataclasses import dataclass, field

from overlayd.base.backoff import Backoff
from overlayd.base.outage import Outage
from overlayd.etcd.api import LeaseEvent, RegistryError, SubnetRegistry
from overlayd.subnet.lease import Lease

log = logging.getLogger(__name__)

BACKOFF_INITIAL = 0.2
BACKOFF_MAX = 5.0


@dataclass(frozen=True)
class PeerSnapshot:
    """Every lease at ``revision``, by key (``198.18.46.0-24``); the watch is healthy again.

    ``reason`` says why this listing happened: ``start``, ``compaction`` (the watch's revision
    was compacted away) or ``error`` (the watch failed).
    """

    leases: dict[str, Lease]
    revision: int
    reason: str = "start"


@dataclass(frozen=True)
class PeerEvents:
    """Changes after the last snapshot, in revision order.

    ``received`` is when the watch thread got them (monotonic): the event-latency metric starts
    there, so time spent waiting in the queue counts.
    """

    events: list[LeaseEvent]
    received: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class PeerWatchDown:
    """The watch failed; a new PeerSnapshot follows once etcd answers again."""

    error: str


PeerItem = PeerSnapshot | PeerEvents | PeerWatchDown


class PeerWatcher:
    """Keeps the caller's queue fed with peer leases from etcd, on its own thread."""

    def __init__(
        self,
        registry: SubnetRegistry,
        out: queue.Queue[PeerItem],
        backoff_initial: float = BACKOFF_INITIAL,
        backoff_max: float = BACKOFF_MAX,
        rng: random.Random | None = None,
        first_listing: tuple[list[Lease], int] | None = None,
    ) -> None:
        self.registry = registry
        self.out = out
        # A listing someone just read (the lease manager's): the first snapshot, watched onwards
        # from its revision, so the events since then still arrive.
        self._first_listing = first_listing
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.rng = rng or random.Random()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # A watch's callbacks publish only while their generation is current, under the lock, so
        # a late event from a failed watch never lands after the snapshot that replaced it.
        self._lock = threading.Lock()
        self._generation = 0
        # An etcd outage fails every re-list: log its start and end, not each attempt.
        self._outage = Outage(log, "peer watch")
        self._relist_reason = "start"  # the reason the next snapshot will carry
        # Set when the current watch fails, and by stop(): the thread sleeps on it, not on a poll.
        self._cycle_done = threading.Event()

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="peer-watcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop watching and wait (bounded) for the thread to end."""
        self._stop.set()
        self._cycle_done.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        backoff = Backoff(self.backoff_initial, self.backoff_max, jitter=(0.5, 1.0), rng=self.rng)
        while not self._stop.is_set():
            started = time.monotonic()
            error = self._list_and_watch()
            if error is None:  # stopped
                return
            self._outage.failed(error, "; re-listing with backoff")
            self.out.put(PeerWatchDown(error))
            if time.monotonic() - started > self.backoff_max:
                backoff.reset()  # it was healthy for a while: not a flapping failure
            self._stop.wait(backoff.next())

    def _list_and_watch(self) -> str | None:
        """One list + watch cycle; returns why it ended, or None when stopped."""
        listing, self._first_listing = self._first_listing, None
        try:
            leases, revision = listing or self.registry.list_leases()
        except RegistryError as exc:
            return str(exc)
        failed = self._cycle_done = threading.Event()
        reason: list[str] = []
        with self._lock:
            self._generation += 1
            generation = self._generation
            self.out.put(PeerSnapshot({lease.key: lease for lease in leases}, revision, self._relist_reason))
        self._outage.succeeded()
        log.info("peer snapshot (%s): %d leases at revision %d", self._relist_reason, len(leases), revision)
        self._relist_reason = "error"

        def on_events(events: list[LeaseEvent]) -> None:
            self._publish(generation, PeerEvents(events))

        def on_error(exc: Exception, compacted: bool) -> None:
            reason.append(f"compacted: {exc}" if compacted else str(exc))
            if compacted:
                self._relist_reason = "compaction"
            failed.set()

        try:
            cancel = self.registry.watch_leases(revision + 1, on_events, on_error)
        except RegistryError as exc:
            return str(exc)
        try:
            if not self._stop.is_set():  # else stop() ran before this cycle's event was published
                failed.wait()
        finally:
            with self._lock:
                self._generation += 1
            cancel()
        return reason[0] if reason else None

    def _publish(self, generation: int, item: PeerItem) -> None:
        with self._lock:
            if generation == self._generation:
                self.out.put(item)

