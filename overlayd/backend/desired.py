"""Desired kernel state, computed from leases (the entries are ``plane``'s).

No I/O here: the reconciler feeds in the peer leases (``DesiredEntries``, kept peer by peer) and
what netlink reports, and applies the difference (``plane.diff_planes``). Whole entries are
compared (a neighbour is its IP *and* MAC), so a peer whose VTEP MAC changed yields a removal of
the stale entry and an addition of the new one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, KeysView
from dataclasses import dataclass, replace

from overlayd.backend.plane import DirectRoute, Entry, Fdb, Ip, Neigh, Plane, PlaneDiff, Route, WgPeer
from overlayd.subnet.lease import Lease, is_ipv6_only


def entries_for(lease: Lease, direct: bool, ipv6: bool = False) -> tuple[Entry, ...]:
    """The entries one peer needs: three over VXLAN, or one route when it is reached directly;
    with ``ipv6`` (a dual-stack network) as many more for its IPv6 half, when it has one. An
    IPv6-only lease has its IPv6 half alone."""
    if is_ipv6_only(lease):
        if direct:
            subnet6, ip6 = lease.ipv6_subnet, lease.attrs.public_ipv6
            return (DirectRoute(subnet6, ip6),) if subnet6 and ip6 else ()  # type: ignore[arg-type]
        return ipv6_entries_for(lease)
    if direct:
        # Both halves routed on the underlay, each via the peer's address of its family (the
        # routes of host-gw, and of vxlan's DirectRouting for a peer on both segments).
        route = DirectRoute(lease.subnet, lease.attrs.public_ip)
        subnet6, ip6 = lease.ipv6_subnet, lease.attrs.public_ipv6
        return (route, DirectRoute(subnet6, ip6)) if ipv6 and subnet6 and ip6 else (route,)
    gateway = lease.subnet.network_address
    mac = lease.attrs.vtep_mac or ""
    entries = Neigh(gateway, mac), Fdb(mac, lease.attrs.public_ip), Route(lease.subnet, gateway)
    return entries + ipv6_entries_for(lease) if ipv6 else entries


def ipv6_entries_for(lease: Lease) -> tuple[Entry, ...]:
    """The IPv6 half's three entries, on the IPv6 device, as flanneld programs them: neighbour
    at the subnet's network address, FDB to the PublicIPv6, onlink route via the neighbour. None
    for a lease without a complete IPv6 half."""
    subnet, attrs = lease.ipv6_subnet, lease.attrs
    if subnet is None or attrs.public_ipv6 is None or not attrs.vtep_mac_v6:
        return ()
    gateway, mac = subnet.network_address, attrs.vtep_mac_v6
    return Neigh(gateway, mac), Fdb(mac, attrs.public_ipv6), Route(subnet, gateway)


# A peer's entries: (lease, reached directly, the network is dual-stack).
EntriesFor = Callable[[Lease, bool, bool], tuple[Entry, ...]]


@dataclass(frozen=True)
class Rivalry:
    """A lease that lost a claim to an older one: a subnet (or part of one) or a VTEP MAC.
    ``reason`` is a metric label, ``message`` a sentence naming the winner and the fix."""

    key: str
    lease: Lease
    reason: str  # subnet_taken, vtep_mac_taken or public_key_taken
    message: str


@dataclass(frozen=True)
class _Candidate:
    """A peer lease offered to ``DesiredEntries``, with what its claims are judged by."""

    lease: Lease
    direct: bool
    entries: tuple[Entry, ...]  # what it needs if it wins its claims
    sender: str  # what identifies its host to the device: VTEP MAC or public key ("" if direct)
    age: tuple[int, str]  # (etcd create revision, key): the smallest is the oldest
    block: tuple[int, int]  # the address block it claims: (prefix length, network >> host bits)


class DesiredEntries:
    """Every peer's entries, kept up to date one peer at a time.

    The union of all peers' entries is what the device should hold. Rebuilding it from every
    lease after each change cost a full pass ~7 ms at 1000 peers (docs/benchmarks.md); here a
    change costs the changed peer's entries (and its rivals'), and ``plane`` is rebuilt from the
    counts at C speed (the dicts keep each entry's hash) only after something changed.

    Entries are counted because two leases can need the same one: a host that moved to a new
    subnet keeps its PublicIP and VTEP MAC, so until its old lease expires both want one FDB
    entry, and the old lease going must not take that entry away.

    One winner per claim, the oldest lease (smallest etcd create revision, then key): the kernel
    holds one neighbour per gateway address and one FDB entry per MAC, so rivals for either would
    replace each other on every pass, and the newer one would be a way to take a host's traffic.
    - Leases whose subnets overlap (judged in blocks of ``claim_prefixlen``): only the oldest is
      programmed; this also gives each gateway address a single neighbour.
    - Leases giving one VTEP MAC different PublicIPs: only the oldest and those agreeing with it
      are programmed. Leases with the same MAC *and* PublicIP (one host, two subnets) agree.
    A loser gets no entries at all and is not allowed to send VXLAN; ``report`` names it. When the
    winner goes, the next oldest takes its place.
    """

    def __init__(
        self,
        direct: Callable[[Lease], bool] | None = None,
        claim_prefixlen: int | None = None,
        report: Callable[[Rivalry], None] | None = None,
        ipv6: bool = False,
        entries: EntriesFor = entries_for,
    ) -> None:
        """``direct`` tells the peers reached without VXLAN (DirectRouting); None: none are.
        ``claim_prefixlen``: overlapping subnets are found in blocks of this length (the shortest
        subnet length accepted); None: only equal subnets are rivals. ``ipv6``: peers' IPv6
        halves are programmed too (a dual-stack network). ``entries``: the backend's entries for
        one peer."""
        self._entries = entries
        self._direct = direct
        self._ipv6 = ipv6
        self._claim_prefixlen = claim_prefixlen
        self._report = report
        self._candidates: dict[str, _Candidate] = {}  # every lease offered, winner or not
        self._peers: dict[str, tuple[Entry, ...]] = {}  # the winners' entries, by lease key
        self._counts: tuple[dict[Entry, int], ...] = ({}, {}, {}, {}, {})  # by kind, in Plane's order
        self._plane: Plane | None = Plane()
        self._public_ips: dict[Ip, int] = {}  # the winners' PublicIPs (and PublicIPv6s), counted by entry
        self._subnet_claims: dict[tuple[int, int], dict[str, tuple[int, str]]] = {}
        # VTEP MAC -> {lease key: (age, its PublicIP)}, of the leases that won their subnet.
        self._mac_claims: dict[str, dict[str, tuple[tuple[int, str], Ip]]] = {}
        self._neigh_ips: dict[Ip, int] = {}  # wanted neighbours' addresses, counted

    def __len__(self) -> int:
        """How many peers want entries (rivals that lost do not)."""
        return len(self._peers)

    def keys(self) -> KeysView[str]:
        """The lease keys of every peer lease offered, including rivals that lost a claim."""
        return self._candidates.keys()

    def programmed_keys(self) -> KeysView[str]:
        """The lease keys of the peers whose entries are wanted."""
        return self._peers.keys()

    def wants(self, entry: Neigh | Fdb | Route) -> bool:
        return entry in self._counts[_KIND[type(entry)]]

    def public_ips(self) -> frozenset[Ip]:
        """Every programmed peer's PublicIP, counted as peers come and go: cheaper than asking
        every lease whether it is a peer again on each pass. The direct peers' too (one without
        DirectRouting, an older node, still sends us VXLAN)."""
        return frozenset(self._public_ips)

    def wants_public_ip(self, ip: Ip) -> bool:
        return ip in self._public_ips

    def wants_neigh_at(self, ip: Ip) -> bool:
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

    def _candidate(self, key: str, lease: Lease) -> _Candidate:
        subnet = lease.own_subnet  # an IPv6-only lease claims its IPv6 subnet
        prefixlen = subnet.prefixlen if self._claim_prefixlen is None else min(
            subnet.prefixlen, self._claim_prefixlen
        )
        block = (prefixlen, int(subnet.network_address) >> (subnet.max_prefixlen - prefixlen))
        direct = self._direct is not None and self._direct(lease)
        entries = self._entries(lease, direct, self._ipv6)
        sender = next((_sender(entry) for entry in entries if type(entry) in _SENDERS), "")
        age = (lease.create_revision or lease.mod_revision, key)
        return _Candidate(lease, direct, entries, sender, age, block)

    def _set(self, key: str, lease: Lease | None) -> tuple[tuple[list, ...], tuple[list, ...]]:
        """The entries ``key``'s new ``lease`` makes wanted, and those no longer wanted, by kind
        (in Plane's order)."""
        gained: tuple[list, ...] = ([], [], [], [], [])
        lost: tuple[list, ...] = ([], [], [], [], [])
        known = self._candidates.get(key)
        if (
            known is not None
            and lease is not None
            and (known.lease is lease or known.lease == lease)
            and known.age[0] == (lease.create_revision or lease.mod_revision)
        ):
            # An equal lease (a new revision of the same value, as a renewal writes): its claims
            # stand as they are; later checks are identity checks.
            self._candidates[key] = replace(known, lease=lease)
            return gained, lost
        if known is None and lease is None:
            return gained, lost
        new = self._candidate(key, lease) if lease is not None else None
        if known is None and new is not None and new.block not in self._subnet_claims:
            mac = new.sender
            if new.direct or mac not in self._mac_claims:
                # The usual case, every peer at start-up: a subnet and a MAC nobody else claims.
                self._subnet_claims[new.block] = {key: new.age}
                self._candidates[key] = new
                if not new.direct:
                    self._mac_claims[mac] = {key: (new.age, new.lease.public_address)}
                self._settle((key,), gained, lost)
                if any(gained):
                    self._plane = None
                return gained, lost
        # Whose standing this can change: the rivals for the old and new subnet block, and the
        # rivals for those leases' MACs.
        rivals = {key}
        for block in {c.block for c in (known, new) if c is not None}:
            rivals.update(self._subnet_claims.get(block, ()))
        macs = {self._unclaim_mac(block_rival) for block_rival in rivals}
        if known is not None:
            self._unclaim(self._subnet_claims, known.block, key)
            del self._candidates[key]
        if new is not None:
            self._subnet_claims.setdefault(new.block, {})[key] = new.age
            self._candidates[key] = new
        affected = set(rivals)
        for block_rival in rivals:
            candidate = self._candidates.get(block_rival)
            if candidate is not None and self._wins_subnet(block_rival, candidate):
                affected.update(self._claim_mac(block_rival, candidate))
        for mac in macs:  # a rival that lost its subnet no longer holds its MAC from the others
            affected.update(self._mac_claims.get(mac or "", ()))
        self._settle(sorted(affected), gained, lost)
        if any(gained) or any(lost):
            self._plane = None
        return gained, lost

    def _settle(self, keys: Iterable[str], gained: tuple, lost: tuple) -> None:
        """Give each of ``keys`` the entries its standing calls for, and note the difference.
        Additions before releases: an entry two leases need is never counted down to zero."""
        changes = []
        for key in keys:
            candidate = self._candidates.get(key)
            rivalry = self._rivalry(key, candidate) if candidate is not None else None
            entries = candidate.entries if candidate and not rivalry else ()
            held = self._peers.get(key, ())
            if entries != held:
                changes.append((held, entries))
                if entries:
                    self._peers[key] = entries
                else:
                    self._peers.pop(key, None)
            if rivalry is not None and self._report is not None:
                self._report(rivalry)
        for _, entries in changes:
            for entry in entries:
                kind = _KIND[type(entry)]
                counts = self._counts[kind]
                count = counts.get(entry, 0)
                counts[entry] = count + 1
                if not count:
                    gained[kind].append(entry)
                    if kind in _SENDS:
                        self._count_ip(entry, 1)
                    elif kind == _NEIGH:
                        self._neigh_ips[entry.ip] = self._neigh_ips.get(entry.ip, 0) + 1
        for held, _ in changes:
            for entry in held:
                kind = _KIND[type(entry)]
                counts = self._counts[kind]
                count = counts[entry]
                if count == 1:
                    del counts[entry]
                    lost[kind].append(entry)
                    if kind in _SENDS:
                        self._count_ip(entry, -1)
                    elif kind == _NEIGH:
                        self._uncount_neigh(entry.ip)
                else:
                    counts[entry] = count - 1

    def _uncount_neigh(self, ip: Ip) -> None:
        if (held := self._neigh_ips[ip] - 1) > 0:
            self._neigh_ips[ip] = held
        else:
            del self._neigh_ips[ip]

    def _wins_subnet(self, key: str, candidate: _Candidate) -> bool:
        return min(self._subnet_claims[candidate.block].values()) == candidate.age

    def _rivalry(self, key: str, candidate: _Candidate) -> Rivalry | None:
        """Why ``key`` loses a claim, or None if it wins them all."""
        lease = candidate.lease
        claims = self._subnet_claims[candidate.block]
        oldest = min(claims.values())
        if oldest != candidate.age:
            winner = self._candidates[oldest[1]].lease
            return Rivalry(key, lease, "subnet_taken", (
                f"subnet {lease.own_subnet} overlaps {winner.own_subnet} of the older lease {oldest[1]} "
                f"(PublicIP {winner.public_address}), which keeps it; delete the newer key if it was "
                "written by mistake"
            ))  # fmt: skip
        if candidate.direct:
            return None
        mac = candidate.sender
        first_age, first_ip = min(self._mac_claims[mac].values())
        if first_ip != lease.public_address:
            what, reason = ("PublicKey", "public_key_taken") if any(
                type(entry) is WgPeer for entry in candidate.entries) else ("VtepMAC", "vtep_mac_taken")
            return Rivalry(key, lease, reason, (
                f"{what} {mac} at PublicIP {lease.public_address} is already claimed by the older "
                f"lease {first_age[1]} at {first_ip}, which keeps it; if that is this host's own old "
                "lease (its address changed), delete the old key"
            ))  # fmt: skip
        return None

    def _claim_mac(self, key: str, candidate: _Candidate) -> set[str]:
        """Enter a subnet winner's claim on its MAC; returns the MAC's claimants."""
        if candidate.direct:
            return set()
        mac = candidate.sender
        claims = self._mac_claims.setdefault(mac, {})
        claims[key] = (candidate.age, candidate.lease.public_address)
        return set(claims)

    def _unclaim_mac(self, key: str) -> str | None:
        """Withdraw ``key``'s claim on its MAC, if it holds one; returns that MAC."""
        candidate = self._candidates.get(key)
        if candidate is None or candidate.direct:
            return None
        mac = candidate.sender
        claims = self._mac_claims.get(mac)
        if claims is not None and key in claims:
            self._unclaim(self._mac_claims, mac, key)
        return mac

    @staticmethod
    def _unclaim(claims: dict, claim: object, key: str) -> None:
        holders = claims[claim]
        del holders[key]
        if not holders:
            del claims[claim]

    def _count_ip(self, entry: Fdb | DirectRoute | WgPeer, change: int) -> None:
        """Count the PublicIP an FDB entry, direct route or WireGuard peer sends to."""
        ip = entry.gateway if isinstance(entry, DirectRoute) else entry.dst
        held = self._public_ips.get(ip, 0) + change
        if held:
            self._public_ips[ip] = held
        else:
            del self._public_ips[ip]

    def plane(self) -> Plane:
        """The union of every peer's entries: the same object until a peer's entries change."""
        if self._plane is None:
            self._plane = Plane(*(frozenset(counts) for counts in self._counts))
        return self._plane


_KIND = {Neigh: 0, Fdb: 1, Route: 2, DirectRoute: 3, WgPeer: 4}
_SENDS = frozenset({_KIND[Fdb], _KIND[DirectRoute], _KIND[WgPeer]})  # the kinds that send to a PublicIP
_SENDERS = (Fdb, WgPeer)  # the kinds that name a peer's host: one per host, claimed by the oldest lease


def _sender(entry: Entry) -> str:
    return entry.mac if isinstance(entry, Fdb) else entry.public_key  # type: ignore[union-attr]
_NEIGH = _KIND[Neigh]
