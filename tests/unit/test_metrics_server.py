"""The metrics port under attack from a local user: idle half-sent requests (slowloris), more
connections than allowed, parallel scrapes and malformed requests, against the real server."""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from overlayd.agent.httpserve import BadRequest, Request, parse_head
from overlayd.agent.metrics import Health, Metrics, MetricsServer

HALF_SENT = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n"  # no blank line: the request never ends
CLIENT_TIMEOUT = 5.0  # well under the attack's request timeout: a queued client would fail


@contextlib.contextmanager
def serving(request_timeout: float = 60.0, max_connections: int = 64) -> Iterator[MetricsServer]:
    metrics = Metrics()
    metrics.health = Health(ready=True, reason="ready", last_loop=time.monotonic() + 3600)
    server = MetricsServer(metrics, ("127.0.0.1", 0), 60.0, request_timeout, max_connections)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def idle_clients(port: int, count: int) -> Iterator[list[socket.socket]]:
    """``count`` connections that each send part of a request and then nothing."""
    clients = []
    try:
        for _ in range(count):
            client = socket.create_connection(("127.0.0.1", port))
            client.sendall(HALF_SENT)
            clients.append(client)
        yield clients
    finally:
        for client in clients:
            client.close()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=CLIENT_TIMEOUT) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def wait_for(check: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def closed_by_server(client: socket.socket) -> bool:
    client.setblocking(False)
    try:
        return client.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def test_idle_half_sent_requests_hold_no_thread_and_block_no_scrape() -> None:
    with serving(max_connections=512) as server:
        threads, fds = threading.active_count(), open_fds()
        with idle_clients(server.port, 300):
            # The server's side of each idle connection is one descriptor, and no thread.
            wait_for(lambda: open_fds() == fds + 600, 10, "the server to accept all 300")
            assert threading.active_count() == threads
            assert get(server.port, "/healthz") == (200, "ok\n")
            status, body = get(server.port, "/metrics")
            assert status == 200 and "overlayd_ready" in body
            with ThreadPoolExecutor(max_workers=32) as pool:
                answers = list(pool.map(lambda _: get(server.port, "/readyz"), range(200)))
            assert answers == [(200, "ready\n")] * 200
        wait_for(lambda: open_fds() == fds, 10, "the server to close the connections its clients closed")


def test_more_connections_than_allowed_replace_the_oldest_idle_ones() -> None:
    with serving(max_connections=32) as server:
        threads, fds = threading.active_count(), open_fds()
        with idle_clients(server.port, 200) as clients:
            wait_for(lambda: sum(map(closed_by_server, clients)) == 200 - 32, 10, "the excess to be closed")
            assert open_fds() == fds + 200 + 32, "the server holds at most max_connections"
            assert threading.active_count() == threads
            assert get(server.port, "/healthz") == (200, "ok\n")
            status, body = get(server.port, "/metrics")
            assert status == 200 and "overlayd_build_info" in body
            assert not any(closed_by_server(client) for client in clients[-16:]), "the newest were kept"


def test_a_connection_that_never_finishes_its_request_is_closed_at_the_timeout() -> None:
    with serving(request_timeout=1.0) as server:
        fds = open_fds()
        with idle_clients(server.port, 50) as clients:
            wait_for(lambda: all(map(closed_by_server, clients)), 15, "every idle connection to be closed")
            assert open_fds() == fds + 50, "the server released its side of each"
            # Sending a byte now and then does not extend the deadline: it is for the whole request.
            with idle_clients(server.port, 1) as [trickle]:
                for _ in range(40):
                    with contextlib.suppress(OSError):
                        trickle.send(b"X")
                    if closed_by_server(trickle):
                        break
                    trickle.setblocking(True)
                    time.sleep(0.1)
                assert closed_by_server(trickle), "a trickling request outlived its deadline"
            assert get(server.port, "/healthz")[0] == 200


def raw(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT) as client:
        client.sendall(data)
        answer = b""
        while chunk := client.recv(65536):
            answer += chunk
        return answer


def test_malformed_and_oversized_requests_get_an_error_and_the_server_goes_on() -> None:
    with serving() as server:
        assert raw(server.port, b"POST /metrics HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 405 ")
        assert raw(server.port, b"\x00\xff garbage\r\n\r\n").startswith(b"HTTP/1.1 400 ")
        huge = b"GET /metrics HTTP/1.1\r\n" + b"X-Pad: " + b"a" * 20000 + b"\r\n\r\n"
        assert raw(server.port, huge).startswith(b"HTTP/1.1 431 ")
        head = raw(server.port, b"HEAD /readyz HTTP/1.0\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ") and head.endswith(b"\r\n\r\n"), "HEAD has no body"
        assert raw(server.port, b"GET /healthz?x=1 HTTP/1.1\r\n\r\n").endswith(b"\r\n\r\nok\n")
        assert get(server.port, "/healthz") == (200, "ok\n")


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"GET /metrics HTTP/1.1\r\nHost: x", Request("GET", "/metrics")),
        (b"HEAD /readyz?verbose HTTP/1.0", Request("HEAD", "/readyz")),
        (b"GET /metrics", None),
        (b"GET /metrics SPDY/3", None),
        (b"DELETE / HTTP/1.1", None),
    ],
)
def test_parse_head(head: bytes, expected: Request | None) -> None:
    if expected is None:
        with pytest.raises(BadRequest):
            parse_head(head)
    else:
        assert parse_head(head) == expected


# Open this many connections from another process, say so, and hold them until stdin closes.
HOLDER = """
import socket, sys
held = [socket.create_connection(("127.0.0.1", int(sys.argv[1]))) for _ in range(int(sys.argv[2]))]
print("held", flush=True)
sys.stdin.read()
"""


def test_out_of_descriptors_the_server_pauses_logs_once_and_recovers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """It neither spins on a listener it cannot accept from nor logs a line per attempt."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with serving(max_connections=512) as server:
        resource.setrlimit(resource.RLIMIT_NOFILE, (open_fds() + 20, hard))
        try:
            holder = subprocess.Popen(
                [sys.executable, "-c", HOLDER, str(server.port), "100"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard)),
            )  # fmt: skip
            try:
                assert holder.stdout is not None and holder.stdout.readline() == "held\n"
                wait_for(lambda: "Too many open files" in caplog.text, 10, "the server to run out of fds")
            finally:
                holder.kill()
                holder.wait()
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        assert get(server.port, "/healthz") == (200, "ok\n"), "the server serves again"
    assert caplog.text.count("Too many open files") == 1, caplog.text
