"""Which leases a VXLAN host programs, and which of them it reaches without VXLAN."""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Network, IPv6Network

from overlayd.backend.segments import on_segments
from overlayd.backend.vxlan.config import TYPE
from overlayd.subnet.lease import Lease, is_ipv6_only, lease_vni


def reached_directly(
    segments: tuple[IPv4Network, ...], ipv6_segments: tuple[IPv6Network, ...] | None = None
) -> Callable[[Lease], bool]:
    """DirectRouting's test: a peer whose PublicIP is on one of this host's underlay segments
    (``segments``, the external interface's connected prefixes) needs no VXLAN to reach it.
    flanneld asks the routing table whether the route to the PublicIP has no gateway; on the
    external interface, that is this test. In a dual-stack network (``ipv6_segments`` given) a
    peer with an IPv6 half is reached directly only if its PublicIPv6 is on one of them too."""
    return on_segments(segments, ipv6_segments)


def is_vxlan_peer(
    lease: Lease, own_subnet: IPv4Network | None, vni: int, own_ip: IPv4Address | None = None
) -> bool:
    """A lease we program: another host's, of the vxlan backend, on our VNI (as leases carry it).

    One carrying our own PublicIP is this host's too, under another subnet: a dual-stack one
    flanneld left, say. Programmed, its route would replace the local bridge's to that subnet.
    An IPv6-only lease is judged by its IPv6 half (``is_vxlan_ipv6_only_peer``)."""
    return (
        lease.subnet != own_subnet
        and lease.attrs.public_ip != own_ip
        and lease.attrs.backend_type == TYPE
        and lease.attrs.vni is not None
        and lease_vni(lease.attrs.vni) == lease_vni(vni)
        and bool(lease.attrs.vtep_mac)
    )


def is_vxlan_ipv6_only_peer(lease: Lease, own: Lease, vni: int) -> bool:
    """``is_vxlan_peer`` in an IPv6-only network: another host's IPv6-only lease on our VNI,
    with the IPv6 device's MAC (its PublicIP is 0.0.0.0 on every host: the PublicIPv6 tells)."""
    return (
        is_ipv6_only(lease)
        and lease.ipv6_subnet != own.ipv6_subnet
        and lease.attrs.public_ipv6 != own.attrs.public_ipv6
        and lease.attrs.backend_type == TYPE
        and lease.attrs.vni is not None
        and lease_vni(lease.attrs.vni) == lease_vni(vni)
        and bool(lease.attrs.vtep_mac_v6)
    )
