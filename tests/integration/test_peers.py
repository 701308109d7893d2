"""PeerWatcher against a real etcd: snapshot + events, compaction, an etcd restart, stop."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Iterator
from ipaddress import IPv4Network

import pytest

from overlayd.etcd.peerwatch import PeerItem, PeerWatcher
from overlayd.etcd.registry import Registry
from overlayd.etcd.settings import EtcdSettings
from overlayd.lab.etcdserver import EtcdServer
from overlayd.subnet.lease import Lease

from .support import PeerView, host_attrs

MakeRegistry = Callable[[EtcdServer], Registry]


class SlowListRegistry(Registry):
    """Runs ``stall`` after its first listing, as if the watcher stalled before watching."""

    def __init__(self, options: EtcdSettings, stall: Callable[[], None]) -> None:
        super().__init__(options)
        self._stall: Callable[[], None] | None = stall

    def list_leases(self) -> tuple[list[Lease], int]:
        result = super().list_leases()
        stall, self._stall = self._stall, None
        if stall is not None:
            stall()
        return result


@pytest.fixture
def watch() -> Iterator[Callable[[Registry], PeerView]]:
    """Start a PeerWatcher on a registry (fast backoff for tests); stopped at teardown."""
    watchers: list[PeerWatcher] = []

    def start(registry: Registry) -> PeerView:
        items: queue.Queue[PeerItem] = queue.Queue()
        watcher = PeerWatcher(registry, items, backoff_initial=0.05, backoff_max=0.5)
        watchers.append(watcher)
        watcher.start()
        return PeerView(items)

    yield start
    for watcher in watchers:
        watcher.stop()


def subnet(n: int) -> IPv4Network:
    return IPv4Network(f"198.18.{n}.0/24")


def create(registry: Registry, n: int) -> None:
    assert registry.create_lease(subnet(n), host_attrs(n), ttl=600) is not None


def test_snapshot_then_events(registry: Registry, etcd_server: EtcdServer, prefix: str, watch):
    create(registry, 1)
    view = watch(registry)
    view.wait_for(lambda v: v.snapshots == 1)
    assert view.public_ips() == {"198.18.1.0-24": "192.0.2.1"}

    create(registry, 2)
    etcd_server.etcdctl("del", f"{prefix}/subnets/198.18.1.0-24")
    view.wait_for(lambda v: v.public_ips() == {"198.18.2.0-24": "192.0.2.2"})
    assert view.snapshots == 1 and not view.downs


def test_a_first_listing_is_the_snapshot_and_what_changed_since_arrives_as_events(registry: Registry):
    create(registry, 1)
    listing = registry.list_leases()  # as the lease manager read it while acquiring
    create(registry, 2)  # after that listing, before the watcher starts
    items: queue.Queue[PeerItem] = queue.Queue()
    watcher = PeerWatcher(registry, items, first_listing=listing)
    watcher.start()
    try:
        view = PeerView(items)
        view.wait_for(lambda v: v.snapshots == 1)
        assert set(view.leases) == {"198.18.1.0-24"}, "the snapshot is the listing given, not a new one"
        view.wait_for(lambda v: set(v.leases) == {"198.18.1.0-24", "198.18.2.0-24"})
        assert view.snapshots == 1 and not view.downs
    finally:
        watcher.stop()


def test_watch_start_compacted_away_converges_on_a_fresh_snapshot(
    private_etcd: EtcdServer, prefix: str, watch
):
    def stall() -> None:
        # Between our listing and our watch: peers change and etcd compacts that history away.
        create(registry, 2)
        private_etcd.etcdctl("del", f"{prefix}/subnets/198.18.1.0-24")
        private_etcd.compact()

    registry = SlowListRegistry(EtcdSettings(endpoints=(private_etcd.endpoint,), prefix=prefix), stall)
    try:
        create(registry, 1)
        view = watch(registry)
        view.wait_for(lambda v: v.snapshots >= 2 and v.public_ips() == {"198.18.2.0-24": "192.0.2.2"})
        assert any("compacted" in down for down in view.downs)
    finally:
        registry.close()


def test_survives_an_etcd_restart(make_registry: MakeRegistry, private_etcd: EtcdServer, watch):
    registry = make_registry(private_etcd)
    writer = make_registry(private_etcd)
    create(writer, 1)
    view = watch(registry)
    view.wait_for(lambda v: v.snapshots == 1)

    private_etcd.restart()
    create(writer, 2)  # only seen if the watch came back after the restart

    view.wait_for(lambda v: set(v.public_ips()) == {"198.18.1.0-24", "198.18.2.0-24"}, timeout=15)
    assert view.downs, "the restart should have been reported as a watch failure"
    snapshots = view.snapshots
    create(writer, 3)
    view.wait_for(lambda v: "198.18.3.0-24" in v.leases)
    assert view.snapshots == snapshots, "delivered by the re-established watch, not by a re-list"


def test_stop_is_prompt_while_etcd_is_down(make_registry: MakeRegistry, private_etcd: EtcdServer, watch):
    registry = make_registry(private_etcd)
    items: queue.Queue[PeerItem] = queue.Queue()
    watcher = PeerWatcher(registry, items, backoff_initial=0.05, backoff_max=0.5)
    watcher.start()
    PeerView(items).wait_for(lambda v: v.snapshots == 1)
    private_etcd.stop()
    time.sleep(0.5)

    started = time.monotonic()
    watcher.stop()

    assert time.monotonic() - started < 1.0
