"""What the agent knows of its peers, and the changes to the kernel's entries each event wants.

Pure: the peer leases by key, the ones programmed, the entries wanted (``DesiredEntries``), the
held deletions (``holddown``) and each lease's verdict. The caller (the agent's loop) hands in
events and the time; it gets back ``PeerChange`` values for the reconciler to write. The netlink
monitor's thread reads ``desired`` (``wants`` only) to drop the echoes of our own writes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address

from overlayd.agent.holddown import HeldPeer, HoldDown, HoldEnd, same_entries
from overlayd.backend.api import Backend, HostFacts
from overlayd.backend.desired import DesiredEntries, Rivalry
from overlayd.backend.plane import Plane, PlaneDiff
from overlayd.etcd.api import LeaseEvent
from overlayd.subnet.config import NetworkConfig
from overlayd.subnet.lease import Lease, serves_ipv6
from overlayd.subnet.leasecheck import BadLeaseLog, Underlay, lease_problem, missing_ipv6


@dataclass(frozen=True)
class PeerVerdict:
    """What a lease is to us: ``safe`` (inside the Network, not claiming our subnet) and ``peer``
    (a safe lease the backend programs: ``Backend.wants_peer``)."""

    lease: Lease
    safe: bool
    peer: bool


class VerdictCache:
    """Verdicts by lease key, for one (config, own lease): a full pass asks about every lease
    several times, and an answer changes only with the lease, the config or our own lease."""

    def __init__(self) -> None:
        self._verdicts: dict[str, PeerVerdict] = {}
        self._basis: tuple[NetworkConfig | None, Lease | None] = (None, None)

    def get(self, key: str, lease: Lease, config: NetworkConfig, own: Lease) -> PeerVerdict | None:
        """The verdict on this very lease object, if one is known under this basis."""
        if self._basis[0] is not config or self._basis[1] is not own:
            self._verdicts, self._basis = {}, (config, own)
        known = self._verdicts.get(key)
        return known if known is not None and known.lease is lease else None

    def put(self, key: str, verdict: PeerVerdict) -> None:
        self._verdicts[key] = verdict

    def forget(self, key: str) -> None:
        self._verdicts.pop(key, None)

    def keep(self, wanted: Callable[[str], bool]) -> None:
        self._verdicts = {key: known for key, known in self._verdicts.items() if wanted(key)}

    def __len__(self) -> int:
        return len(self._verdicts)


@dataclass(frozen=True)
class PeerChange:
    """``key``'s entries to become ``new``'s instead of ``old``'s; ``diff`` is what that writes.

    ``held``: ``old`` was held after its deletion and this ends the hold (``hold_end`` says how)."""

    key: str
    old: Lease | None
    new: Lease | None
    was_peer: bool
    is_peer: bool
    diff: PlaneDiff
    held: HeldPeer | None = None
    hold_end: HoldEnd | None = None


@dataclass(frozen=True)
class HoldEnded:
    """A hold a re-list ended: its key is listed again (``lease``)."""

    held: HeldPeer
    end: HoldEnd
    lease: Lease


@dataclass(frozen=True)
class Relisted:
    """What a snapshot did: the holds it ended, and whether our own key is missing from it."""

    ended: list[HoldEnded]
    own_missing: bool


@dataclass(frozen=True)
class OwnKeyLost:
    """Our own key was deleted (or turned unsafe) on the watch: re-acquire."""

    why: str


@dataclass(frozen=True)
class Held:
    """A peer's lease was deleted; its entries stay for the hold-down."""

    key: str


@dataclass(frozen=True)
class Unchanged:
    """Nothing for the kernel: our own key written again (a renewal)."""


PeerUpdate = PeerChange | OwnKeyLost | Held | Unchanged


class PeerState:
    """The peers of one agent; ``config``, ``lease``, ``underlay``, ``backend`` and ``host`` are set
    by the agent."""

    def __init__(self, bad_leases: BadLeaseLog, holds: HoldDown | None = None) -> None:
        self.config: NetworkConfig | None = None
        self.lease: Lease | None = None  # our own
        self._own_key: tuple[Lease | None, str] = (None, "")  # ``lease`` and its key (``own_key``)
        self.underlay: Underlay | None = None  # our addresses, which no peer's PublicIP may be
        self.backend: Backend | None = None  # which leases are peers, which reached directly
        self.host: HostFacts | None = None
        self.bad_leases = bad_leases
        self.peers: dict[str, Lease] = {}
        self.programmed: set[str] = set()  # keys of peers whose entries are in the kernel
        self.listed = False  # a first listing arrived: the ingress allowlist is known
        # Deleted peers whose entries stay a moment, in case the lease returns; never in
        # ``peers``, always in ``desired``.
        self.holds = holds if holds is not None else HoldDown()
        self.desired = DesiredEntries()
        # What ``desired`` was derived for: (config, own lease) and the peers dict it last
        # matched; a re-list replaces ``peers`` and so marks it for a sync.
        self._basis: tuple[NetworkConfig | None, Lease | None] = (None, None)
        self._synced_with: dict[str, Lease] | None = None
        self.verdicts = VerdictCache()

    # ---- verdicts ------------------------------------------------------------------------------

    def verdict(self, key: str, lease: Lease) -> PeerVerdict:
        """The verdict on ``lease`` at ``key``; a bad lease is reported once. Callers pass the
        key they hold; ``lease.key`` formats it anew."""
        assert self.config is not None and self.lease is not None and self.underlay is not None
        assert self.backend is not None
        known = self.verdicts.get(key, lease, self.config, self.lease)
        if known is not None:
            return known
        problem = lease_problem(lease, self.config, self.lease, self.underlay)
        if problem is not None:
            self.bad_leases.report(key, lease.mod_revision, problem.reason, problem.message)
        peer = problem is None and self.backend.wants_peer(lease, self.lease, self.config)
        if peer and (why := missing_ipv6(lease, self.config)):
            self.bad_leases.report_partial(key, lease.mod_revision, "no_ipv6", why)
        known = PeerVerdict(lease, problem is None, peer)
        self.verdicts.put(key, known)
        return known

    def is_peer(self, key: str, lease: Lease) -> bool:
        return self.verdict(key, lease).peer

    # ---- the entries wanted ----------------------------------------------------------------------

    def wanted(self) -> DesiredEntries:
        """The entries the current peers want. Events keep them in step one by one; here they
        are rebuilt when the config or our own lease changed, and synced lease by lease when a
        re-list replaced ``peers``."""
        assert self.config is not None and self.lease is not None and self.underlay is not None
        rebuild = self._basis[0] is not self.config or self._basis[1] is not self.lease
        if rebuild or self._synced_with is not self.peers:
            desired = self.desired
            if rebuild:  # rivals' subnets are compared in blocks of the shortest length accepted
                claim_prefixlen = min(self.config.primary.subnet_len, self.lease.own_subnet.prefixlen)
                assert self.backend is not None and self.host is not None
                direct = self.backend.reached_directly(self.config, self.host)
                dual_stack = serves_ipv6(self.config, self.lease)
                desired = DesiredEntries(direct, claim_prefixlen, self._report_rivalry, dual_stack,
                                         self.backend.peer_entries)
            held = {held.key: held.lease for held in self.holds}  # their entries stay until due
            for key in desired.keys() - self.peers.keys() - held.keys():
                desired.load(key, None)
            for key, lease in (*self.peers.items(), *held.items()):
                desired.load(key, lease if self.is_peer(key, lease) else None)
            self.desired, self._basis = desired, (self.config, self.lease)
            self._synced_with = self.peers
            self.verdicts.keep(lambda key: key in self.peers or key in self.holds)
        return self.desired

    def plane(self) -> Plane:
        """Every entry wanted; the same object while no peer's entries changed."""
        return self.wanted().plane()

    def peer_ips(self) -> frozenset[IPv4Address]:
        """PublicIPs of the peers we program: the sources allowed to send us overlay traffic."""
        return self.wanted().public_ips()

    def _report_rivalry(self, rivalry: Rivalry) -> None:
        """Name a lease that lost its subnet or VTEP MAC to an older one (once per revision)."""
        self.bad_leases.report(rivalry.key, rivalry.lease.mod_revision, rivalry.reason, rivalry.message)

    # ---- events ----------------------------------------------------------------------------------

    def snapshot(self, leases: dict[str, Lease], now: float) -> Relisted:
        """A listing replaces what we knew. Its leases end the holds of the keys they hold again
        (the resync pass that follows applies them); held keys it lacks stay held until due."""
        self.peers = dict(leases)
        self.listed = True
        ended = []
        for held in [held for held in self.holds if held.key in self.peers]:
            self.holds.take(held.key)
            lease = self.peers[held.key]
            end = HoldEnd.RETURNED if same_entries(held.lease, lease) else HoldEnd.REPLACED
            ended.append(HoldEnded(held, end, lease))
        return Relisted(ended, self.lease is not None and self.own_key() not in self.peers)

    def first_listing(self, listing: tuple[list[Lease], int] | None) -> None:
        """Know the peers before the first pass, from the listing our lease was chosen from: the
        firewall's allowlist is then exact before the device is created (nothing from a non-peer
        is accepted on a fresh start), and on a restart it replaces the live one without dropping
        a peer."""
        if listing is not None:
            self.peers = {lease.key: lease for lease in listing[0]}
            self.listed = True

    def on_event(self, event: LeaseEvent, received: float) -> PeerUpdate:
        """Take one watch event in; the change it wants written, if any. A deleted peer's entries
        are held: they stay until the hold runs out (``release``) unless its lease comes back."""
        old = self.peers.get(event.key)
        if event.key == self.own_key():
            unsafe = event.lease is not None and not self.verdict(event.key, event.lease).safe
            if event.kind == "delete" or unsafe:
                return OwnKeyLost(f"key {event.kind} seen on the watch")
            if event.lease is not None:
                self.peers[event.key] = event.lease
            return Unchanged()
        held: HeldPeer | None = None
        if event.kind == "delete" or event.lease is None:
            self.peers.pop(event.key, None)
            if old is not None and self.holds.seconds and self.is_peer(event.key, old):
                self.holds.hold(event.key, old, received)  # its entries stay meanwhile
                return Held(event.key)
        else:
            self.peers[event.key] = event.lease
            held = self.holds.take(event.key)
            if held is not None:
                old = held.lease
        return self.change(event.key, old, self.peers.get(event.key), held)

    def release(self, now: float) -> list[HeldPeer]:
        """The holds that ran out by ``now``; pass each to ``change`` with no new lease."""
        return self.holds.due(now)

    def change(
        self, key: str, old: Lease | None, new: Lease | None, held: HeldPeer | None = None
    ) -> PeerChange:
        """Make ``key``'s wanted entries ``new``'s instead of ``old``'s, and say what to write.
        ``desired`` is updated now, before the write, so the monitor knows the echoes for ours."""
        was_peer = old is not None and self.is_peer(key, old)
        now_peer = new is not None and self.is_peer(key, new)
        diff = self.wanted().set_peer(key, new if now_peer else None)
        self.programmed.discard(key)
        end = None
        if held is not None:
            same = new is not None and now_peer and same_entries(held.lease, new)
            end = HoldEnd.REMOVED if new is None else HoldEnd.RETURNED if same else HoldEnd.REPLACED
        return PeerChange(key, old, new, was_peer, now_peer, diff, held, end)

    def settled(self, change: PeerChange, written: bool) -> None:
        """Record how ``change`` went: programmed if written (unless a rival kept it out); a
        departed lease's verdict goes with it."""
        if written and change.new is not None and change.key in self.desired.programmed_keys():
            self.programmed.add(change.key)
        if change.new is None:
            self.verdicts.forget(change.key)

    def safe_peers(self) -> dict[str, Lease]:
        """Every live lease but ours that is safe to act on, by key: what a backend's per-peer
        work outside kernel entries is handed (``Backend.peer_actions``)."""
        own = self.own_key()
        peers = self.peers.items()
        return {key: lease for key, lease in peers if key != own and self.verdict(key, lease).safe}

    def others(self) -> list[Lease]:
        """Every live lease but ours."""
        own = self.own_key()
        return [lease for key, lease in self.peers.items() if key != own]

    def own_key(self) -> str:
        """Our lease's key, formatted once per lease: an IPv6 one took ~3 us, and every event asks."""
        assert self.lease is not None
        if self._own_key[0] is not self.lease:
            self._own_key = (self.lease, self.lease.key)
        return self._own_key[1]
