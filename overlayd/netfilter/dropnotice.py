"""Which sources the VXLAN ingress allowlist dropped are worth a warning, and when.

The allowlist accepts VXLAN only from the PublicIPs in peer leases. A node whose packets leave
from another address (a flanneld node given ``--public-ip`` of a second address, a NAT that
rewrites to another one) is then cut off in one direction, silently: flanneld has no such filter,
so nothing in a mixed cluster hints at it. The kernel records dropped sources (``firewall``); this
decides which of them to name, so that the log says it once per source and not on every pass, and
stays quiet about a peer's last packets after its lease went.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address

# Seconds a former peer's address stays excused: as long as the kernel keeps a dropped source.
FORMER_PEER_GRACE = 600.0
MAX_NAMED = 8  # addresses named in one warning; a spoofed flood would fill the log otherwise


@dataclass
class DropNotice:
    """What is new in the kernel's list of dropped sources, pass after pass."""

    told: set[IPv4Address] = field(default_factory=set)
    peers: frozenset[IPv4Address] = frozenset()
    former_peers: dict[IPv4Address, float] = field(default_factory=dict)  # address -> when it left

    def update(
        self, dropped: frozenset[IPv4Address], peers: frozenset[IPv4Address], now: float
    ) -> tuple[list[IPv4Address], int]:
        """The dropped sources to name now (sorted, at most ``MAX_NAMED``), and how many more
        wait for the next passes: not a peer, not a peer in the last ``FORMER_PEER_GRACE``
        seconds, and not told while the kernel kept listing it."""
        for address in self.peers - peers:
            self.former_peers[address] = now
        self.peers = peers
        self.former_peers = {
            address: left for address, left in self.former_peers.items()
            if now - left < FORMER_PEER_GRACE and address not in peers
        }  # fmt: skip
        self.told &= dropped  # one that aged out of the kernel's set is told again when it returns
        new = sorted(self.unexplained(dropped) - self.told)
        self.told.update(new[:MAX_NAMED])
        return new[:MAX_NAMED], len(new[MAX_NAMED:])

    def unexplained(self, dropped: frozenset[IPv4Address]) -> frozenset[IPv4Address]:
        """The dropped sources that neither are nor just were peers (as of the last update)."""
        return dropped - self.peers - self.former_peers.keys()


def warning(addresses: list[IPv4Address], more: int, port: int) -> str:
    """The log line for newly dropped sources: what happened, and the fix if one is a node."""
    named = ", ".join(map(str, addresses))
    more_text = f" (and {more} more, named on the next passes)" if more else ""
    return (
        f"VXLAN ingress allowlist dropped UDP port {port} packets from {named}{more_text}: no peer lease "
        "has that PublicIP. If one is a node of this network whose VXLAN leaves from another "
        "address than the PublicIP in its lease (flanneld's --public-ip set to a second address, "
        "or a NAT), its pods cannot reach this host's: give that node --public-ip of the address "
        "it sends from, or run this agent with --vxlan-ingress-allowlist=false"
    )
