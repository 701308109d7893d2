"""Netlink monitor: tells the reconciler when something changed on our VXLAN device.

It only *signals*; the reconciler re-reads the kernel and repairs (level-triggered), so a lost or
coalesced message is harmless — a socket overflow is itself reported as a change. Our own writes
come back as messages too; the agent's queue coalesces them.

The socket is a plain ``AF_NETLINK`` socket decoded with pyroute2's RTNL marshal rather than an
``IPRoute``: pyroute2 0.9's synchronous ``IPRoute`` reads through an asyncio loop that can hold
several received messages in its own queue, so ``select`` on its descriptor misses them, and a
blocking ``get()`` cannot be interrupted for a prompt ``stop()``. A self-pipe wakes the thread.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import socket
import threading
from collections.abc import Callable
from typing import Any

from pyroute2.netlink.rtnl import (
    RTMGRP_IPV4_IFADDR,
    RTMGRP_IPV4_ROUTE,
    RTMGRP_LINK,
    RTMGRP_NEIGH,
)
from pyroute2.netlink.rtnl.marshal import MarshalRtnl

log = logging.getLogger(__name__)

GROUPS = RTMGRP_LINK | RTMGRP_NEIGH | RTMGRP_IPV4_ROUTE | RTMGRP_IPV4_IFADDR
RECV_BUFFER = 1 << 16
SOCKET_BUFFER = 1 << 22  # room for a burst (e.g. a flush of thousands of FDB entries)


def change_reason(msg: Any, device_name: str, ifindex: int | None) -> str | None:
    """Why ``msg`` concerns our device, or None if it concerns another one.

    Links match by name (the ifindex changes when the device is recreated) or by ifindex (a
    rename); neighbours — FDB entries included, as AF_BRIDGE neighbours — routes and addresses
    match by the device's current ifindex.
    """
    event = msg.get("event", "")
    if event in ("RTM_NEWLINK", "RTM_DELLINK"):
        name = msg.get("IFLA_IFNAME")
        if name == device_name or (ifindex is not None and msg.get("index") == ifindex):
            return f"{event} {name}"
        return None
    if ifindex is None:
        return None
    if event in ("RTM_NEWNEIGH", "RTM_DELNEIGH") and msg.get("ifindex") == ifindex:
        kind = "fdb" if msg.get("family") == socket.AF_BRIDGE else "neigh"
        return f"{event} {kind} {msg.get('NDA_DST')} {msg.get('NDA_LLADDR')} on {device_name}"
    if event in ("RTM_NEWROUTE", "RTM_DELROUTE") and msg.get("RTA_OIF") == ifindex:
        return f"{event} {msg.get('RTA_DST')}/{msg.get('dst_len')} on {device_name}"
    if event in ("RTM_NEWADDR", "RTM_DELADDR") and msg.get("index") == ifindex:
        return f"{event} {msg.get('IFA_ADDRESS')} on {device_name}"
    return None


class NetlinkMonitor:
    """Calls ``on_change(reason)`` from its own thread for each message about our device.

    ``current_ifindex`` is asked for every message, so the monitor follows the device across
    re-creation without being told. The socket is opened in ``start()``, in the caller's network
    namespace, so no change made after ``start()`` returns is missed.
    """

    def __init__(
        self,
        device_name: str,
        current_ifindex: Callable[[], int | None],
        on_change: Callable[[str], None],
    ) -> None:
        self._device_name = device_name
        self._current_ifindex = current_ifindex
        self._on_change = on_change
        self._marshal = MarshalRtnl()
        self._sock: socket.socket | None = None
        self._wake_r, self._wake_w = -1, -1
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
        sock.bind((0, GROUPS))
        sock.setblocking(False)
        self._sock = sock
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(
            target=self._run, name=f"netmon-{self._device_name}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Wake the thread, wait for it, and close the socket; returns at once."""
        if self._thread is None or self._sock is None:
            return
        os.write(self._wake_w, b"x")
        self._thread.join(timeout=5)
        self._sock.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
        self._thread = None
        self._sock = None

    def _run(self) -> None:
        assert self._sock is not None
        while True:
            ready, _, _ = select.select([self._sock, self._wake_r], [], [])
            if self._wake_r in ready:
                return
            try:
                self._drain(self._sock)
            except OSError:
                log.exception("netlink monitor for %s stopped; only timed resyncs remain",
                              self._device_name)
                return

    def _drain(self, sock: socket.socket) -> None:
        """Read every queued datagram and signal the ones about our device."""
        while True:
            try:
                data = sock.recv(RECV_BUFFER)
            except BlockingIOError:
                return
            except OSError as err:
                if err.errno != errno.ENOBUFS:
                    raise
                log.warning("netlink monitor overflowed; messages lost, asking for a resync")
                self._signal("netlink overflow")
                continue
            ifindex = self._current_ifindex()
            for msg in self._marshal.parse(data):
                reason = change_reason(msg, self._device_name, ifindex)
                if reason is not None:
                    self._signal(reason)

    def _signal(self, reason: str) -> None:
        try:
            self._on_change(reason)
        except Exception:
            # The callback only enqueues; if it fails, losing the monitor would be worse.
            log.exception("netlink monitor callback failed for %s", reason)
