"""The kernel side of the benchmark: namespaces, counting entries, the ``ip -batch`` floor, and a
netlink watcher that timestamps when each peer's route, neighbour and FDB entry appear."""

from __future__ import annotations

import collections
import contextlib
import ctypes
import errno
import os
import select
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Hashable, Iterable, Iterator
from pathlib import Path

from overlayd.bench.peers import Family, peer_ip, peer_mac, peer_mac6, peer_subnet, peer_subnet6

DEVICE = "flannel.1"
DEVICE6 = "flannel-v6.1"  # the IPv6 device: a dual-stack network's second, an IPv6-only one's only
CLONE_NEWNET = 0x40000000
RTMGRP_NEIGH = 0x4  # RTM_NEWNEIGH of both families: AF_INET neighbours and AF_BRIDGE FDB entries
RTMGRP_IPV4_ROUTE = 0x40
RTMGRP_IPV6_ROUTE = 0x400
AF_BRIDGE = 7
SO_RCVBUFFORCE = 33  # not in Python's socket module


def _setns(fd: int) -> None:
    """Move the calling thread into the network namespace ``fd`` (os.setns is 3.12+ only)."""
    if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def in_netns(name: str) -> Iterator[None]:
    """Run the block with this thread (and the processes it starts) inside ``ip netns`` ``name``.

    Processes started here skip ``ip netns exec``, whose own start-up would blur the timings.
    """
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        _setns(target)
        yield
    finally:
        _setns(home)
        os.close(home)
        os.close(target)


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=False)


def route_count(dev: str = DEVICE) -> int:
    return run("ip", "-4", "-o", "route", "show", "dev", dev).stdout.count("\n")


def counts(dev: str = DEVICE, family: str = "-4") -> tuple[int, int, int]:
    """(routes, permanent neighbours, FDB entries with a dst) on ``dev`` in this thread's netns
    (``family`` "-6": the IPv6 device's)."""
    neighs = run("ip", family, "neigh", "show", "dev", dev, "nud", "permanent").stdout.count("\n")
    fdbs = sum(" dst " in line for line in run("bridge", "fdb", "show", "dev", dev).stdout.splitlines())
    routes = run("ip", family, "-o", "route", "show", "dev", dev).stdout.splitlines()
    return sum(" via " in route for route in routes) if family == "-6" else len(routes), neighs, fdbs


def iproute_floor(indices: list[int], runs: int) -> list[float]:
    """Seconds for ``ip -batch`` + ``bridge -batch`` to build a vxlan device with the peers' entries.

    The same neighbour, FDB and route per peer as the agent writes, so the ratio to the agent's
    cold start is what our Python and etcd work cost on top of the kernel's.
    """
    dev, n = "bench0", len(indices)
    ip_lines = [
        f"link add {dev} type vxlan id 4242 dev eth0 local 192.0.2.11 dstport 4799 nolearning",
        f"link set {dev} up",
    ]
    ip_lines += [
        f"neigh replace {peer_subnet(i).network_address} lladdr {peer_mac(i)} dev {dev} nud permanent"
        for i in indices
    ]
    ip_lines += [
        f"route replace {peer_subnet(i)} via {peer_subnet(i).network_address} dev {dev} onlink"
        for i in indices
    ]
    fdb_lines = [f"fdb replace {peer_mac(i)} dev {dev} self dst {peer_ip(i)} permanent" for i in indices]
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        ip_file, fdb_file = Path(tmp, "ip.batch"), Path(tmp, "fdb.batch")
        ip_file.write_text("\n".join(ip_lines) + "\n")
        fdb_file.write_text("\n".join(fdb_lines) + "\n")
        try:
            for _ in range(runs):
                run("ip", "link", "del", dev)
                started = time.perf_counter()
                ip_done = run("ip", "-batch", str(ip_file))
                fdb_done = run("bridge", "-batch", str(fdb_file))
                times.append(time.perf_counter() - started)
                if ip_done.returncode or fdb_done.returncode:
                    raise RuntimeError(
                        f"ip/bridge -batch failed: {ip_done.stderr[:300]} {fdb_done.stderr[:300]}"
                    )
                if (got := counts(dev)) != (n, n, n):
                    raise RuntimeError(f"ip -batch floor programmed {got}, expected {n} of each")
        finally:
            run("ip", "link", "del", dev)
    return times


def peer_tokens(i: int, family: Family) -> tuple[int, ...]:
    """``EntryWatcher``'s tokens of peer ``i`` in a network of ``family``: ``i`` for its IPv4
    half's entries, ``-i`` for its IPv6 half's; the last one is the half the figures time."""
    return (i,) * family.has_ipv4 + (-i,) * family.has_ipv6


class EntryWatcher:
    """Timestamps (``perf_counter``) when all three entries of a watched peer have appeared.

    A netlink socket subscribed to route and neighbour notifications; create it inside the
    host's namespace (the socket stays bound to it). ``expect(i)`` before the peer's lease is
    written, ``done(i)`` or ``wait(i)`` afterwards, from one thread.

    The reader thread only receives and stamps, at real-time priority when allowed: on two
    shared cores a normal thread waited up to 2 ms at p99 for a core, behind the very agent it
    times, which measured the instrument rather than the agent. The datagrams are parsed later
    by the thread that asks, so the reader preempts the agent for a ``recv`` and no more.
    """

    def __init__(self, family: Family = Family.IPV4) -> None:
        """``family``: the network's, whose routes are watched (``expect(..., family)``)."""
        from pyroute2.netlink.rtnl.marshal import MarshalRtnl

        self._marshal = MarshalRtnl()
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        # Forced past rmem_max: a cold start at 5000 peers queues 15000 notifications at once.
        self._sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 1 << 25)
        routes = (RTMGRP_IPV4_ROUTE if family.has_ipv4 else 0) | (RTMGRP_IPV6_ROUTE if family.has_ipv6 else 0)
        self._sock.bind((0, routes | RTMGRP_NEIGH))
        self._by_key: dict[tuple[str, str], Hashable] = {}
        self._pending: dict[Hashable, set[tuple[str, str]]] = {}
        self._complete: dict[Hashable, float] = {}
        self._arrived: collections.deque[tuple[bytes, float]] = collections.deque()
        self._last_arrival = 0.0
        self._new_arrivals = threading.Event()
        self._stop = False
        self.realtime = False  # whether the reader got SCHED_FIFO (reported with the figures)
        self.overflowed = False  # the kernel dropped notifications: some entries were never seen
        started = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(started,), name="bench-netlink", daemon=True)
        self._thread.start()
        started.wait()

    def expect(self, indices: Iterable[int], family: Family = Family.IPV4) -> None:
        """Wait for peer ``i``'s entries in a network of ``family`` to appear: its IPv4 half's
        three (token ``i``) and its IPv6 half's three (token ``-i``), as it has them."""
        for i in indices:
            net, gateway = peer_subnet(i), str(peer_subnet(i).network_address)
            if family.has_ipv4:
                self.expect_changes(i, [("route", f"{gateway}/{net.prefixlen}"), ("neigh", gateway),
                                        ("fdb", peer_mac(i))])  # fmt: skip
            if family.has_ipv6:
                net6 = peer_subnet6(i)
                self.expect_changes(-i, [("route", str(net6)), ("neigh", str(net6.network_address)),
                                         ("fdb", peer_mac6(i))])  # fmt: skip

    def expect_changes(self, token: Hashable, keys: Iterable[tuple[str, str]]) -> None:
        """Wait for every change in ``keys`` (``_change_keys``' form); ``done(token)`` then says when
        the last one arrived. A key expected again belongs to the newest token."""
        wanted = set(keys)
        for key in wanted:
            self._by_key[key] = token
        self._pending[token] = wanted
        self._complete.pop(token, None)

    def done(self, i: Hashable) -> float | None:
        self._parse_arrived()
        return self._complete.get(i)

    def quiet_for(self, seconds: float) -> bool:
        """Whether no datagram arrived in the last ``seconds``.

        Parsing runs in the asking thread and holds the GIL, which the reader needs after each
        ``recv`` to stamp the next datagram: parsing a cold start's thousands of notifications
        while they were still arriving delayed the last stamps by up to ~60 ms at 1000 peers.
        Asking only between bursts keeps the parse out of the stamps.
        """
        return time.perf_counter() - self._last_arrival >= seconds

    def last_done(self, indices: Iterable[Hashable]) -> float | None:
        """When the last of ``indices`` was complete; None while any is not."""
        self._parse_arrived()
        if self.overflowed:
            raise RuntimeError("netlink notifications were dropped (ENOBUFS): the figures would be wrong")
        times = [self._complete.get(i) for i in indices]
        return None if None in times else max(times)  # type: ignore[type-var]

    def wait(self, i: Hashable, timeout: float) -> float | None:
        """When peer ``i`` was complete, waiting up to ``timeout``; None if it was not."""
        deadline = time.perf_counter() + timeout
        while (complete := self.done(i)) is None:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return None
            self._new_arrivals.wait(remaining)
            self._new_arrivals.clear()  # a datagram appended after this is parsed by done() next
        return complete

    def close(self) -> None:
        self._stop = True
        self._thread.join(timeout=2)
        self._sock.close()

    def _read(self, started: threading.Event) -> None:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
            self.realtime = True
        except OSError:
            pass
        started.set()
        while not self._stop:
            ready, _, _ = select.select([self._sock], [], [], 0.2)
            if not ready:
                continue
            while True:  # every queued datagram, each stamped as it is read
                try:
                    data = self._sock.recv(1 << 16, socket.MSG_DONTWAIT)
                    self._last_arrival = time.perf_counter()
                    self._arrived.append((data, self._last_arrival))
                except BlockingIOError:
                    break
                except OSError as exc:
                    if exc.errno != errno.ENOBUFS:
                        raise
                    self.overflowed = True
            self._new_arrivals.set()

    def _parse_arrived(self) -> None:
        while self._arrived:
            data, arrived = self._arrived.popleft()
            for msg in self._marshal.parse(data):
                for key in _change_keys(msg):
                    token = self._by_key.get(key)
                    if token is None or token in self._complete:
                        continue
                    pending = self._pending[token]
                    pending.discard(key)
                    if not pending:
                        self._complete[token] = arrived


def _change_keys(msg: dict) -> list[tuple[str, str]]:
    """The changes one notification reports, as keys ``expect_changes`` takes.

    A new entry: ("route", "A.B.C.D/L"), ("neigh", "A.B.C.D") and ("neigh", "A.B.C.D mac"),
    ("fdb", "mac") and ("fdb", "mac dst"). A removed one: the same kinds with a ``-`` (``route-``,
    ``neigh-``, ``fdb-``), neighbours by address only (the kernel reports a deleted permanent
    neighbour without its MAC) and FDB entries by MAC only.
    """
    event = msg.get("event")
    if event in ("RTM_NEWROUTE", "RTM_DELROUTE") and msg.get("RTA_DST"):
        kind = "route" if event == "RTM_NEWROUTE" else "route-"
        return [(kind, f"{msg.get('RTA_DST')}/{msg.get('dst_len')}")]
    dst, mac = msg.get("NDA_DST"), msg.get("NDA_LLADDR")
    if event == "RTM_NEWNEIGH" and dst:
        kind = "fdb" if msg.get("family") == AF_BRIDGE else "neigh"
        if kind == "fdb":
            return [("fdb", mac), ("fdb", f"{mac} {dst}")]
        return [("neigh", dst)] + ([("neigh", f"{dst} {mac}")] if mac else [])
    if event == "RTM_DELNEIGH":
        if msg.get("family") == AF_BRIDGE:
            return [("fdb-", mac)] if dst and mac else []
        return [("neigh-", dst)] if dst else []
    return []
