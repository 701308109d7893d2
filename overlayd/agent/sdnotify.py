"""systemd's notify protocol (``Type=notify``, ``WatchdogSec=``) with the standard library only.

systemd passes ``NOTIFY_SOCKET`` (a path, or ``@name`` for an abstract socket) and, with a
watchdog, ``WATCHDOG_USEC`` (and ``WATCHDOG_PID``). Each message is one datagram of
``KEY=value`` lines. Without ``NOTIFY_SOCKET`` every call is a no-op, so the agent runs the same
under any supervisor. A failed send is logged once and never stops the agent: losing a status
line must not take the data path down.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)
START_WAIT = 300.0  # seconds a start may be extended while etcd, the config or the interface is missing


def _address(notify_socket: str) -> str | bytes:
    """The socket address for ``NOTIFY_SOCKET``: a leading ``@`` means Linux's abstract namespace."""
    if notify_socket.startswith("@"):
        return b"\0" + notify_socket[1:].encode()
    return notify_socket


def watchdog_interval(env: Mapping[str, str]) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings (half of ``WATCHDOG_USEC``), or None without a watchdog.

    ``WATCHDOG_PID``, when set, names the process the watchdog is meant for; any other process
    (a child that inherited the environment) must not ping.
    """
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2e6


class Notifier:
    """Sends READY, STATUS, WATCHDOG and STOPPING to systemd when ``NOTIFY_SOCKET`` is set."""

    def __init__(self, env: Mapping[str, str] | None = None, start_wait: float = START_WAIT) -> None:
        env = os.environ if env is None else env
        self._extend_until = time.monotonic() + start_wait
        notify_socket = env.get("NOTIFY_SOCKET", "")
        self.address = _address(notify_socket) if notify_socket else None
        self.watchdog_interval = watchdog_interval(env) if self.address else None
        self._socket: socket.socket | None = None
        self._last_status = ""
        self._ready_sent = False
        self._last_ping = 0.0
        self._warned = False

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> None:
        """Send ``fields`` (``KEY=value``) as one datagram; a no-op without NOTIFY_SOCKET."""
        if self.address is None:
            return
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._socket.sendto("\n".join(fields).encode(), self.address)
        except OSError as exc:
            if not self._warned:
                log.warning("cannot notify systemd at NOTIFY_SOCKET %r: %s", self.address, exc)
                self._warned = True

    def ready(self, status: str) -> None:
        """Send ``READY=1`` (once: later calls only update the status) with ``STATUS=status``."""
        if self._ready_sent:
            self.status(status)
            return
        self._ready_sent = True
        self._last_status = " ".join(status.split())
        self.send("READY=1", f"STATUS={self._last_status}")

    def status(self, status: str) -> None:
        """Send ``STATUS=`` only when it differs from the last one (state changes, not heartbeats)."""
        line = " ".join(status.split())  # one line: a newline would start a new field
        if line != self._last_status:
            self._last_status = line
            self.send(f"STATUS={line}")

    def watchdog(self) -> None:
        """Ping the watchdog if half its timeout has passed since the last ping."""
        if self.watchdog_interval is None:
            return
        now = time.monotonic()
        if now - self._last_ping >= self.watchdog_interval:
            self._last_ping = now
            self.send("WATCHDOG=1")

    def extend_start(self, seconds: float) -> None:
        """Ask for ``seconds`` more start-up time: waiting for etcd is not a hang.

        Only before READY, and only for ``start_wait`` after the start: past that the start job
        times out and fails, so ``systemctl start`` and the units ordered after ours stop waiting
        (and Restart= starts the agent again) instead of blocking until etcd is back.
        """
        if not self._ready_sent and time.monotonic() < self._extend_until:
            self.send(f"EXTEND_TIMEOUT_USEC={int(seconds * 1e6)}")

    def stopping(self) -> None:
        self.send("STOPPING=1")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
