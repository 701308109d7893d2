"""The agent's lifecycle: options → interface → config → lease → device → rules → subnet.env → loop.

One thread (the caller of ``Agent.run``) owns all mutable state and every kernel write. The etcd
watch, the netlink monitor and signal handlers only put typed events (``events``) on
``self.events``; the loop drains the queue and coalesces what it finds into at most one full
pass per batch. This module only wires the parts and runs the loop: ``peerstate`` turns events
into the changes wanted, ``reconciler`` writes them (a peer event directly, three netlink writes;
everything else by a full dump-and-diff, so a missed event costs at most one resync interval, two
while peer events keep coming: ``passtimer``), ``leasekeeper`` keeps the lease and the config,
``health`` reports. SIGTERM leaves the device, routes, rules and the lease in place so a restart
drops no traffic.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import threading
import time
from functools import partial
from ipaddress import IPv4Address, IPv4Network

from overlayd.agent.backendswitch import switch_backend
from overlayd.agent.configfollow import ConfigFollower
from overlayd.agent.events import AgentEvent, Recheck, Trigger, Wake, drain
from overlayd.agent.health import HealthReporter
from overlayd.agent.heap import HeapKeeper
from overlayd.agent.hostguard import NetworkClaim
from overlayd.agent.leasekeeper import ACQUIRE_ERRORS, Acquired, LeaseAction, LeaseKeeper, failure_reason
from overlayd.agent.metrics import Metrics, MetricsServer
from overlayd.agent.passtimer import PassTimer
from overlayd.agent.peerstate import PeerState
from overlayd.agent.probefeed import Prober, start_prober
from overlayd.agent.reconciler import Reconciler
from overlayd.agent.sdnotify import Notifier
from overlayd.agent.startup import (
    Retrier,
    StartError,
    claim_this_network,
    connect,
    host_facts,
    lock_state_dir,
    published_ip,
    start_http,
    state_dir_error,
)
from overlayd.agent.statedump import install_signal_handlers
from overlayd.agent.subnethistory import SubnetMemory
from overlayd.backend.api import Backend, HostFacts, HostUnfit
from overlayd.backend.iface import ExternalInterface, select_interface
from overlayd.backend.monitor import DeviceChange, NetlinkMonitor, is_echo
from overlayd.backend.select import backend_for
from overlayd.etcd.peerwatch import PeerEvents, PeerSnapshot, PeerWatchDown, PeerWatcher
from overlayd.etcd.registry import Registry
from overlayd.netfilter.firewall import network_firewall
from overlayd.options import AgentOptions
from overlayd.subnet.config import NetworkConfig
from overlayd.subnet.lease import NO_PUBLIC_IP, Lease, LeaseAttrs
from overlayd.subnet.leasecheck import BadLeaseLog, Underlay
from overlayd.subnet.subnetenv import previous_subnet

log = logging.getLogger(__name__)
# Seconds from a change on our device that someone else made to the full pass that repairs it:
# one pass covers a burst. Peer events are applied meanwhile; only the pass waits.
NETLINK_DEBOUNCE = 0.2


class Agent(ConfigFollower):
    """One host's overlay agent; see the module docstring for the threading model."""

    def __init__(self, options: AgentOptions) -> None:
        self.options = options
        self.events: queue.Queue[AgentEvent] = queue.Queue()
        self.stopping = threading.Event()
        self.metrics = Metrics()
        self.notifier = Notifier()
        self.registry: Registry | None = None
        self.keeper: LeaseKeeper | None = None
        self.external: ExternalInterface | None = None
        self.public_ip: IPv4Address | None = None
        self.own_attrs: LeaseAttrs | None = None  # what our lease publishes (the backend says)
        self.bad_leases = BadLeaseLog(lambda reason: self.metrics.bad_leases.labels(reason=reason).inc())
        self.state = PeerState(self.bad_leases)
        self.reconciler = Reconciler(options, self.metrics, self.state, network_firewall(options.etcd_prefix))
        self.health = HealthReporter(self.metrics, self.notifier, self.state)
        self.retrier = Retrier(self.stopping, self.notifier, self.health)
        self.first_listing: tuple[list[Lease], int] | None = None  # the lease's; the watch starts there
        self.watcher: PeerWatcher | None = None
        self.heap = HeapKeeper()  # full garbage collections at quiet moments, not mid-burst
        self.monitor: NetlinkMonitor | None = None
        self.prober: Prober | None = None  # probes peers through the overlay (its own thread)
        self.http: list[MetricsServer] = []
        self.exit_code = 0
        self.lock_fd: int | None = None  # the state directory's lock, held while running
        self.network_claim: NetworkClaim | None = None  # this network's claim on the host (hostguard)
        self.subnets: SubnetMemory | None = None  # subnets held before, newest first (state dir)
        self.lease_expired = ""  # why our lease ran out unrenewed ("" while it holds): not ready

    @property
    def config(self) -> NetworkConfig | None:
        """The network config in force."""
        return self.state.config

    @config.setter
    def config(self, config: NetworkConfig | None) -> None:
        self.state.config = config

    @property
    def lease(self) -> Lease | None:
        """Our own lease."""
        return self.state.lease

    @lease.setter
    def lease(self, lease: Lease | None) -> None:
        self.state.lease = lease

    def attach(self, external: ExternalInterface, public_ip: IPv4Address, backend: Backend) -> HostFacts:
        """Use ``external`` (published as ``public_ip``) as the underlay, through ``backend``."""
        self.external, self.public_ip = external, public_ip
        host = host_facts(self.options, external, public_ip, self.config)
        self.reconciler.backend = self.state.backend = backend
        self.reconciler.host = self.state.host = host
        self.state.underlay = Underlay(host.own_ips, external.segments)
        return host

    # ---- lifecycle ---------------------------------------------------------------------------

    def request_stop(self, *_: object) -> None:
        if not self.stopping.is_set():
            self.notifier.stopping()
        self.stopping.set()
        self.events.put(Wake())

    def run(self) -> int:
        """Start, serve until SIGTERM/SIGINT; returns the process exit code."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.request_stop)
            signal.signal(signal.SIGINT, self.request_stop)
            signal.signal(signal.SIGHUP, lambda *_: self.events.put(Recheck()))
            # SIGUSR1 logs the state from the handler, which Python runs in this (the loop's)
            # thread between two of its steps; the other stray signals are ignored.
            install_signal_handlers(lambda: self.health.state_dump(self.options))
        self.health.set(False, "starting")
        self.heap.start()
        for ignored in self.options.ignored:
            log.info("ignoring flanneld option %s", ignored)
        try:
            self.lock_fd = lock_state_dir(self.options.state_dir)
            self.network_claim = claim_this_network(self.options.etcd_prefix, self.options.subnet_file)
            servers = start_http(self.metrics, self.options)
            if servers is None:
                return 1
            self.http = servers
            if not self._start():
                return 0  # stopped while still starting
            self._loop()
            return self.exit_code
        except StartError as exc:
            log.error("%s", exc)
            return exc.exit_code
        finally:
            self._shutdown()

    def _start(self) -> bool:
        opts = self.options
        choice = opts.interface_choice()
        external = self.retrier.retry("choosing the external interface", lambda: select_interface(choice))
        if external is None:
            return False
        self.registry, self.keeper = connect(opts, NO_PUBLIC_IP, self.metrics, self.bad_leases)
        # Poll the config often (as flanneld does, every second or two): an operator is waiting.
        config = self.retrier.retry("reading the network config", self.keeper.read_config, cap=2.0)
        if config is None:
            return False
        self.config = config
        public_ip = self.keeper.manager.public_ip = published_ip(opts, external, config)
        log.info("using interface %s (%s), public IP %s", external.name, external.ip or external.ipv6,
                 public_ip if config.ipv4 is not None else f"{opts.public_ipv6 or external.ipv6} (IPv6-only)")
        self.metrics.pool_size.set(config.primary.subnet_count)
        backend = backend_for(config.backend.type, self.keeper.where())  # another type: a restart
        host = self.attach(external, public_ip, backend)
        try:  # what a previous run's other backend left goes first
            switch_backend(opts.state_dir, config, self.keeper.config_raw or b"")
            # Retried: a backend may run a command for it (extension's PreStartupCommand). Asked
            # again by the keeper when a config turns IPv6 on or off.
            lease_data = lambda in_force: backend.lease_data(in_force, host)  # noqa: E731
            publish = partial(self.keeper.publish, lease_data, config)
            self.own_attrs = self.retrier.retry("preparing this host's lease", publish)
        except OSError as exc:
            raise state_dir_error(opts.state_dir, exc) from None
        except HostUnfit as exc:  # this host cannot run the config's backend (host-gw behind NAT)
            raise StartError(str(exc)) from None
        if self.own_attrs is None:
            return False
        self.subnets = SubnetMemory(opts.state_dir)
        if not self._acquire(self.subnets.earlier(previous_subnet(opts.subnet_file))):
            return False
        self.prober = start_prober(opts.probe_rate, self.health, self.registry, self.state)
        self.watcher = PeerWatcher(self.registry, self.events, first_listing=self.first_listing)
        self.watcher.start()
        self._watch_kernel(backend, config, external.name)
        return True

    def _shutdown(self) -> None:
        """Stop threads and sockets; the kernel state and the etcd lease are deliberately kept."""
        for closer in (
            self.monitor.stop if self.monitor else None,
            self.prober.stop if self.prober else None,
            self.watcher.stop if self.watcher else None,
            *(server.stop for server in self.http),
            self.registry.close if self.registry else None,
            self.reconciler.backend.close if self.reconciler.backend else None,
            self.notifier.close,
            (lambda: os.close(self.lock_fd)) if self.lock_fd is not None else None,
            self.network_claim.close if self.network_claim else None,
        ):
            if closer is not None:
                try:
                    closer()
                except Exception:  # shutting down: report, keep closing the rest
                    log.exception("error while stopping")
        kept = "stopped; the VXLAN device, routes, rules and lease are left in place"
        log.info(kept if self.lease is not None else "stopped (no lease was held)")

    # ---- the lease ----------------------------------------------------------------------------

    def _acquire(self, previous: list[IPv4Network]) -> bool:
        """Get a lease (retrying etcd errors and exhaustion), then program everything for it."""
        assert self.keeper is not None and self.config is not None and self.own_attrs is not None
        keeper, config, attrs = self.keeper, self.config, self.own_attrs
        failures = self.metrics.lease_acquire_failures

        def attempt() -> Acquired:
            try:
                return keeper.acquire(config, attrs, previous)
            except ACQUIRE_ERRORS as exc:
                failures.labels(reason=failure_reason(exc)).inc()
                raise

        acquired = self.retrier.retry("acquiring a subnet lease", attempt)
        if acquired is None:
            return False
        lease = acquired.lease
        if acquired.moved_from is not None:
            log.warning("our subnet changed from %s to %s", acquired.moved_from, lease.own_subnet)
        self.lease, self.lease_expired = lease, ""
        self.metrics.lease_acquisitions.inc()
        self.metrics.set_lease_info(
            str(lease.own_subnet), str(lease.public_address), attrs.vtep_mac or attrs.vtep_mac_v6 or "",
            str(config.primary.network),
        )
        self._update_expiry()
        log.info("holding subnet %s (key %s)", lease.own_subnet, lease.key)
        if self.subnets is not None and config.ipv4 is not None:
            self.subnets.keep(lease.subnet)
        if not self.state.listed:
            # Know the peers before the first pass, from the listing our lease was chosen from
            # (``PeerState.first_listing``); the peer watch starts from the same listing.
            self.first_listing = keeper.manager.take_listing()
            self.state.first_listing(self.first_listing)
        self._full_pass(Trigger.LEASE)
        return True

    def _update_expiry(self) -> None:
        assert self.keeper is not None
        if (remaining := self.keeper.remaining()) is not None:
            self.metrics.lease_expiry.set(time.time() + remaining)
            self.metrics.lease_renew.set(time.time() + self.keeper.renew_at - self.keeper.clock())

    def _check_lease(self) -> None:
        """Renew when due; re-acquire if our key or its etcd lease is gone (see ``LeaseKeeper``)."""
        assert self.keeper is not None
        check = self.keeper.check()
        if check.renewal_failed:
            self.metrics.lease_renewal_failures.inc()
        if check.action is LeaseAction.RENEWED and check.lease is not None:
            self.lease, self.lease_expired = check.lease, ""
            self.metrics.lease_renewals.inc()
            log.info("renewed lease on %s", check.lease.own_subnet)
            self._update_expiry()
        elif check.action is LeaseAction.LOST:
            self._lease_lost(check.why)
        elif check.action is LeaseAction.UNREACHABLE and check.why:
            self.lease_expired = check.why
            self.health.set(False, check.why)

    def _lease_lost(self, why: str) -> None:
        assert self.lease is not None
        log.warning("lease %s lost (%s); re-acquiring, data path kept meanwhile", self.lease.key, why)
        self._acquire(self.subnets.earlier(self.lease.subnet) if self.subnets else [self.lease.subnet])

    # ---- the loop -----------------------------------------------------------------------------

    def _loop(self) -> None:
        timer = PassTimer(self.options.reconcile_interval, time.monotonic())
        netlink_pass_at: float | None = None  # a netlink-triggered pass waits for its burst to end
        while not self.stopping.is_set():
            self.health.watchdog()
            now = time.monotonic()
            # Whatever falls due first: the timer's pass, a held peer's removal, a log summary,
            # the netlink pass, the watchdog.
            netlink_due = None if netlink_pass_at is None else max(0.0, netlink_pass_at - now)
            due = (timer.timeout(now), self.state.holds.timeout(now), self.reconciler.peer_log.timeout(now))
            timeout = min(t for t in (*due, netlink_due, self.notifier.watchdog_interval) if t is not None)
            try:
                batch = [self.events.get(timeout=timeout)]
            except queue.Empty:
                batch = []  # something above is due
            batch.extend(drain(self.events))
            if self.stopping.is_set():
                return
            trigger = self._handle(batch)
            now = time.monotonic()
            if self.reconciler.release_holds(now):
                trigger = trigger or Trigger.EVENT
            self.reconciler.log_summary(now)
            if trigger is Trigger.NETLINK:
                netlink_pass_at = netlink_pass_at or now + NETLINK_DEBOUNCE
                trigger = None
            if netlink_pass_at is not None and now >= netlink_pass_at:
                trigger = trigger or Trigger.NETLINK
            if trigger is not None:
                netlink_pass_at = None  # any full pass covers the netlink one
            if timer.ticked(now):
                self._check_lease()
                self._recheck_config()
            # A held peer's removal is a peer event to come: a due timer pass waits for it too.
            peer_events = bool(self.state.holds) or any(isinstance(item, PeerEvents) for item in batch)
            if timer.run_pass(now, peer_events, other_pass=trigger is not None):
                self._full_pass(trigger or Trigger.TIMER)
                self.heap.on_timer()
            elif trigger:
                self._full_pass(trigger)
            self.health.loop_turned()

    def _handle(self, batch: list[AgentEvent]) -> Trigger | None:
        """Apply a batch of events; returns the trigger of a full pass if one is needed."""
        trigger: Trigger | None = None
        for item in batch:
            match item:
                case PeerSnapshot():
                    relisted = self.state.snapshot(item.leases, time.monotonic())
                    self.reconciler.relisted(relisted.ended)
                    self.metrics.relists.labels(reason=item.reason).inc()
                    self.health.etcd_problem("")
                    trigger = Trigger.RESYNC
                    if relisted.own_missing:
                        self._lease_lost("our key is missing from etcd")
                case PeerEvents():
                    self.heap.busy()
                    if self.reconciler.apply_events(item, self._lease_lost):
                        trigger = trigger or Trigger.EVENT
                case PeerWatchDown():
                    self.metrics.watch_restarts.inc()
                    self.health.etcd_problem(item.error)
                case Recheck():
                    log.info("SIGHUP: checking the network config, our lease and the kernel now")
                    self._check_lease()
                    self._recheck_config()
                    trigger = Trigger.SIGHUP
                case DeviceChange():
                    trigger = trigger or Trigger.NETLINK
        self.health.count_peers()
        return trigger

    def _is_echo(self, change: DeviceChange) -> bool:
        """True for what our own writes cause (called on the netlink monitor's thread)."""
        return is_echo(self.state.desired, change)

    def _full_pass(self, trigger: Trigger) -> None:
        """Run the reconciler's full pass and report readiness from how it went."""
        outcome = self.reconciler.full_pass(trigger)
        if outcome.error:
            self.health.set(False, outcome.error)
        elif outcome.completed:
            failing = len(self.reconciler.failing_entries)
            self.health.after_pass(list(outcome.failed), self.lease_expired, failing)
            if trigger is Trigger.RESYNC:
                self.heap.settle()  # the new listing's leases and entries are long-lived
        self.health.count_peers()
