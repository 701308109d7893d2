"""The subnet registry in etcd: config, leases and watches, in flannel's layout (v3 API).

The etcd implementation of ``registryapi.SubnetRegistry``, and the only module that imports
``etcd3``, so swapping the client library touches one file.
Layout (the contract with flanneld peers): ``<prefix>/config`` holds the network config and
``<prefix>/subnets/A.B.C.D-LEN`` one lease per host, each key bound to its own etcd lease, its value
flannel's JSON byte for byte (``lease.encode_attrs``).

Every write is a transaction with a guard, so two agents never both believe they hold a subnet:
create is ``If(Version(key) == 0)``, take-over is ``If(Mod(key) == what we listed)`` and renewal is
``If(Value(key) == our value)``.

Watches do not use etcd3's ``Watcher``: while etcd is down its stream thread reopens the stream in
a loop with no backoff (a full core, measured) and a stream break drops every callback. Each watch
here is one gRPC stream on etcd3's generated stub, read by its own thread (``etcd.watchstream``),
reporting the first failure to ``on_error`` and then ending; the caller decides when to re-list
and re-watch. Endpoints, fail-over and the operator's account of a failure are ``etcd.connection``'s.
See docs/reliability.md, "etcd client".
"""

from __future__ import annotations

import logging
import math
import os
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import replace
from ipaddress import IPv4Network, IPv6Network
from typing import Any

# etcd3 0.12 ships protobuf code generated for old protobuf releases; the pure-Python protobuf
# implementation still loads it. Must be set before etcd3 (and so protobuf) is imported.
os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")

import grpc

with warnings.catch_warnings():
    # Its generated code uses descriptor calls that protobuf deprecates: noise, not our problem.
    warnings.simplefilter("ignore", DeprecationWarning)
    import etcd3
    import etcd3.exceptions
    import etcd3.utils
    from etcd3 import etcdrpc

from overlayd.etcd.wire import (
    EVENT_DELETE,
    Event,
    KeyValue,
    RangeResult,
    WatchResult,
    decode_range,
    decode_watch,
)
from overlayd.subnet.lease import Lease, LeaseAttrs, LeaseError, decode_lease, encode_attrs

# grpc's Python layer waits for a stream's next message in slices of this many seconds (0.1 by
# default) so that Ctrl-C reaches a main thread blocked in a call; every idle watch thread thus
# wakes ten times a second, a third of the agent's idle CPU at 1000 peers (docs/benchmarks.md).
# Our streams are read on their own threads, and a message or a cancel still wakes a waiter at
# once; only the slice length changes. A private name: if a grpc release drops it, this is a no-op.
if hasattr(grpc, "_common") and hasattr(grpc._common, "MAXIMUM_WAIT_TIMEOUT"):
    grpc._common.MAXIMUM_WAIT_TIMEOUT = 2.0
from overlayd.etcd.api import LeaseEvent, RegistryError, WatchCompacted, health_prefix
from overlayd.etcd.connection import Connection
from overlayd.etcd.settings import EtcdSettings, etcd_security_problem
from overlayd.etcd.watchstream import WatchStream

log = logging.getLogger(__name__)

# gRPC's default reconnect backoff grows to two minutes; after an etcd restart we want the
# channel usable again within a second or two. Keepalive pings on the watch stream detect a
# peer that vanished without closing the connection (etcd accepts pings every 5 s or slower).
_GRPC_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.http2.max_pings_without_data", 0),  # default 2: pings would stop on an idle watch
    # Default 4 MiB: a listing of ~24,000 leases (or a few junk values under the prefix) would fail
    # every time. flanneld's client takes any size.
    ("grpc.max_receive_message_length", -1),
)
# Failures that mean "this endpoint is unreachable": try the next one.
_CONNECTION_ERRORS = (
    etcd3.exceptions.ConnectionFailedError,
    etcd3.exceptions.ConnectionTimeoutError,
)


def _log_bad_lease(key: str, revision: int, error: LeaseError) -> None:
    log.warning("ignoring malformed lease %s (revision %d): %s", key, revision, error)


class Registry:
    """Leases and config of one overlay network in etcd; thread-safe.

    Connection failures fail over to the next endpoint (round robin); an operation that fails on
    every endpoint raises RegistryError naming them.
    """

    def __init__(self, options: EtcdSettings, on_error: Callable[[str], None] | None = None) -> None:
        """``on_error(operation)`` is called for every failed etcd operation (e.g. to count it)."""
        if not options.endpoints:
            raise RegistryError("no etcd endpoints given; use e.g. http://127.0.0.1:2379")
        security = (options.cafile, options.certfile, options.keyfile, options.username, options.password)
        if problem := etcd_security_problem(options.endpoints, *security):
            raise RegistryError(problem)
        self.options = options
        self._connection: Connection[etcd3.Etcd3Client] = Connection(
            options, self._connect, _CONNECTION_ERRORS, (etcd3.exceptions.Etcd3Exception,), on_error
        )
        prefix = options.prefix.rstrip("/")
        self._config_key = f"{prefix}/config"
        self._subnets_prefix = f"{prefix}/subnets/"
        self._health_prefix = health_prefix(prefix)
        self._lock = threading.Lock()
        self._watches: set[WatchStream] = set()
        # Told about every undecodable lease value; the agent logs each once and counts it.
        self.on_bad_lease: Callable[[str, int, LeaseError], None] = _log_bad_lease

    # -- connection handling --------------------------------------------------------------

    @property
    def _where(self) -> str:
        return self._connection.where

    def _connect(self, host: str, port: int) -> etcd3.Etcd3Client:
        """A client for ``host:port`` (authenticates, so it may raise connection errors)."""
        opts = self.options
        client = etcd3.client(
            host=host,
            port=port,
            ca_cert=opts.cafile,
            cert_cert=opts.certfile,
            cert_key=opts.keyfile,
            user=opts.username or None,
            password=opts.password or None,
            timeout=opts.timeout,
            grpc_options=_GRPC_OPTIONS,
        )
        if not client.uses_secure_channel:
            # gRPC refuses call credentials on a plain channel; the auth token goes as metadata,
            # which etcd3 sends on every call as well (and etcdctl does the same over http).
            client.call_credentials = None
        return client

    def _current(self) -> etcd3.Etcd3Client:
        return self._connection.current()

    def close(self) -> None:
        """Cancel all watches and close the connection."""
        with self._lock:
            watches, self._watches = list(self._watches), set()
        for watch in watches:
            watch.cancel()
        self._connection.close()

    # -- config ---------------------------------------------------------------------------

    def get_config(self) -> tuple[bytes | None, int]:
        """The raw value at ``<prefix>/config`` (None if missing) and the revision of the read."""
        response = self._connection.call(
            "get_config", f"read {self._config_key}", lambda client: client.get_response(self._config_key)
        )
        value = bytes(response.kvs[0].value) if response.kvs else None
        return value, int(response.header.revision)

    def put_config(self, raw: bytes) -> int:
        """Store ``raw`` at ``<prefix>/config`` (no lease: the config outlives every agent); revision."""
        response = self._connection.call(
            "put_config", f"write {self._config_key}", lambda client: client.put(self._config_key, raw)
        )
        revision = int(response.header.revision)
        log.info("wrote %s (revision %d)", self._config_key, revision)
        return revision

    def watch_config(
        self, start_revision: int, on_change: Callable[[], None], on_error: Callable[[Exception], None]
    ) -> Callable[[], None]:
        """Call ``on_change`` on every change of the config key from ``start_revision`` on.

        After ``on_error`` the watch is over; re-read the config and watch again. Returns cancel.
        """
        create = etcdrpc.WatchCreateRequest(key=self._config_key.encode(), start_revision=start_revision)
        return self._watch(
            "watch_config", f"watch {self._config_key}", create, lambda _response: on_change(), on_error
        )

    # -- leases ---------------------------------------------------------------------------

    def _lease_key(self, lease_key: str) -> str:
        return f"{self._subnets_prefix}{lease_key}"

    def _decode_kv(self, key: str, kv: KeyValue) -> Lease | None:
        """The lease stored at a subnets key, or None (reported to ``on_bad_lease``) when malformed."""
        try:
            return decode_lease(
                key, kv.value, etcd_lease_id=kv.lease, mod_revision=kv.mod_revision,
                create_revision=kv.create_revision,
            )
        except LeaseError as exc:
            self.on_bad_lease(key, int(kv.mod_revision), exc)
            return None

    def list_leases(self) -> tuple[list[Lease], int]:
        """All decodable leases under ``<prefix>/subnets/`` and the revision of the read."""
        response = self._connection.call("list_leases", f"list {self._subnets_prefix}", self._range_subnets)
        leases = []
        for kv in response.kvs:
            key = kv.key.decode(errors="replace").removeprefix(self._subnets_prefix)
            lease = self._decode_kv(key, kv)
            if lease is not None:
                leases.append(lease)
        return leases, response.revision

    def _range_subnets(self, client: etcd3.Etcd3Client) -> RangeResult:
        """etcd3's ``get_prefix_response``, its answer decoded by ``etcd.wire`` (see there why)."""
        prefix = self._subnets_prefix.encode()
        request = etcdrpc.RangeRequest(key=prefix, range_end=etcd3.utils.increment_last_byte(prefix))
        call = client.channel.unary_unary(
            "/etcdserverpb.KV/Range",
            request_serializer=etcdrpc.RangeRequest.SerializeToString,
            response_deserializer=decode_range,
        )
        result: RangeResult = call(
            request, client.timeout, credentials=client.call_credentials, metadata=client.metadata
        )
        return result

    def _guarded_put(
        self, operation: str, template: Lease, compare: Callable[[Any, str], Any], ttl: int | None
    ) -> tuple[Lease | None, Lease | None]:
        """Put ``template``'s value at its key if ``compare`` holds, bound to a new etcd lease of ``ttl``.

        ``ttl=None`` stores the key without a lease (a reservation). Returns (the stored Lease,
        None), or (None, what the key holds, if anything) when the guard failed; the new etcd lease
        is then revoked so it does not linger. Not when the transaction itself failed: etcd can
        commit a write and still answer with a timeout, and revoking its lease would then delete
        the key just written (ours). It expires at its TTL instead.
        """
        key = self._lease_key(template.key)
        value = encode_attrs(template.attrs)

        def transact(client: etcd3.Etcd3Client) -> tuple[Lease | None, Lease | None]:
            lease_id = client.lease(ttl).id if ttl is not None else 0
            succeeded, responses = client.transaction(
                compare=[compare(client.transactions, key)],
                success=[client.transactions.put(key, value, lease=lease_id or None)],
                failure=[client.transactions.get(key)],
            )
            if not succeeded:
                self._revoke_quietly(client, lease_id)
                held = [  # the key, when it holds our very value
                    replace(template, etcd_lease_id=meta.lease_id, mod_revision=meta.mod_revision)
                    for stored, meta in responses[0]
                    if stored == value.encode()
                ]
                return None, (held[0] if held else None)
            revision = int(responses[0].response_put.header.revision)
            return replace(template, etcd_lease_id=lease_id, mod_revision=revision), None

        return self._connection.call(operation, f"{operation.replace('_', ' ')} {key}", transact)

    @staticmethod
    def _revoke_quietly(client: etcd3.Etcd3Client, lease_id: int) -> None:
        """Revoke an etcd lease nobody uses; if that fails it simply expires at its TTL."""
        if not lease_id:
            return
        try:
            client.revoke_lease(lease_id)
        except (etcd3.exceptions.Etcd3Exception, grpc.RpcError) as exc:
            log.debug("could not revoke unused etcd lease %x: %r", lease_id, exc)

    def create_lease(
        self, subnet: IPv4Network, attrs: LeaseAttrs, ttl: int, ipv6_subnet: IPv6Network | None = None
    ) -> Lease | None:
        """Create ``<prefix>/subnets/<subnet>`` if absent, bound to a new etcd lease; None if taken.

        Found holding our very value, the key is ours: a create whose answer was lost (committed,
        then a timeout) and retried. It is taken over, for a fresh etcd lease of known expiry.
        """
        lease, ours = self._guarded_put(
            "create_lease",
            Lease(subnet=subnet, attrs=attrs, ipv6_subnet=ipv6_subnet),
            lambda txn, key: txn.version(key) == 0,
            ttl,
        )
        if ours is not None:
            return self.take_over(ours, attrs, ttl)
        if lease is not None:
            log.info("created lease %s (etcd lease %x, ttl %ds)", lease.key, lease.etcd_lease_id, ttl)
        return lease

    def take_over(self, existing: Lease, attrs: LeaseAttrs, ttl: int) -> Lease | None:
        """Re-put our existing key with ``attrs`` on a fresh etcd lease; None if it changed meanwhile.

        A reservation (no etcd lease) stays a reservation. The previous etcd lease is left to
        expire: no key is bound to it any more, and revoking it could delete keys we do not own.
        """
        template = Lease(subnet=existing.subnet, attrs=attrs, ipv6_subnet=existing.ipv6_subnet)
        lease, _ = self._guarded_put(
            "take_over",
            template,
            lambda txn, key: txn.mod(key) == existing.mod_revision,
            ttl if existing.etcd_lease_id else None,
        )
        if lease is not None:
            log.info("took over lease %s (etcd lease %x)", lease.key, lease.etcd_lease_id)
        return lease

    def delete_lease(self, lease: Lease) -> bool:
        """Delete ``lease``'s key if nobody wrote it since it was listed; False if somebody did."""
        key = self._lease_key(lease.key)

        def transact(client: etcd3.Etcd3Client) -> bool:
            succeeded, _ = client.transaction(
                compare=[client.transactions.mod(key) == lease.mod_revision],
                success=[client.transactions.delete(key)],
                failure=[],
            )
            return bool(succeeded)

        return self._connection.call("delete_lease", f"delete lease {key}", transact)

    def renew(self, lease: Lease, ttl: int) -> Lease | None:
        """Extend our lease: re-put its value on a fresh etcd lease if the key still holds it.

        Done as flanneld does, rather than with a keepalive: the value guard notices that our key
        was deleted or rewritten by someone else (a keepalive would happily extend a lease that no
        longer carries our key), and flanneld peers see the same writes from us as from each other.
        Returns None if our key is gone or no longer ours.
        """
        renewed, _ = self._guarded_put(
            "renew",
            lease,
            lambda txn, key: txn.value(key) == encode_attrs(lease.attrs),
            ttl if lease.etcd_lease_id else None,
        )
        if renewed is None:
            log.warning("lease %s is gone or no longer ours; cannot renew", lease.key)
        else:
            log.info("renewed lease %s (etcd lease %x, ttl %ds)", renewed.key, renewed.etcd_lease_id, ttl)
        return renewed

    def put_health(self, node: str, view: bytes, ttl: int) -> None:
        """Store ``node``'s data path view on a new etcd lease of ``ttl`` seconds (the previous
        one expires on its own: revoking it first would leave a moment without a view)."""
        key = f"{self._health_prefix}{node}"

        def put(client: etcd3.Etcd3Client) -> None:
            client.put(key, view, lease=client.lease(ttl).id)

        self._connection.call("put_health", f"write {key}", put)

    def list_health(self) -> dict[str, bytes]:
        """Every node's data path view, by node."""
        prefix = self._health_prefix

        def read(client: etcd3.Etcd3Client) -> dict[str, bytes]:
            return {
                meta.key.decode().removeprefix(prefix): bytes(value)
                for value, meta in client.get_prefix(prefix)
            }

        return self._connection.call("list_health", f"list {prefix}", read)

    def lease_remaining(self, lease: Lease) -> float | None:
        """Seconds until our key expires; None if the key or its etcd lease is gone.

        A reservation (no etcd lease) never expires: ``math.inf`` while its key exists.
        """
        key = self._lease_key(lease.key)
        if not lease.etcd_lease_id:
            response = self._connection.call(
                "lease_remaining", f"read {key}", lambda client: client.get_response(key)
            )
            return math.inf if response.kvs else None
        info = self._connection.call(
            "lease_remaining",
            f"lease time-to-live of {key}", lambda client: client.get_lease_info(lease.etcd_lease_id)
        )
        if info.TTL < 0 or key.encode() not in info.keys:
            return None
        return float(info.TTL)

    def watch_leases(
        self,
        start_revision: int,
        on_events: Callable[[list[LeaseEvent]], None],
        on_error: Callable[[Exception, bool], None],
    ) -> Callable[[], None]:
        """Deliver changes under ``<prefix>/subnets/`` from ``start_revision`` on, in order.

        ``on_error(error, compacted)`` ends the watch: re-list and watch again from the new
        revision. Callbacks run on the watch's own thread. Returns cancel.
        """
        prefix = self._subnets_prefix.encode()
        create = etcdrpc.WatchCreateRequest(
            key=prefix, range_end=etcd3.utils.increment_last_byte(prefix), start_revision=start_revision
        )
        return self._watch(
            "watch",
            f"watch {self._subnets_prefix}",
            create,
            lambda response: on_events([self._lease_event(event) for event in response.events]),
            lambda error: on_error(error, isinstance(error, WatchCompacted)),
        )

    def _lease_event(self, event: Event) -> LeaseEvent:
        kv = event.kv
        key = kv.key.decode(errors="replace").removeprefix(self._subnets_prefix)
        if event.type == EVENT_DELETE:
            return LeaseEvent("delete", key, None, kv.mod_revision)
        lease = self._decode_kv(key, kv)
        return LeaseEvent("put", key, lease, kv.mod_revision)

    def _watch(
        self,
        operation: str,
        what: str,
        create: Any,
        on_response: Callable[[WatchResult], None],
        on_error: Callable[[RegistryError], None],
    ) -> Callable[[], None]:
        """Open a watch stream on the current endpoint; returns its cancel function."""
        where = f"{self._where}: {what}"

        def failed(error: RegistryError) -> None:
            log.warning("%s", error)
            on_error(self._connection.failed(operation, error))

        stream = self._connection.call(
            operation, what, lambda client: self._open_watch(client, create, on_response, failed, where)
        )
        with self._lock:
            self._watches.add(stream)

        def cancel() -> None:
            with self._lock:
                self._watches.discard(stream)
            stream.cancel()

        return cancel

    @staticmethod
    def _open_watch(
        client: etcd3.Etcd3Client,
        create: Any,
        on_response: Callable[[WatchResult], None],
        on_error: Callable[[RegistryError], None],
        where: str,
    ) -> WatchStream:
        """A watch stream on etcd3's generated stub, its responses decoded by ``etcd.wire``."""
        watch = client.channel.stream_stream(
            "/etcdserverpb.Watch/Watch",
            request_serializer=etcdrpc.WatchRequest.SerializeToString,
            response_deserializer=decode_watch,
        )

        def open_call(requests: Iterator[Any]) -> Any:
            return watch(requests, credentials=client.call_credentials, metadata=client.metadata)

        first = etcdrpc.WatchRequest(create_request=create)
        return WatchStream(open_call, first, on_response, on_error, where)
