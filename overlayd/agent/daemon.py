"""The agent's lifecycle: options → interface → config → lease → device → rules → subnet.env → loop.

One thread (the caller of ``Agent.run``) owns all mutable state and every kernel write. The etcd
watch, the netlink monitor and the timers only put items on ``self.events``; the loop drains the
queue and coalesces what it finds into at most one full reconcile per batch. A peer event is
applied directly (three netlink writes, no dump) because that is the path that must be fast; a
full dump-and-diff repairs everything else, so a missed event costs at most one resync interval
(two while peer events keep coming: a due timer pass waits for a pause in them, ``passtimer``).
SIGTERM leaves the device, routes, rules and the lease in place so a restart drops no traffic.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path
from typing import TypeVar

from overlayd.agent.heap import HeapKeeper
from overlayd.agent.holddown import HeldPeer, HoldDown, HoldEnd, same_entries
from overlayd.agent.hostguard import NetworkClaim, NetworkClaimed, claim_name, claim_network
from overlayd.agent.instancelock import InstanceLocked, UnsafeStateDir, hold_instance_lock
from overlayd.agent.metrics import Metrics, MetricsServer, listen_addresses
from overlayd.agent.passtimer import EntryDumps, PassTimer
from overlayd.agent.peerlog import PeerChange, PeerLogBudget
from overlayd.agent.sdnotify import Notifier
from overlayd.agent.statedump import AgentState, install_signal_handlers, lease_expires_in
from overlayd.agent.subnethistory import load_history, remember, save_history
from overlayd.backend.desired import (
    DesiredEntries,
    Plane,
    PlaneDiff,
    Rivalry,
    diff_planes,
    is_vxlan_peer,
    reached_directly,
    without_overwritten,
)
from overlayd.backend.flanneldproc import flanneld_pids
from overlayd.backend.iface import ExternalInterface, InterfaceError, select_interface
from overlayd.backend.monitor import DeviceChange, NetlinkMonitor, is_echo
from overlayd.backend.vxlan.device import ApplyError, DeviceSpec, DeviceState, DirectRoutes, VxlanBackend
from overlayd.backend.vxlan.mac import load_or_create_mac
from overlayd.base.atomicfile import write_atomic
from overlayd.base.backoff import Backoff
from overlayd.base.outage import Outage
from overlayd.etcd.leasing import AcquireError, LeaseManager
from overlayd.etcd.peerwatch import PeerEvents, PeerSnapshot, PeerWatchDown, PeerWatcher
from overlayd.etcd.registry import Registry, RegistryError
from overlayd.netfilter.dropnotice import DropNotice, warning
from overlayd.netfilter.firewall import Firewall, FirewallError, FirewallSpec
from overlayd.options import AgentOptions
from overlayd.subnet.allocate import OutOfSubnets
from overlayd.subnet.confchange import (
    ConfigAction,
    ConfigDecision,
    clear_message,
    decide,
    hold_message,
    hold_reason,
)
from overlayd.subnet.config import ConfigError, NetworkConfig, parse_network_config
from overlayd.subnet.lease import Lease, LeaseAttrs, lease_vni
from overlayd.subnet.leasecheck import BadLeaseLog, Underlay, lease_problem
from overlayd.subnet.subnetenv import SubnetEnv, previous_subnet

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_BACKOFF = 30.0
# Seconds from a change on our device that someone else made to the full pass that repairs it:
# one pass covers a burst. Peer events are applied meanwhile; only the pass waits.
NETLINK_DEBOUNCE = 0.2
RESTART_EXIT_CODE = 75  # EX_TEMPFAIL: systemd's Restart=on-failure brings us back with the new VNI
# Seconds between etcd lease time-to-live checks on the timer. The peer watch already reports our
# key's deletion (an expired or revoked etcd lease deletes it); this only backs the watch up, so
# it need not cost an etcd round trip on every pass.
LEASE_CHECK_INTERVAL = 60.0
# Passes that find drift someone else caused; at start, after a lease change or a re-list, the
# differences found are our own first programming, not repairs.
DRIFT_TRIGGERS = ("timer", "netlink", "sighup")


@dataclass(frozen=True)
class _Tick:
    """Wakes the loop (on stop) without being an event to handle."""


@dataclass(frozen=True)
class _Recheck:
    """SIGHUP: check the config, the lease and the kernel now instead of at the next timer pass.

    Operators and tools send HUP expecting a reload; left at its default it would end the agent
    with a status systemd counts as clean, so Restart=on-failure would not bring it back.
    """


class StartError(RuntimeError):
    """A start-up step that retrying cannot fix; the message names the option and the fix.

    Exit code 2 (a configuration error, which the unit does not restart) unless the cause may
    pass by itself, such as a full disk.
    """

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# Errors of a path that a restart cannot fix: the option must change (or the directory's mode).
_PATH_CONFIG_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR})


class SubnetFileError(OSError):
    """subnet.env cannot be written; the message names --subnet-file and the fix."""


def _state_dir_error(state_dir: Path, exc: OSError) -> StartError:
    return StartError(
        f"--state-dir {state_dir}: cannot keep state there ({exc.strerror}: {exc.filename}); "
        "give a writable directory (the systemd unit allows /var/lib/overlayd)",
        2 if exc.errno in _PATH_CONFIG_ERRNOS else 1,
    )


def _public_ips(plane: Plane) -> set[IPv4Address]:
    """The PublicIPs that ``plane``'s FDB entries and direct routes send to."""
    return {fdb.dst for fdb in plane.fdbs} | {route.gateway for route in plane.direct}


class Agent:
    """One host's overlay agent; see the module docstring for the threading model."""

    def __init__(self, options: AgentOptions) -> None:
        self.options = options
        self.events: queue.Queue[object] = queue.Queue()
        self.stopping = threading.Event()
        self.metrics = Metrics()
        self.notifier = Notifier()
        self.registry: Registry | None = None
        self.backend: VxlanBackend | None = None
        self.firewall = Firewall()
        self.external: ExternalInterface | None = None
        self.public_ip: IPv4Address | None = None
        self.underlay: Underlay | None = None  # our addresses, which no peer's PublicIP may be
        self.config: NetworkConfig | None = None
        self.lease: Lease | None = None
        self.lease_manager: LeaseManager | None = None
        self.vtep_mac = ""
        self.device: DeviceState | None = None
        self.peers: dict[str, Lease] = {}
        self.programmed: set[str] = set()  # keys of peers whose entries are in the kernel
        # Deleted peers whose entries stay a moment, in case the lease returns (holddown.py);
        # never in ``peers``, always in ``desired``.
        self.holds = HoldDown()
        self.peer_log = PeerLogBudget()  # a lease flood is summed up, not logged line by line
        # Every entry we want on the device, updated by the fast path before it writes and
        # synced with ``peers`` by ``_desired``; the netlink monitor's thread reads it
        # (``wants`` only) to drop the echoes of our own writes.
        self.desired = DesiredEntries()
        # What ``desired`` was derived for: (config, own lease) and the peers dict it last
        # matched; a re-list replaces ``peers`` and so marks it for a sync.
        self.desired_basis: tuple[NetworkConfig | None, Lease | None] = (None, None)
        self.desired_synced_with: dict[str, Lease] | None = None
        self.writing = threading.Lock()  # held while writing entries; netmon reads after (netmon.py)
        # Memos for the full pass, which at 1000 peers would otherwise spend most of an idle
        # pass re-deriving answers from unchanged leases (docs/benchmarks.md, idle cost):
        # lease key -> (lease object, safe?, a peer we program?), for one (config, own lease) ...
        self.safety: dict[str, tuple[Lease, bool, bool]] = {}
        self.safety_basis: tuple[NetworkConfig | None, Lease | None] = (None, None)
        # ... and a (desired, kernel) pair of Plane objects last found equal.
        self.in_sync: tuple[Plane, Plane] | None = None
        self.peers_listed = False  # a first listing arrived: the VXLAN allowlist is known
        self.first_listing: tuple[list[Lease], int] | None = None  # the lease's; the watch starts there
        self.flanneld_checked = False  # looked once, after the first programming, for a flanneld
        self.drop_notice = DropNotice()
        self.bad_leases = BadLeaseLog(lambda reason: self.metrics.bad_leases.labels(reason=reason).inc())
        self.renew_at = 0.0
        self.lease_checked_at = 0.0  # monotonic time of the last time-to-live check
        self.watcher: PeerWatcher | None = None
        self.heap = HeapKeeper()  # full garbage collections at quiet moments, not mid-burst
        self.monitor: NetlinkMonitor | None = None
        self.entry_dumps = EntryDumps()  # which full passes dump every entry
        self.http: list[MetricsServer] = []
        self.exit_code = 0
        self.lock_fd: int | None = None  # the state directory's lock, held while running
        self.network_claim: NetworkClaim | None = None  # this network's claim on the host (hostguard)
        # Checked every pass: while etcd is down, log when each starts and stops failing, once.
        self.lease_check = Outage(log, "could not check our lease")
        self.config_check = Outage(log, "could not re-read the network config", logging.ERROR)
        self.subnet_file_check = Outage(log, "could not write subnet.env", logging.ERROR)
        self.drops_check = Outage(log, "could not read the VXLAN sources the allowlist dropped")
        # The full pass's steps, each retried on the next pass without holding up the others.
        self.step_checks = {
            step: Outage(log, f"full pass: {step} step failed", logging.ERROR)
            for step in ("firewall", "device", "entries")
        }
        self.failing_entries: frozenset[str] = frozenset()  # the peer entries the kernel last refused
        self.config_raw: bytes | None = None  # the network config in force, as stored
        self.stored_raw: bytes | None = None  # the network config last read, as stored
        # While the stored config would renumber live leases: the verdict that keeps ours in force.
        self.config_hold: ConfigDecision | None = None
        self.subnet_history: list[IPv4Network] = []  # subnets held before, newest first (state dir)
        self.lease_expired = ""  # why our lease ran out unrenewed ("" while it holds): not ready

    # ---- lifecycle ---------------------------------------------------------------------------

    def request_stop(self, *_: object) -> None:
        if not self.stopping.is_set():
            self.notifier.stopping()
        self.stopping.set()
        self.events.put(_Tick())

    def run(self) -> int:
        """Start, serve until SIGTERM/SIGINT; returns the process exit code."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.request_stop)
            signal.signal(signal.SIGINT, self.request_stop)
            signal.signal(signal.SIGHUP, lambda *_: self.events.put(_Recheck()))
            # SIGUSR1 logs the state from the handler, which Python runs in this (the loop's)
            # thread between two of its steps; the other stray signals are ignored.
            install_signal_handlers(self._state)
        self._set_health(False, "starting")
        self.heap.start()
        for ignored in self.options.ignored:
            log.info("ignoring flanneld option %s", ignored)
        try:
            self._lock_state_dir()
            if not self._start_http():
                return 1
            if not self._start():
                return 0  # stopped while still starting
            self._loop()
            return self.exit_code
        except StartError as exc:
            log.error("%s", exc)
            return exc.exit_code
        finally:
            self._shutdown()

    def _lock_state_dir(self) -> None:
        """Be the only agent for this state directory, and for this network in this network namespace."""
        state_dir = self.options.state_dir
        try:
            self.lock_fd = hold_instance_lock(state_dir)
        except InstanceLocked as exc:
            raise StartError(
                f"another overlayd (pid {exc.pid or 'unknown'}) runs with --state-dir {state_dir}: two "
                "agents would rewrite each other's firewall and subnet.env; stop that one first "
                "(systemctl stop overlayd)"
            ) from None
        except UnsafeStateDir as exc:
            raise StartError(f"--state-dir {state_dir}: {exc}") from None
        except OSError as exc:
            raise _state_dir_error(state_dir, exc) from None
        prefix = self.options.etcd_prefix
        try:
            self.network_claim = claim_network(prefix, os.geteuid())
        except NetworkClaimed as exc:
            raise StartError(
                f"another overlayd (pid {exc.holder.pid or 'unknown'}) serves --etcd-prefix {prefix} on this "
                f"host (in this network namespace), with another --state-dir: two agents would lease two "
                "subnets for one host and take each other's routes and firewall; stop that one first "
                "(systemctl stop overlayd), or give this one the --etcd-prefix of another network"
            ) from None
        except OSError as exc:
            raise StartError(
                f"cannot claim --etcd-prefix {prefix} for this host (abstract unix socket "
                f"@{claim_name(prefix)}): {exc.strerror}; the agent needs AF_UNIX sockets",
                1,
            ) from None
        if squatter := self.network_claim.squatter:
            log.warning(
                "pid %d (uid %d), not an overlayd agent, holds the abstract socket @%s that keeps a second "
                "agent for --etcd-prefix %s off this host; running without that guard: stop that process",
                squatter.pid, squatter.uid, self.network_claim.name, prefix,
            )  # fmt: skip

    def _state(self) -> AgentState:
        """The state SIGUSR1 logs."""
        [expiry] = self.metrics.lease_expiry.collect()[0].samples
        return AgentState(
            self.options, self.config, self.lease, lease_expires_in(expiry.value),
            len(self.peers), len(self.programmed), self.metrics.health,
        )  # fmt: skip

    def _start_http(self) -> bool:
        """Start the /metrics listeners; False (logged with the address and the fix) if one cannot bind."""
        opts = self.options
        stale_after = max(60.0, 3 * opts.reconcile_interval)
        for address in listen_addresses(opts.metrics_address, opts.healthz_ip, opts.healthz_port):
            try:
                server = MetricsServer(self.metrics, address, stale_after)
            except OSError as exc:
                log.error(
                    "cannot serve metrics on %s port %d: %s; choose a free port with --metrics-address "
                    "(or --metrics-address=off) and --healthz-port",
                    *address, exc.strerror,
                )
                return False
            self.http.append(server)
            server.start()
        return True

    def _wait(self, seconds: float) -> None:
        """Sleep unless asked to stop, still pinging the systemd watchdog: waiting is not hanging."""
        deadline = time.monotonic() + seconds
        while not self.stopping.is_set() and (remaining := deadline - time.monotonic()) > 0:
            self.notifier.watchdog()
            self.stopping.wait(min(remaining, self.notifier.watchdog_interval or remaining))

    def _retry(self, what: str, attempt: Callable[[], T | None], cap: float = MAX_BACKOFF) -> T | None:
        """Call attempt() until it returns non-None, logging each new error once, with backoff.

        Returns None only when asked to stop meanwhile.
        """
        backoff = Backoff(cap=cap)
        last_error = ""
        self._set_health(False, what)
        while not self.stopping.is_set():
            try:
                result = attempt()
                if result is not None:
                    return result
            except (RegistryError, ConfigError, InterfaceError, OutOfSubnets, AcquireError) as exc:
                # Logged once per distinct error; retried quietly (an interface can appear late
                # at boot, etcd can come back, an operator can fix the config). /readyz and the
                # systemd status show each attempt's own wording.
                error = "unreachable" if isinstance(exc, RegistryError) and exc.unreachable else str(exc)
                if error != last_error:
                    log.error("%s: %s; retrying with backoff", what, exc)
                    last_error = error
                self.notifier.status(f"{what}: {exc}")
                self._set_health(False, f"{what}: {exc}")  # /readyz says why, not only what
            delay = backoff.next()
            self.notifier.extend_start(delay + 30.0)  # waiting for etcd or the config is not a hang
            self._wait(delay)
        return None

    def _start(self) -> bool:
        opts = self.options
        choice = opts.interface_choice()
        self.external = self._retry("choosing the external interface", lambda: select_interface(choice))
        if self.external is None:
            return False
        self.public_ip = opts.public_ip or self.external.ip
        log.info(
            "using interface %s (%s), public IP %s", self.external.name, self.external.ip, self.public_ip
        )
        self.registry = Registry(
            opts.etcd_settings(),
            on_error=lambda operation: self.metrics.etcd_errors.labels(operation=operation).inc(),
        )
        self.registry.on_bad_lease = lambda key, revision, exc: self.bad_leases.report(
            key, revision, exc.reason, str(exc)
        )
        self.lease_manager = LeaseManager(
            self.registry,
            self.public_ip,
            ttl=opts.subnet_lease_ttl,
            renew_margin=opts.subnet_lease_renew_margin * 60.0,
        )
        self.backend = VxlanBackend()
        # Poll the config often (as flanneld does, every second or two): an operator is waiting.
        self.config = self._retry("reading the network config", self._read_config, cap=2.0)
        if self.config is None:
            return False
        self.metrics.pool_size.set(self.config.subnet_count)
        self.metrics.config_ok.set(1)
        self.vtep_mac = self._vtep_mac(self.config)
        self.subnet_history = load_history(opts.state_dir)
        if not self._acquire(self._earlier_subnets(previous_subnet(opts.subnet_file))):
            return False
        self.watcher = PeerWatcher(self.registry, self.events, first_listing=self.first_listing)
        self.watcher.start()
        self.monitor = NetlinkMonitor(
            f"flannel.{self.config.backend.vni}",
            lambda: self.device.ifindex if self.device else 0,
            self.events.put,
            self._is_echo,
            self.writing,
        )
        self.monitor.start()
        return True

    def _shutdown(self) -> None:
        """Stop threads and sockets; the kernel state and the etcd lease are deliberately kept."""
        for closer in (
            self.monitor.stop if self.monitor else None,
            self.watcher.stop if self.watcher else None,
            *(server.stop for server in self.http),
            self.registry.close if self.registry else None,
            self.backend.close if self.backend else None,
            self.notifier.close,
            (lambda: os.close(self.lock_fd)) if self.lock_fd is not None else None,
            self.network_claim.close if self.network_claim else None,
        ):
            if closer is not None:
                try:
                    closer()
                except Exception:  # shutting down: report, keep closing the rest
                    log.exception("error while stopping")
        if self.lease is not None:
            log.info("stopped; the VXLAN device, routes, rules and lease are left in place")
        else:
            log.info("stopped (no lease was held)")

    # ---- config, MAC, lease -------------------------------------------------------------------

    def _config_where(self) -> str:
        return f"network config at {self.options.etcd_prefix}/config"

    def _read_config(self) -> NetworkConfig | None:
        assert self.registry is not None
        raw, _revision = self.registry.get_config()
        key = f"{self.options.etcd_prefix}/config"
        if raw is None and self.config_raw is not None:
            # Running: the config in use is the one to put back. An example network here would
            # renumber every node whose subnet it does not hold.
            raise ConfigError(
                f"{self._config_where()} is missing; hosts that start now wait for it (restore the "
                f"one in use with: etcdctl put {key} '{json.dumps(json.loads(self.config_raw))}')"
            )
        if raw is None:
            raise ConfigError(
                f"{self._config_where()} is missing; waiting for it (create it with: etcdctl put "
                f"{key} '{{\"Network\": \"198.18.0.0/16\"}}')"
            )
        config = parse_network_config(raw, where=self._config_where())
        self.stored_raw = raw  # put on one line only if a hint quotes it, not on every re-read
        if self.config is None:
            self.config_raw = raw  # starting: this is the config that goes in force
        return config

    def _device_spec(self, config: NetworkConfig, subnet: IPv4Network | None) -> DeviceSpec:
        assert self.external is not None
        mtu = config.backend.device_mtu(self.external.mtu)
        address = IPv4Interface((subnet.network_address if subnet else 0, 32))
        return DeviceSpec(
            vni=config.backend.vni,
            # The interface's own address, as flanneld does: --public-ip is what peers send to
            # (published in the lease), and behind NAT it is not on this host, so the kernel
            # could not send from it.
            local_ip=self.external.ip,
            underlay_ifname=self.external.name,
            port=config.backend.port,
            gbp=config.backend.gbp,
            mtu=mtu,
            address=address,
            mac=self.vtep_mac,
            learning=config.backend.learning,
        )

    def _vtep_mac(self, config: NetworkConfig) -> str:
        """Our VTEP MAC: a compatible existing device's (e.g. flanneld's), else the persisted one."""
        assert self.backend is not None
        adopt = self.backend.find_compatible_mac(self._device_spec(config, None))
        if adopt:
            log.info("adopting MAC %s of the existing compatible flannel.%d", adopt, config.backend.vni)
        try:
            return load_or_create_mac(self.options.state_dir, config.backend.vni, adopt=adopt)
        except OSError as exc:
            raise _state_dir_error(self.options.state_dir, exc) from None

    def _attrs(self) -> LeaseAttrs:
        assert self.public_ip is not None and self.config is not None
        vni = lease_vni(self.config.backend.vni)
        return LeaseAttrs(public_ip=self.public_ip, vni=vni, vtep_mac=self.vtep_mac)

    def _acquire(self, previous: list[IPv4Network]) -> bool:
        """Get a lease (retrying etcd errors and exhaustion), then program everything for it."""
        assert self.lease_manager is not None and self.config is not None
        config, attrs, manager = self.config, self._attrs(), self.lease_manager
        failures = self.metrics.lease_acquire_failures

        def attempt() -> Lease:
            try:
                return manager.acquire(config, attrs, previous)
            except OutOfSubnets:
                failures.labels(reason="out_of_subnets").inc()
                raise
            except AcquireError:
                failures.labels(reason="contention").inc()
                raise
            except RegistryError:
                failures.labels(reason="etcd").inc()
                raise

        lease = self._retry("acquiring a subnet lease", attempt)
        if lease is None:
            return False
        if self.lease is not None and lease.subnet != self.lease.subnet:
            log.warning("our subnet changed from %s to %s", self.lease.subnet, lease.subnet)
        self.lease = lease
        self.lease_expired = ""
        self.renew_at = manager.renew_at(lease)
        self.metrics.lease_acquisitions.inc()
        self.metrics.set_lease_info(
            str(lease.subnet), str(attrs.public_ip), attrs.vtep_mac or "", str(config.network)
        )
        self._update_expiry()
        log.info("holding subnet %s (key %s)", lease.subnet, lease.key)
        self._remember_subnet(lease.subnet)
        if not self.peers_listed:
            self._take_first_listing()
        self._full_reconcile("lease")
        return True

    def _earlier_subnets(self, latest: IPv4Network | None) -> list[IPv4Network]:
        """The subnets to take back if free, newest first: ``latest`` (ours a moment ago, or
        subnet.env's), then those the state directory remembers from before a renumbering."""
        return [latest, *self.subnet_history] if latest is not None else list(self.subnet_history)

    def _remember_subnet(self, subnet: IPv4Network) -> None:
        """Keep ``subnet`` first in the state directory's history; a failure only costs the
        preference for it after a later renumbering, so it is logged and not fatal."""
        history = remember(self.subnet_history, subnet)
        if history == self.subnet_history:
            return
        try:
            save_history(self.options.state_dir, history)
        except OSError as exc:
            log.warning(
                "cannot remember subnet %s in --state-dir %s (%s); after a renumbering this node may "
                "not take it back", subnet, self.options.state_dir, exc.strerror,
            )
        self.subnet_history = history

    def _take_first_listing(self) -> None:
        """Know the peers before the first pass, from the listing our lease was chosen from: the
        firewall's allowlist is then exact before the device is created (no VXLAN from a non-peer
        is accepted on a fresh start), and on a restart it replaces the live one without dropping
        a peer. The peer watch starts from the same listing."""
        assert self.lease_manager is not None
        listing = self.lease_manager.take_listing()
        if listing is not None:
            self.first_listing = listing
            self.peers = {lease.key: lease for lease in listing[0]}
            self.peers_listed = True

    def _update_expiry(self) -> None:
        assert self.registry is not None and self.lease is not None
        if self.lease.etcd_lease_id:
            try:
                remaining = self.registry.lease_remaining(self.lease)
            except RegistryError:
                return
            if remaining is not None:
                self.metrics.lease_expiry.set(time.time() + remaining)

    def _check_lease(self) -> None:
        """Renew when due; re-acquire if our key or its etcd lease is gone (checked once a minute).

        The peer watch reports our key's deletion at once; this check backs it up.
        """
        assert self.registry is not None and self.lease is not None and self.lease_manager is not None
        if self.lease.etcd_lease_id == 0:
            return  # a reservation: no expiry to manage
        try:
            if time.monotonic() >= self.renew_at:
                renewed = self._renew()
                if renewed is None:
                    self._lease_lost("renewal found our key gone")
                    return
                self.lease, self.lease_expired = renewed, ""
                self.renew_at = self.lease_manager.renew_at(renewed)
                self.metrics.lease_renewals.inc()
                log.info("renewed lease on %s", renewed.subnet)
                self._update_expiry()
            elif time.monotonic() - self.lease_checked_at >= LEASE_CHECK_INTERVAL:
                remaining = self.registry.lease_remaining(self.lease)
                self.lease_checked_at = time.monotonic()
                if remaining is None:
                    self._lease_lost("its etcd lease expired or was revoked")
            self.lease_check.succeeded()
        except RegistryError as exc:
            self.lease_check.failed(exc, f"; will retry (lease {self.lease.key})")
            if self.lease_manager.expired(self.lease):
                # Served from memory no longer: peers have dropped our routes with our key.
                self.lease_expired = (
                    f"lease {self.lease.key} expired while etcd was unreachable ({exc}): peers no longer "
                    "route to this host; it is re-acquired once etcd answers"
                )
                self._set_health(False, self.lease_expired)

    def _renew(self) -> Lease | None:
        """Renew through the lease manager; an etcd error or a vanished key counts as a failure."""
        assert self.lease is not None and self.lease_manager is not None
        try:
            renewed = self.lease_manager.renew(self.lease)
        except RegistryError:
            self.metrics.lease_renewal_failures.inc()
            raise
        if renewed is None:
            self.metrics.lease_renewal_failures.inc()
        return renewed

    def _lease_lost(self, why: str) -> None:
        assert self.lease is not None
        log.warning("lease %s lost (%s); re-acquiring, data path kept meanwhile", self.lease.key, why)
        self._acquire(self._earlier_subnets(self.lease.subnet))

    # ---- the loop -----------------------------------------------------------------------------

    def _loop(self) -> None:
        timer = PassTimer(self.options.reconcile_interval, time.monotonic())
        netlink_pass_at: float | None = None  # a netlink-triggered pass waits for its burst to end
        while not self.stopping.is_set():
            self.notifier.watchdog()
            self.notifier.status(self._status_line())
            now = time.monotonic()
            # Whatever falls due first: the timer's pass, a held peer's removal, a log summary,
            # the netlink pass, the watchdog.
            timeout = min(
                t
                for t in (
                    timer.timeout(now),
                    self.holds.timeout(now),
                    self.peer_log.timeout(now),
                    None if netlink_pass_at is None else max(0.0, netlink_pass_at - now),
                    self.notifier.watchdog_interval,
                )
                if t is not None
            )
            try:
                batch = [self.events.get(timeout=timeout)]
            except queue.Empty:
                batch = []  # something above is due
            batch.extend(self._drain())
            if self.stopping.is_set():
                return
            trigger = self._handle(batch)
            now = time.monotonic()
            if self._release_holds(now):
                trigger = trigger or "event"
            self._log_summary(now)
            if trigger == "netlink":
                netlink_pass_at = netlink_pass_at or now + NETLINK_DEBOUNCE
                trigger = None
            if netlink_pass_at is not None and now >= netlink_pass_at:
                trigger = trigger or "netlink"
            if trigger is not None:
                netlink_pass_at = None  # any full pass covers the netlink one
            if timer.ticked(now):
                self._check_lease()
                self._recheck_config()
            # A held peer's removal is a peer event to come: a due timer pass waits for it too.
            peer_events = bool(self.holds) or any(isinstance(item, PeerEvents) for item in batch)
            if timer.run_pass(now, peer_events, other_pass=trigger is not None):
                self._full_reconcile(trigger or "timer")
                self.heap.on_timer()
            elif trigger:
                self._full_reconcile(trigger)
            self.metrics.health = replace(self.metrics.health, last_loop=time.monotonic())

    def _drain(self) -> list[object]:
        items = []
        while True:
            try:
                items.append(self.events.get_nowait())
            except queue.Empty:
                return items

    def _handle(self, batch: list[object]) -> str | None:
        """Apply a batch of events; returns the trigger of a full reconcile if one is needed."""
        trigger = None
        for item in batch:
            if isinstance(item, PeerSnapshot):
                self.peers = {k: v for k, v in item.leases.items()}
                self.peers_listed = True
                self._end_holds_relisted()
                self.metrics.relists.labels(reason=item.reason).inc()
                self._set_etcd_problem("")
                trigger = "resync"
                if self.lease is not None and self.lease.key not in self.peers:
                    self._lease_lost("our key is missing from etcd")
            elif isinstance(item, PeerEvents):
                self.heap.busy()
                if self._apply_events(item):
                    trigger = trigger or "event"
            elif isinstance(item, PeerWatchDown):
                self.metrics.watch_restarts.inc()
                self._set_etcd_problem(item.error)
            elif isinstance(item, _Recheck):
                log.info("SIGHUP: checking the network config, our lease and the kernel now")
                self._check_lease()
                self._recheck_config()
                trigger = "sighup"
            elif isinstance(item, DeviceChange):
                trigger = trigger or "netlink"
        self._count_peers()
        return trigger

    def _set_etcd_problem(self, problem: str) -> None:
        """Record whether the peer watch reaches etcd ("" when it does), for /readyz and STATUS."""
        self.metrics.watch_up.set(0 if problem else 1)
        self.metrics.health = replace(self.metrics.health, etcd_problem=problem)

    def _count_peers(self) -> None:
        self.metrics.subnet_leases.set(len(self.peers))
        if self.lease is not None and self.config is not None:
            self.metrics.peers_known.set(len(self._desired()))
        self.metrics.peers_programmed.set(len(self.programmed))

    def _status_line(self) -> str:
        """One line for systemd's STATUS: what we hold and how many peers, or what we wait for."""
        health = self.metrics.health
        if self.lease is None or not health.ready:
            return health.reason
        line = f"holding subnet {self.lease.subnet}, {len(self.programmed)} peers"
        if health.etcd_problem:
            line += "; etcd unreachable, data path served from memory"
        if health.config_problem:
            line += f"; {health.config_problem}"
        return line

    def _apply_events(self, item: PeerEvents) -> bool:
        """Fast path: program a changed peer directly. Returns True if a full pass is needed.

        A deleted peer's entries are held (``holddown``): they stay until the hold runs out
        (``_release_holds``), unless a lease for its subnet comes back first."""
        assert self.lease is not None and self.config is not None
        needs_full = False
        for event in item.events:
            old = self.peers.get(event.key)
            if event.key == self.lease.key:
                unsafe = event.lease is not None and not self._is_safe(event.key, event.lease)
                if event.kind == "delete" or unsafe:
                    self._lease_lost(f"key {event.kind} seen on the watch")
                elif event.lease is not None:
                    self.peers[event.key] = event.lease
                continue
            held: HeldPeer | None = None
            if event.kind == "delete" or event.lease is None:
                self.peers.pop(event.key, None)
                if old is not None and self.holds.seconds and self._is_peer(event.key, old):
                    self.holds.hold(event.key, old, item.received)  # its entries stay meanwhile
                    self.metrics.peers_held.set(len(self.holds))
                    self._count_event(event.kind, item.received)
                    continue
            else:
                self.peers[event.key] = event.lease
                held = self.holds.take(event.key)
                if held is not None:
                    old = held.lease
            new = self.peers.get(event.key)
            self.programmed.discard(event.key)
            try:
                self._apply_peer_change(event.key, old, new, held)
                if new is not None and event.key in self.desired.programmed_keys():  # not a rival that lost
                    self.programmed.add(event.key)
            except Exception as exc:  # any netlink failure: the full pass will sort it out
                log.warning("fast path for %s failed (%s); running a full reconcile", event.key, exc)
                needs_full = True
            if new is None:
                self.safety.pop(event.key, None)  # a departed lease's memo goes with it
            self._count_event(event.kind, item.received)
        return needs_full

    def _count_event(self, kind: str, received: float) -> None:
        self.metrics.peer_events.labels(kind=kind).inc()
        # From the watch thread's receipt, so time spent queued behind other work counts.
        self.metrics.event_seconds.observe(time.monotonic() - received)

    def _release_holds(self, now: float) -> bool:
        """Remove the entries of held peers whose hold-down ran out by ``now`` and whose lease
        did not return. Returns True if a full pass is needed (a netlink write failed)."""
        needs_full = False
        for held in self.holds.due(now):  # each sets overlayd_peers_held as it ends
            self.programmed.discard(held.key)
            try:
                self._apply_peer_change(held.key, held.lease, None, held)
            except Exception as exc:  # as on the fast path: the full pass removes them
                log.warning("removing held peer %s failed (%s); running a full reconcile", held.key, exc)
                needs_full = True
            self.safety.pop(held.key, None)
        return needs_full

    def _end_holds_relisted(self) -> None:
        """A re-list's leases end the holds of the keys they hold again; the resync pass that
        follows applies them. Held keys the listing lacks stay held until due."""
        for held in [held for held in self.holds if held.key in self.peers]:
            self.holds.take(held.key)
            lease = self.peers[held.key]
            end = HoldEnd.RETURNED if same_entries(held.lease, lease) else HoldEnd.REPLACED
            self._end_hold(held, end, lease, time.monotonic())
        self.metrics.peers_held.set(len(self.holds))

    def _end_hold(self, held: HeldPeer, end: HoldEnd, lease: Lease | None, now: float) -> None:
        """Count and log how a hold ended."""
        self.metrics.peer_holds.labels(outcome=end.value).inc()
        after = f"{(now - held.deleted_at) * 1000:.0f} ms after its lease was deleted"
        subnet, ip = held.lease.subnet, held.lease.attrs.public_ip
        if end is HoldEnd.RETURNED:
            self._log_peer(PeerChange.RETURNED, "peer %s at %s returned %s; its entries were kept",
                           subnet, ip, after)  # fmt: skip
        elif end is HoldEnd.REPLACED and lease is not None:
            self._log_peer(
                PeerChange.CHANGED, "peer %s at %s (MAC %s) replaces the one held at %s (MAC %s), %s",
                subnet, lease.attrs.public_ip, lease.attrs.vtep_mac, ip, held.lease.attrs.vtep_mac, after,
            )  # fmt: skip
        else:
            self._log_peer(PeerChange.REMOVED, "peer %s at %s removed, %s (hold-down %.1f s)",
                           subnet, ip, after, self.holds.seconds)  # fmt: skip

    def _log_peer(self, change: PeerChange, message: str, *args: object) -> None:
        """One INFO line for a peer change while the budget allows; counted for a summary else."""
        if self.peer_log.admit(change, time.monotonic()):
            log.info(message, *args)

    def _log_summary(self, now: float) -> None:
        if (summary := self.peer_log.summary(now)) is not None:
            log.info("%s", summary.line())

    def _is_safe(self, key: str, lease: Lease) -> bool:
        """False for a lease outside the Network or claiming our subnet (reported once, counted)."""
        return self._classify(key, lease)[1]

    def _is_peer(self, key: str, lease: Lease) -> bool:
        """A lease we program: a safe VXLAN peer on our VNI."""
        return self._classify(key, lease)[2]

    def _classify(self, key: str, lease: Lease) -> tuple[Lease, bool, bool]:
        """(lease, safe?, peer?) of ``lease`` at ``key``, memoised per lease object: a full pass
        asks about every lease several times, and the answers change only with the lease, the
        config or our own lease. Callers pass the key they hold; ``lease.key`` formats it anew."""
        assert self.config is not None and self.lease is not None
        if self.safety_basis[0] is not self.config or self.safety_basis[1] is not self.lease:
            self.safety, self.safety_basis = {}, (self.config, self.lease)
        known = self.safety.get(key)
        if known is not None and known[0] is lease:
            return known
        problem = lease_problem(lease, self.config, self.lease, self._underlay())
        if problem is not None:
            self.bad_leases.report(key, lease.mod_revision, problem.reason, problem.message)
        vni, own_ip = self.config.backend.vni, self.lease.attrs.public_ip
        peer = problem is None and is_vxlan_peer(lease, self.lease.subnet, vni, own_ip)
        known = self.safety[key] = (lease, problem is None, peer)
        return known

    def _underlay(self) -> Underlay:
        """The addresses no peer can have: ours, and our segments' broadcast addresses."""
        assert self.external is not None and self.public_ip is not None
        if self.underlay is None:  # the interface is chosen once, at start
            self.underlay = Underlay(frozenset({self.public_ip, self.external.ip}), self.external.segments)
        return self.underlay

    def _report_rivalry(self, rivalry: Rivalry) -> None:
        """Name a lease that lost its subnet or VTEP MAC to an older one (once per revision)."""
        self.bad_leases.report(rivalry.key, rivalry.lease.mod_revision, rivalry.reason, rivalry.message)

    def _peer_ips(self) -> frozenset[IPv4Address]:
        """PublicIPs of the peers we program: the sources allowed to send us VXLAN."""
        return self._desired().public_ips()

    def _apply_peer_change(
        self, key: str, old: Lease | None, new: Lease | None, held: HeldPeer | None = None
    ) -> None:
        """Make ``key``'s entries ``new``'s instead of ``old``'s; ``held``: ``old`` was held
        after its deletion, and this ends the hold (``new`` is back, or None: the hold ran out)."""
        assert self.backend is not None and self.device is not None
        was_peer = old is not None and self._is_peer(key, old)
        is_peer = new is not None and self._is_peer(key, new)
        # Updated before the write, so the netlink monitor knows the echoes for ours.
        diff = self._desired().set_peer(key, new if is_peer else None)
        allowlist = self.options.vxlan_ingress_allowlist
        if not diff.empty:
            # By the diff, not the lease: a lease that lost a rivalry gets no entries and may not
            # send VXLAN, and the one that takes over from a departed rival may.
            if allowlist:  # before its entries: no first packet dropped
                for ip in _public_ips(diff.add):
                    self.firewall.allow_peer(ip)
            with self.writing:
                self.backend.apply(self.device.ifindex, without_overwritten(diff))
        # Logged once the kernel has the entries: formatting and writing the line is a tenth
        # of a millisecond that the event's latency need not include.
        if held is not None:
            same = new is not None and is_peer and same_entries(held.lease, new)
            end = HoldEnd.REMOVED if new is None else HoldEnd.RETURNED if same else HoldEnd.REPLACED
            self._end_hold(held, end, new, time.monotonic())
            self.metrics.peers_held.set(len(self.holds))
        elif diff.empty:
            return
        elif new is not None and is_peer:
            change = PeerChange.CHANGED if old is not None and was_peer else PeerChange.ADDED
            attrs = new.attrs
            self._log_peer(change, "peer %s at %s (MAC %s)", new.subnet, attrs.public_ip, attrs.vtep_mac)
        elif old is not None:
            self._log_peer(PeerChange.REMOVED, "peer %s at %s removed", old.subnet, old.attrs.public_ip)
        for gone_ip in _public_ips(diff.remove) if allowlist else ():
            if not self.desired.wants_public_ip(gone_ip):
                self.firewall.disallow_peer(gone_ip)

    def _is_echo(self, change: DeviceChange) -> bool:
        """True for what our own writes cause: a wanted entry added, an unwanted one removed.

        Called on the netlink monitor's thread. Anything else — a wanted entry deleted, an
        unexpected one added, link and address changes — asks for a full pass.
        """
        return is_echo(self.desired, change)

    def _recheck_config(self) -> None:
        """Pick up a changed network config; a broken one is logged and the old one kept, and so is
        one that would renumber live leases (``confchange``), until it is put back or fits."""
        try:
            stored = self._read_config()
        except (ConfigError, RegistryError) as exc:
            if isinstance(exc, ConfigError):  # not an unreachable etcd: the stored config itself
                self.metrics.config_ok.set(0)
            self.config_check.failed(exc, "; keeping the current config")
            return
        self.config_check.succeeded()
        self.metrics.config_ok.set(1)
        if stored is None or (stored == self.config and self.config_hold is None):
            return
        assert self.lease is not None and self.config is not None
        peers = (lease for key, lease in self.peers.items() if key != self.lease.key)
        decision = decide(self.config, stored, self.lease, peers, self.config_hold)
        if decision.action is ConfigAction.HOLD:
            self._hold_config(decision)
            return
        if decision.cleared:
            log.warning("%s", clear_message(decision, self._config_where()))
            self._set_config_hold(None)
        if decision.action is ConfigAction.UNCHANGED:
            return
        self.config_raw = self.stored_raw
        if decision.action is ConfigAction.RESTART:
            # A new VNI is a new device, MAC and lease value: a clean restart is the safe path.
            # Every live lease fits the new config (else it is held), so the restart renumbers none.
            log.warning(
                "network config changed VNI %d -> %d; restarting to rebuild the device",
                self.config.backend.vni,
                stored.backend.vni,
            )
            self.exit_code = RESTART_EXIT_CODE
            self.request_stop()
            return
        log.warning("network config changed: %s", stored)
        self.config = stored
        self.metrics.pool_size.set(stored.subnet_count)

    def _hold_config(self, decision: ConfigDecision) -> None:
        """Keep the config in force against a stored one that would renumber live leases."""
        if decision.announce:
            assert self.config_raw is not None
            key = f"{self.options.etcd_prefix}/config"
            restore = f"etcdctl put {key} '{json.dumps(json.loads(self.config_raw))}'"
            log.error("%s", hold_message(decision, self._config_where(), restore))
        self._set_config_hold(decision)

    def _set_config_hold(self, decision: ConfigDecision | None) -> None:
        """Record a hold (None: none) for /readyz, systemd's STATUS and the metrics."""
        self.config_hold = decision
        self.metrics.config_mismatch.set(1 if decision else 0)
        self.metrics.config_mismatch_leases.set(decision.outside_count if decision else 0)
        problem = hold_reason(decision) if decision else ""
        self.metrics.health = replace(self.metrics.health, config_problem=problem)

    # ---- full reconcile -----------------------------------------------------------------------

    def _full_reconcile(self, trigger: str) -> None:
        """Dump, diff and repair firewall, device, entries and subnet.env; never raises.

        Each step runs whatever another step did: a peer entry the kernel refuses, or a device
        that cannot be repaired, must not leave a deleted firewall table or subnet.env unrestored.
        A failed step is counted, logged when it starts failing and when it works again, and
        retried on the next pass."""
        assert self.backend is not None and self.config is not None and self.lease is not None
        started = time.monotonic()
        self.metrics.reconciles.labels(trigger=trigger).inc()
        try:
            spec = self._device_spec(self.config, self.lease.subnet)
            # The firewall first: on a fresh start its VXLAN allowlist exists before the device
            # does, so no VXLAN from a non-peer is ever accepted.
            fw_spec = self._firewall_spec()
            failed = [step for step, run in (
                ("firewall", lambda: self._ensure_firewall(trigger, fw_spec)),
                ("device", lambda: self._ensure_device(trigger, spec)),
                ("entries", lambda: self._ensure_entries(trigger)),
            ) if not self._run_step(step, run)]  # fmt: skip
            self._write_subnet_env(trigger, SubnetEnv(
                self.config.network, self.lease.subnet, spec.mtu, self.options.ip_masq
            ))  # fmt: skip
            if "firewall" not in failed and fw_spec.ingress_allowlist and fw_spec.vxlan_peers is not None:
                self._notice_drops(fw_spec.vxlan_peers)
            if failed:
                self.metrics.reconcile_errors.inc()
            else:
                self.metrics.last_reconcile.set(time.time())
            self._set_health(*self._readiness(failed))
            if trigger == "resync":
                self.heap.settle()  # the new listing's leases and entries are long-lived
                if not self.flanneld_checked:  # not before: a /proc walk is no part of a cold start
                    self.flanneld_checked = True
                    self._warn_of_flanneld()
        except SubnetFileError as exc:  # the kernel's side is done; containers cannot start
            self.metrics.reconcile_errors.inc()
            self.subnet_file_check.failed(exc)
            self._set_health(False, str(exc))
        except Exception as exc:  # keep serving: the next trigger retries
            self.metrics.reconcile_errors.inc()
            log.exception("reconcile (%s) failed: %s", trigger, exc)
        finally:
            self.metrics.reconcile_seconds.observe(time.monotonic() - started)
            self._count_peers()

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

    def _readiness(self, failed: list[str]) -> tuple[bool, str]:
        """/readyz after a pass: not ready while a step that serves every peer keeps failing (the
        firewall, the device, reading the entries). One peer's entries the kernel refuses leave
        the node ready, named in the reason: a single careless lease must not take every node
        in the cluster out of service."""
        if self.lease_expired:
            return False, self.lease_expired
        if failed:
            return False, f"full pass failing at step {', '.join(failed)} (see the log); retried every pass"
        if self.failing_entries:
            return True, f"ready; the kernel refuses {len(self.failing_entries)} peer entries (see the log)"
        return True, "ready"

    def _firewall_spec(self) -> FirewallSpec:
        assert self.config is not None and self.lease is not None
        allowlist = self.options.vxlan_ingress_allowlist
        return FirewallSpec(
            network=self.config.network,
            own_subnet=self.lease.subnet,
            ip_masq=self.options.ip_masq,
            forward_rules=self.options.iptables_forward_rules,
            ingress_allowlist=allowlist,
            vxlan_port=self.config.backend.port,
            # Until the first listing, keep the live allowlist: a restart drops no peer traffic.
            # Without an allowlist the set is not rendered: no pass over every lease for it.
            vxlan_peers=(self._peer_ips() if self.peers_listed else None) if allowlist else frozenset(),
        )

    def _ensure_firewall(self, trigger: str, fw_spec: FirewallSpec) -> None:
        assert self.config is not None
        if self.firewall.ensure(fw_spec):
            log.info("firewall rules written for %s", self.config.network)
            self._count_repair(trigger, "firewall", "fix")

    def _ensure_device(self, trigger: str, spec: DeviceSpec) -> None:
        assert self.backend is not None
        self.device, actions = self.backend.ensure_device(spec)  # the backend logs each action
        self._count_repair(trigger, "device", "fix", len(actions))

    def _ensure_entries(self, trigger: str) -> None:
        # Until the first peer listing the kernel's entries (a previous run's) stay as they are:
        # diffing against an empty peer set would remove them all and drop traffic on restart.
        if self.device is None:
            return  # the device step failed: counted there
        if self.peers_listed and self.entry_dumps.due(trigger == "timer", self._drift_reported()):
            try:
                self._reconcile_entries(trigger)
            except ApplyError as exc:  # some peers' entries: the others were applied
                self._entries_refused(exc)
                return
            self._entries_refused(None)

    @staticmethod
    def _warn_of_flanneld() -> None:
        if pids := flanneld_pids():
            log.error(
                "flanneld (pid %s) runs in this network namespace: it and overlayd would both manage "
                "flannel.<VNI>, the lease and subnet.env; stop and disable it "
                "(systemctl disable --now flanneld)",
                ", ".join(map(str, pids)),
            )

    def _notice_drops(self, peers: frozenset[IPv4Address]) -> None:
        """Name the sources the allowlist newly dropped (one netlink dump, no process start)."""
        assert self.config is not None
        try:
            dropped = self.firewall.dropped_sources()
        except FirewallError as exc:  # a diagnostic: it must not fail the pass
            self.drops_check.failed(exc)
            return
        self.drops_check.succeeded()
        new, more = self.drop_notice.update(dropped, peers, time.monotonic())
        self.metrics.vxlan_dropped_sources.set(len(self.drop_notice.unexplained(dropped)))
        if new:
            log.warning("%s", warning(new, more, self.config.backend.port))

    def _write_subnet_env(self, trigger: str, env: SubnetEnv) -> None:
        path = self.options.subnet_file
        try:
            written = write_atomic(path, env.render())
        except OSError as exc:
            raise SubnetFileError(
                f"--subnet-file {path}: cannot write it ({exc.strerror}: {exc.filename}); give a writable "
                "path (the systemd unit allows /run/flannel); the CNI plugin needs it to attach containers"
            ) from None
        self.subnet_file_check.succeeded()
        if written:
            log.info("wrote %s (subnet %s)", path, self.lease.subnet if self.lease else None)
            self._count_repair(trigger, "subnet_env", "fix")

    def _reconcile_entries(self, trigger: str) -> None:
        """Dump the device's neighbour, FDB and route entries and make them the peers' ones."""
        assert self.backend is not None and self.config is not None and self.lease is not None
        assert self.device is not None
        desired = self._desired()
        wanted = desired.plane()  # the same object while no peer's entries changed
        actual = self.backend.read_plane(self.device.ifindex, self._direct_routes())  # same while unchanged
        synced = self.in_sync
        if synced is None or synced[0] is not wanted or synced[1] is not actual:
            diff = diff_planes(wanted, actual)
            if diff.empty:
                self.in_sync = (wanted, actual)
            else:
                self._log_diff(diff, trigger)
                self.programmed = set(desired.programmed_keys())
                with self.writing:
                    self.backend.apply(self.device.ifindex, diff)
        self.programmed = set(desired.programmed_keys())

    def _desired(self) -> DesiredEntries:
        """The entries the current peers want. The fast path keeps them in step event by event;
        here they are rebuilt when the config or our own lease changed, and synced lease by lease
        when a re-list replaced ``peers``."""
        assert self.config is not None and self.lease is not None
        rebuild = self.desired_basis[0] is not self.config or self.desired_basis[1] is not self.lease
        if rebuild or self.desired_synced_with is not self.peers:
            desired = self.desired
            if rebuild:  # rivals' subnets are compared in blocks of the shortest length accepted
                claim_prefixlen = min(self.config.subnet_len, self.lease.subnet.prefixlen)
                desired = DesiredEntries(self._reached_directly(), claim_prefixlen, self._report_rivalry)
            held = {held.key: held.lease for held in self.holds}  # their entries stay until due
            for key in desired.keys() - self.peers.keys() - held.keys():
                desired.load(key, None)
            for key, lease in (*self.peers.items(), *held.items()):
                desired.load(key, lease if self._is_peer(key, lease) else None)
            self.desired, self.desired_basis = desired, (self.config, self.lease)
            self.desired_synced_with = self.peers
            self.safety = {
                key: known for key, known in self.safety.items() if key in self.peers or key in self.holds
            }
        return self.desired

    def _drift_reported(self) -> bool:
        """Whether the netlink monitor would report any drift in the entries since the last pass
        that found them as wanted, so a timer pass may skip its dump: it runs, nothing we want
        changed since (a config change rebuilds what we want), and no direct route is kept: the
        kernel drops those with an underlay flap without a message, and they live off our device."""
        assert self.config is not None
        if self.monitor is None or not self.monitor.alive or self.config.backend.direct_routing:
            return False
        return self.in_sync is not None and self.in_sync[0] is self._desired().plane()

    def _reached_directly(self) -> Callable[[Lease], bool] | None:
        """DirectRouting's test of which peers need no VXLAN; None when it is off."""
        assert self.config is not None and self.external is not None
        return reached_directly(self.external.segments) if self.config.backend.direct_routing else None

    def _direct_routes(self) -> DirectRoutes | None:
        """Where direct routes are read: on the device's underlay, into the Network. Also with
        DirectRouting off, so that one left from before (ours, or flanneld's) is removed."""
        assert self.config is not None and self.device is not None
        if self.device.underlay is None:
            return None
        return DirectRoutes(underlay=self.device.underlay, network=self.config.network)

    def _count_repair(self, trigger: str, kind: str, action: str, count: int = 1) -> None:
        """Count drift fixed by a timer or netlink pass; other passes program, they do not repair."""
        if count and trigger in DRIFT_TRIGGERS:
            self.metrics.repairs.labels(kind=kind, action=action).inc(count)

    def _log_diff(self, diff: PlaneDiff, trigger: str) -> None:
        for action, plane in (("add", diff.add), ("remove", diff.remove)):
            kinds = (("neigh", plane.neighs), ("fdb", plane.fdbs), ("route", plane.routes),
                     ("direct_route", plane.direct))  # fmt: skip
            for kind, entries in kinds:
                if entries:
                    self._count_repair(trigger, kind, action, len(entries))
                    level = logging.WARNING if trigger in DRIFT_TRIGGERS else logging.INFO
                    log.log(level, "%s pass: %s %d %s entries", trigger, action, len(entries), kind)

    def _set_health(self, ready: bool, reason: str) -> None:
        self.metrics.health = replace(
            self.metrics.health, ready=ready, reason=reason, last_loop=time.monotonic()
        )
        self.metrics.ready.set(1 if ready else 0)
        if ready:
            self.notifier.ready(self._status_line())
