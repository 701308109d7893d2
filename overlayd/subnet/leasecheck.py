"""Peer leases that must not be programmed, and reporting them once.

The codec (``lease.decode_lease``) rejects values that are not flannel's JSON. A lease can decode
fine and still be wrong under the current network config and this host: a subnet outside the
Network, of another size than ``SubnetLen`` (a /25 inside a peer's /24 would take over its
gateway, a /32 one container), overlapping our own subnet, a VtepMAC the kernel refuses (or the
all-zero default destination), or a PublicIP no peer can have (loopback, broadcast, our own). Such
a lease is skipped — never programmed, never in the VXLAN allowlist — while every other peer is
unaffected. Rivalries between leases that are each fine alone (two claiming one subnet or one
VTEP MAC) are settled in ``desired``. Each bad lease is logged once per key and revision (not on
every reconcile pass) and counted by reason.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from overlayd.subnet.config import NetworkConfig
from overlayd.subnet.lease import Lease, is_ipv6_only, unicast_mac_problem

log = logging.getLogger(__name__)

MAX_REMEMBERED = 10_000  # (key, revision) pairs kept to suppress repeated log lines


@dataclass(frozen=True)
class LeaseProblem:
    """Why a lease is skipped: a metric label and a sentence for the operator."""

    # outside_network, own_subnet, subnet_size, bad_vtep_mac, bad_public_ip or own_public_ip;
    # and from ``desired``: subnet_taken, vtep_mac_taken
    reason: str
    message: str


LINK_LOCAL = IPv4Network("169.254.0.0/16")


@dataclass(frozen=True)
class Underlay:
    """This host's side of the underlay: the addresses that are ours (the PublicIP and the
    external interface's), and the external interface's connected segments."""

    own_ips: frozenset[IPv4Address | IPv6Address]  # IPv6 ones too, in a dual-stack network
    segments: tuple[IPv4Network, ...] = ()


def public_ip_problem(ip: IPv4Address, underlay: Underlay) -> str | None:
    """Why ``ip`` cannot be another host's PublicIP, or None. Each of these, allowed to send
    VXLAN, would let a local or spoofed sender into the overlay, and as an FDB destination sends
    the overlay's traffic to ourselves or to every host on the segment."""
    if ip.is_loopback or ip.is_unspecified or ip.is_multicast or ip == IPv4Address("255.255.255.255"):
        return "is a loopback, unspecified, multicast or broadcast address"
    for segment in underlay.segments:
        if segment.prefixlen < 31 and ip in (segment.broadcast_address, segment.network_address):
            return f"is the broadcast or network address of this host's segment {segment}"
    # A link-local underlay is possible only on a link-local segment of our own.
    if ip in LINK_LOCAL and not any(ip in segment for segment in underlay.segments):
        return "is link-local (169.254.0.0/16) and not on this host's segment"
    return None


def _same_block(a: IPv4Network | IPv6Network, b: IPv4Network | IPv6Network, prefixlen: int) -> bool:
    """Whether ``a`` and ``b`` (of one family) lie in one ``/prefixlen`` block. On plain ints: at
    start-up every lease is checked, and ``subnet_of`` plus ``overlaps`` took ~4 us of
    ``ipaddress`` code each."""
    shift = a.max_prefixlen - prefixlen
    return int(a.network_address) >> shift == int(b.network_address) >> shift


def lease_problem(
    lease: Lease, config: NetworkConfig, own: Lease | None, underlay: Underlay | None = None
) -> LeaseProblem | None:
    """What makes ``lease`` unsafe to program under ``config`` while we hold ``own`` on
    ``underlay`` (None: no PublicIP checks); None if fine."""
    if config.ipv4 is None:
        return ipv6_only_problem(lease, config, own, underlay)
    subnet, network = lease.subnet, config.network
    if is_ipv6_only(lease):
        return LeaseProblem(
            "outside_network",
            f"lease {lease.key} is an IPv6-only one (no IPv4 subnet) in a network with IPv4 Network "
            f"{config.network}; it is left from an IPv6-only config or written under another one: "
            "delete it, or let it expire",
        )
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
        return None  # our own lease
    # The length this host holds is accepted too: after a SubnetLen change the running nodes keep
    # their leases until they restart, and must keep reaching each other meanwhile.
    if subnet.prefixlen != config.subnet_len and (own is None or subnet.prefixlen != own.subnet.prefixlen):
        return LeaseProblem(
            "subnet_size",
            f"subnet {lease.subnet} is not a /{config.subnet_len} (SubnetLen of Network {config.network}); "
            "a smaller one would take over part of a peer's subnet, a larger one many",
        )
    mac = lease.attrs.vtep_mac
    if mac and (why := unicast_mac_problem(mac)):
        return LeaseProblem("bad_vtep_mac", f"VtepMAC {mac} is {why}; a VTEP needs a unicast, non-zero MAC")
    if underlay is not None and lease.attrs.public_ip in underlay.own_ips:
        return LeaseProblem(
            "own_public_ip",
            f"PublicIP {lease.attrs.public_ip} is this host's own address (a lease this host left "
            "under another subnet expires by itself; otherwise another host claims our address)",
        )
    if underlay is not None and (why := public_ip_problem(lease.attrs.public_ip, underlay)):
        return LeaseProblem("bad_public_ip", f"PublicIP {lease.attrs.public_ip} {why}")
    return ipv6_problem(lease, config, own, underlay)


def ipv6_only_problem(
    lease: Lease, config: NetworkConfig, own: Lease | None, underlay: Underlay | None = None
) -> LeaseProblem | None:
    """What makes ``lease`` unsafe in an IPv6-only ``config``: it must be an IPv6-only lease
    (flannel's ``0.0.0.0-0&...`` key) with a PublicIPv6, and pass the IPv6 half's checks."""
    if not is_ipv6_only(lease):
        return LeaseProblem(
            "outside_network",
            f"lease {lease.key} has IPv4 subnet {lease.subnet} in an IPv6-only network (EnableIPv4 "
            "false); it is left from an IPv4 or dual-stack config: delete it, or let it expire",
        )
    if lease.attrs.public_ipv6 is None:
        why = "no host of an IPv6-only network can reach it"
        return LeaseProblem("bad_public_ip", f"lease {lease.key} has no PublicIPv6: {why}")
    if own is not None and _same_key(lease, own) and lease.attrs.public_ipv6 != own.attrs.public_ipv6:
        return LeaseProblem(
            "own_subnet", f"PublicIPv6 {lease.attrs.public_ipv6} claims our IPv6 subnet {own.ipv6_subnet}"
        )
    return ipv6_problem(lease, config, own, underlay)


def ipv6_problem(
    lease: Lease, config: NetworkConfig, own: Lease | None, underlay: Underlay | None = None
) -> LeaseProblem | None:
    """What makes the IPv6 half of ``lease`` unsafe in a dual-stack ``config`` (the same checks
    as the IPv4 half's); None if fine, or if there is no IPv6 half to program."""
    pool, subnet = config.ipv6, lease.ipv6_subnet
    if pool is None or subnet is None:
        return None
    network = pool.network
    if subnet.prefixlen < network.prefixlen or not _same_block(subnet, network, network.prefixlen):
        return LeaseProblem("outside_network", f"IPv6 subnet {subnet} is outside IPv6Network {pool.network}")
    own6 = own.ipv6_subnet if own is not None else None
    # Two prefixes overlap exactly when the longer one lies in the shorter one's block.
    overlaps = own6 is not None and _same_block(subnet, own6, min(subnet.prefixlen, own6.prefixlen))
    if overlaps and not _same_key(lease, own):  # type: ignore[arg-type]
        return LeaseProblem("own_subnet", f"IPv6 subnet {subnet} overlaps our IPv6 subnet {own6}")
    if subnet.prefixlen != pool.subnet_len and (own6 is None or subnet.prefixlen != own6.prefixlen):
        return LeaseProblem(
            "subnet_size", f"IPv6 subnet {subnet} is not a /{pool.subnet_len} (IPv6SubnetLen of IPv6Network "
            f"{pool.network})",
        )  # fmt: skip
    mac = lease.attrs.vtep_mac_v6
    if mac and (why := unicast_mac_problem(mac)):
        return LeaseProblem("bad_vtep_mac", f"BackendV6Data VtepMAC {mac} is {why}")
    ip6 = lease.attrs.public_ipv6
    if ip6 is not None and (ip6.is_loopback or ip6.is_unspecified or ip6.is_multicast or ip6.is_link_local):
        return LeaseProblem("bad_public_ip", f"PublicIPv6 {ip6} is a loopback, unspecified, multicast or "
                            "link-local address")  # fmt: skip
    if ip6 is not None and underlay is not None and ip6 in underlay.own_ips and own is not None \
            and not _same_key(lease, own):  # fmt: skip
        return LeaseProblem("own_public_ip", f"PublicIPv6 {ip6} is this host's own address")
    return None


def _same_key(lease: Lease, other: Lease) -> bool:
    """``lease.key == other.key`` without formatting either: an IPv6 key took ~3 us to format,
    twice per check of an IPv6-only peer's event."""
    return lease.subnet == other.subnet and lease.ipv6_subnet == other.ipv6_subnet


def missing_ipv6(lease: Lease, config: NetworkConfig) -> str | None:
    """Why a peer lease in a dual-stack ``config`` has no IPv6 half to program (an IPv4-only
    one: a node not yet on the dual-stack config), or None."""
    if config.ipv6 is None or (lease.ipv6_subnet is not None and lease.attrs.public_ipv6 is not None):
        return None
    what = "IPv6 subnet" if lease.ipv6_subnet is None else "PublicIPv6"
    return (
        f"it has no {what} in a dual-stack network: only its IPv4 subnet is programmed, and "
        "dual-stack flanneld nodes crash choosing a subnet while it exists; restart that node's "
        "agent on the dual-stack config"
    )


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

    def report_partial(self, key: str, revision: int, reason: str, message: str) -> None:
        """Record that only part of the lease at ``key`` is programmed (its IPv4 half), once."""
        with self._lock:
            if (key, revision) in self._seen:
                return
            self._seen.add((key, revision))
        log.warning("programming only the IPv4 half of peer lease %s (revision %d, %s): %s",
                    key, revision, reason, message)  # fmt: skip
        self._count(reason)
