"""Peer leases that must not be programmed, and reporting them once.

The codec (``lease.decode_lease``) rejects values that are not flannel's JSON. A lease can decode
fine and still be wrong under the current network config: a subnet outside the Network, or one
overlapping our own subnet (another host writing our key, or a wider key covering ours). Such a
lease is skipped — never programmed — while every other peer is unaffected. Each bad lease is
logged once per key and revision (not on every reconcile pass) and counted by reason.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Network

from overlayd.config import NetworkConfig
from overlayd.lease import Lease

log = logging.getLogger(__name__)

MAX_REMEMBERED = 10_000  # (key, revision) pairs kept to suppress repeated log lines


@dataclass(frozen=True)
class LeaseProblem:
    """Why a lease is skipped: a metric label and a sentence for the operator."""

    reason: str  # outside_network or own_subnet
    message: str


def _same_block(a: IPv4Network, b: IPv4Network, prefixlen: int) -> bool:
    """Whether ``a`` and ``b`` lie in one ``/prefixlen`` block. On plain ints: at start-up every
    lease is checked, and ``subnet_of`` plus ``overlaps`` took ~4 us of ``ipaddress`` code each."""
    shift = 32 - prefixlen
    return int(a.network_address) >> shift == int(b.network_address) >> shift


def lease_problem(lease: Lease, config: NetworkConfig, own: Lease | None) -> LeaseProblem | None:
    """What makes ``lease`` unsafe to program under ``config`` while we hold ``own``; None if fine."""
    subnet, network = lease.subnet, config.network
    if subnet.prefixlen < network.prefixlen or not _same_block(subnet, network, network.prefixlen):
        return LeaseProblem(
            "outside_network", f"subnet {lease.subnet} is outside Network {config.network}"
        )
    # Two prefixes overlap exactly when the longer one lies in the shorter one's block.
    if own is not None and _same_block(subnet, own.subnet, min(subnet.prefixlen, own.subnet.prefixlen)):
        if lease.key != own.key:
            return LeaseProblem("own_subnet", f"subnet {lease.subnet} overlaps our subnet {own.subnet}")
        if lease.attrs.public_ip != own.attrs.public_ip:
            return LeaseProblem(
                "own_subnet", f"PublicIP {lease.attrs.public_ip} claims our subnet {own.subnet}"
            )
    return None


class BadLeaseLog:
    """Logs each bad lease once per key and revision and counts it; safe from any thread."""

    def __init__(self, count: Callable[[str], None]) -> None:
        self._count = count
        self._seen: set[tuple[str, int]] = set()
        self._lock = threading.Lock()

    def report(self, key: str, revision: int, reason: str, message: str) -> None:
        """Record that the lease at ``key`` (at ``revision``) is skipped for ``reason``."""
        with self._lock:
            if (key, revision) in self._seen:
                return
            if len(self._seen) >= MAX_REMEMBERED:
                self._seen.clear()
            self._seen.add((key, revision))
        log.warning("skipping peer lease %s (revision %d, %s): %s", key, revision, reason, message)
        self._count(reason)
