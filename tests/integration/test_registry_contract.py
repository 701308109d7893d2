"""One contract, two registries: every test runs against a real etcd and against MemoryRegistry.

The memory side (``-k memory``) needs neither etcd nor root; the etcd side proves that what the
unit tests of the lease and peer logic learn from MemoryRegistry holds against etcd.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable, Iterator
from ipaddress import IPv4Network
from typing import Protocol

import pytest

from overlayd.etcd.api import LeaseEvent, RegistryError, SubnetRegistry, WatchCompacted
from overlayd.etcd.memory import ManualClock, MemoryEtcd, MemoryRegistry
from overlayd.etcd.registry import Registry
from overlayd.etcd.settings import EtcdSettings
from overlayd.lab.etcdserver import EtcdServer
from overlayd.subnet.lease import Lease, LeaseError, encode_attrs

from .support import host_attrs

SUBNET = IPv4Network("198.18.46.0/24")
OTHER = IPv4Network("198.18.47.0/24")
KINDS = ["memory", "etcd"]


class Store(Protocol):
    """What a contract test does to the store behind the registries."""

    prefix: str

    def client(self, on_error: Callable[[str], None] | None = None) -> SubnetRegistry: ...
    def put_raw(self, path: str, value: bytes) -> None: ...
    def revoke(self, lease: Lease) -> None: ...
    def pass_time(self, seconds: float) -> None: ...
    def compact(self) -> None: ...
    def down(self) -> None: ...
    def up(self) -> None: ...


class MemoryStore:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.etcd = MemoryEtcd(ManualClock())
        self.clients: list[MemoryRegistry] = []

    def client(self, on_error: Callable[[str], None] | None = None) -> MemoryRegistry:
        registry = MemoryRegistry(self.etcd, self.prefix, on_error=on_error)
        self.clients.append(registry)
        return registry

    def put_raw(self, path: str, value: bytes) -> None:
        self.etcd.put(f"{self.prefix}/{path}", value)

    def revoke(self, lease: Lease) -> None:
        self.etcd.revoke(lease.etcd_lease_id)

    def pass_time(self, seconds: float) -> None:
        self.etcd.advance(seconds)

    def compact(self) -> None:
        self.etcd.compact()

    def down(self) -> None:
        self.etcd.set_unreachable(True)

    def up(self) -> None:
        self.etcd.set_unreachable(False)


class EtcdStore:
    def __init__(self, prefix: str, server: EtcdServer) -> None:
        self.prefix = prefix
        self.server = server
        self.clients: list[SubnetRegistry] = []

    def client(self, on_error: Callable[[str], None] | None = None) -> SubnetRegistry:
        options = EtcdSettings(endpoints=(self.server.endpoint,), prefix=self.prefix, timeout=3.0)
        registry = Registry(options, on_error=on_error)
        self.clients.append(registry)
        return registry

    def put_raw(self, path: str, value: bytes) -> None:
        self.server.etcdctl("put", f"{self.prefix}/{path}", value.decode())

    def revoke(self, lease: Lease) -> None:
        self.server.etcdctl("lease", "revoke", format(lease.etcd_lease_id, "x"))

    def pass_time(self, seconds: float) -> None:
        time.sleep(seconds)

    def compact(self) -> None:
        self.server.compact()

    def down(self) -> None:
        self.server.stop()

    def up(self) -> None:
        self.server.start()


def _store(kind: str, prefix: str, request: pytest.FixtureRequest, server_fixture: str) -> Iterator[Store]:
    store: MemoryStore | EtcdStore
    if kind == "memory":
        store = MemoryStore(prefix)
    else:
        store = EtcdStore(prefix, request.getfixturevalue(server_fixture))
    try:
        yield store
    finally:
        for client in store.clients:
            client.close()


@pytest.fixture(params=KINDS)
def store(request: pytest.FixtureRequest, prefix: str) -> Iterator[Store]:
    """A store shared with other tests (each on its own prefix): no outage, no compaction."""
    yield from _store(request.param, prefix, request, "etcd_server")


@pytest.fixture(params=KINDS)
def own_store(request: pytest.FixtureRequest, prefix: str) -> Iterator[Store]:
    """A store of the test's own, which it may stop or compact."""
    yield from _store(request.param, prefix, request, "private_etcd")


class Watched:
    """What a lease watch delivered, read on the test's thread."""

    def __init__(self) -> None:
        self.events: queue.Queue[LeaseEvent] = queue.Queue()
        self.errors: queue.Queue[tuple[Exception, bool]] = queue.Queue()

    def on_events(self, events: list[LeaseEvent]) -> None:
        for event in events:
            self.events.put(event)

    def on_error(self, error: Exception, compacted: bool) -> None:
        self.errors.put((error, compacted))

    def next_events(self, count: int) -> list[tuple[str, str, bool]]:
        """(kind, key, carries a lease) of the next ``count`` events, in order."""
        got = [self.events.get(timeout=10) for _ in range(count)]
        assert [event.revision for event in got] == sorted(event.revision for event in got)
        return [(event.kind, event.key, event.lease is not None) for event in got]


# -- config -------------------------------------------------------------------------------------


def test_config_absent_then_written_then_seen_by_a_watch(store: Store) -> None:
    registry = store.client()
    value, revision = registry.get_config()
    assert value is None
    changed = threading.Event()
    cancel = registry.watch_config(revision + 1, changed.set, lambda error: None)
    try:
        written = registry.put_config(b'{"Network": "198.18.0.0/16"}')
        assert written > revision
        assert registry.get_config() == (b'{"Network": "198.18.0.0/16"}', written)
        assert changed.wait(10)
    finally:
        cancel()


# -- revisions, create-if-absent, take-over, renew, delete --------------------------------------


def test_every_write_has_a_higher_revision_and_a_listing_names_the_revision_it_saw(store: Store) -> None:
    registry = store.client()
    _, start = registry.list_leases()
    first = registry.create_lease(SUBNET, host_attrs(1), ttl=600)
    second = registry.create_lease(OTHER, host_attrs(2), ttl=600)
    assert first is not None and second is not None
    assert start < first.mod_revision < second.mod_revision
    leases, revision = registry.list_leases()
    assert revision >= second.mod_revision
    assert {lease.key: lease.mod_revision for lease in leases} == {
        first.key: first.mod_revision, second.key: second.mod_revision
    }
    assert all(lease.etcd_lease_id for lease in leases)


def test_create_fails_when_the_key_exists(store: Store) -> None:
    one, two = store.client(), store.client()
    won = one.create_lease(SUBNET, host_attrs(1), ttl=600)
    assert won is not None
    assert two.create_lease(SUBNET, host_attrs(2), ttl=600) is None
    assert [lease.attrs for lease in two.list_leases()[0]] == [host_attrs(1)]


def test_create_found_holding_our_own_value_takes_it_over(store: Store) -> None:
    """A create whose answer was lost, retried: the key is ours, on a fresh lease."""
    registry = store.client()
    first = registry.create_lease(SUBNET, host_attrs(1), ttl=600)
    again = registry.create_lease(SUBNET, host_attrs(1), ttl=600)
    assert first is not None and again is not None
    assert again.mod_revision > first.mod_revision and again.etcd_lease_id != first.etcd_lease_id


def test_take_over_only_a_key_unchanged_since_it_was_listed(store: Store) -> None:
    registry = store.client()
    registry.create_lease(SUBNET, host_attrs(1), ttl=600)
    [listed], _ = registry.list_leases()
    taken = registry.take_over(listed, host_attrs(3), ttl=600)
    assert taken is not None and taken.attrs == host_attrs(3) and taken.mod_revision > listed.mod_revision
    assert registry.take_over(listed, host_attrs(4), ttl=600) is None, "listed before our own write"
    assert [lease.attrs for lease in registry.list_leases()[0]] == [host_attrs(3)]


def test_a_listed_lease_keeps_its_create_revision_when_rewritten(store: Store) -> None:
    """Rival leases are ranked by the revision that created their key (the older wins), so a
    renewal or take-over, which rewrites the key, must not make a lease look newer."""
    registry = store.client()
    registry.create_lease(SUBNET, host_attrs(1), ttl=600)
    registry.create_lease(OTHER, host_attrs(2), ttl=600)
    first = {lease.subnet: lease for lease in registry.list_leases()[0]}
    assert 0 < first[SUBNET].create_revision < first[OTHER].create_revision
    registry.take_over(first[SUBNET], host_attrs(3), ttl=600)
    again = {lease.subnet: lease for lease in registry.list_leases()[0]}
    assert again[SUBNET].mod_revision > first[OTHER].mod_revision
    assert again[SUBNET].create_revision == first[SUBNET].create_revision


def test_a_reservation_stays_one_and_never_expires(store: Store) -> None:
    registry = store.client()
    store.put_raw(f"subnets/{SUBNET.network_address}-24", encode_attrs(host_attrs(1)).encode())
    [reserved], _ = registry.list_leases()
    assert reserved.etcd_lease_id == 0
    assert registry.lease_remaining(reserved) == math.inf
    taken = registry.take_over(reserved, host_attrs(1), ttl=600)
    assert taken is not None and taken.etcd_lease_id == 0
    assert registry.renew(taken, ttl=600) is not None


def test_renew_needs_the_key_to_hold_our_value(store: Store) -> None:
    ours, theirs = store.client(), store.client()
    lease = ours.create_lease(SUBNET, host_attrs(1), ttl=600)
    assert lease is not None
    renewed = ours.renew(lease, ttl=900)
    assert renewed is not None and renewed.mod_revision > lease.mod_revision
    [listed], _ = theirs.list_leases()
    assert theirs.take_over(listed, host_attrs(2), ttl=600) is not None
    assert ours.renew(renewed, ttl=900) is None, "rewritten by another host"
    [rewritten], _ = theirs.list_leases()
    assert theirs.delete_lease(rewritten)
    assert ours.renew(renewed, ttl=900) is None, "deleted"


def test_delete_only_a_key_unchanged_since_it_was_listed(store: Store) -> None:
    registry = store.client()
    lease = registry.create_lease(SUBNET, host_attrs(1), ttl=600)
    assert lease is not None
    renewed = registry.renew(lease, ttl=600)
    assert renewed is not None
    assert registry.delete_lease(lease) is False
    assert registry.delete_lease(renewed) is True
    assert registry.list_leases()[0] == []
    assert registry.delete_lease(renewed) is False, "already gone"


# -- TTLs ---------------------------------------------------------------------------------------


def test_lease_remaining_counts_down_from_the_ttl_and_ends_with_the_lease(store: Store) -> None:
    registry = store.client()
    lease = registry.create_lease(SUBNET, host_attrs(1), ttl=600)
    assert lease is not None
    remaining = registry.lease_remaining(lease)
    assert remaining is not None and 590 <= remaining <= 600
    store.revoke(lease)
    assert registry.lease_remaining(lease) is None
    assert registry.list_leases()[0] == []


def test_a_lease_expires_at_its_ttl_and_its_key_goes_with_it(store: Store) -> None:
    registry = store.client()
    watched = Watched()
    _, revision = registry.list_leases()
    cancel = registry.watch_leases(revision + 1, watched.on_events, watched.on_error)
    try:
        short = registry.create_lease(SUBNET, host_attrs(1), ttl=3)  # etcd's shortest TTL is ~2 s
        long = registry.create_lease(OTHER, host_attrs(2), ttl=600)
        assert short is not None and long is not None
        store.pass_time(4)
        assert watched.next_events(3) == [
            ("put", short.key, True), ("put", long.key, True), ("delete", short.key, False)
        ]
        assert [lease.key for lease in registry.list_leases()[0]] == [long.key]
        assert registry.lease_remaining(short) is None
    finally:
        cancel()


# -- watches ------------------------------------------------------------------------------------


def test_a_watch_from_a_past_revision_delivers_what_came_since_then_what_comes(store: Store) -> None:
    registry = store.client()
    _, start = registry.list_leases()
    first = registry.create_lease(SUBNET, host_attrs(1), ttl=600)
    assert first is not None
    watched = Watched()
    cancel = registry.watch_leases(start + 1, watched.on_events, watched.on_error)
    try:
        assert registry.delete_lease(first)
        registry.create_lease(OTHER, host_attrs(2), ttl=600)
        assert watched.next_events(3) == [
            ("put", first.key, True), ("delete", first.key, False), ("put", "198.18.47.0-24", True)
        ]
        assert watched.errors.empty()
    finally:
        cancel()


def test_a_malformed_value_is_reported_and_left_out(store: Store) -> None:
    registry = store.client()
    bad: list[tuple[str, LeaseError]] = []
    registry.on_bad_lease = lambda key, revision, error: bad.append((key, error))
    _, revision = registry.list_leases()
    watched = Watched()
    cancel = registry.watch_leases(revision + 1, watched.on_events, watched.on_error)
    try:
        store.put_raw("subnets/198.18.9.0-24", b"not json")
        registry.create_lease(SUBNET, host_attrs(1), ttl=600)
        assert watched.next_events(2) == [("put", "198.18.9.0-24", False), ("put", "198.18.46.0-24", True)]
        assert [lease.key for lease in registry.list_leases()[0]] == ["198.18.46.0-24"]
        assert [key for key, _ in bad] == ["198.18.9.0-24", "198.18.9.0-24"]  # the event, the listing
        assert bad[0][1].reason == "not_json"
    finally:
        cancel()


def test_a_watch_from_a_compacted_revision_fails_as_compacted(own_store: Store) -> None:
    registry = own_store.client()
    registry.create_lease(SUBNET, host_attrs(1), ttl=600)
    _, old = registry.list_leases()
    registry.create_lease(OTHER, host_attrs(2), ttl=600)
    own_store.compact()
    watched = Watched()
    cancel = registry.watch_leases(old, watched.on_events, watched.on_error)
    try:
        error, compacted = watched.errors.get(timeout=10)
        assert compacted and isinstance(error, WatchCompacted)
        assert "compacted" in str(error)
    finally:
        cancel()
    _, now = registry.list_leases()
    watched = Watched()
    cancel = registry.watch_leases(now + 1, watched.on_events, watched.on_error)  # re-listed: fine
    try:
        registry.create_lease(IPv4Network("198.18.48.0/24"), host_attrs(3), ttl=600)
        assert watched.next_events(1) == [("put", "198.18.48.0-24", True)]
    finally:
        cancel()


def test_close_ends_every_watch_quietly(store: Store) -> None:
    registry, writer = store.client(), store.client()
    watched = Watched()
    _, revision = registry.list_leases()
    registry.watch_leases(revision + 1, watched.on_events, watched.on_error)
    registry.close()
    writer.create_lease(SUBNET, host_attrs(1), ttl=600)
    writer.list_leases()  # a round trip after the write: a delivery would have been sent by now
    assert watched.events.empty() and watched.errors.empty()


# -- outage -------------------------------------------------------------------------------------


def test_unreachable_every_call_fails_alike_and_watches_end_then_all_works_again(own_store: Store) -> None:
    failed_operations: list[str] = []
    registry = own_store.client(on_error=failed_operations.append)
    lease = registry.create_lease(SUBNET, host_attrs(1), ttl=600)
    assert lease is not None
    watched = Watched()
    _, revision = registry.list_leases()
    registry.watch_leases(revision + 1, watched.on_events, watched.on_error)
    own_store.down()
    try:
        error, compacted = watched.errors.get(timeout=30)
        assert isinstance(error, RegistryError) and not compacted
        calls: list[Callable[[], object]] = [
            registry.get_config,
            registry.list_leases,
            lambda: registry.create_lease(OTHER, host_attrs(2), ttl=600),
            lambda: registry.renew(lease, ttl=600),
            lambda: registry.lease_remaining(lease),
        ]
        for call in calls:
            with pytest.raises(RegistryError) as raised:
                call()
            assert raised.value.unreachable, str(raised.value)
        # A watch opened now fails: at once (memory) or on its stream (etcd's opens lazily).
        again = Watched()
        try:
            registry.watch_leases(revision + 1, again.on_events, again.on_error)
        except RegistryError as exc:
            assert exc.unreachable, str(exc)
        else:
            error, compacted = again.errors.get(timeout=30)
            assert isinstance(error, RegistryError) and not compacted
        for operation in ("list_leases", "create_lease", "renew", "lease_remaining", "watch"):
            assert operation in failed_operations
    finally:
        own_store.up()
    assert registry.renew(lease, ttl=600) is not None
    assert [listed.key for listed in registry.list_leases()[0]] == [lease.key]


# -- data path views ------------------------------------------------------------------------------


def test_health_views_live_beside_the_prefix_expire_with_their_ttl_and_leave_leases_be(store: Store) -> None:
    registry = store.client()
    assert registry.list_health() == {}
    registry.put_health("198.18.46.0-24", b'{"unreachable":[]}', ttl=2)
    registry.put_health("198.18.47.0-24", b'{"unreachable":["198.18.46.0-24"]}', ttl=60)
    registry.put_health("198.18.46.0-24", b'{"unreachable":["198.18.47.0-24"]}', ttl=2)  # rewritten
    assert registry.list_health() == {
        "198.18.46.0-24": b'{"unreachable":["198.18.47.0-24"]}',
        "198.18.47.0-24": b'{"unreachable":["198.18.46.0-24"]}',
    }
    assert registry.list_leases()[0] == []  # nothing a lease listing (nor flanneld's) would see
    assert registry.get_config()[0] is None
    store.pass_time(3.5)
    assert list(registry.list_health()) == ["198.18.47.0-24"]


def test_health_calls_fail_as_registry_errors_while_unreachable(own_store: Store) -> None:
    failed: list[str] = []
    registry = own_store.client(on_error=failed.append)
    own_store.down()
    try:
        with pytest.raises(RegistryError):
            registry.put_health("198.18.46.0-24", b"{}", ttl=60)
        with pytest.raises(RegistryError):
            registry.list_health()
    finally:
        own_store.up()
    assert {"put_health", "list_health"} <= set(failed)
    registry.put_health("198.18.46.0-24", b"{}", ttl=60)
    assert registry.list_health() == {"198.18.46.0-24": b"{}"}
