"""TCP throughput across hosts: container to container over the overlay, and host to host on the
underlay, with iperf3 (unlimited rate), alternating so machine noise hits both alike; once per
backend, each in a lab of its own."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from overlayd.lab.traffic import TcpProbe


@dataclass(frozen=True)
class Throughput:
    containers: list[float]  # bits per second, container on h1 → container on h2
    hosts: list[float]  # bits per second, h1 → h2 underlay addresses


# The container / host ratio each kind of backend should reach: one that adds no header to a
# packet leaves containers the underlay's whole MTU, an encapsulating one costs its header.
PLAIN_GOAL, ENCAPSULATED_GOAL = "≥ 0.95", "≥ 0.85"
# Backends that forward in user space hold no ratio to the kernel's: udp's goal is half of what
# flanneld's C proxy moved in this lab (450 to 470 Mbit/s), wireguard-go's has none.
USER_SPACE_GOALS = {"udp": "≥ 0.23 Gbit/s"}


@dataclass(frozen=True)
class DataPath:
    """One backend's figures: its throughput, the MTU containers got and the underlay's."""

    backend: str
    tcp: Throughput
    mtu: str  # FLANNEL_MTU as the agent wrote it
    underlay_mtu: int
    device: str = ""  # how the agent made its device, in its log's words ("" if it did not say)

    @property
    def goal(self) -> str:
        if self.backend in USER_SPACE_GOALS:
            return USER_SPACE_GOALS[self.backend]
        if "wireguard-go" in self.device:
            return "- (user space)"
        plain = self.mtu.isdigit() and int(self.mtu) >= self.underlay_mtu
        return PLAIN_GOAL if plain else ENCAPSULATED_GOAL


# The agent's line on making its device: "flannel-wg: created flannel-wg by starting wireguard-go".
_CREATED = re.compile(r" overlayd\.backend\.[\w.]+: \S+: (created .*)$", re.MULTILINE)


def device_made(agent_log: str) -> str:
    """How the agent made its device, as its log says (the kernel's WireGuard or wireguard-go)."""
    match = _CREATED.search(agent_log)
    return match[1] if match else ""


def tcp_rate(client_ns: str, server_ns: str, server_ip: str, seconds: int, work: Path) -> float:
    """Bits per second received by an iperf3 server in ``server_ns`` from a client in ``client_ns``."""
    report = work / f"iperf-{client_ns}.json"
    stats = TcpProbe(client_ns, server_ns, server_ip, seconds, report, bitrate="0").start().wait()
    if stats.error or not stats.bytes_received:
        raise RuntimeError(f"iperf3 {client_ns} → {server_ip}: {stats.error or 'nothing received'}")
    return stats.bytes_received * 8 / seconds


def throughput(
    containers: tuple[str, str, str], hosts: tuple[str, str, str], seconds: int, rounds: int, work: Path
) -> Throughput:
    """``rounds`` alternating runs of each; the tuples are (client netns, server netns, server IP)."""
    over, under = [], []
    for _ in range(rounds):
        under.append(tcp_rate(*hosts, seconds, work))
        over.append(tcp_rate(*containers, seconds, work))
    return Throughput(containers=over, hosts=under)
