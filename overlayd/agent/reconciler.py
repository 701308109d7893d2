"""The only writer of kernel state: one peer's change applied directly, and the full pass.

A peer change (``PeerChange``, from ``peerstate``) is three netlink writes in one batch, with the
firewall's allowlist opened before and closed after, so no first packet is dropped. The full
pass dumps, diffs and repairs in steps that each run whatever another did: firewall first (on a
fresh start its ingress allowlist exists before the device does), device, entries, then subnet.env
and the diagnostics. A failed step is counted, logged when it starts and stops failing, and
retried on the next pass.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address

from overlayd.agent.drops import DropWatch, warn_of_flanneld
from overlayd.agent.events import Trigger
from overlayd.agent.firewallspec import firewall_spec
from overlayd.agent.holddown import HeldPeer, HoldEnd
from overlayd.agent.hostfiles import SubnetFile, SubnetFileError
from overlayd.agent.metrics import Metrics
from overlayd.agent.passtimer import EntryDumps
from overlayd.agent.peerlog import PeerChange as Logged
from overlayd.agent.peerlog import PeerLogBudget
from overlayd.agent.peerstate import Held, HoldEnded, OwnKeyLost, PeerChange, PeerState
from overlayd.backend.api import ApplyError, Backend, DeviceState, HostFacts, UnderlayIngress
from overlayd.backend.blackhole import BlackholeRoute
from overlayd.backend.plane import Plane, PlaneDiff, diff_planes, without_overwritten
from overlayd.base.outage import Outage
from overlayd.etcd.peerwatch import PeerEvents
from overlayd.netfilter.firewall import Firewall
from overlayd.netfilter.rules import FirewallSpec
from overlayd.options import AgentOptions
from overlayd.subnet.config import NetworkConfig
from overlayd.subnet.lease import Lease
from overlayd.subnet.subnetenv import SubnetEnv

log = logging.getLogger(__name__)

STEPS = ("firewall", "device", "entries", "blackhole")


@dataclass(frozen=True)
class PassOutcome:
    """How a full pass went: the steps that failed; ``error``: subnet.env could not be written
    (not ready, for that reason); ``completed`` False: it failed unexpectedly (logged)."""

    failed: tuple[str, ...] = ()
    error: str = ""
    completed: bool = True


def _public_ips(plane: Plane) -> set[IPv4Address]:
    """The PublicIPs that ``plane``'s FDB entries, direct routes and WireGuard peers send to."""
    sent = {fdb.dst for fdb in plane.fdbs} | {route.gateway for route in plane.direct}
    return sent | {peer.dst for peer in plane.peers}


class Reconciler:
    """Writes what ``state`` wants into the kernel through the backend seam; ``backend``,
    ``host`` and ``monitor_alive`` are set by the agent once known."""

    def __init__(self, options: AgentOptions, metrics: Metrics, state: PeerState, firewall: Firewall) -> None:
        self.options, self.metrics, self.state, self.firewall = options, metrics, state, firewall
        self.backend: Backend | None = None
        self.host: HostFacts | None = None
        self.device: DeviceState | None = None
        self.monitor_alive: Callable[[], bool] = lambda: False
        self._ipv6_noted: Lease | None = None  # the lease whose IPv6 half the metrics show
        self.writing = threading.Lock()  # held while writing entries; the monitor reads after
        self.in_sync: tuple[Plane, Plane] | None = None  # a (desired, kernel) pair last found equal
        self.entry_dumps = EntryDumps()  # which full passes dump every entry
        self.failing_entries: frozenset[str] = frozenset()  # the peer entries the kernel last refused
        self.step_checks = {
            step: Outage(log, f"full pass: {step} step failed", logging.ERROR) for step in STEPS
        }
        self.subnet_file = SubnetFile(options.subnet_file)
        self.drops = DropWatch(firewall, metrics)
        self.blackhole = BlackholeRoute()
        self.blackhole_cleared = False  # option off: a previous run's route looked for (once)
        self.flanneld_checked = False  # looked once, after the first programming, for a flanneld
        self.peer_log = PeerLogBudget()  # a lease flood is summed up, not logged line by line

    # ---- one peer --------------------------------------------------------------------------------

    def apply_events(self, item: PeerEvents, own_key_lost: Callable[[str], None]) -> bool:
        """Fast path: program each changed peer directly; our own key's loss goes to
        ``own_key_lost`` at once. Returns True if a full pass is needed."""
        needs_full = False
        peers_changed = False
        for event in item.events:
            match self.state.on_event(event, item.received):
                case OwnKeyLost(why=why):
                    own_key_lost(why)
                    continue
                case PeerChange() as change:
                    needs_full |= not self._write(
                        change, "fast path for %s failed (%s); running a full reconcile"
                    )
                case Held():
                    pass
                case _:  # our own key, written again
                    continue
            peers_changed = True
            self.metrics.peer_events.labels(kind=event.kind).inc()
            # From the watch thread's receipt, so time spent queued behind other work counts.
            self.metrics.event_seconds.observe(time.monotonic() - item.received)
        if peers_changed:
            self._sync_peer_actions()
        return needs_full

    def _sync_peer_actions(self) -> None:
        """Hand the backend's per-peer work outside kernel entries, if it has any, every safe
        peer (it works in the background); not before the first listing, which would be none."""
        actions = self.backend.peer_actions() if self.backend is not None else None
        if actions is not None and self.state.listed:
            actions.sync(self.state.safe_peers())

    def release_holds(self, now: float) -> bool:
        """Remove the entries of held peers whose hold-down ran out by ``now`` and whose lease
        did not return. Returns True if a full pass is needed (a netlink write failed)."""
        needs_full = False
        for held in self.state.release(now):
            change = self.state.change(held.key, held.lease, None, held)
            needs_full |= not self._write(
                change, "removing held peer %s failed (%s); running a full reconcile"
            )
        return needs_full

    def _write(self, change: PeerChange, failed: str) -> bool:
        """Write one peer's change; False (logged with ``failed``) if the kernel refused."""
        try:
            self.apply_change(change)
            written = True
        except Exception as exc:  # any netlink failure: the full pass will sort it out
            log.warning(failed, change.key, exc)
            written = False
        self.state.settled(change, written)
        return written

    def apply_change(self, change: PeerChange) -> None:
        """Write ``change``; raises on a netlink failure (a full pass then sorts it out)."""
        assert self.backend is not None and self.device is not None
        diff, allowlist = change.diff, self._allowlist_on()
        if not diff.empty:
            # By the diff, not the lease: a lease that lost a rivalry gets no entries and may not
            # send us overlay traffic, and the one that takes over from a departed rival may.
            if allowlist:  # before its entries: no first packet dropped
                for ip in _public_ips(diff.add):
                    self.firewall.allow_peer(ip)
            with self.writing:
                self.backend.apply(self.device, without_overwritten(diff))
        # Logged once the kernel has the entries: formatting and writing the line is a tenth
        # of a millisecond that the event's latency need not include.
        self._log_change(change)
        for gone_ip in _public_ips(diff.remove) if allowlist else ():
            if not self.state.desired.wants_public_ip(gone_ip):
                self.firewall.disallow_peer(gone_ip)

    def _allowlist_on(self) -> bool:
        """Whether peers' PublicIPs are let in one by one: asked, and the backend has ingress."""
        config = self.state.config
        assert self.backend is not None and config is not None
        return self.options.vxlan_ingress_allowlist and self.backend.underlay_ingress(config) is not None

    def _log_change(self, change: PeerChange) -> None:
        new, old = change.new, change.old
        if change.held is not None and change.hold_end is not None:
            self.hold_ended(change.held, change.hold_end, new, time.monotonic())
        elif change.diff.empty:
            return
        elif new is not None and change.is_peer:
            kind = Logged.CHANGED if old is not None and change.was_peer else Logged.ADDED
            shown = new.attrs.vtep_mac or new.attrs.vtep_mac_v6
            mac = f" (MAC {shown})" if shown else ""
            self._log_peer(kind, "peer %s at %s%s", new.own_subnet, new.public_address, mac)
        elif old is not None:
            self._log_peer(Logged.REMOVED, "peer %s at %s removed", old.own_subnet, old.public_address)

    def relisted(self, ended: list[HoldEnded]) -> None:
        """Count and log the holds a re-list ended."""
        for one in ended:
            self.hold_ended(one.held, one.end, one.lease, time.monotonic())

    def hold_ended(self, held: HeldPeer, end: HoldEnd, lease: Lease | None, now: float) -> None:
        """Count and log how a hold ended."""
        self.metrics.peer_holds.labels(outcome=end.value).inc()
        self.metrics.peers_held.set(len(self.state.holds))
        after = f"{(now - held.deleted_at) * 1000:.0f} ms after its lease was deleted"
        subnet, ip = held.lease.own_subnet, held.lease.public_address
        if end is HoldEnd.RETURNED:
            self._log_peer(
                Logged.RETURNED, "peer %s at %s returned %s; its entries were kept", subnet, ip, after
            )
        elif end is HoldEnd.REPLACED and lease is not None:
            attrs = lease.attrs
            self._log_peer(
                Logged.CHANGED, "peer %s at %s (MAC %s) replaces the one held at %s (MAC %s), %s",
                subnet, attrs.public_ip, attrs.vtep_mac, ip, held.lease.attrs.vtep_mac, after,
            )  # fmt: skip
        else:
            self._log_peer(Logged.REMOVED, "peer %s at %s removed, %s (hold-down %.1f s)",
                           subnet, ip, after, self.state.holds.seconds)  # fmt: skip

    def _log_peer(self, change: Logged, message: str, *args: object) -> None:
        """One INFO line for a peer change while the budget allows; counted for a summary else."""
        if self.peer_log.admit(change, time.monotonic()):
            log.info(message, *args)

    def log_summary(self, now: float) -> None:
        if (summary := self.peer_log.summary(now)) is not None:
            log.info("%s", summary.line())

    # ---- the full pass ---------------------------------------------------------------------------

    def full_pass(self, trigger: Trigger) -> PassOutcome:
        """Dump, diff and repair firewall, device, entries, blackhole route and subnet.env; never raises."""
        state = self.state
        config, lease = state.config, state.lease
        backend, host = self.backend, self.host
        assert backend is not None and host is not None
        assert config is not None and lease is not None
        started = time.monotonic()
        self.metrics.reconciles.labels(trigger=trigger.value).inc()
        try:
            fw_spec = self._firewall_spec(backend.underlay_ingress(config))
            failed = tuple(step for step, run in (
                ("firewall", lambda: self._ensure_firewall(trigger, fw_spec)),
                ("device", lambda: self._ensure_device(trigger, backend, host)),
                ("entries", lambda: self._ensure_entries(trigger)),
                ("blackhole", lambda: self._ensure_blackhole(trigger)),
            ) if not self._run_step(step, run))  # fmt: skip
            mtu = backend.container_mtu(config, host.external_mtu)
            if self.subnet_file.write(SubnetEnv.of(config, lease, mtu, self.options.ip_masq)):
                self._count_repair(trigger, "subnet_env", "fix")
            self._note_ipv6_half(config, lease)
            guarded, sources = fw_spec.guarded, fw_spec.ingress_sources
            if "firewall" not in failed and guarded is not None and sources is not None:
                self.drops.notice_drops(sources, guarded.port)
            if failed:
                self.metrics.reconcile_errors.inc()
            else:
                self.metrics.last_reconcile.set(time.time())
            if trigger is Trigger.RESYNC and not self.flanneld_checked:
                self.flanneld_checked = True  # not before: a /proc walk is no part of a cold start
                warn_of_flanneld()
            return PassOutcome(failed)
        except SubnetFileError as exc:  # the kernel's side is done; containers cannot start
            self.metrics.reconcile_errors.inc()
            self.subnet_file.failed(exc)
            return PassOutcome(error=str(exc))
        except Exception as exc:  # keep serving: the next trigger retries
            self.metrics.reconcile_errors.inc()
            log.exception("reconcile (%s) failed: %s", trigger.value, exc)
            return PassOutcome(completed=False)
        finally:
            self.metrics.reconcile_seconds.observe(time.monotonic() - started)

    def _run_step(self, step: str, run: Callable[[], object]) -> bool:
        """Run one step of the full pass; False (counted, logged when it starts failing) if it failed."""
        check = self.step_checks[step]
        try:
            run()
        except Exception as exc:
            self.metrics.pass_step_failures.labels(step=step).inc()
            check.failed(exc, "; the rest of the pass goes on, and the next pass retries it")
            return False
        check.succeeded()
        return True

    def _firewall_spec(self, ingress: UnderlayIngress | None) -> FirewallSpec:
        config, lease = self.state.config, self.state.lease
        assert config is not None and lease is not None
        peer_sources = self.state.peer_ips if self.state.listed else None
        sealed = self.host.external_ifname if ingress and ingress.sealed and self.host else None
        return firewall_spec(config, lease, self.options, ingress, peer_sources, sealed)

    def _ensure_firewall(self, trigger: Trigger, fw_spec: FirewallSpec) -> None:
        if self.firewall.ensure(fw_spec):
            log.info("firewall rules written for %s", fw_spec.network or fw_spec.ipv6_network)
            self._count_repair(trigger, "firewall", "fix")

    def _note_ipv6_half(self, config: NetworkConfig, lease: Lease) -> None:
        """Export our lease's IPv6 half (none: IPv4 only) when the lease changed."""
        if lease is self._ipv6_noted:
            return
        self._ipv6_noted = lease
        subnet, attrs = lease.ipv6_subnet, lease.attrs
        network = str(config.ipv6.network) if config.ipv6 else ""
        self.metrics.set_lease_ipv6_info(str(subnet or ""), str(attrs.public_ipv6 or ""),
                                         attrs.vtep_mac_v6 or "", network if subnet else "")  # fmt: skip

    def ipv6_device(self) -> tuple[str, int] | None:
        """The IPv6 device of a dual-stack network and its index, once ensured (the monitor's
        thread asks; the names come from the config in force)."""
        device, backend, config = self.device, self.backend, self.state.config
        if device is None or not device.ipv6_ifindex or backend is None or config is None:
            return None
        names = backend.device_names(config)
        return (names[1], device.ipv6_ifindex) if len(names) > 1 else None

    def _ensure_blackhole(self, trigger: Trigger) -> None:
        config, lease = self.state.config, self.state.lease
        assert config is not None and lease is not None
        on = self.options.ip_blackhole_route
        if not on and self.blackhole_cleared:
            return
        halves = ((config.ipv4, lease.subnet), (config.ipv6, lease.ipv6_subnet))  # one route per family
        for pool, subnet in halves:
            if pool is not None and self.blackhole.ensure(pool.network, subnet if on else None):
                self._count_repair(trigger, "blackhole_route", "fix")
        self.blackhole_cleared = not on

    def _ensure_device(self, trigger: Trigger, backend: Backend, host: HostFacts) -> None:
        config, lease = self.state.config, self.state.lease
        assert config is not None and lease is not None
        self.device, actions = backend.ensure(config, lease, host)  # the backend logs each action
        self._count_repair(trigger, "device", "fix", len(actions))

    def _ensure_entries(self, trigger: Trigger) -> None:
        # Until the first peer listing the kernel's entries (a previous run's) stay as they are:
        # diffing against an empty peer set would remove them all and drop traffic on restart.
        self._sync_peer_actions()  # a backend's own work waits for its device itself
        if self.device is None:
            return  # the device step failed: counted there
        if self.state.listed and self.entry_dumps.due(trigger is Trigger.TIMER, self._drift_reported()):
            try:
                self.reconcile_entries(trigger)
            except ApplyError as exc:  # some peers' entries: the others were applied
                self._entries_refused(exc)
                return
            self._entries_refused(None)

    def _entries_refused(self, exc: ApplyError | None) -> None:
        """Count the peer entries the kernel refused this pass; log each when it starts and stops."""
        failing = frozenset(exc.failures if exc is not None else ())
        if exc is not None:
            self.metrics.entry_failures.inc(len(failing))
        if new := failing - self.failing_entries:
            log.error(
                "the kernel refused %d peer entries (%s); the other peers, firewall and subnet.env are "
                "kept up to date, and these are retried on every pass", len(new), "; ".join(sorted(new)),
            )  # fmt: skip
        if failing != self.failing_entries and not failing:
            log.info("every peer entry is programmed again")
        self.failing_entries = failing
        self.metrics.entries_failing.set(len(failing))

    def reconcile_entries(self, trigger: Trigger) -> None:
        """Dump the device's neighbour, FDB and route entries and make them the peers' ones."""
        config = self.state.config
        assert self.backend is not None and self.device is not None and config is not None
        desired = self.state.wanted()
        wanted = desired.plane()  # the same object while no peer's entries changed
        actual = self.backend.read_entries(self.device, config.ipv4.network if config.ipv4 else None)  # type: ignore[arg-type]
        synced = self.in_sync
        if synced is None or synced[0] is not wanted or synced[1] is not actual:
            diff = diff_planes(wanted, actual)
            if diff.empty:
                self.in_sync = (wanted, actual)
            else:
                self._log_diff(diff, trigger)
                self.state.programmed = set(desired.programmed_keys())
                with self.writing:
                    self.backend.apply(self.device, diff)
        self.state.programmed = set(desired.programmed_keys())

    def _drift_reported(self) -> bool:
        """Whether the netlink monitor would report any drift in the entries since the last pass
        that found them as wanted, so a timer pass may skip its dump: it runs, nothing we want
        changed since (a config change rebuilds what we want), and no direct route is kept: the
        kernel drops those with an underlay flap without a message, and they live off our device."""
        config = self.state.config
        assert config is not None and self.backend is not None and self.host is not None
        if not self.monitor_alive() or self.backend.reached_directly(config, self.host) is not None:
            return False
        return self.in_sync is not None and self.in_sync[0] is self.state.plane()

    def _count_repair(self, trigger: Trigger, kind: str, action: str, count: int = 1) -> None:
        """Count drift fixed by a timer or netlink pass; other passes program, they do not repair."""
        if count and trigger.repairs:
            self.metrics.repairs.labels(kind=kind, action=action).inc(count)

    def _log_diff(self, diff: PlaneDiff, trigger: Trigger) -> None:
        for action, plane in (("add", diff.add), ("remove", diff.remove)):
            kinds = (("neigh", plane.neighs), ("fdb", plane.fdbs), ("route", plane.routes),
                     ("direct_route", plane.direct), ("wireguard_peer", plane.peers))  # fmt: skip
            for kind, entries in kinds:
                if entries:
                    self._count_repair(trigger, kind, action, len(entries))
                    level = logging.WARNING if trigger.repairs else logging.INFO
                    log.log(level, "%s pass: %s %d %s entries", trigger.value, action, len(entries), kind)
