"""Which leases a host-gw host routes to, and the peers it cannot reach that way, named once."""

from __future__ import annotations

import logging
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from overlayd.backend.hostgw.config import TYPE
from overlayd.backend.segments import on_segments
from overlayd.subnet.lease import Lease

log = logging.getLogger(__name__)
Network = IPv4Network | IPv6Network
Address = IPv4Address | IPv6Address


def is_host_gw_peer(lease: Lease, own_subnet: Network | None, own_ip: Address | None) -> bool:
    """Another host's host-gw lease; leases of other backends are not routed, as in flanneld.
    An IPv6-only lease is another host's by its IPv6 subnet and PublicIPv6 (``Lease.own_subnet``)."""
    return (
        lease.own_subnet != own_subnet and lease.public_address != own_ip and lease.attrs.backend_type == TYPE
    )


def on_segment(
    segments: tuple[IPv4Network, ...], ipv6_segments: tuple[IPv6Network, ...] | None = None
) -> Callable[[Lease], bool]:
    """Whether a peer's PublicIP is on one of this host's underlay segments: a route via it needs
    no router in between, the one thing host-gw requires. In a dual-stack network
    (``ipv6_segments`` given) its PublicIPv6 must be on one of those too, when it has an IPv6 half."""
    return on_segments(segments, ipv6_segments)


def off_segment_message(lease: Lease, segments: tuple[Network, ...], ifname: str) -> str:
    """The warning for a peer host-gw cannot route to: who it is, why, and the fix."""
    here = ", ".join(str(segment) for segment in segments) or "no prefix of that family"
    what = "PublicIPv6" if lease.public_address.version == 6 else "PublicIP"
    return (
        f"host-gw: peer {lease.own_subnet} (key {lease.key}) has {what} {lease.public_address}, which is "
        f"not on this host's L2 segment ({here} on {ifname}): a route via it would need a router in "
        "between, so none is installed and its pods are unreachable from here. Put the hosts on one "
        'segment, or use Backend {"Type": "vxlan"}, with "DirectRouting": true to keep direct routes '
        "where the segment is shared"
    )


class OffSegmentLog:
    """Logs each off-segment peer once per PublicIP (an IPv6-only peer's PublicIPv6), whatever asks
    about it again."""

    def __init__(self) -> None:
        self._named: dict[Network, Address] = {}

    def name(self, lease: Lease, segments: tuple[Network, ...], ifname: str) -> None:
        subnet, address = lease.own_subnet, lease.public_address
        if self._named.get(subnet) != address:
            self._named[subnet] = address
            log.warning("%s", off_segment_message(lease, segments, ifname))
