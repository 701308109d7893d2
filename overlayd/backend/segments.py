"""Whether a peer is on this host's underlay segments: the test of every backend that routes to
peers' public addresses without a router in between (host-gw, vxlan's DirectRouting)."""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import IPv4Network, IPv6Network

from overlayd.subnet.lease import Lease, is_ipv6_only


def on_segments(
    segments: tuple[IPv4Network, ...], ipv6_segments: tuple[IPv6Network, ...] | None = None
) -> Callable[[Lease], bool]:
    """A peer whose PublicIP is on one of ``segments`` (the external interface's connected
    prefixes); in a dual-stack network (``ipv6_segments`` given) whose PublicIPv6 is on one of
    those too, when it has an IPv6 half: each family's route goes to the peer's own address."""

    def reachable(lease: Lease) -> bool:
        if is_ipv6_only(lease):  # its PublicIP is 0.0.0.0: the IPv6 half is all there is
            ip6 = lease.attrs.public_ipv6
            return ipv6_segments is not None and ip6 is not None and any(ip6 in s for s in ipv6_segments)
        if not any(lease.attrs.public_ip in segment for segment in segments):
            return False
        ip6 = lease.attrs.public_ipv6
        if ipv6_segments is None or lease.ipv6_subnet is None or ip6 is None:
            return True
        return any(ip6 in segment for segment in ipv6_segments)

    return reachable
