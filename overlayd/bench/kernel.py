"""The kernel side of the benchmark: namespaces, counting entries, the ``ip -batch`` floor, and a
netlink watcher that timestamps when each peer's route, neighbour and FDB entry appear."""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from overlayd.bench.peers import peer_ip, peer_mac, peer_subnet

DEVICE = "flannel.1"
CLONE_NEWNET = 0x40000000
RTMGRP_NEIGH = 0x4  # RTM_NEWNEIGH of both families: AF_INET neighbours and AF_BRIDGE FDB entries
RTMGRP_IPV4_ROUTE = 0x40
AF_BRIDGE = 7


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


def counts(dev: str = DEVICE) -> tuple[int, int, int]:
    """(routes, permanent neighbours, FDB entries with a dst) on ``dev`` in this thread's netns."""
    neighs = run("ip", "-4", "neigh", "show", "dev", dev, "nud", "permanent").stdout.count("\n")
    fdbs = sum(" dst " in line for line in run("bridge", "fdb", "show", "dev", dev).stdout.splitlines())
    return route_count(dev), neighs, fdbs


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


class EntryWatcher:
    """Timestamps (``perf_counter``) when all three entries of a watched peer have appeared.

    A netlink socket subscribed to route and neighbour notifications, read by a thread; create
    it inside the host's namespace (the socket stays bound to it). ``expect(i)`` before the
    peer's lease is written, ``done(i)`` afterwards.
    """

    def __init__(self) -> None:
        from pyroute2.netlink.rtnl.marshal import MarshalRtnl

        self._marshal = MarshalRtnl()
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 24)
        self._sock.bind((0, RTMGRP_IPV4_ROUTE | RTMGRP_NEIGH))
        self._by_key: dict[tuple[str, str], int] = {}
        self._seen: dict[int, set[str]] = {}
        self._complete: dict[int, float] = {}
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._read, name="bench-netlink", daemon=True)
        self._thread.start()

    def expect(self, indices: Iterable[int]) -> None:
        with self._cond:
            for i in indices:
                net = peer_subnet(i)
                self._by_key[("route", f"{net.network_address}/{net.prefixlen}")] = i
                self._by_key[("neigh", str(net.network_address))] = i
                self._by_key[("fdb", peer_mac(i))] = i
                self._seen[i] = set()

    def done(self, i: int) -> float | None:
        with self._cond:
            return self._complete.get(i)

    def wait(self, i: int, timeout: float) -> float | None:
        """When peer ``i`` was complete, waiting up to ``timeout``; None if it was not."""
        with self._cond:
            self._cond.wait_for(lambda: i in self._complete, timeout)
            return self._complete.get(i)

    def close(self) -> None:
        self._stop = True
        self._thread.join(timeout=2)
        self._sock.close()

    def _read(self) -> None:
        while not self._stop:
            ready, _, _ = select.select([self._sock], [], [], 0.2)
            if not ready:
                continue
            # Every queued datagram first, each stamped as it is read: parsing one with pyroute2's
            # marshal takes longer than the agent needs to write the next, and must not delay
            # that one's stamp (it is often the entry that completes the peer).
            received = []
            while True:
                try:
                    received.append((self._sock.recv(1 << 20, socket.MSG_DONTWAIT), time.perf_counter()))
                except BlockingIOError:
                    break
            for data, arrived in received:
                self._record(data, arrived)

    def _record(self, data: bytes, arrived: float) -> None:
        keys = [key for msg in self._marshal.parse(data) if (key := _entry_key(msg))]
        if not keys:
            return
        with self._cond:
            for key in keys:
                i = self._by_key.get(key)
                if i is None or i in self._complete:
                    continue
                self._seen[i].add(key[0])
                if len(self._seen[i]) == 3:
                    self._complete[i] = arrived
            self._cond.notify_all()


def _entry_key(msg: dict) -> tuple[str, str] | None:
    """("route", "A.B.C.D/L") / ("neigh", "A.B.C.D") / ("fdb", "mac") for a new entry, else None."""
    event = msg.get("event")
    if event == "RTM_NEWROUTE" and msg.get("RTA_DST"):
        return "route", f"{msg.get('RTA_DST')}/{msg.get('dst_len')}"
    if event == "RTM_NEWNEIGH":
        if msg.get("family") == AF_BRIDGE:
            return ("fdb", msg.get("NDA_LLADDR")) if msg.get("NDA_DST") else None
        if msg.get("NDA_DST"):
            return "neigh", msg.get("NDA_DST")
    return None
