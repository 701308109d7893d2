"""Control-plane figures of a real agent in a lab host: cold start, event latency, churn, idle cost.

Callers run these with the thread inside the host's namespace (``kernel.in_netns``), where the
agent's device is and etcd's lab address is reachable.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from overlayd.bench.kernel import DEVICE, DEVICE6, EntryWatcher, counts, peer_tokens, run
from overlayd.bench.peers import Family, moved_ip, moved_mac, peer_ip, peer_kv, peer_subnet
from overlayd.lab.hosts import LabHost
from overlayd.lab.namespaces import Lab

# A cold start's notifications are parsed only after this long without one (EntryWatcher.quiet_for).
QUIET = 0.02


@dataclass(frozen=True)
class ColdStart:
    """Seconds from starting the agent process to subnet.env written, and to every entry present."""

    subnet_env: float
    programmed: float


def cold_start(
    lab: Lab, host: LabHost, peers: int, timeout: float, family: Family = Family.IPV4
) -> ColdStart:
    """Start the agent from nothing (device, subnet.env and state gone) and time it to converge.

    The agent's etcd lease is kept, as after a reboot. "Programmed" is when the last of the
    peers' entries appeared, stamped by the netlink watcher as its notification arrived; polling
    with ``ip`` instead spawned a dump every 10 ms beside the agent on two cores and stamped the
    end of the dump that saw the last entry (30-60 ms late on a slow machine). The counts are
    checked with ``ip`` afterwards, untimed. In a network of another ``family`` the peers'
    IPv6 entries on ``flannel-v6.1`` are waited for too (an IPv6-only one's are all there is).
    """
    lab.stop_agent(host)
    run("ip", "link", "del", DEVICE)
    if family.has_ipv6:
        run("ip", "link", "del", DEVICE6)
    host.subnet_file.unlink(missing_ok=True)
    shutil.rmtree(Path(host.dir) / "state", ignore_errors=True)
    indices = range(1, peers + 1)
    tokens = [token for i in indices for token in peer_tokens(i, family)]
    watcher = EntryWatcher(family)
    try:
        watcher.expect(indices, family)
        started = time.perf_counter()
        lab.start_agent(host)
        deadline = started + timeout
        env_at = programmed_at = None
        while programmed_at is None:
            now = time.perf_counter()
            if env_at is None and host.subnet_file.exists():
                env_at = now - started
            if env_at is not None and watcher.quiet_for(QUIET):
                programmed_at = watcher.last_done(tokens)
            if now > deadline:
                got = _counts(family)
                raise RuntimeError(f"cold start with {peers} peers: only {got} after {timeout:.0f}s")
            time.sleep(0.005)
    finally:
        watcher.close()
    expected = {DEVICE: (peers, peers, peers) if family.has_ipv4 else None,
                DEVICE6: (peers, peers, peers) if family.has_ipv6 else None}  # fmt: skip
    if (got := _counts(family)) != expected:
        raise RuntimeError(f"cold start with {peers} peers: (routes, neighbours, FDB) per device {got}, "
                           f"expected {expected}")  # fmt: skip
    return ColdStart(subnet_env=env_at, programmed=programmed_at - started)


def _counts(family: Family) -> dict[str, tuple[int, int, int] | None]:
    """(routes, neighbours, FDB entries) on each device, None for one the network must not have
    (it would carry a family the network has not)."""
    devices = (DEVICE, "-4", family.has_ipv4), (DEVICE6, "-6", family.has_ipv6)
    return {dev: counts(dev, flag) if wanted or _exists(dev) else None for dev, flag, wanted in devices}


def _exists(dev: str) -> bool:
    return run("ip", "link", "show", dev).returncode == 0


@dataclass(frozen=True)
class EventTimes:
    """Per event, seconds: the etcd put itself, and put returned → route, neighbour and FDB present."""

    put: list[float]
    reaction: list[float]
    sent_at: list[float]  # seconds after the first put, for latency over time
    missed: int
    realtime_observer: bool  # the netlink reader ran at SCHED_FIFO (EntryWatcher)


def event_latency(
    client: Any, indices: list[int], gap: float, timeout: float = 10.0, family: Family = Family.IPV4
) -> EventTimes:
    """Put new peer leases of ``family`` one at a time, each after the previous one is programmed,
    ``gap`` apart; timed to the IPv6 half's entries when they have one (a dual-stack lease's IPv4
    half is waited for too)."""
    watcher = EntryWatcher(family)
    watcher.expect(indices, family)
    put, reaction, sent_at, missed = [], [], [], 0
    first = time.perf_counter()
    try:
        for i in indices:
            key, value = peer_kv(i, family=family)
            before = time.perf_counter()
            client.put(key, value)
            returned = time.perf_counter()
            halves = [watcher.wait(token, timeout) for token in peer_tokens(i, family)]
            if None in halves:
                missed += 1
                continue
            put.append(returned - before)
            reaction.append(halves[-1] - returned)  # type: ignore[operator]
            sent_at.append(before - first)
            time.sleep(gap)
    finally:
        watcher.close()
    return EventTimes(put, reaction, sent_at, missed, watcher.realtime)


@dataclass(frozen=True)
class ChangeTimes:
    """Per lease change, seconds from the put or delete returned to the last of its entries changed.

    ``removals`` start at the end of the agent's hold-down (``hold_down`` seconds after the delete
    returned), when the agent is due to remove the entries; ``held`` is the whole wait, from the
    delete returned.
    """

    updates: list[float]  # a new MAC (neighbour and FDB entry), or a new PublicIP (FDB entry)
    removals: list[float]
    held: list[float]
    hold_down: float
    missed: int  # changes not seen in the kernel within the timeout


def lease_changes(
    client: Any, indices: list[int], gap: float, hold_down: float, timeout: float = 10.0
) -> ChangeTimes:
    """Update the programmed peers ``indices`` one at a time (a new MAC, then a new PublicIP), each
    after the previous one is in the kernel, ``gap`` apart; then delete them ``gap`` apart without
    waiting, since each removal waits out its own hold-down."""
    watcher = EntryWatcher()
    updates: list[float] = []
    deleted: dict[int, float] = {}
    missed = 0
    try:
        for i in indices:
            gateway, mac, ip = peer_subnet(i).network_address, moved_mac(i), moved_ip(i)
            new_mac = [("neigh", f"{gateway} {mac}"), ("fdb", f"{mac} {peer_ip(i)}")]
            steps = (
                (("mac", i), peer_kv(i, mac=mac), new_mac),
                (("ip", i), peer_kv(i, mac=mac, public_ip=ip), [("fdb", f"{mac} {ip}")]),
            )
            for token, (key, value), changes in steps:
                watcher.expect_changes(token, changes)
                client.put(key, value)
                returned = time.perf_counter()
                done = watcher.wait(token, timeout)
                if done is None:
                    missed += 1
                else:
                    updates.append(done - returned)
                time.sleep(gap)
        for i in indices:
            net = peer_subnet(i)
            gone = [("route-", str(net)), ("neigh-", str(net.network_address)), ("fdb-", moved_mac(i))]
            watcher.expect_changes(("del", i), gone)
            client.delete(peer_kv(i)[0])
            deleted[i] = time.perf_counter()
            time.sleep(gap)
        held = []
        for i, returned in deleted.items():
            done = watcher.wait(("del", i), max(0.0, returned + hold_down + timeout - time.perf_counter()))
            if done is None:
                missed += 1
            else:
                held.append(done - returned)
    finally:
        watcher.close()
    return ChangeTimes(updates, [t - hold_down for t in held], held, hold_down, missed)


@dataclass(frozen=True)
class ChurnTimes(EventTimes):
    """A paced run: what was offered and achieved, and the backlog when the last put returned."""

    offered_rate: float
    achieved_rate: float
    backlog_at_end: int  # events not yet programmed when the last put returned
    drain: float  # seconds from the last put returned until every event was programmed


def churn(client: Any, indices: list[int], rate: float, drain_timeout: float = 30.0) -> ChurnTimes:
    """Put new peer leases at ``rate`` per second without waiting for the agent, then let it catch up."""
    watcher = EntryWatcher()
    watcher.expect(indices)
    returned_at: dict[int, float] = {}
    put, sent_at = [], []
    try:
        first = time.perf_counter()
        for k, i in enumerate(indices):
            pause = first + k / rate - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            key, value = peer_kv(i)
            before = time.perf_counter()
            client.put(key, value)
            returned_at[i] = time.perf_counter()
            put.append(returned_at[i] - before)
            sent_at.append(before - first)
        last = time.perf_counter()
        backlog = sum(watcher.done(i) is None for i in indices)
        deadline = last + drain_timeout
        done = {i: watcher.wait(i, max(0.0, deadline - time.perf_counter())) for i in indices}
    finally:
        watcher.close()
    finished = [t for t in done.values() if t is not None]
    return ChurnTimes(
        put=put,
        reaction=[t - returned_at[i] for i, t in done.items() if t is not None],
        sent_at=[s for s, i in zip(sent_at, indices, strict=True) if done[i] is not None],
        missed=len(indices) - len(finished),
        realtime_observer=watcher.realtime,
        offered_rate=rate,
        achieved_rate=(len(sent_at) - 1) / sent_at[-1] if len(sent_at) > 1 and sent_at[-1] else float("nan"),
        backlog_at_end=backlog,
        drain=max(0.0, max(finished, default=last) - last),
    )


@dataclass(frozen=True)
class IdleCost:
    cpu_percent: float  # of one core, averaged over the window
    rss_mb: float
    seconds: float


def _cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` and of its children it waited for (the ``nft`` and ``iptables``
    of its passes) from /proc/<pid>/stat, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return sum(int(field) for field in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS in /proc/{pid}/status")


def idle_cost(pid: int, seconds: float) -> IdleCost:
    """CPU share and resident memory of the agent over ``seconds`` in which nothing changes."""
    cpu_before, wall_before = _cpu_seconds(pid), time.perf_counter()
    time.sleep(seconds)
    cpu, wall = _cpu_seconds(pid) - cpu_before, time.perf_counter() - wall_before
    return IdleCost(cpu_percent=100 * cpu / wall, rss_mb=_rss_mb(pid), seconds=wall)
