"""The two address families of the overlay's nftables rules: one table each, the same rules.

A dual-stack network gets a ``table ip6`` beside the ``table ip``, rendered by the same code
(``rules.render_table``) from the IPv6 half of the ``FirewallSpec``: this module names what
differs between the families and projects a spec onto one of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network


@dataclass(frozen=True)
class NftFamily:
    """What a rule says differently per family: the table family and match keyword (``ip`` or
    ``ip6``), the type of an address set, and the multicast range never masqueraded."""

    name: str
    set_type: str
    multicast: IPv4Network | IPv6Network
    version: int


IP = NftFamily("ip", "ipv4_addr", IPv4Network("224.0.0.0/4"), 4)
IP6 = NftFamily("ip6", "ipv6_addr", IPv6Network("ff00::/8"), 6)


def of_family(
    sources: frozenset[IPv4Address | IPv6Address] | None, family: NftFamily
) -> frozenset[IPv4Address | IPv6Address] | None:
    """The addresses of ``family`` among ``sources`` (None stays None: not known yet)."""
    if sources is None:
        return None
    if all(ip.version == family.version for ip in sources):
        return sources
    return frozenset(ip for ip in sources if ip.version == family.version)
