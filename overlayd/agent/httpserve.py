"""A small HTTP/1.x server for GET endpoints, on one thread, that no client can stall.

Any local user can connect to the metrics port. A thread per connection let idle, half-sent
requests pile up by the thousand, each holding a thread and a file descriptor, until the agent's
own loop starved and ran out of descriptors. Here one thread multiplexes every connection with a
selector; each connection has one deadline for the whole exchange (reading the request and writing
the answer); and at most ``max_connections`` are open: a new one past that replaces the oldest
connection that has not finished sending its request or has had its answer (a scraper sends its
request at once, so it is never the oldest idle one), or is closed at once if every connection is
busy being answered. Every answer ends its connection, so no client holds one between requests.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus

log = logging.getLogger(__name__)

MAX_HEAD = 8192  # bytes of request line and headers; Prometheus and probes send a few hundred
ACCEPTS_PER_TURN = 64  # a connection flood must not keep the thread from answering the others
# Seconds between two log lines about clients filling the connections, and the pause in accepting
# after the process ran out of descriptors: an attacker must not turn either into a log flood.
WARN_INTERVAL = 60.0
ACCEPT_PAUSE = 1.0


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # without the query string


@dataclass(frozen=True)
class Response:
    status: HTTPStatus
    body: bytes
    content_type: str = "text/plain"


class BadRequest(ValueError):
    """The request head cannot be served; ``status`` is the answer's code."""

    def __init__(self, status: HTTPStatus, why: str) -> None:
        super().__init__(why)
        self.status = status


def parse_head(head: bytes) -> Request:
    """The method and path of a request head (request line and headers, without the blank line)."""
    line = head.split(b"\n", 1)[0].rstrip(b"\r")
    parts = line.split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        raise BadRequest(HTTPStatus.BAD_REQUEST, "expected a request line such as GET /metrics HTTP/1.1")
    method, target = parts[0].decode("ascii", "replace"), parts[1].decode("ascii", "replace")
    if method not in ("GET", "HEAD"):
        raise BadRequest(HTTPStatus.METHOD_NOT_ALLOWED, f"method {method[:16]} not allowed: use GET")
    return Request(method, target.partition("?")[0])


def render(response: Response, head_only: bool = False) -> bytes:
    """The bytes of an HTTP/1.1 answer that closes its connection."""
    head = (
        f"HTTP/1.1 {response.status.value} {response.status.phrase}\r\n"
        f"Content-Type: {response.content_type}\r\n"
        f"Content-Length: {len(response.body)}\r\n"
        "Connection: close\r\n"
    )
    if response.status == HTTPStatus.METHOD_NOT_ALLOWED:
        head += "Allow: GET, HEAD\r\n"
    return (head + "\r\n").encode() + (b"" if head_only else response.body)


def _error(status: HTTPStatus, why: str) -> bytes:
    return render(Response(status, f"{why}\n".encode()))


@dataclass(eq=False)
class _Connection:
    sock: socket.socket
    deadline: float
    received: bytearray = field(default_factory=bytearray)
    answer: memoryview | None = None  # set once the request is read: what is left to send
    answered: bool = False  # all sent; waiting for the client to close (see _send)


class BoundedHttpServer:
    """Serves ``route(request)`` on ``address`` from one thread, with bounded connections and time."""

    def __init__(
        self,
        address: tuple[str, int],
        route: Callable[[Request], Response],
        max_connections: int = 256,
        request_timeout: float = 5.0,
    ) -> None:
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.listener.bind(address)
            self.listener.listen(128)
        except OSError:
            self.listener.close()
            raise
        self.listener.setblocking(False)
        self.route = route
        self.max_connections = max_connections
        self.request_timeout = request_timeout
        self.connections: dict[socket.socket, _Connection] = {}  # oldest first
        self.warned_at: float | None = None  # monotonic time of the last line about too many clients
        self.accept_paused_until: float | None = None  # out of descriptors: the listener rests
        self._wake_read, self._wake_write = socket.socketpair()
        self._stopping = False
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ, None)
        self.selector.register(self._wake_read, selectors.EVENT_READ, None)
        self.thread = threading.Thread(target=self._serve, name="http", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.listener.getsockname()[:2]
        return str(host), int(port)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        """Stop serving and close every socket (safe to call once, started or not)."""
        self._stopping = True
        self._wake_write.send(b"\0")
        if self.thread.is_alive():
            self.thread.join(timeout=10)
        for connection in list(self.connections.values()):
            self._close(connection)
        self.selector.close()
        for sock in (self.listener, self._wake_read, self._wake_write):
            sock.close()

    # ---- the serving thread ------------------------------------------------------------------

    def _serve(self) -> None:
        while not self._stopping:
            oldest = next(iter(self.connections.values()), None)
            wakes = [t for t in (oldest and oldest.deadline, self.accept_paused_until) if t is not None]
            timeout = max(0.0, min(wakes) - time.monotonic()) if wakes else None
            accept = False
            for key, mask in self.selector.select(timeout):
                if key.fileobj is self.listener:
                    accept = True  # after the others: a flood of new connections waits its turn
                elif key.fileobj is self._wake_read:
                    self._wake_read.recv(64)
                elif mask & selectors.EVENT_WRITE:
                    self._send(key.data)
                else:
                    self._receive(key.data)
            if accept:
                self._accept()
            now = time.monotonic()
            self._expire(now)
            if self.accept_paused_until is not None and now >= self.accept_paused_until:
                self.accept_paused_until = None
                self.selector.register(self.listener, selectors.EVENT_READ, None)

    def _accept(self) -> None:
        for _ in range(ACCEPTS_PER_TURN):
            try:
                sock, _peer = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of descriptors, say: rest the listener instead of spinning
                self._warn(f"cannot accept a connection ({exc.strerror}); pausing for {ACCEPT_PAUSE:.0f}s")
                self.selector.unregister(self.listener)
                self.accept_paused_until = time.monotonic() + ACCEPT_PAUSE
                return
            if len(self.connections) >= self.max_connections and not self._make_room():
                sock.close()
                continue
            sock.setblocking(False)
            connection = _Connection(sock, time.monotonic() + self.request_timeout)
            self.connections[sock] = connection
            self.selector.register(sock, selectors.EVENT_READ, connection)

    def _make_room(self) -> bool:
        """Close the oldest connection still sending its request; False if all are being answered."""
        self._warn(
            f"{len(self.connections)} connections open, the most allowed; closing the oldest that have "
            "not sent a request (a local client holding connections open)"
        )
        idle = next((c for c in self.connections.values() if c.answer is None or c.answered), None)
        if idle is None:
            return False
        self._close(idle)
        return True

    def _receive(self, connection: _Connection) -> None:
        try:
            data = connection.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close(connection)
            return
        if connection.answered:
            return  # the rest of a request we answered early (too large): discarded
        connection.received += data
        end = connection.received.find(b"\r\n\r\n")
        if end < 0:
            end = connection.received.find(b"\n\n")
        if end < 0:
            if len(connection.received) > MAX_HEAD:
                too_large = HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE
                self._answer(connection, _error(too_large, f"request head over {MAX_HEAD} bytes"))
            return
        try:
            request = parse_head(bytes(connection.received[:end]))
        except BadRequest as exc:
            self._answer(connection, _error(exc.status, str(exc)))
            return
        try:
            answer = render(self.route(request), head_only=request.method == "HEAD")
        except Exception:  # a bug in one endpoint must not end the server
            log.exception("metrics port: error answering %s", request.path[:64])
            answer = _error(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error; see the agent's log")
        self._answer(connection, answer)

    def _answer(self, connection: _Connection, answer: bytes) -> None:
        connection.answer = memoryview(answer)
        self.selector.modify(connection.sock, selectors.EVENT_WRITE, connection)
        self._send(connection)

    def _send(self, connection: _Connection) -> None:
        assert connection.answer is not None
        try:
            sent = connection.sock.send(connection.answer)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(connection)
            return
        connection.answer = connection.answer[sent:]
        if not connection.answer:
            # Closing now, with request bytes still unread, would reset the connection and could
            # destroy the answer before the client reads it: end our side and wait for the
            # client's close (or the deadline), discarding what it still sends.
            connection.answered = True
            with contextlib.suppress(OSError):
                connection.sock.shutdown(socket.SHUT_WR)
            self.selector.modify(connection.sock, selectors.EVENT_READ, connection)

    def _expire(self, now: float) -> None:
        """Close connections past their deadline (the oldest come first: one timeout for all)."""
        for connection in list(self.connections.values()):
            if connection.deadline > now:
                break
            self._close(connection)

    def _warn(self, message: str) -> None:
        """Log a problem clients cause, at most once per WARN_INTERVAL."""
        now = time.monotonic()
        if self.warned_at is None or now - self.warned_at >= WARN_INTERVAL:
            self.warned_at = now
            log.warning("metrics port %d: %s (said at most once a minute)", self.address[1], message)

    def _close(self, connection: _Connection) -> None:
        if self.connections.pop(connection.sock, None) is None:
            return
        with contextlib.suppress(KeyError, ValueError):  # the selector is already closed (stopping)
            self.selector.unregister(connection.sock)
        connection.sock.close()
