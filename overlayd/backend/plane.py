"""The peer entries of one host as values (neighbour, FDB entry, route, direct route, WireGuard
peer), gathered in a ``Plane``, and the diff between what we want and what the kernel holds (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

Ip = IPv4Address | IPv6Address
Net = IPv4Network | IPv6Network

# Entries are compared and hashed by a tuple of plain ints and strings made once, at creation
# (the address's version first: an IPv4 and an IPv6 entry are never equal).
# The generated methods compared ``ipaddress`` objects, whose ``__eq__`` and ``__hash__`` are
# Python code: at 1000 peers a full pass's set operations spent ~6 ms in them (py-spy). Each
# class assigns these in its body, which the dataclass decorator then leaves alone.


def _key_eq(self: Neigh | Fdb | Route, other: object) -> bool:
    if other.__class__ is not self.__class__:
        return NotImplemented
    return self._key == other._key  # type: ignore[union-attr]


def _key_hash(self: Neigh | Fdb | Route) -> int:
    return hash(self._key)


@dataclass(frozen=True, order=True, slots=True)
class Neigh:
    """Permanent ARP (IPv6: neighbour) entry on the VXLAN device: peer's ``<subnet>.0`` (IPv6:
    its subnet's network address) → its VTEP MAC."""

    ip: Ip
    mac: str
    _key: tuple[int, int, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_key", (self.ip.version, int(self.ip), self.mac))

    __eq__ = _key_eq
    __hash__ = _key_hash


@dataclass(frozen=True, order=True, slots=True)
class Fdb:
    """Permanent FDB entry on the VXLAN device: a VTEP MAC lives behind an underlay IP (an
    IPv6 one on the IPv6 device)."""

    mac: str
    dst: Ip
    _key: tuple[int, str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_key", (self.dst.version, self.mac, int(self.dst)))

    __eq__ = _key_eq
    __hash__ = _key_hash


@dataclass(frozen=True, order=True, slots=True)
class Route:
    """Route to a peer's subnet via its ``<subnet>.0`` address, onlink, on the VXLAN device (of
    the subnet's family)."""

    dst: Net
    gateway: Ip
    _key: tuple[int, int, int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        key = (self.dst.version, int(self.dst.network_address), self.dst.prefixlen, int(self.gateway))
        object.__setattr__(self, "_key", key)

    __eq__ = _key_eq
    __hash__ = _key_hash


@dataclass(frozen=True, order=True, slots=True)
class DirectRoute(Route):
    """DirectRouting: a route to a peer's subnet via its PublicIP, which is on this host's segment
    (``ip route replace <subnet> via <PublicIP>``); the kernel picks the underlay device. Never
    equal to a Route with the same fields: it lives on another device."""

    __eq__ = _key_eq
    __hash__ = _key_hash


@dataclass(frozen=True, order=True, slots=True)
class WgPeer:
    """A WireGuard peer on a WireGuard device: its public key, reached at ``dst`` (its PublicIP,
    or PublicIPv6; the port is the network's), allowed to send from ``allowed`` (one of its
    subnets, of either family)."""

    public_key: str
    dst: Ip
    allowed: Net
    _key: tuple[str, int, int, int, int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        allowed = self.allowed
        key = (self.public_key, self.dst.version, int(self.dst), allowed.version,
               int(allowed.network_address), allowed.prefixlen)  # fmt: skip
        object.__setattr__(self, "_key", key)

    __eq__ = _key_eq
    __hash__ = _key_hash


@dataclass(frozen=True)
class Plane:
    """The peer entries of one host: what we want, or what the kernel holds. The first three
    kinds live on the VXLAN device of their family, direct routes on the underlay."""

    neighs: frozenset[Neigh] = frozenset()
    fdbs: frozenset[Fdb] = frozenset()
    routes: frozenset[Route] = frozenset()
    direct: frozenset[DirectRoute] = frozenset()
    peers: frozenset[WgPeer] = frozenset()  # on a WireGuard device, instead of neighbours and FDB

    def __len__(self) -> int:
        return len(self.neighs) + len(self.fdbs) + len(self.routes) + len(self.direct) + len(self.peers)


@dataclass(frozen=True)
class PlaneDiff:
    """What to add and what to remove so that actual becomes desired."""

    add: Plane = field(default_factory=Plane)
    remove: Plane = field(default_factory=Plane)

    @property
    def empty(self) -> bool:
        return not self.add and not self.remove


Entry = Neigh | Fdb | Route | DirectRoute | WgPeer


def without_overwritten(diff: PlaneDiff) -> PlaneDiff:
    """``diff`` without the removals its additions overwrite in place: a neighbour whose address
    is added with another MAC, an FDB entry whose MAC is added with another destination. The
    kernel's replace swaps them at once; removing first would leave a gap in between, and a
    removed neighbour's notification carries no MAC to tell it from someone else's deletion."""
    if not diff.remove.neighs and not diff.remove.fdbs:
        return diff
    added_ips = {neigh.ip for neigh in diff.add.neighs}
    added_macs = {fdb.mac for fdb in diff.add.fdbs}
    remove = Plane(
        frozenset(n for n in diff.remove.neighs if n.ip not in added_ips),
        frozenset(f for f in diff.remove.fdbs if f.mac not in added_macs),
        diff.remove.routes,
        diff.remove.direct,
        diff.remove.peers,
    )
    return PlaneDiff(add=diff.add, remove=remove)


def diff_planes(desired: Plane, actual: Plane) -> PlaneDiff:
    """Entries to add (desired, not actual) and to remove (actual, not desired)."""
    return PlaneDiff(
        add=Plane(
            desired.neighs - actual.neighs,
            desired.fdbs - actual.fdbs,
            desired.routes - actual.routes,
            desired.direct - actual.direct,
            desired.peers - actual.peers,
        ),
        remove=Plane(
            actual.neighs - desired.neighs,
            actual.fdbs - desired.fdbs,
            actual.routes - desired.routes,
            actual.direct - desired.direct,
            actual.peers - desired.peers,
        ),
    )
