"""PeerWatcher on an in-memory registry: snapshot then events, compaction re-list, etcd down and back.

tests/integration/test_peers.py runs the same situations on a real etcd.
"""

from __future__ import annotations

import queue
import random
from collections.abc import Callable, Iterator
from ipaddress import IPv4Network

import pytest

from overlayd.etcd.memory import ManualClock, MemoryEtcd, MemoryRegistry
from overlayd.etcd.peerwatch import PeerItem, PeerWatcher
from overlayd.subnet.lease import Lease, encode_attrs
from tests.integration.support import PeerView, host_attrs

PREFIX = "/coreos.com/network/subnets/"


def subnet(n: int) -> IPv4Network:
    return IPv4Network(f"198.18.{n}.0/24")


@pytest.fixture
def etcd() -> MemoryEtcd:
    return MemoryEtcd(ManualClock())


@pytest.fixture
def watch(etcd: MemoryEtcd) -> Iterator[Callable[..., PeerView]]:
    """Start a PeerWatcher (fast backoff) on its own client of ``etcd``; stopped at teardown."""
    started: list[tuple[PeerWatcher, MemoryRegistry]] = []

    def start(first_listing: tuple[list[Lease], int] | None = None) -> PeerView:
        items: queue.Queue[PeerItem] = queue.Queue()
        registry = MemoryRegistry(etcd)
        watcher = PeerWatcher(registry, items, backoff_initial=0.01, backoff_max=0.05,
                              rng=random.Random(0), first_listing=first_listing)
        started.append((watcher, registry))
        watcher.start()
        return PeerView(items)

    yield start
    for watcher, registry in started:
        watcher.stop()
        registry.close()


def test_a_snapshot_then_puts_and_deletes_as_events(etcd: MemoryEtcd, watch: Callable[..., PeerView]) -> None:
    writer = MemoryRegistry(etcd)
    first = writer.create_lease(subnet(1), host_attrs(1), ttl=600)
    view = watch()
    view.wait_for(lambda v: v.reasons == ["start"])
    assert view.public_ips() == {"198.18.1.0-24": "192.0.2.1"}
    second = writer.create_lease(subnet(2), host_attrs(2), ttl=600)
    assert first is not None and second is not None and writer.delete_lease(first)
    view.wait_for(lambda v: v.public_ips() == {"198.18.2.0-24": "192.0.2.2"})
    etcd.advance(601)  # the second lease expires
    view.wait_for(lambda v: v.public_ips() == {})
    assert view.reasons == ["start"] and view.downs == [], "events, not re-listings"


def test_a_first_listing_is_the_snapshot_and_what_changed_since_arrives(
    etcd: MemoryEtcd, watch: Callable[..., PeerView]
) -> None:
    writer = MemoryRegistry(etcd)
    writer.create_lease(subnet(1), host_attrs(1), ttl=600)
    listing = writer.list_leases()
    writer.create_lease(subnet(2), host_attrs(2), ttl=600)  # after the listing, before the watch
    view = watch(first_listing=listing)
    view.wait_for(lambda v: len(v.leases) == 2)
    assert view.reasons == ["start"]


def test_a_compacted_start_revision_is_re_listed_as_a_compaction_snapshot(
    etcd: MemoryEtcd, watch: Callable[..., PeerView]
) -> None:
    writer = MemoryRegistry(etcd)
    writer.create_lease(subnet(1), host_attrs(1), ttl=600)
    listing = writer.list_leases()
    writer.create_lease(subnet(2), host_attrs(2), ttl=600)
    writer.create_lease(subnet(3), host_attrs(3), ttl=600)
    etcd.compact()  # the history since the listing is gone
    view = watch(first_listing=listing)
    view.wait_for(lambda v: v.reasons == ["start", "compaction"])
    assert set(view.public_ips().values()) == {"192.0.2.1", "192.0.2.2", "192.0.2.3"}
    assert any("compacted" in down for down in view.downs)
    writer.create_lease(subnet(4), host_attrs(4), ttl=600)
    view.wait_for(lambda v: len(v.leases) == 4)


def test_etcd_down_then_back_ends_in_a_snapshot_with_what_changed_meanwhile(
    etcd: MemoryEtcd, watch: Callable[..., PeerView]
) -> None:
    writer = MemoryRegistry(etcd)
    gone = writer.create_lease(subnet(1), host_attrs(1), ttl=600)
    writer.create_lease(subnet(2), host_attrs(2), ttl=600)
    assert gone is not None
    view = watch()
    view.wait_for(lambda v: len(v.leases) == 2)
    etcd.set_unreachable(True)
    view.wait_for(lambda v: len(v.downs) >= 2)  # the watch ended, and a re-list failed at least once
    # Meanwhile, on the side of etcd this host cannot reach: a peer leaves, another joins.
    etcd.revoke(gone.etcd_lease_id)
    etcd.put(f"{PREFIX}198.18.3.0-24", encode_attrs(host_attrs(3)).encode(), ttl=600)
    kept = {"198.18.1.0-24": "192.0.2.1", "198.18.2.0-24": "192.0.2.2"}
    assert view.public_ips() == kept, "what the host knew stays while etcd is down"
    etcd.set_unreachable(False)
    view.wait_for(lambda v: v.reasons[-1:] == ["error"])
    assert view.public_ips() == {"198.18.2.0-24": "192.0.2.2", "198.18.3.0-24": "192.0.2.3"}
    writer.create_lease(subnet(4), host_attrs(4), ttl=600)  # and watching again
    view.wait_for(lambda v: "198.18.4.0-24" in v.leases)


def test_stop_while_etcd_is_down_ends_the_thread(etcd: MemoryEtcd) -> None:
    items: queue.Queue[PeerItem] = queue.Queue()
    watcher = PeerWatcher(MemoryRegistry(etcd), items, backoff_initial=5.0, backoff_max=30.0)
    watcher.start()
    view = PeerView(items)
    view.wait_for(lambda v: v.reasons == ["start"])
    etcd.set_unreachable(True)
    view.wait_for(lambda v: len(v.downs) == 1)  # now sleeping out a backoff of seconds
    thread = watcher._thread
    watcher.stop(timeout=10.0)
    assert thread is not None and not thread.is_alive()
