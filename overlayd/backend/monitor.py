"""Netlink monitor: tells the reconciler when something changed on our VXLAN device.

It only *signals*; the reconciler re-reads the kernel and repairs (level-triggered), so a lost or
coalesced message is harmless — a socket overflow is itself reported as a change. Our own writes
come back as messages too: each neighbour or route message carries the entry it describes, and
``is_echo`` (the agent's view of what it wants) drops a new entry it wants or the removal of one
it does not, so only changes someone else made cost a full pass.

The socket is a plain ``AF_NETLINK`` socket decoded with ``rtnl.codec`` (the few fields needed, with
``struct``) rather than pyroute2: its synchronous ``IPRoute`` reads through an asyncio loop that can
hold received messages in its own queue, so ``select`` on its descriptor misses them, and its
marshal decodes every attribute in Python, which at thousands of echoes competed with the
reconciler for the GIL. A self-pipe wakes the thread for a prompt ``stop()``.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address

from overlayd.backend.api import DriftProbe
from overlayd.backend.desired import DesiredEntries, DirectRoute, Route
from overlayd.backend.rtnl.codec import (
    MESSAGE_NAMES,
    NEW_MESSAGES,
    RTM_DELLINK,
    RTM_DELNEIGH,
    RTM_DELROUTE,
    RTM_NEWLINK,
    RTM_NEWNEIGH,
    RTM_NEWROUTE,
    Entry,
    Message,
    address_of,
    decode_entry,
    device_of,
    neigh_address,
    neigh_summary,
)
from overlayd.base.netlink import split_messages

log = logging.getLogger(__name__)

# <linux/rtnetlink.h> multicast groups: links, neighbours, IPv4 routes, IPv4 addresses
RTMGRP_LINK, RTMGRP_NEIGH, RTMGRP_IPV4_IFADDR, RTMGRP_IPV4_ROUTE = 0x1, 0x4, 0x10, 0x40
GROUPS = RTMGRP_LINK | RTMGRP_NEIGH | RTMGRP_IPV4_ROUTE | RTMGRP_IPV4_IFADDR
RECV_BUFFER = 1 << 16
SOCKET_BUFFER = 1 << 22  # room for a burst (e.g. a flush of thousands of FDB entries)


@dataclass(frozen=True)
class DeviceChange:
    """A message about our device: why it matters and, for peer entries, which one."""

    reason: str
    entry: Entry | None = None  # the neighbour, FDB entry or route a message describes
    added: bool = False  # a NEW message (a deletion, a link or an address change otherwise)
    # For a neighbour message that describes no entry of ours (a deleted permanent neighbour is
    # reported as failed, without its MAC): the address it concerns.
    neigh_ip: IPv4Address | None = None


def is_echo(desired: DesiredEntries, change: DeviceChange) -> bool:
    """Whether ``change`` is what writing ``desired`` causes: a wanted entry added, an unwanted
    one removed, or a neighbour reported without its MAC (removed, or no longer permanent) at an
    address where none is wanted. Anything else — a wanted entry deleted, an unexpected one
    added, link and address changes — is someone else's doing."""
    entry = change.entry
    if entry is None:
        return change.neigh_ip is not None and not desired.wants_neigh_at(change.neigh_ip)
    wanted = desired.wants(entry)
    if type(entry) is Route and not wanted:  # on an underlay we watch (host-gw's), a direct route
        wanted = desired.wants(DirectRoute(entry.dst, entry.gateway))
    return wanted == change.added


def change_reason(message: Message, device_name: str, ifindex: int | None) -> DeviceChange | None:
    """What ``message`` changed on our device, or None if it concerns another one.

    Links match by name (the ifindex changes when the device is recreated) or by ifindex (a
    rename); neighbours — FDB entries included, as AF_BRIDGE neighbours — routes and addresses
    match by the device's current ifindex.
    """
    event = MESSAGE_NAMES.get(message.type)
    if event is None:
        return None
    index, name = device_of(message)
    if message.type in (RTM_NEWLINK, RTM_DELLINK):
        if name == device_name or (ifindex is not None and index == ifindex):
            return DeviceChange(f"{event} {name}")
        return None
    if ifindex is None or index != ifindex:
        return None
    added = message.type in NEW_MESSAGES
    if message.type in (RTM_NEWNEIGH, RTM_DELNEIGH):
        # A deleted neighbour is reported as failed, often without its MAC: no entry, a resync.
        reason = f"{event} {neigh_summary(message)} on {device_name}"
        entry = decode_entry(message, ifindex)
        return DeviceChange(reason, entry, added, neigh_address(message) if entry is None else None)
    if message.type in (RTM_NEWROUTE, RTM_DELROUTE):
        entry = decode_entry(message, ifindex)
        detail = f"{entry.dst}" if isinstance(entry, Route) else "route"
        return DeviceChange(f"{event} {detail} on {device_name}", entry, added)
    return DeviceChange(f"{event} {address_of(message)} on {device_name}")


class NetlinkMonitor:
    """Calls ``on_change(change)`` from its own thread for each message about our device.

    ``current_ifindex`` is asked for every message, so the monitor follows the device across
    re-creation without being told; ``is_echo`` is asked, from this thread, for each change and
    drops the ones our own writes caused. The socket is opened in ``start()``, in the caller's network
    namespace, so no change made after ``start()`` returns is missed.
    """

    def __init__(
        self,
        device_name: str,
        current_ifindex: Callable[[], int | None],
        on_change: Callable[[DeviceChange], None],
        is_echo: Callable[[DeviceChange], bool] = lambda change: False,
        writing: threading.Lock | None = None,
        probe: DriftProbe | None = None,
    ) -> None:
        """``writing``, if given, is held by the writer while it sends a batch: the monitor
        waits for it to be free before reading (see ``_run``)."""
        self._device_name = device_name
        self._writing = writing
        self._current_ifindex = current_ifindex
        self._on_change = on_change
        self._is_echo = is_echo
        self._probe = probe  # run when no message came for its interval
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

    @property
    def alive(self) -> bool:
        """Whether changes are being watched: started, and not stopped by a socket error."""
        return self._thread is not None and self._thread.is_alive()

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
        next_probe = time.monotonic()
        while True:
            timeout = None
            if self._probe is not None:
                timeout = max(0.0, next_probe - time.monotonic())
            ready, _, _ = select.select([self._sock, self._wake_r], [], [], timeout)
            if self._wake_r in ready:
                return
            if self._probe is not None and time.monotonic() >= next_probe:
                next_probe = time.monotonic() + self._probe[0]
                if (reason := self._probe[1]()) is not None:
                    self._signal(DeviceChange(reason))
                if not ready:
                    continue
            # Our own writes come back as a burst of echoes while the writer is still sending
            # and reading acknowledgements. Parsing them then would take the GIL from the writer
            # again and again (at 3000 entries, most of a cold start's apply was the writer
            # waiting for the GIL): wait until the writer is done, then read the burst in one go.
            if self._writing is not None:
                with self._writing:
                    pass
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
                self._signal(DeviceChange("netlink overflow"))
                continue
            ifindex = self._current_ifindex()
            for message in split_messages(data):
                change = change_reason(message, self._device_name, ifindex)
                if change is not None and not self._is_echo(change):
                    self._signal(change)

    def _signal(self, change: DeviceChange) -> None:
        try:
            self._on_change(change)
        except Exception:
            # The callback only enqueues; if it fails, losing the monitor would be worse.
            log.exception("netlink monitor callback failed for %s", change.reason)
