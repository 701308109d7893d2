"""sd_notify against real AF_UNIX datagram sockets: a path in tmp_path and an abstract name."""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from overlayd.agent.sdnotify import Notifier, watchdog_interval


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket playing systemd, and the NOTIFY_SOCKET value that reaches it."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2)
    try:
        yield sock, str(path)
    finally:
        sock.close()


def received(sock: socket.socket) -> list[str]:
    """Every datagram waiting on ``sock``, decoded."""
    messages = []
    sock.setblocking(False)
    try:
        while True:
            messages.append(sock.recv(4096).decode())
    except BlockingIOError:
        return messages
    finally:
        sock.settimeout(2)


def test_start_is_extended_only_for_a_bounded_wait(listener: tuple[socket.socket, str]) -> None:
    """Past the wait the start job may time out, so `systemctl start` does not block until etcd
    is back."""
    sock, address = listener
    Notifier({"NOTIFY_SOCKET": address}, start_wait=60).extend_start(31)
    Notifier({"NOTIFY_SOCKET": address}, start_wait=0).extend_start(31)
    assert received(sock) == ["EXTEND_TIMEOUT_USEC=31000000"]


def test_ready_once_then_only_changed_status(listener: tuple[socket.socket, str]) -> None:
    sock, address = listener
    notifier = Notifier({"NOTIFY_SOCKET": address})
    notifier.status("reading the network config: missing\nwaiting")
    notifier.status("reading the network config: missing\nwaiting")
    notifier.extend_start(31)
    notifier.ready("holding subnet 198.18.5.0/24, 2 peers")
    notifier.ready("holding subnet 198.18.5.0/24, 2 peers")
    notifier.status("holding subnet 198.18.5.0/24, 3 peers")
    notifier.extend_start(31)  # after READY: no longer a start-up
    notifier.stopping()
    assert received(sock) == [
        "STATUS=reading the network config: missing waiting",
        "EXTEND_TIMEOUT_USEC=31000000",
        "READY=1\nSTATUS=holding subnet 198.18.5.0/24, 2 peers",
        "STATUS=holding subnet 198.18.5.0/24, 3 peers",
        "STOPPING=1",
    ]
    notifier.close()


def test_abstract_socket_name() -> None:
    name = f"overlayd-test-{secrets.token_hex(4)}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(2)
        notifier = Notifier({"NOTIFY_SOCKET": f"@{name}"})
        notifier.ready("ready")
        assert sock.recv(4096) == b"READY=1\nSTATUS=ready"
        notifier.close()
    finally:
        sock.close()


def test_watchdog_pings_at_half_the_timeout(listener: tuple[socket.socket, str]) -> None:
    sock, address = listener
    env = {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}
    notifier = Notifier(env)
    assert notifier.watchdog_interval == 15.0
    notifier.watchdog()
    notifier.watchdog()  # within the interval: no second ping
    assert received(sock) == ["WATCHDOG=1"]
    notifier.close()


def test_watchdog_is_off_for_another_pid_or_without_usec() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None


def test_without_notify_socket_nothing_is_sent_and_nothing_fails() -> None:
    notifier = Notifier({"WATCHDOG_USEC": "30000000"})
    assert not notifier.enabled
    assert notifier.watchdog_interval is None
    notifier.ready("ready")
    notifier.watchdog()
    assert notifier._socket is None


def test_a_vanished_socket_does_not_raise(tmp_path: Path) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    notifier.ready("ready")  # systemd gone: logged once, the agent keeps running
    notifier.stopping()
    notifier.close()
