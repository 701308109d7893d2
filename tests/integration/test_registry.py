"""Registry against a real etcd: flannel's bytes, etcd leases, guarded writes, errors."""

from __future__ import annotations

import logging
import math
import re
import threading
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Network

import pytest

from overlayd.etcd.registry import LeaseEvent, Registry, RegistryError
from overlayd.etcd.settings import EtcdSettings
from overlayd.lab.etcdserver import EtcdServer, free_port
from overlayd.subnet.lease import LeaseAttrs

from .support import host_attrs

SUBNET = IPv4Network("198.18.46.0/24")
FLANNEL_VALUE = (
    '{"PublicIP":"192.0.2.11","PublicIPv6":null,"BackendType":"vxlan",'
    '"BackendData":{"VNI":1,"VtepMAC":"8a:da:7f:e8:8a:5f"}}'
)


def etcd_ttl(server: EtcdServer, lease_id: int) -> tuple[int, int]:
    """(granted, remaining) seconds of an etcd lease, as etcdctl reports them."""
    out = server.etcdctl("lease", "timetolive", format(lease_id, "x"))
    match = re.search(r"granted with TTL\((\d+)s\), remaining\((-?\d+)s\)", out)
    assert match, out
    return int(match[1]), int(match[2])


def test_value_is_flannels_json_byte_for_byte(registry: Registry, etcd_server: EtcdServer, prefix: str):
    attrs = LeaseAttrs(
        public_ip=IPv4Address("192.0.2.11"), backend_type="vxlan", vni=1, vtep_mac="8a:da:7f:e8:8a:5f"
    )
    lease = registry.create_lease(SUBNET, attrs, ttl=600)

    assert lease is not None
    raw = etcd_server.etcdctl("get", "--print-value-only", f"{prefix}/subnets/198.18.46.0-24")
    assert raw == FLANNEL_VALUE + "\n"


def test_key_is_bound_to_its_own_etcd_lease(registry: Registry, etcd_server: EtcdServer, prefix: str):
    lease = registry.create_lease(SUBNET, host_attrs(1), ttl=600)
    other = registry.create_lease(IPv4Network("198.18.47.0/24"), host_attrs(2), ttl=600)

    assert lease is not None and other is not None
    assert lease.etcd_lease_id and other.etcd_lease_id != lease.etcd_lease_id
    granted, remaining = etcd_ttl(etcd_server, lease.etcd_lease_id)
    assert granted == 600 and 595 <= remaining <= 600
    keys = etcd_server.etcdctl("lease", "timetolive", "--keys", format(lease.etcd_lease_id, "x"))
    assert f"{prefix}/subnets/198.18.46.0-24" in keys
    assert 595 <= (registry.lease_remaining(lease) or 0) <= 600


def test_create_loses_to_an_existing_key_and_revokes_its_unused_lease(
    registry: Registry, etcd_server: EtcdServer
):
    assert registry.create_lease(SUBNET, host_attrs(1), ttl=600) is not None
    leases_before = etcd_server.etcdctl("lease", "list")

    assert registry.create_lease(SUBNET, host_attrs(2), ttl=600) is None
    assert etcd_server.etcdctl("lease", "list") == leases_before
    [stored], _ = registry.list_leases()
    assert stored.attrs == host_attrs(1)


def test_list_skips_malformed_values(registry: Registry, etcd_server: EtcdServer, prefix: str):
    registry.create_lease(SUBNET, host_attrs(1), ttl=600)
    etcd_server.etcdctl("put", f"{prefix}/subnets/198.18.9.0-24", "not json")
    etcd_server.etcdctl("put", f"{prefix}/subnets/garbage", FLANNEL_VALUE)

    leases, revision = registry.list_leases()

    assert [lease.key for lease in leases] == ["198.18.46.0-24"]
    assert revision >= leases[0].mod_revision > 0


def test_config_read_and_watch(registry: Registry, etcd_server: EtcdServer, prefix: str):
    assert registry.get_config()[0] is None
    etcd_server.etcdctl("put", f"{prefix}/config", '{"Network": "198.18.0.0/16"}')
    value, revision = registry.get_config()
    assert value == b'{"Network": "198.18.0.0/16"}'

    changed = threading.Event()
    cancel = registry.watch_config(revision + 1, changed.set, lambda exc: None)
    try:
        etcd_server.etcdctl("put", f"{prefix}/config", '{"Network": "198.19.0.0/16"}')
        assert changed.wait(5)
    finally:
        cancel()


def test_take_over_republishes_attrs_on_a_fresh_lease(registry: Registry, etcd_server: EtcdServer):
    first = registry.create_lease(SUBNET, host_attrs(1), ttl=600)
    assert first is not None
    [listed], _ = registry.list_leases()
    new_attrs = LeaseAttrs(
        public_ip=IPv4Address("192.0.2.1"), backend_type="vxlan", vni=1, vtep_mac="02:00:00:00:00:99"
    )

    taken = registry.take_over(listed, new_attrs, ttl=900)

    assert taken is not None and taken.etcd_lease_id != first.etcd_lease_id
    assert etcd_ttl(etcd_server, taken.etcd_lease_id)[0] == 900
    [stored], _ = registry.list_leases()
    assert stored.attrs.vtep_mac == "02:00:00:00:00:99"
    # The listing we took over from is stale now: a second take-over from it must lose.
    assert registry.take_over(listed, host_attrs(1), ttl=900) is None


def test_take_over_keeps_a_reservation_a_reservation(
    registry: Registry, etcd_server: EtcdServer, prefix: str
):
    etcd_server.etcdctl("put", f"{prefix}/subnets/198.18.46.0-24", FLANNEL_VALUE)
    [reserved], _ = registry.list_leases()
    assert reserved.etcd_lease_id == 0

    taken = registry.take_over(reserved, reserved.attrs, ttl=600)

    assert taken is not None and taken.etcd_lease_id == 0
    assert registry.lease_remaining(taken) == math.inf


def test_renew_extends_the_ttl(registry: Registry, etcd_server: EtcdServer):
    lease = registry.create_lease(SUBNET, host_attrs(1), ttl=30)
    assert lease is not None

    renewed = registry.renew(lease, ttl=3000)

    assert renewed is not None and renewed.etcd_lease_id != lease.etcd_lease_id
    granted, remaining = etcd_ttl(etcd_server, renewed.etcd_lease_id)
    assert granted == 3000 and remaining > 2990
    assert (registry.lease_remaining(renewed) or 0) > 2990
    # The key moved to the new lease; the old one no longer carries it.
    assert registry.lease_remaining(lease) is None


def test_renew_fails_once_the_key_is_gone_or_not_ours(
    registry: Registry, etcd_server: EtcdServer, prefix: str
):
    lease = registry.create_lease(SUBNET, host_attrs(1), ttl=600)
    assert lease is not None
    etcd_server.etcdctl("del", f"{prefix}/subnets/198.18.46.0-24")
    assert registry.lease_remaining(lease) is None
    assert registry.renew(lease, ttl=600) is None

    etcd_server.etcdctl("put", f"{prefix}/subnets/198.18.46.0-24", FLANNEL_VALUE)
    assert registry.renew(lease, ttl=600) is None


def test_watch_delivers_puts_and_deletes_in_order(
    registry: Registry, etcd_server: EtcdServer, prefix: str
):
    _, revision = registry.list_leases()
    seen: list[LeaseEvent] = []
    done = threading.Event()

    def on_events(events: list[LeaseEvent]) -> None:
        seen.extend(events)
        if any(event.kind == "delete" for event in events):
            done.set()

    cancel = registry.watch_leases(revision + 1, on_events, lambda exc, compacted: None)
    try:
        registry.create_lease(SUBNET, host_attrs(1), ttl=600)
        etcd_server.etcdctl("put", f"{prefix}/subnets/198.18.9.0-24", "not json")
        etcd_server.etcdctl("del", f"{prefix}/subnets/198.18.46.0-24")
        assert done.wait(5)
    finally:
        cancel()

    assert [(e.kind, e.key) for e in seen] == [
        ("put", "198.18.46.0-24"),
        ("put", "198.18.9.0-24"),
        ("delete", "198.18.46.0-24"),
    ]
    assert seen[0].lease is not None and seen[0].lease.attrs == host_attrs(1)
    assert seen[1].lease is None  # malformed: delivered without a lease, logged
    assert seen[0].revision < seen[1].revision < seen[2].revision


def test_watch_from_a_compacted_revision_reports_compaction(
    make_registry: Callable[[EtcdServer], Registry], private_etcd: EtcdServer
):
    registry = make_registry(private_etcd)
    registry.create_lease(SUBNET, host_attrs(1), ttl=600)
    _, old_revision = registry.list_leases()
    registry.create_lease(IPv4Network("198.18.47.0/24"), host_attrs(2), ttl=600)
    private_etcd.compact()
    errors: list[tuple[Exception, bool]] = []
    failed = threading.Event()

    def on_error(exc: Exception, compacted: bool) -> None:
        errors.append((exc, compacted))
        failed.set()

    cancel = registry.watch_leases(old_revision, lambda events: None, on_error)
    try:
        assert failed.wait(5)
    finally:
        cancel()
    assert errors[0][1] is True


def test_unreachable_etcd_raises_an_error_naming_the_endpoint(prefix: str):
    endpoint = f"http://127.0.0.1:{free_port()}"
    registry = Registry(EtcdSettings(endpoints=(endpoint,), prefix=prefix, timeout=1.0))
    try:
        with pytest.raises(RegistryError, match=re.escape(endpoint)):
            registry.list_leases()
        with pytest.raises(RegistryError, match=re.escape(endpoint)):
            registry.create_lease(SUBNET, host_attrs(1), ttl=600)
    finally:
        registry.close()


def test_fails_over_to_the_next_endpoint(etcd_server: EtcdServer, prefix: str):
    dead = f"http://127.0.0.1:{free_port()}"
    registry = Registry(EtcdSettings(endpoints=(dead, etcd_server.endpoint), prefix=prefix, timeout=1.0))
    try:
        assert registry.create_lease(SUBNET, host_attrs(1), ttl=600) is not None
        assert len(registry.list_leases()[0]) == 1
    finally:
        registry.close()


def test_an_outage_logs_one_fail_over_and_its_end(
    private_etcd: EtcdServer, prefix: str, caplog: pytest.LogCaptureFixture
):
    """During an outage every call fails over on every endpoint: one warning per outage, not per call."""
    dead = f"http://127.0.0.1:{free_port()}"
    registry = Registry(EtcdSettings(endpoints=(private_etcd.endpoint, dead), prefix=prefix, timeout=1.0))
    caplog.set_level(logging.DEBUG, logger="overlayd.etcd.registry")

    def logged(text: str, level: int) -> int:
        return sum(text in record.getMessage() and record.levelno == level for record in caplog.records)

    try:
        registry.list_leases()
        private_etcd.stop()
        for _ in range(4):
            with pytest.raises(RegistryError):
                registry.list_leases()
        private_etcd.start()
        registry.list_leases()
        assert logged(f"etcd: endpoint {private_etcd.endpoint} unreachable (", logging.WARNING) == 1
        assert logged("failing over to", logging.DEBUG) >= 7  # 4 calls x 2 endpoints, less the warning
        assert logged("etcd: working again after", logging.INFO) == 1

        private_etcd.stop()  # a second outage is news again
        with pytest.raises(RegistryError):
            registry.list_leases()
        assert logged("failing over to", logging.WARNING) == 2
    finally:
        registry.close()


def test_a_client_closed_by_another_thread_fails_one_attempt_not_the_caller(
    make_registry: Callable[[EtcdServer], Registry], etcd_server: EtcdServer
):
    """gRPC raises ValueError on a closed channel; uncaught, it killed the peer watcher's thread."""
    registry = make_registry(etcd_server)
    registry.list_leases()
    registry._current().close()  # as a fail-over or re-authentication on another thread does
    with pytest.raises(RegistryError, match="unreachable"):
        registry.list_leases()
    assert registry.list_leases()[0] == []  # the next attempt connects again


def test_a_listing_over_grpcs_default_4_mib_is_read(
    registry: Registry, etcd_server: EtcdServer, prefix: str
):
    """flanneld's client takes any size; at 4 MiB (~24,000 leases) every listing failed."""
    junk = "x" * 1_400_000  # too long for etcdctl's command line: put with the registry's client
    for n in range(3):
        registry._current().put(f"{prefix}/subnets/198.18.{n}.0-24", junk)
    etcd_server.etcdctl("put", f"{prefix}/subnets/198.18.46.0-24", FLANNEL_VALUE)
    leases, _ = registry.list_leases()
    assert [lease.key for lease in leases] == ["198.18.46.0-24"]  # the junk is skipped as malformed


def _commit_then_fail_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The next transaction is committed by etcd, but its answer is lost (as a timeout is)."""
    from overlayd.etcd.registry import etcd3

    original = etcd3.Etcd3Client.transaction
    pending = [True]

    def transaction(self: object, *args: object, **kwargs: object) -> object:
        result = original(self, *args, **kwargs)  # type: ignore[arg-type]
        if pending.pop() if pending else False:
            raise etcd3.exceptions.ConnectionFailedError()
        return result

    monkeypatch.setattr(etcd3.Etcd3Client, "transaction", transaction)


def test_a_renewal_committed_but_unanswered_keeps_our_key(
    registry: Registry, etcd_server: EtcdServer, prefix: str, monkeypatch: pytest.MonkeyPatch
):
    """Revoking the new etcd lease after such an error deleted the key just written: ours."""
    lease = registry.create_lease(SUBNET, host_attrs(1), ttl=600)
    assert lease is not None
    _commit_then_fail_once(monkeypatch)
    with pytest.raises(RegistryError):
        registry.renew(lease, ttl=600)
    assert [stored.key for stored in registry.list_leases()[0]] == [lease.key]
    assert registry.renew(lease, ttl=600) is not None


def test_a_create_committed_but_unanswered_is_ours_on_the_retry(
    etcd_server: EtcdServer, prefix: str, monkeypatch: pytest.MonkeyPatch
):
    """Retried on the next endpoint, the create met its own write; taken for a lost race, the
    agent leased a second subnet while the first kept our PublicIP for a day."""
    from overlayd.etcd.registry import etcd3

    def unreachable(*_: object) -> None:
        raise etcd3.exceptions.ConnectionFailedError()

    endpoints = (etcd_server.endpoint, etcd_server.endpoint)
    registry = Registry(EtcdSettings(endpoints=endpoints, prefix=prefix, timeout=3.0))
    try:
        _commit_then_fail_once(monkeypatch)
        monkeypatch.setattr(etcd3.Etcd3Client, "revoke_lease", unreachable)  # etcd still in trouble
        lease = registry.create_lease(SUBNET, host_attrs(1), ttl=600)
        assert lease is not None and lease.subnet == SUBNET and lease.etcd_lease_id
        [stored] = registry.list_leases()[0]
        assert (stored.key, stored.etcd_lease_id) == (lease.key, lease.etcd_lease_id)
    finally:
        registry.close()
