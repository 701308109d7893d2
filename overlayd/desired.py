"""Desired kernel state for the VXLAN backend, computed from leases, and its diff against actual.

No I/O here: the reconciler feeds in the peer leases (``DesiredEntries``, kept peer by peer) and
what netlink reports, and applies the returned difference. Whole entries are compared (a
neighbour is its IP *and* MAC), so a peer whose VTEP MAC changed yields a removal of the stale
entry and an addition of the new one.
"""

from __future__ import annotations

from collections.abc import Callable, KeysView
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network

from overlayd.lease import Lease, lease_vni

# Entries are compared and hashed by a tuple of plain ints and strings made once, at creation.
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
    """Permanent ARP entry on the VXLAN device: peer's ``<subnet>.0`` → its VTEP MAC."""

    ip: IPv4Address
    mac: str
    _key: tuple[int, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_key", (int(self.ip), self.mac))

    __eq__ = _key_eq
    __hash__ = _key_hash


@dataclass(frozen=True, order=True, slots=True)
class Fdb:
    """Permanent FDB entry on the VXLAN device: a VTEP MAC lives behind an underlay IP."""

    mac: str
    dst: IPv4Address
    _key: tuple[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_key", (self.mac, int(self.dst)))

    __eq__ = _key_eq
    __hash__ = _key_hash


@dataclass(frozen=True, order=True, slots=True)
class Route:
    """Route to a peer's subnet via its ``<subnet>.0`` address, onlink, on the VXLAN device."""

    dst: IPv4Network
    gateway: IPv4Address
    _key: tuple[int, int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        key = (int(self.dst.network_address), self.dst.prefixlen, int(self.gateway))
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


@dataclass(frozen=True)
class Plane:
    """The peer entries of one host: what we want, or what the kernel holds. The first three
    kinds live on the VXLAN device, direct routes on the underlay."""

    neighs: frozenset[Neigh] = frozenset()
    fdbs: frozenset[Fdb] = frozenset()
    routes: frozenset[Route] = frozenset()
    direct: frozenset[DirectRoute] = frozenset()

    def __len__(self) -> int:
        return len(self.neighs) + len(self.fdbs) + len(self.routes) + len(self.direct)


@dataclass(frozen=True)
class PlaneDiff:
    """What to add and what to remove so that actual becomes desired."""

    add: Plane = field(default_factory=Plane)
    remove: Plane = field(default_factory=Plane)

    @property
    def empty(self) -> bool:
        return not self.add and not self.remove


Entry = Neigh | Fdb | Route | DirectRoute


def _entries(lease: Lease, direct: bool) -> tuple[Entry, ...]:
    """The entries one peer needs: three over VXLAN, or one route when it is reached directly."""
    if direct:
        return (DirectRoute(lease.subnet, lease.attrs.public_ip),)
    gateway = lease.subnet.network_address
    mac = lease.attrs.vtep_mac or ""
    return Neigh(gateway, mac), Fdb(mac, lease.attrs.public_ip), Route(lease.subnet, gateway)


def reached_directly(segments: tuple[IPv4Network, ...]) -> Callable[[Lease], bool]:
    """DirectRouting's test: a peer whose PublicIP is on one of this host's underlay segments
    (``segments``, the external interface's connected prefixes) needs no VXLAN to reach it.
    flanneld asks the routing table whether the route to the PublicIP has no gateway; on the
    external interface, that is this test."""
    return lambda lease: any(lease.attrs.public_ip in segment for segment in segments)


def is_vxlan_peer(
    lease: Lease, own_subnet: IPv4Network | None, vni: int, own_ip: IPv4Address | None = None
) -> bool:
    """A lease we program: another host's, of the vxlan backend, on our VNI (as leases carry it).

    One carrying our own PublicIP is this host's too, under another subnet: a dual-stack one
    flanneld left, say. Programmed, its route would replace the local bridge's to that subnet."""
    return (
        lease.subnet != own_subnet
        and lease.attrs.public_ip != own_ip
        and lease.attrs.backend_type == "vxlan"
        and lease.attrs.vni is not None
        and lease_vni(lease.attrs.vni) == lease_vni(vni)
        and bool(lease.attrs.vtep_mac)
    )


class DesiredEntries:
    """Every peer's entries, kept up to date one peer at a time.

    The union of all peers' entries is what the device should hold. Rebuilding it from every
    lease after each change cost a full pass ~7 ms at 1000 peers (docs/benchmarks.md); here a
    change costs the changed peer's three entries, and ``plane`` is rebuilt from the counts at
    C speed (the dicts keep each entry's hash) only after something changed.

    Entries are counted because two leases can need the same one: a host that moved to a new
    subnet keeps its PublicIP and VTEP MAC, so until its old lease expires both want one FDB
    entry, and the old lease going must not take that entry away.

    The device holds one FDB entry per MAC, so leases that give one VTEP MAC different
    PublicIPs (a host whose address changed, until its old lease expires) cannot all have
    theirs: the newest lease (highest etcd revision) wins the MAC. Wanting both would make every
    pass replace the other, and the host's traffic would alternate between its addresses.
    """

    def __init__(self, direct: Callable[[Lease], bool] | None = None) -> None:
        """``direct`` tells the peers reached without VXLAN (DirectRouting); None: none are."""
        self._direct = direct
        self._peers: dict[str, tuple[Lease, tuple[Entry, ...]]] = {}
        self._counts: tuple[dict[Entry, int], ...] = ({}, {}, {}, {})  # by kind, in Plane's order
        self._plane: Plane | None = Plane()
        self._public_ips: dict[IPv4Address, int] = {}  # peers' PublicIPs, counted by entry
        self._neigh_ips: dict[IPv4Address, int] = {}  # wanted neighbours' addresses, counted
        # VTEP MAC -> {lease key: (revision, key, its FDB entry)}: who claims each MAC; the
        # largest wins (keys are unique, so the entries themselves are never compared).
        self._fdb_claims: dict[str, dict[str, tuple[int, str, Fdb]]] = {}

    def __len__(self) -> int:
        """How many peers want entries."""
        return len(self._peers)

    def keys(self) -> KeysView[str]:
        """The lease keys of the peers that want entries."""
        return self._peers.keys()

    def wants(self, entry: Neigh | Fdb | Route) -> bool:
        return entry in self._counts[_KIND[type(entry)]]

    def public_ips(self) -> frozenset[IPv4Address]:
        """Every peer's PublicIP, counted as peers come and go: cheaper than asking every lease
        whether it is a peer again on each pass. All of them, not only the FDB entries' (a host
        whose lease lost its MAC to a newer one still sends VXLAN), and the direct peers' too
        (one without DirectRouting, an older node, still sends us VXLAN)."""
        return frozenset(self._public_ips)

    def wants_public_ip(self, ip: IPv4Address) -> bool:
        return ip in self._public_ips

    def wants_neigh_at(self, ip: IPv4Address) -> bool:
        """Whether any wanted neighbour has address ``ip``, whatever its MAC: the kernel reports
        a deleted neighbour without one."""
        return ip in self._neigh_ips

    def set_peer(self, key: str, lease: Lease | None) -> PlaneDiff:
        """Make ``lease`` (None: nothing) peer ``key``'s; returns the entries this makes wanted
        (``add``) and no longer wanted by anyone (``remove``)."""
        gained, lost = self._set(key, lease)
        return PlaneDiff(
            add=Plane(*(frozenset(entries) for entries in gained)),
            remove=Plane(*(frozenset(entries) for entries in lost)),
        )

    def load(self, key: str, lease: Lease | None) -> None:
        """``set_peer`` without the diff, for filling the whole set at once: at 1000 peers the
        six frozensets per peer were a fifth of the start-up pass."""
        self._set(key, lease)

    def _set(self, key: str, lease: Lease | None) -> tuple[tuple[list, ...], tuple[list, ...]]:
        """The entries ``key``'s new ``lease`` makes wanted, and those no longer wanted, by kind
        (in Plane's order)."""
        gained: tuple[list, ...] = ([], [], [], [])
        lost: tuple[list, ...] = ([], [], [], [])
        known = self._peers.get(key)
        old_fdb = _fdb_of(known[1]) if known is not None else None
        if known is not None and lease is not None and (known[0] is lease or known[0] == lease):
            self._peers[key] = (lease, known[1])  # an equal lease: later checks are identity checks
            self._claim(key, old_fdb, old_fdb, lease.mod_revision, gained, lost)  # a newer revision
        else:
            entries = _entries(lease, self._direct is not None and self._direct(lease)) if lease else ()
            # Additions before releases: an entry both leases need is never counted down to zero.
            for entry in entries:
                kind = _KIND[type(entry)]
                if kind != _FDB:  # FDB entries go by claim, below
                    counts = self._counts[kind]
                    held = counts.get(entry, 0)
                    counts[entry] = held + 1
                    if not held:
                        gained[kind].append(entry)
            if lease is not None:
                self._peers[key] = (lease, entries)
            elif known is not None:
                del self._peers[key]
            for entry in known[1] if known is not None else ():
                kind = _KIND[type(entry)]
                if kind != _FDB:
                    counts = self._counts[kind]
                    held = counts[entry]
                    if held == 1:
                        del counts[entry]
                        lost[kind].append(entry)
                    else:
                        counts[entry] = held - 1
            revision = lease.mod_revision if lease is not None else 0
            self._claim(key, old_fdb, _fdb_of(entries), revision, gained, lost)
        if any(gained) or any(lost):
            self._plane = None
            for route in gained[_DIRECT]:
                self._count_ip(route.gateway, 1)
            for route in lost[_DIRECT]:
                self._count_ip(route.gateway, -1)
            for neigh in gained[_NEIGH]:
                self._neigh_ips[neigh.ip] = self._neigh_ips.get(neigh.ip, 0) + 1
            for neigh in lost[_NEIGH]:
                if (held := self._neigh_ips[neigh.ip] - 1) > 0:
                    self._neigh_ips[neigh.ip] = held
                else:
                    del self._neigh_ips[neigh.ip]
        return gained, lost

    def _count_ip(self, ip: IPv4Address, change: int) -> None:
        held = self._public_ips.get(ip, 0) + change
        if held:
            self._public_ips[ip] = held
        else:
            del self._public_ips[ip]

    def _claim(
        self, key: str, old: Fdb | None, new: Fdb | None, revision: int, gained: tuple, lost: tuple
    ) -> None:
        """Move ``key``'s claim from ``old``'s MAC to ``new``'s (at ``revision``), and note the
        FDB entries this makes wanted or unwanted: those whose MAC changed hands."""
        if old is None and new is not None and new.mac not in self._fdb_claims:
            # The usual case, every peer at start-up: a MAC nobody else claims.
            self._fdb_claims[new.mac] = {key: (revision, key, new)}
            self._counts[_FDB][new] = 1
            gained[_FDB].append(new)
            self._count_ip(new.dst, 1)
            return
        macs = {fdb.mac for fdb in (old, new) if fdb is not None}
        before = {mac: self._winner(mac) for mac in macs}
        if old is not None:
            claims = self._fdb_claims[old.mac]
            del claims[key]
            if not claims:
                del self._fdb_claims[old.mac]
            self._count_ip(old.dst, -1)
        if new is not None:
            self._fdb_claims.setdefault(new.mac, {})[key] = (revision, key, new)
            self._count_ip(new.dst, 1)
        counts = self._counts[_FDB]
        for mac in macs:
            was, now = before[mac], self._winner(mac)
            if was == now:
                continue
            if was is not None:
                del counts[was]
                lost[_FDB].append(was)
            if now is not None:
                counts[now] = 1
                gained[_FDB].append(now)

    def _winner(self, mac: str) -> Fdb | None:
        claims = self._fdb_claims.get(mac)
        return max(claims.values())[2] if claims else None

    def plane(self) -> Plane:
        """The union of every peer's entries: the same object until a peer's entries change."""
        if self._plane is None:
            self._plane = Plane(*(frozenset(counts) for counts in self._counts))
        return self._plane


_KIND = {Neigh: 0, Fdb: 1, Route: 2, DirectRoute: 3}
_NEIGH, _FDB, _DIRECT = _KIND[Neigh], _KIND[Fdb], _KIND[DirectRoute]


def _fdb_of(entries: tuple[Entry, ...]) -> Fdb | None:
    """The FDB entry among a peer's entries (``_entries``: neighbour, FDB, route; or one route)."""
    return entries[1] if len(entries) == 3 else None  # type: ignore[return-value]


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
        ),
        remove=Plane(
            actual.neighs - desired.neighs,
            actual.fdbs - desired.fdbs,
            actual.routes - desired.routes,
            actual.direct - desired.direct,
        ),
    )
