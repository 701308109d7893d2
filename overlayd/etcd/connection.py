"""One etcd client at a time over the endpoints: fail-over, re-authentication, failures explained.

Knows nothing of etcd3: the registry hands in how to connect and which of its client library's
exceptions mean "unreachable", so the one module importing ``etcd3`` stays ``etcd/registry.py``.
"""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
from collections.abc import Callable
from ipaddress import ip_address
from typing import Generic, Protocol, TypeVar
from urllib.parse import urlsplit

import grpc

from overlayd.base.outage import Outage
from overlayd.etcd.api import RegistryError
from overlayd.etcd.settings import EtcdSettings

# The registry's logger: fail-overs and re-authentication are logged under the name operators
# already filter on (the JSON logs' `logger` field).
log = logging.getLogger("overlayd.etcd.registry")

T = TypeVar("T")

# Seconds a host name's lookup result is reused: a lookup can take the resolver's whole timeout,
# and during an outage every call on every endpoint fails.
NAME_CHECK_INTERVAL = 60.0


class Client(Protocol):
    def close(self) -> None: ...


C = TypeVar("C", bound=Client)


def host_port(endpoint: str) -> tuple[str, int]:
    """Split ``http://host:port`` (scheme optional, as etcdctl accepts) into host and port."""
    parts = urlsplit(endpoint if "//" in endpoint else f"http://{endpoint}")
    if not parts.hostname:
        raise RegistryError(f"etcd endpoint {endpoint!r} has no host; use a URL like http://127.0.0.1:2379")
    try:
        port = parts.port or 2379
    except ValueError:
        raise RegistryError(f"etcd endpoint {endpoint!r} has an invalid port") from None
    return parts.hostname, port


def explain(endpoint: str, error: Exception, options: EtcdSettings) -> str:
    """An operator's account of a failed etcd call: what failed at which endpoint, and the option to fix.

    etcd3 reports TLS and authentication failures as bare gRPC codes (and hides a connection
    failure's cause in ``__context__``); the password never appears in what is returned.
    """
    if not isinstance(error, grpc.RpcError) and isinstance(error.__context__, grpc.RpcError):
        error = error.__context__
    if not isinstance(error, grpc.RpcError):
        return repr(error)
    code, details = error.code(), str(error.details() or "")
    ssl_reason = re.search(r"OPENSSL_internal:(\w+(?:: [^:]+)?)", details)
    reason = ssl_reason.group(1) if ssl_reason else details
    if code == grpc.StatusCode.INVALID_ARGUMENT and "authentication failed" in details:
        return (
            f"authentication failed for user {options.username} at {endpoint}: "
            "check --etcd-username/--etcd-password"
        )
    denied = code == grpc.StatusCode.PERMISSION_DENIED
    if not options.username and (denied or "user name is empty" in details):
        return f"etcd at {endpoint} requires authentication ({details}): give --etcd-username/--etcd-password"
    if denied:
        return (
            f"user {options.username} is not allowed this at {endpoint} ({details}): "
            f"grant it a role with readwrite on {options.prefix}"
        )
    if "CERTIFICATE_VERIFY_FAILED" in details:
        return (
            f"TLS handshake with {endpoint} failed ({reason}): check --etcd-cafile "
            "(the CA that signed etcd's certificate) and that the certificate names the endpoint's host"
        )
    if "TSI_DATA_CORRUPTED" in details or "BAD_CERTIFICATE" in details or "CERTIFICATE_REQUIRED" in details:
        return (
            f"etcd at {endpoint} broke off the TLS session ({reason}); it likely demands a client "
            "certificate signed by its trusted CA: check --etcd-certfile/--etcd-keyfile"
        )
    # gRPC words these differently by stage ("Handshake read failed", "handshake failed"); the
    # usual cause is an https:// endpoint on an etcd serving plain http, which closes the socket.
    if "handshake" in details.lower():
        return (
            f"TLS handshake with {endpoint} failed ({reason}): check that etcd really serves TLS there "
            "(use http:// for an etcd without --cert-file) and --etcd-cafile"
        )
    return f"{code.name} {details}"



class Connection(Generic[C]):
    """A client for the current endpoint, made on first use; connection failures move to the next.

    ``connect(host, port)`` makes a client (authenticating, so it may raise); an exception in
    ``unreachable_errors`` means "try the next endpoint", one in ``client_errors`` fails the call.
    ``on_error(operation)`` is told of every failed operation (e.g. to count it). Thread-safe.
    """

    def __init__(
        self,
        options: EtcdSettings,
        connect: Callable[[str, int], C],
        unreachable_errors: tuple[type[Exception], ...],
        client_errors: tuple[type[Exception], ...],
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self.options = options
        self._targets = [host_port(endpoint) for endpoint in options.endpoints]
        self._connect = connect
        self._unreachable_errors = unreachable_errors
        self._client_errors = client_errors
        self._on_error = on_error
        self._lock = threading.Lock()
        self._index = 0
        self._client: C | None = None
        # With several endpoints, every call fails over during an outage: log the first fail-over
        # and the end of the outage, the others at debug level. Used under _lock.
        self._fail_overs = Outage(log, "etcd")
        self._name_checks: dict[str, tuple[float, str | None]] = {}  # host: (when, problem)

    @property
    def where(self) -> str:
        return f"etcd {','.join(self.options.endpoints)}"

    def current(self) -> C:
        with self._lock:
            if self._client is None:
                self._client = self._connect(*self._targets[self._index])
            return self._client

    def _fail_over(self, failed: C | None, endpoint: str, reason: str) -> None:
        """Move on from ``endpoint``, unreachable for ``reason``, unless another thread already did.

        ``failed`` is its client, or None when connecting (authenticating) failed.
        """
        with self._lock:
            if failed is not None:
                if self._client is not failed:
                    return
                self._client = None
            self._index = (self._index + 1) % len(self._targets)
            if len(self._targets) > 1:
                change = (
                    f"endpoint {endpoint} unreachable ({reason}); "
                    f"failing over to {self.options.endpoints[self._index]}"
                )
                if self._fail_overs.since is not None:
                    log.debug("etcd: %s", change)
                self._fail_overs.failed(change)
        if failed is not None:
            failed.close()

    def _unreachable(self, index: int, error: Exception) -> str:
        """Why endpoint ``index`` could not be reached, naming a host name that does not resolve.

        gRPC reports such a name as a timeout (DEADLINE_EXCEEDED when no DNS server answers), which
        sends an operator to firewalls and etcd's health instead of to a typo in the endpoint.
        """
        host = self._targets[index][0]
        try:
            ip_address(host)
        except ValueError:
            if problem := self._unresolved(host):
                return problem
        return explain(self.options.endpoints[index], error, self.options)

    def _unresolved(self, host: str) -> str | None:
        """What is wrong with host name ``host`` if the system resolver cannot resolve it, else None.

        Each host's answer is reused for ``NAME_CHECK_INTERVAL`` seconds: see there why.
        """
        now = time.monotonic()
        checked = self._name_checks.get(host)
        if checked is None or now - checked[0] >= NAME_CHECK_INTERVAL:
            problem = None
            try:
                socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
            except socket.gaierror as exc:
                problem = f"host {host} does not resolve ({exc.strerror}); check --etcd-endpoints"
            except UnicodeError:  # "a..b": an empty or over-long label
                problem = f"host {host} is not a valid host name; check --etcd-endpoints"
            checked = self._name_checks[host] = (now, problem)
        return checked[1]

    def _authenticate_again(self, stale: C, endpoint: str) -> C:
        """A client with a fresh auth token, for ``stale`` whose token etcd rejected.

        etcd drops a token unused for ``--auth-token-ttl`` (5 minutes by default), and etcd3
        never renews one: without this an idle agent would be locked out for good.
        """
        log.info("etcd auth token at %s expired; authenticating again", endpoint)
        with self._lock:
            if self._client is stale:
                self._client = None
        stale.close()
        return self.current()

    def failed(self, operation: str, error: RegistryError) -> RegistryError:
        """Report a failed ``operation`` to the error hook; returns ``error`` for raising."""
        if self._on_error is not None:
            self._on_error(operation)
        return error

    def call(self, operation: str, what: str, run: Callable[[C], T]) -> T:
        """Run ``run`` on the current endpoint, failing over once per endpoint.

        ``operation`` is the short name the error hook gets (``list_leases``); ``what`` is the
        operator's description in the error message (``list /coreos.com/network/subnets/``).
        """
        last = ""
        for _ in self._targets:
            client: C | None = None
            index = self._index
            endpoint = self.options.endpoints[index]
            try:
                client = self.current()
                try:
                    result = run(client)
                except grpc.RpcError as exc:
                    if exc.code() != grpc.StatusCode.UNAUTHENTICATED:
                        raise
                    client = self._authenticate_again(client, endpoint)
                    result = run(client)
            except self._unreachable_errors as exc:
                last = self._unreachable(index, exc)
            except grpc.RpcError as exc:  # connecting (authenticating), or a code the client does not map
                if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    error = RegistryError(f"{self.where}: {what}: {explain(endpoint, exc, self.options)}")
                    raise self.failed(operation, error) from None
                last = self._unreachable(index, exc)
            except self._client_errors as exc:
                raise self.failed(operation, RegistryError(f"{self.where}: {what}: {exc!r}")) from None
            except ValueError as exc:
                # gRPC's answer on a channel another thread closed after we took its client (failing
                # over, or authenticating again): this attempt failed, the next one uses the new client.
                if "closed" not in str(exc).lower():
                    raise
                last = self._unreachable(index, exc)
            else:
                with self._lock:
                    self._fail_overs.succeeded()
                return result
            self._fail_over(client, endpoint, last)
        raise self.failed(operation, RegistryError(f"{self.where}: {what}: unreachable ({last})", True))

    def close(self) -> None:
        """Close the current client; the next call connects again."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()
