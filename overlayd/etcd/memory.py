"""A subnet registry in memory, with etcd's semantics, for testing the lease and peer logic.

``MemoryEtcd`` is the store: keys with values and revisions, TTL'd leases on a clock the test
moves (``ManualClock``), a compactable history of changes, and an ``unreachable`` switch that
stands for an etcd outage. ``MemoryRegistry`` is one client of it, as ``registry.Registry`` is
of etcd: several clients of one store are several agents racing for subnets.

What it promises is ``etcd.api``'s contract, and tests/integration/test_registry_contract.py
runs the same tests against it and a real etcd. Not modelled: multiple endpoints and fail-over,
TLS and authentication, etcd's minimum TTL, and responses that batch several revisions.
"""

from __future__ import annotations

import itertools
import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from ipaddress import IPv4Network, IPv6Network
from typing import TypeVar

from overlayd.etcd.api import Cancel, LeaseEvent, RegistryError, WatchCompacted, health_prefix
from overlayd.subnet.lease import Lease, LeaseAttrs, LeaseError, decode_lease, encode_attrs

log = logging.getLogger(__name__)

T = TypeVar("T")


class ManualClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"a clock cannot go back {-seconds} s")
        self.now += seconds


@dataclass(frozen=True)
class StoredValue:
    """One key's value as etcd keeps it."""

    value: bytes
    mod_revision: int
    lease_id: int  # 0: not bound to a lease
    create_revision: int = 0  # the revision that created the key; a put over it keeps it


@dataclass(frozen=True)
class Change:
    """One put or delete in the store's history; a delete has no value."""

    revision: int
    key: str
    stored: StoredValue | None


class _Watch:
    """One watch's deliveries, in order, on its own thread, as an etcd watch stream has."""

    def __init__(self, name: str, on_changes: Callable[[list[Change]], None],
                 on_error: Callable[[RegistryError], None]) -> None:
        self._on_changes, self._on_error = on_changes, on_error
        self._items: queue.SimpleQueue[list[Change] | RegistryError | None] = queue.SimpleQueue()
        self._cancelled = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"memory-watch {name}", daemon=True)
        self._thread.start()

    def deliver(self, changes: list[Change]) -> None:
        self._items.put(changes)

    def fail(self, error: RegistryError) -> None:
        self._items.put(error)

    def _run(self) -> None:
        while (item := self._items.get()) is not None:
            if self._cancelled.is_set():
                return
            if isinstance(item, RegistryError):
                self._on_error(item)
                return
            try:
                self._on_changes(item)
            except Exception as exc:  # a consumer that raises ends the watch, as with etcd
                log.exception("memory watch: event handler failed")
                self._on_error(RegistryError(f"memory watch: event handler failed: {exc!r}"))
                return

    def cancel(self) -> None:
        self._cancelled.set()
        self._items.put(None)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=2.0)


class MemoryEtcd:
    """The keys, leases and history of one etcd, in memory; thread-safe."""

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self.clock = clock or time.monotonic
        self.unreachable = False
        self._lock = threading.Lock()
        self._revision = 1  # an empty etcd is at revision 1
        self._compacted = 0
        self._data: dict[str, StoredValue] = {}
        self._leases: dict[int, float] = {}  # lease id: expiry on self.clock
        self._lease_ids = itertools.count(0x7E57_0000_0001)
        self._history: list[Change] = []
        self._watches: dict[_Watch, tuple[str, bool]] = {}  # watch: (key or prefix, is a prefix)

    # -- what a test does to the store ------------------------------------------------------

    @property
    def revision(self) -> int:
        with self._lock:
            return self._revision

    def advance(self, seconds: float) -> None:
        """Move a ``ManualClock`` on and expire the leases whose TTL ran out."""
        if not isinstance(self.clock, ManualClock):
            raise TypeError("advance() needs a MemoryEtcd on a ManualClock")
        self.clock.advance(seconds)
        with self._lock:
            self._expire()

    def set_unreachable(self, unreachable: bool) -> None:
        """Stand for an etcd outage: every call fails, and every open watch ends with an error."""
        with self._lock:
            self.unreachable = unreachable
            watches = list(self._watches) if unreachable else []
            for watch in watches:
                del self._watches[watch]
        for watch in watches:
            watch.fail(RegistryError("memory etcd: stream failed: UNAVAILABLE"))

    def compact(self, revision: int | None = None) -> int:
        """Forget the history before ``revision`` (default: the current one), as ``etcdctl compact``."""
        with self._lock:
            revision = self._revision if revision is None else revision
            if revision > self._revision:
                raise ValueError(f"cannot compact at {revision}: the store is at revision {self._revision}")
            self._compacted = max(self._compacted, revision)
            self._history = [change for change in self._history if change.revision >= revision]
            return revision

    def put(self, key: str, value: bytes, ttl: int | None = None) -> int:
        """Write ``key`` unconditionally (as ``etcdctl put``), on a new lease when ``ttl`` is given."""
        with self._lock:
            self._expire()
            lease_id = self._grant(ttl) if ttl is not None else 0
            return self._commit([(key, value, lease_id)])

    def revoke(self, lease_id: int) -> None:
        """End a lease now, deleting its keys, as its expiry would."""
        with self._lock:
            if self._leases.pop(lease_id, None) is not None:
                self._delete_bound([lease_id])

    # -- what a client does, under the lock --------------------------------------------------

    def _check(self, what: str) -> None:
        if self.unreachable:
            raise RegistryError(f"memory etcd: {what}: unreachable (the store is switched off)", True)
        self._expire()

    def _expire(self) -> None:
        now = self.clock()
        expired = [lease_id for lease_id, expiry in self._leases.items() if expiry <= now]
        for lease_id in expired:
            del self._leases[lease_id]
        if expired:
            self._delete_bound(expired)

    def _delete_bound(self, lease_ids: list[int]) -> None:
        """Delete the keys bound to ``lease_ids``, in one revision per lease as etcd's revoke does."""
        for lease_id in lease_ids:
            keys = [key for key, stored in self._data.items() if stored.lease_id == lease_id]
            if keys:
                self._commit([(key, None, 0) for key in keys])

    def _grant(self, ttl: int) -> int:
        lease_id = next(self._lease_ids)
        self._leases[lease_id] = self.clock() + ttl
        return lease_id

    def _commit(self, writes: list[tuple[str, bytes | None, int]]) -> int:
        """Apply puts (a value) and deletes (None) as one transaction, at one new revision."""
        self._revision += 1
        changes = []
        for key, value, lease_id in writes:
            previous = self._data.get(key)
            created = previous.create_revision if previous is not None else self._revision
            stored = StoredValue(value, self._revision, lease_id, created) if value is not None else None
            if stored is None:
                self._data.pop(key, None)
            else:
                self._data[key] = stored
            changes.append(Change(self._revision, key, stored))
        self._history.extend(changes)
        for watch, (key, prefix) in self._watches.items():
            seen = [change for change in changes if _in_range(change.key, key, prefix)]
            if seen:
                watch.deliver(seen)
        return self._revision

    def _range(self, prefix: str) -> list[tuple[str, StoredValue]]:
        return sorted((key, stored) for key, stored in self._data.items() if key.startswith(prefix))

    def _watch(self, key: str, prefix: bool, start_revision: int, name: str,
               on_changes: Callable[[list[Change]], None],
               on_error: Callable[[RegistryError], None]) -> _Watch:
        watch = _Watch(name, on_changes, on_error)
        if 0 < start_revision < self._compacted:
            watch.fail(WatchCompacted(
                f"{name}: start revision compacted (etcd compacted at {self._compacted})"
            ))
            return watch
        by_revision: dict[int, list[Change]] = {}
        for change in self._history:
            if change.revision >= start_revision and _in_range(change.key, key, prefix):
                by_revision.setdefault(change.revision, []).append(change)
        for changes in by_revision.values():
            watch.deliver(changes)
        self._watches[watch] = (key, prefix)
        return watch

    def _unwatch(self, watch: _Watch) -> None:
        self._watches.pop(watch, None)


def _in_range(key: str, watched: str, prefix: bool) -> bool:
    """Whether a watch of ``watched`` (a key, or a prefix when ``prefix``) sees ``key``."""
    return key.startswith(watched) if prefix else key == watched


class MemoryRegistry:
    """One client of a ``MemoryEtcd``; implements ``registryapi.SubnetRegistry``."""

    def __init__(self, store: MemoryEtcd, prefix: str = "/coreos.com/network",
                 on_error: Callable[[str], None] | None = None) -> None:
        """``on_error(operation)`` is called for every failed operation, as ``Registry`` does."""
        self.store = store
        prefix = prefix.rstrip("/")
        self._config_key = f"{prefix}/config"
        self._subnets_prefix = f"{prefix}/subnets/"
        self._health_prefix = health_prefix(prefix)
        self._on_error = on_error
        self._watches: set[_Watch] = set()
        self._watches_lock = threading.Lock()
        self.on_bad_lease: Callable[[str, int, LeaseError], None] = _log_bad_lease

    def _call(self, operation: str, what: str, run: Callable[[], T]) -> T:
        with self.store._lock:
            try:
                self.store._check(what)
            except RegistryError:
                if self._on_error is not None:
                    self._on_error(operation)
                raise
            return run()

    # -- config -------------------------------------------------------------------------------

    def get_config(self) -> tuple[bytes | None, int]:
        def read() -> tuple[bytes | None, int]:
            stored = self.store._data.get(self._config_key)
            return (stored.value if stored else None), self.store._revision

        return self._call("get_config", f"read {self._config_key}", read)

    def put_config(self, raw: bytes) -> int:
        return self._call("put_config", f"write {self._config_key}",
                          lambda: self.store._commit([(self._config_key, bytes(raw), 0)]))

    def watch_config(
        self, start_revision: int, on_change: Callable[[], None], on_error: Callable[[Exception], None]
    ) -> Cancel:
        return self._watch("watch_config", self._config_key, False, start_revision,
                           lambda _changes: on_change(), on_error)

    # -- leases -------------------------------------------------------------------------------

    def _lease_key(self, lease_key: str) -> str:
        return f"{self._subnets_prefix}{lease_key}"

    def _decode(self, key: str, stored: StoredValue) -> Lease | None:
        short = key.removeprefix(self._subnets_prefix)
        try:
            return decode_lease(short, stored.value, etcd_lease_id=stored.lease_id,
                                mod_revision=stored.mod_revision, create_revision=stored.create_revision)
        except LeaseError as exc:
            self.on_bad_lease(short, stored.mod_revision, exc)
            return None

    def list_leases(self) -> tuple[list[Lease], int]:
        def read() -> tuple[list[tuple[str, StoredValue]], int]:
            return self.store._range(self._subnets_prefix), self.store._revision

        listed, revision = self._call("list_leases", f"list {self._subnets_prefix}", read)
        leases = [lease for key, stored in listed if (lease := self._decode(key, stored)) is not None]
        return leases, revision

    def _guarded_put(self, operation: str, template: Lease, guard: Callable[[StoredValue | None], bool],
                     ttl: int | None) -> tuple[Lease | None, Lease | None]:
        """``registry.Registry._guarded_put``: (stored Lease, None), or (None, the key if it holds
        our very value) when the guard failed."""
        key = self._lease_key(template.key)
        value = encode_attrs(template.attrs).encode()

        def transact() -> tuple[Lease | None, Lease | None]:
            current = self.store._data.get(key)
            if not guard(current):
                if current is not None and current.value == value:
                    return None, replace(template, etcd_lease_id=current.lease_id,
                                         mod_revision=current.mod_revision)
                return None, None
            lease_id = self.store._grant(ttl) if ttl is not None else 0
            revision = self.store._commit([(key, value, lease_id)])
            return replace(template, etcd_lease_id=lease_id, mod_revision=revision), None

        return self._call(operation, f"{operation.replace('_', ' ')} {key}", transact)

    def create_lease(
        self, subnet: IPv4Network, attrs: LeaseAttrs, ttl: int, ipv6_subnet: IPv6Network | None = None
    ) -> Lease | None:
        template = Lease(subnet=subnet, attrs=attrs, ipv6_subnet=ipv6_subnet)
        lease, ours = self._guarded_put("create_lease", template, lambda current: current is None, ttl)
        if ours is not None:
            return self.take_over(ours, attrs, ttl)
        return lease

    def take_over(self, existing: Lease, attrs: LeaseAttrs, ttl: int) -> Lease | None:
        template = Lease(subnet=existing.subnet, attrs=attrs, ipv6_subnet=existing.ipv6_subnet)

        def unchanged(current: StoredValue | None) -> bool:
            return current is not None and current.mod_revision == existing.mod_revision

        lease, _ = self._guarded_put("take_over", template, unchanged,
                                     ttl if existing.etcd_lease_id else None)
        return lease

    def put_health(self, node: str, view: bytes, ttl: int) -> None:
        key = f"{self._health_prefix}{node}"
        self._call("put_health", f"write {key}",
                   lambda: self.store._commit([(key, bytes(view), self.store._grant(ttl))]))

    def list_health(self) -> dict[str, bytes]:
        prefix = self._health_prefix

        def read() -> dict[str, bytes]:
            return {key.removeprefix(prefix): stored.value for key, stored in self.store._range(prefix)}

        return self._call("list_health", f"list {prefix}", read)

    def delete_lease(self, lease: Lease) -> bool:
        key = self._lease_key(lease.key)

        def transact() -> bool:
            current = self.store._data.get(key)
            if current is None or current.mod_revision != lease.mod_revision:
                return False
            self.store._commit([(key, None, 0)])
            return True

        return self._call("delete_lease", f"delete lease {key}", transact)

    def renew(self, lease: Lease, ttl: int) -> Lease | None:
        value = encode_attrs(lease.attrs).encode()
        renewed, _ = self._guarded_put("renew", lease,
                                       lambda current: current is not None and current.value == value,
                                       ttl if lease.etcd_lease_id else None)
        if renewed is None:
            log.warning("lease %s is gone or no longer ours; cannot renew", lease.key)
        return renewed

    def lease_remaining(self, lease: Lease) -> float | None:
        key = self._lease_key(lease.key)

        def read() -> float | None:
            current = self.store._data.get(key)
            if not lease.etcd_lease_id:
                return math.inf if current is not None else None
            expiry = self.store._leases.get(lease.etcd_lease_id)
            if expiry is None or current is None or current.lease_id != lease.etcd_lease_id:
                return None
            return float(int(expiry - self.store.clock()))  # etcd answers in whole seconds

        return self._call("lease_remaining", f"lease time-to-live of {key}", read)

    def watch_leases(
        self,
        start_revision: int,
        on_events: Callable[[list[LeaseEvent]], None],
        on_error: Callable[[Exception, bool], None],
    ) -> Cancel:
        def changes(batch: list[Change]) -> None:
            on_events([self._lease_event(change) for change in batch])

        return self._watch("watch", self._subnets_prefix, True, start_revision, changes,
                           lambda error: on_error(error, isinstance(error, WatchCompacted)))

    def _lease_event(self, change: Change) -> LeaseEvent:
        key = change.key.removeprefix(self._subnets_prefix)
        if change.stored is None:
            return LeaseEvent("delete", key, None, change.revision)
        return LeaseEvent("put", key, self._decode(change.key, change.stored), change.revision)

    def _watch(self, operation: str, watched: str, prefix: bool, start_revision: int,
               on_changes: Callable[[list[Change]], None],
               on_error: Callable[[RegistryError], None]) -> Cancel:
        name = f"memory etcd: watch {watched}"

        def failed(error: RegistryError) -> None:
            log.warning("%s", error)
            if self._on_error is not None:
                self._on_error(operation)
            on_error(error)

        def open_watch() -> _Watch:
            return self.store._watch(watched, prefix, start_revision, name, on_changes, failed)

        watch = self._call(operation, f"watch {watched}", open_watch)
        with self._watches_lock:
            self._watches.add(watch)

        def cancel() -> None:
            with self.store._lock:
                self.store._unwatch(watch)
            with self._watches_lock:
                self._watches.discard(watch)
            watch.cancel()

        return cancel

    def close(self) -> None:
        with self._watches_lock:
            watches, self._watches = list(self._watches), set()
        with self.store._lock:
            for watch in watches:
                self.store._unwatch(watch)
        for watch in watches:
            watch.cancel()


def _log_bad_lease(key: str, revision: int, error: LeaseError) -> None:
    log.warning("ignoring malformed lease %s (revision %d): %s", key, revision, error)
