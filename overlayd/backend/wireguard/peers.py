"""Which leases a WireGuard host programs, the entries each needs in every Mode, and which device
an entry lives on (pure).

In a dual-stack network flanneld's Mode decides the layout. ``separate`` (its default): the IPv4
half on ``flannel-wg``, each peer reached at its PublicIP; the IPv6 half on ``flannel-wg-v6``, each
peer reached at its PublicIPv6, its IPv6 subnet the allowed IPs. ``ipv4``, ``ipv6`` and ``auto``:
one device, ``flannel-wg``, one WireGuard peer per host allowed both subnets, reached at its
PublicIP, its PublicIPv6, or whichever ``auto_family`` picks.

In an IPv6-only network every PublicIP is 0.0.0.0 and the IPv6 half is all there is: each peer is
reached at its PublicIPv6 in every Mode (but ipv4, which the config refuses), on ``flannel-wg-v6``
alone in Mode separate, on ``flannel-wg`` in Modes ipv6 and auto.
"""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from overlayd.backend.plane import Entry, Ip, Plane, PlaneDiff, Route, WgPeer
from overlayd.backend.wireguard.config import TYPE, Mode
from overlayd.backend.wireguard.lease import public_key_of, public_key_v6_of
from overlayd.subnet.lease import Lease, is_ipv6_only

# What flannel calls private: RFC 1918 for IPv4, unique local (RFC 4193) for IPv6.
_PRIVATE_V4 = (IPv4Network("10.0.0.0/8"), IPv4Network("172.16.0.0/12"), IPv4Network("192.168.0.0/16"))
_UNIQUE_LOCAL = IPv6Network("fc00::/7")


def auto_family(public_ip: IPv4Address, public_ipv6: IPv6Address | None, own_ipv6: IPv6Address | None) -> int:
    """The family Mode auto reaches a peer over, as flanneld picks it: IPv4 when the peer has no
    PublicIPv6 or a PublicIP outside RFC 1918; else IPv6 when both its PublicIPv6 and our own
    IPv6 address (``own_ipv6``) are outside fc00::/7; else IPv4."""
    if public_ipv6 is None or not any(public_ip in net for net in _PRIVATE_V4):
        return 4
    if public_ipv6 not in _UNIQUE_LOCAL and own_ipv6 is not None and own_ipv6 not in _UNIQUE_LOCAL:
        return 6
    return 4


def ipv6_half(lease: Lease) -> tuple[IPv6Network, str] | None:
    """The IPv6 subnet and public key of the lease's IPv6 half; None without a whole one."""
    key = public_key_v6_of(lease.attrs)
    if lease.ipv6_subnet is None or key is None:
        return None
    return lease.ipv6_subnet, key


def wireguard_entries(
    lease: Lease, direct: bool = False, ipv6: bool = False, mode: Mode = Mode.SEPARATE,
    own_ipv6: IPv6Address | None = None,
) -> tuple[Entry, ...]:
    """A peer's WireGuard peer(s) and the routes to its subnet(s) via their network addresses;
    ``ipv6`` (a dual-stack network): its IPv6 half too, when it has one. ``direct`` is never
    true: no peer is reached outside the tunnel. ``own_ipv6``: ours, which Mode auto weighs."""
    attrs, subnet = lease.attrs, lease.subnet
    if is_ipv6_only(lease):
        return ipv6_only_entries(lease)
    half = ipv6_half(lease) if ipv6 else None
    if mode is Mode.SEPARATE:
        entries: tuple[Entry, ...] = (WgPeer(public_key_of(attrs) or "", attrs.public_ip, subnet),
                                      Route(subnet, subnet.network_address))
        if half is None or attrs.public_ipv6 is None:
            return entries
        subnet6, key6 = half
        return (*entries, WgPeer(key6, attrs.public_ipv6, subnet6), Route(subnet6, subnet6.network_address))
    chosen = {Mode.IPV4: 4, Mode.IPV6: 6}.get(mode)
    family = chosen or auto_family(attrs.public_ip, attrs.public_ipv6, own_ipv6)
    dst: Ip | None = attrs.public_ipv6 if family == 6 else attrs.public_ip
    if dst is None:  # Mode ipv6, a lease without a PublicIPv6: not a peer (``is_wireguard_peer``)
        return ()
    key = half[1] if half is not None else public_key_of(attrs) or ""
    entries = WgPeer(key, dst, subnet), Route(subnet, subnet.network_address)
    if half is None:
        return entries
    return (*entries, WgPeer(key, dst, half[0]), Route(half[0], half[0].network_address))


def ipv6_only_entries(lease: Lease) -> tuple[Entry, ...]:
    """An IPv6-only peer's WireGuard peer, reached at its PublicIPv6, allowed its IPv6 subnet, and
    the route to that subnet: the same entries in every Mode, on ``flannel-wg-v6`` in Mode
    separate, else on ``flannel-wg``. None without a whole IPv6 half."""
    half, public_ipv6 = ipv6_half(lease), lease.attrs.public_ipv6
    if half is None or public_ipv6 is None:
        return ()
    subnet6, key6 = half
    return WgPeer(key6, public_ipv6, subnet6), Route(subnet6, subnet6.network_address)


def is_wireguard_ipv6_only_peer(lease: Lease, own: Lease) -> bool:
    """``is_wireguard_peer`` in an IPv6-only network: another host's IPv6-only wireguard lease with
    a public key in its BackendV6Data (every PublicIP is 0.0.0.0: the PublicIPv6 tells hosts apart)."""
    return (
        is_ipv6_only(lease)
        and lease.ipv6_subnet != own.ipv6_subnet
        and lease.attrs.public_ipv6 is not None
        and lease.attrs.public_ipv6 != own.attrs.public_ipv6
        and lease.attrs.backend_type == TYPE
        and public_key_v6_of(lease.attrs) is not None
    )


def is_wireguard_peer(lease: Lease, own: Lease, mode: Mode) -> bool:
    """A lease we program: another host's, of the wireguard backend, with a public key; in Mode
    ipv6 only one with a PublicIPv6 to reach it at (flanneld fails on any other)."""
    return (
        lease.subnet != own.subnet
        and lease.attrs.public_ip != own.attrs.public_ip
        and lease.attrs.backend_type == TYPE
        and public_key_of(lease.attrs) is not None
        and (mode is not Mode.IPV6 or lease.attrs.public_ipv6 is not None)
    )


def on_ipv6_device(entry: Entry) -> bool:
    """Whether ``entry`` belongs on ``flannel-wg-v6`` (Mode separate): a peer reached over IPv6,
    a route to an IPv6 subnet."""
    if isinstance(entry, WgPeer):
        return entry.dst.version == 6
    return isinstance(entry, Route) and entry.dst.version == 6


def split_diff(diff: PlaneDiff, read: tuple[Plane, Plane]) -> tuple[PlaneDiff, PlaneDiff]:
    """``diff`` as (``flannel-wg``'s part, ``flannel-wg-v6``'s): an addition goes to its family's
    device (``on_ipv6_device``), a removal to the device it was last read from (``read``: the
    two devices' planes), else to its family's."""

    def removed_from_v6(entry: Entry) -> bool:
        if entry in read[1].peers or entry in read[1].routes:
            return True
        return entry not in read[0].peers and entry not in read[0].routes and on_ipv6_device(entry)

    add = _split(diff.add, on_ipv6_device)
    remove = _split(diff.remove, removed_from_v6)
    return PlaneDiff(add[0], remove[0]), PlaneDiff(add[1], remove[1])


def _split(plane: Plane, to_v6: Callable[[Entry], bool]) -> tuple[Plane, Plane]:
    peers6 = frozenset(peer for peer in plane.peers if to_v6(peer))
    routes6 = frozenset(route for route in plane.routes if to_v6(route))
    return (Plane(routes=plane.routes - routes6, peers=plane.peers - peers6),
            Plane(routes=routes6, peers=peers6))  # fmt: skip


def union(v4: Plane, v6: Plane) -> Plane:
    """What the two devices hold, as one Plane."""
    return Plane(routes=v4.routes | v6.routes, peers=v4.peers | v6.peers) if v6 else v4
