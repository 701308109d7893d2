"""Desired kernel state for the VXLAN backend, computed from leases, and its diff against actual.

Pure functions only: the reconciler feeds them the peer leases and what netlink reports, and
applies the returned difference. Whole entries are compared (a neighbour is its IP *and* MAC), so
a peer whose VTEP MAC changed yields a removal of the stale entry and an addition of the new one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network

from overlayd.lease import Lease


@dataclass(frozen=True, order=True)
class Neigh:
    """Permanent ARP entry on the VXLAN device: peer's ``<subnet>.0`` → its VTEP MAC."""

    ip: IPv4Address
    mac: str


@dataclass(frozen=True, order=True)
class Fdb:
    """Permanent FDB entry on the VXLAN device: a VTEP MAC lives behind an underlay IP."""

    mac: str
    dst: IPv4Address


@dataclass(frozen=True, order=True)
class Route:
    """Route to a peer's subnet via its ``<subnet>.0`` address, onlink, on the VXLAN device."""

    dst: IPv4Network
    gateway: IPv4Address


@dataclass(frozen=True)
class Plane:
    """A set of entries on one device: either what we want or what the kernel holds."""

    neighs: frozenset[Neigh] = frozenset()
    fdbs: frozenset[Fdb] = frozenset()
    routes: frozenset[Route] = frozenset()

    def __len__(self) -> int:
        return len(self.neighs) + len(self.fdbs) + len(self.routes)


@dataclass(frozen=True)
class PlaneDiff:
    """What to add and what to remove so that actual becomes desired."""

    add: Plane = field(default_factory=Plane)
    remove: Plane = field(default_factory=Plane)

    @property
    def empty(self) -> bool:
        return not self.add and not self.remove


def peer_entries(lease: Lease) -> Plane:
    """The three entries one VXLAN peer needs."""
    neigh, fdb, route = _entries(lease)
    return Plane(neighs=frozenset({neigh}), fdbs=frozenset({fdb}), routes=frozenset({route}))


def _entries(lease: Lease) -> tuple[Neigh, Fdb, Route]:
    gateway = lease.subnet.network_address
    mac = lease.attrs.vtep_mac or ""
    return Neigh(gateway, mac), Fdb(mac, lease.attrs.public_ip), Route(lease.subnet, gateway)


def is_vxlan_peer(lease: Lease, own_subnet: IPv4Network | None, vni: int) -> bool:
    """A lease we program: another host's, of the vxlan backend, on our VNI."""
    return (
        lease.subnet != own_subnet
        and lease.attrs.backend_type == "vxlan"
        and lease.attrs.vni == vni
        and bool(lease.attrs.vtep_mac)
    )


def desired_plane(leases: Iterable[Lease], own_subnet: IPv4Network | None, vni: int) -> Plane:
    """Union of the entries of every peer lease (our own and foreign backends excluded)."""
    neighs: set[Neigh] = set()
    fdbs: set[Fdb] = set()
    routes: set[Route] = set()
    for lease in leases:
        if not is_vxlan_peer(lease, own_subnet, vni):
            continue
        neigh, fdb, route = _entries(lease)  # no Plane per lease: this runs on every full pass
        neighs.add(neigh)
        fdbs.add(fdb)
        routes.add(route)
    return Plane(frozenset(neighs), frozenset(fdbs), frozenset(routes))


def diff_planes(desired: Plane, actual: Plane) -> PlaneDiff:
    """Entries to add (desired, not actual) and to remove (actual, not desired)."""
    return PlaneDiff(
        add=Plane(
            desired.neighs - actual.neighs,
            desired.fdbs - actual.fdbs,
            desired.routes - actual.routes,
        ),
        remove=Plane(
            actual.neighs - desired.neighs,
            actual.fdbs - desired.fdbs,
            actual.routes - desired.routes,
        ),
    )
