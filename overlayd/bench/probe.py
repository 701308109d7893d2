"""The data path probes' cost: the agent's probe thread pinging N peers, measured in CPU time.

The peers are N overlay addresses on the loopback of a namespace of their own, so the kernel
answers every echo as a peer host would; for the same N peers dual-stack, N IPv6 ones on the
loopback of a second namespace behind a veth (on the prober's own loopback, each probe's IPv6
source address selection would weigh all N addresses, ~45 us a probe at 1000, where a real host
holds a handful). The probe thread is the agent's (``agent.prober``) with its default budget. Its
CPU time comes from ``/proc/self/task/<tid>/schedstat``; the same thread idle (no peers: its 50 ms
tick alone) is the baseline of the same run.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from overlayd.agent.metrics import Metrics
from overlayd.agent.prober import Prober, ProbeTargets
from overlayd.agent.reach import ProbeBudget
from overlayd.bench.kernel import in_netns
from overlayd.bench.stats import Row
from overlayd.lab.namespaces import random_lab_name, sh

GOAL = 0.2  # % of a core at 1000 peers
FIRST_PEER = IPv4Address("198.18.0.0")
FIRST_PEER_V6 = IPv6Address("2001:db8:1000::")
# The veth between the prober's namespace and the IPv6 peers': (prober's side, peers' side).
LINK_V6 = (IPv6Address("2001:db8:ffff::1"), IPv6Address("2001:db8:ffff::2"))


@dataclass(frozen=True)
class ProbeCost:
    peers: int
    seconds: float
    busy: float  # % of a core, with the peers
    idle: float  # % of a core, the same thread with none
    sent: float
    answered: float
    rate: float
    dual_busy: float  # % of a core, the same peers dual-stack (two addresses each, one budget)
    dual_sent: float
    dual_answered: float


def _thread_cpu(tid: int) -> float:
    """Seconds thread ``tid`` of this process has run on a CPU.

    From ``schedstat`` (the scheduler's nanoseconds), not ``stat``'s utime and stime: those are
    sampled at the clock tick, too coarse for a thread that runs for microseconds at a time."""
    with open(f"/proc/self/task/{tid}/schedstat") as stat:
        return int(stat.read().split()[0]) / 1e9


def _measure(
    netns: str, targets: dict[str, tuple[IPv4Address | IPv6Address, ...]], seconds: float, budget: ProbeBudget
) -> tuple[float, Metrics]:
    metrics = Metrics()
    with in_netns(netns):  # the raw socket belongs to the namespace it is made in
        prober = Prober(metrics, budget)
        prober.start()
    try:
        prober.feed(ProbeTargets("bench", targets, frozenset(targets), "-"))
        time.sleep(min(2.0, seconds / 4))  # past the start, where new peers are spread out
        start_cpu, start = _thread_cpu(prober.tid), time.monotonic()
        time.sleep(seconds)
        used = _thread_cpu(prober.tid) - start_cpu
        return used / (time.monotonic() - start) * 100, metrics
    finally:
        prober.stop()


def probe_cost(peers: int = 1000, seconds: float = 30.0, rate: float = ProbeBudget.rate) -> ProbeCost:
    """The probe thread's CPU at ``peers`` peers against itself idle, ``seconds`` each."""
    netns = f"{random_lab_name()}-probe"
    netns6 = f"{netns}6"
    sh("ip", "netns", "add", netns)
    sh("ip", "netns", "add", netns6)
    try:
        addresses = [FIRST_PEER + index for index in range(peers)]
        addresses6 = [FIRST_PEER_V6 + (index << 64) for index in range(peers)]
        near, far = LINK_V6
        _batch(netns, [
            "link set lo up", *(f"addr add {address}/32 dev lo" for address in addresses),
            f"link add p6 type veth peer name p6 netns {netns6}", "link set p6 up",
            f"addr add {near}/64 dev p6 nodad", f"route add {FIRST_PEER_V6}/48 via {far}",
        ])
        _batch(netns6, [
            "link set lo up", "link set p6 up", f"addr add {far}/64 dev p6 nodad",
            *(f"addr add {address}/128 dev lo nodad" for address in addresses6),
        ])  # fmt: skip
        budget = ProbeBudget(rate=rate)
        idle, _ = _measure(netns, {}, seconds, budget)
        targets = {f"{address}-32": (address,) for address in addresses}
        busy, metrics = _measure(netns, targets, seconds, budget)
        dual = {f"{a}-32&{b}-64": (a, b) for a, b in zip(addresses, addresses6, strict=True)}
        dual_busy, dual_metrics = _measure(netns, dual, seconds, budget)
    finally:
        sh("ip", "netns", "delete", netns, check=False)
        sh("ip", "netns", "delete", netns6, check=False)
    return ProbeCost(peers, seconds, busy, idle, *_counts(metrics), rate, dual_busy, *_counts(dual_metrics))


def _batch(netns: str, commands: list[str]) -> None:
    script = "\n".join(commands) + "\n"
    subprocess.run(["ip", "-n", netns, "-batch", "-"], input=script, text=True, check=True)


def _counts(metrics: Metrics) -> tuple[float, float]:
    """Probes sent and answered."""
    return metrics.probes_sent._value.get(), metrics.probes_answered._value.get()


def probe_rows(cost: ProbeCost) -> list[Row]:
    ratio = f"{cost.busy / cost.idle:.1f}x" if cost.idle > 0 else "-"
    return [
        Row(f"probe thread CPU, {cost.peers} peers at {cost.rate:g}/s ({cost.seconds:g} s)",
            f"{cost.busy:.3f} % of a core", f"{cost.idle:.3f} % (no peers)", ratio, f"< {GOAL} %"),
        Row("probes answered / sent", f"{cost.answered:.0f} / {cost.sent:.0f}", "-", "-", "all answered"),
        Row(f"probe thread CPU, the same peers dual-stack (ICMP and ICMPv6, {cost.seconds:g} s)",
            f"{cost.dual_busy:.3f} % of a core", f"{cost.busy:.3f} % (IPv4 only)",
            f"{cost.dual_busy / cost.busy:.1f}x" if cost.busy > 0 else "-", f"< {GOAL} %"),
        Row("dual-stack probes answered / sent", f"{cost.dual_answered:.0f} / {cost.dual_sent:.0f}", "-", "-",
            "all answered"),
    ]  # fmt: skip
