"""What the agent must have before it starts: its state directory to itself, this network to
itself on the host, its HTTP listeners, and the steps retried until etcd, the config or the
interface are there; errors that name the option and the fix."""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path
from typing import TypeVar

from overlayd.agent.health import HealthReporter
from overlayd.agent.hostguard import (
    SUBNET_FILE_PREFIX,
    NetworkClaim,
    NetworkClaimed,
    claim_name,
    claim_network,
)
from overlayd.agent.instancelock import InstanceLocked, UnsafeStateDir, hold_instance_lock
from overlayd.agent.leasekeeper import LeaseKeeper
from overlayd.agent.metrics import Metrics, MetricsServer, listen_addresses
from overlayd.agent.reconciler import Reconciler
from overlayd.agent.sdnotify import Notifier
from overlayd.backend.api import BackendError, HostFacts, HostUnfit
from overlayd.backend.iface import ExternalInterface, InterfaceError
from overlayd.backend.monitor import DeviceChange, NetlinkMonitor
from overlayd.base.backoff import Backoff
from overlayd.etcd.api import RegistryError
from overlayd.etcd.leasing import AcquireError, LeaseManager
from overlayd.etcd.registry import Registry
from overlayd.options import AgentOptions
from overlayd.subnet.allocate import OutOfSubnets
from overlayd.subnet.config import ConfigError, NetworkConfig
from overlayd.subnet.lease import NO_PUBLIC_IP
from overlayd.subnet.leasecheck import BadLeaseLog
from overlayd.subnet.subnetenv import previous_ipv6_subnet

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_BACKOFF = 30.0


def host_facts(
    options: AgentOptions, external: ExternalInterface, public_ip: IPv4Address, config: NetworkConfig | None
) -> HostFacts:
    """This host as the backend sees it: ``external`` published as ``public_ip`` (and as
    ``--public-ipv6``, else its own IPv6 address, for a dual-stack network). Raises StartError
    when ``config`` is dual-stack and there is no IPv6 address to publish."""
    public_ipv6 = options.public_ipv6 or external.ipv6
    if config is not None and config.ipv6 is not None and public_ipv6 is None:
        kind = "IPv6-only" if config.ipv4 is None else "dual-stack"
        raise StartError(
            f"the network config is {kind} (EnableIPv6, IPv6Network {config.ipv6.network}) but "
            f"interface {external.name} has no global IPv6 address; add one, choose another "
            "interface with --iface, or give --public-ipv6"
        )
    return HostFacts(
        public_ip, external.name, external.ip, external.mtu, external.segments, options.state_dir,
        public_ipv6, external.ipv6, external.ipv6_segments,
    )  # fmt: skip


def published_ip(options: AgentOptions, external: ExternalInterface, config: NetworkConfig) -> IPv4Address:
    """The PublicIP our lease carries: ``--public-ip``, else the interface's IPv4 address; 0.0.0.0
    in an IPv6-only network, as flanneld writes it there. Raises StartError when the network has
    IPv4 and there is no IPv4 address to publish."""
    if config.ipv4 is None:
        if options.public_ip is not None:
            log.warning("ignoring --public-ip %s: the network is IPv6-only (EnableIPv4 false)",
                        options.public_ip)
        return NO_PUBLIC_IP
    public_ip = options.public_ip or external.ip
    if public_ip is None:
        raise StartError(
            f"interface {external.name} has no IPv4 address and the network config has IPv4 Network "
            f"{config.network}; add an IPv4 address, choose another interface with --iface, give "
            "--public-ip, or make the network IPv6-only (EnableIPv4 false)"
        )
    return public_ip


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


def state_dir_error(state_dir: Path, exc: OSError) -> StartError:
    return StartError(
        f"--state-dir {state_dir}: cannot keep state there ({exc.strerror}: {exc.filename}); "
        "give a writable directory (the systemd unit allows /var/lib/overlayd)",
        2 if exc.errno in _PATH_CONFIG_ERRNOS else 1,
    )


def lock_state_dir(state_dir: Path) -> int:
    """Be the only agent for this state directory: the lock's descriptor, held while running."""
    try:
        return hold_instance_lock(state_dir)
    except InstanceLocked as exc:
        raise StartError(
            f"another overlayd (pid {exc.pid or 'unknown'}) runs with --state-dir {state_dir}: two "
            "agents would rewrite each other's firewall and subnet.env; stop that one first "
            "(systemctl stop overlayd), or, if this one serves another network, give it its own "
            "--state-dir, --subnet-file and --metrics-address"
        ) from None
    except UnsafeStateDir as exc:
        raise StartError(f"--state-dir {state_dir}: {exc}") from None
    except OSError as exc:
        raise state_dir_error(state_dir, exc) from None


def claim_this_network(prefix: str, subnet_file: Path) -> NetworkClaim:
    """Be the only agent for this network (etcd prefix), and the only writer of ``subnet_file``,
    in this network namespace."""
    claim = _claim_prefix(prefix)
    path = str(subnet_file.absolute())
    try:
        claim.companion = claim_network(path, os.geteuid(), SUBNET_FILE_PREFIX)
    except NetworkClaimed as exc:
        claim.close()
        raise StartError(
            f"another overlayd (pid {exc.holder.pid or 'unknown'}) on this host writes --subnet-file "
            f"{path}, for another network (--etcd-prefix): each would overwrite the other's and "
            "containers would get the other network's subnet; give each network's agent its own "
            "--subnet-file (and --state-dir, --metrics-address)"
        ) from None
    except OSError as exc:  # the guard only: the agent runs without it, as for a squatter
        log.warning("cannot claim --subnet-file %s for this host (%s); running without the guard "
                    "against a second agent writing it", path, exc.strerror)
    return claim


def _claim_prefix(prefix: str) -> NetworkClaim:
    try:
        claim = claim_network(prefix, os.geteuid())
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
    if squatter := claim.squatter:
        log.warning(
            "pid %d (uid %d), not an overlayd agent, holds the abstract socket @%s that keeps a second "
            "agent for --etcd-prefix %s off this host; running without that guard: stop that process",
            squatter.pid, squatter.uid, claim.name, prefix,
        )  # fmt: skip
    return claim


def start_http(metrics: Metrics, opts: AgentOptions) -> list[MetricsServer] | None:
    """Start the /metrics listeners; None (logged with the address and the fix) if one cannot bind."""
    stale_after = max(60.0, 3 * opts.reconcile_interval)
    servers: list[MetricsServer] = []
    for address in listen_addresses(opts.metrics_address, opts.healthz_ip, opts.healthz_port):
        try:
            server = MetricsServer(metrics, address, stale_after)
        except OSError as exc:
            log.error(
                "cannot serve metrics on %s port %d: %s; choose a free port with --metrics-address "
                "(or --metrics-address=off) and --healthz-port",
                *address,
                exc.strerror,
            )
            for started in servers:
                started.stop()
            return None
        servers.append(server)
        server.start()
    return servers


def connect(
    opts: AgentOptions, public_ip: IPv4Address, metrics: Metrics, bad_leases: BadLeaseLog
) -> tuple[Registry, LeaseKeeper]:
    """The etcd registry (its errors counted, its undecodable leases reported) and our lease's keeper."""
    registry = Registry(
        opts.etcd_settings(), on_error=lambda operation: metrics.etcd_errors.labels(operation=operation).inc()
    )
    registry.on_bad_lease = lambda key, revision, exc: bad_leases.report(key, revision, exc.reason, str(exc))
    ttl, margin = opts.subnet_lease_ttl, opts.subnet_lease_renew_margin * 60.0
    manager = LeaseManager(registry, public_ip, ttl=ttl, renew_margin=margin)
    keeper = LeaseKeeper(manager, registry, opts.etcd_prefix)
    keeper.previous_ipv6 = previous_ipv6_subnet(opts.subnet_file)
    keeper.on_config_read = lambda valid: metrics.config_ok.set(1 if valid else 0)
    return registry, keeper


# What start-up waits out (etcd, the config, the interface, a free subnet, a backend's command).
RETRIED = (RegistryError, ConfigError, InterfaceError, OutOfSubnets, AcquireError, BackendError)


class Retrier:
    """Start-up steps retried with backoff until they succeed or the agent is asked to stop."""

    def __init__(self, stopping: threading.Event, notifier: Notifier, health: HealthReporter) -> None:
        self.stopping, self.notifier, self.health = stopping, notifier, health

    def wait(self, seconds: float) -> None:
        """Sleep unless asked to stop, still pinging the systemd watchdog: waiting is not hanging."""
        deadline = time.monotonic() + seconds
        while not self.stopping.is_set() and (remaining := deadline - time.monotonic()) > 0:
            self.notifier.watchdog()
            self.stopping.wait(min(remaining, self.notifier.watchdog_interval or remaining))

    def retry(self, what: str, attempt: Callable[[], T | None], cap: float = MAX_BACKOFF) -> T | None:
        """Call attempt() until it returns non-None, logging each new error once, with backoff.

        Returns None only when asked to stop meanwhile.
        """
        backoff = Backoff(cap=cap)
        last_error = ""
        self.health.set(False, what)
        while not self.stopping.is_set():
            try:
                result = attempt()
                if result is not None:
                    return result
            except HostUnfit:
                raise  # no retry makes this host fit; the caller stops with its message
            except RETRIED as exc:
                # Logged once per distinct error; retried quietly (an interface can appear late
                # at boot, etcd can come back, an operator can fix the config). /readyz and the
                # systemd status show each attempt's own wording.
                error = "unreachable" if isinstance(exc, RegistryError) and exc.unreachable else str(exc)
                if error != last_error:
                    log.error("%s: %s; retrying with backoff", what, exc)
                    last_error = error
                self.notifier.status(f"{what}: {exc}")
                self.health.set(False, f"{what}: {exc}")  # /readyz says why, not only what
            delay = backoff.next()
            self.notifier.extend_start(delay + 30.0)  # waiting for etcd or the config is not a hang
            self.wait(delay)
        return None


def watch_device(
    devices: tuple[str, ...],
    reconciler: Reconciler,
    put: Callable[[DeviceChange], None],
    is_echo: Callable[[DeviceChange], bool],
) -> NetlinkMonitor | None:
    """Start the netlink monitor on the backend's device, which tells the reconciler about the
    changes others make to it; None for a backend without a device: nothing of ours to watch."""
    if not devices:
        return None
    monitor = NetlinkMonitor(
        devices[0],
        lambda: reconciler.device.ifindex if reconciler.device else 0,
        put,
        is_echo,
        reconciler.writing,
    )
    reconciler.monitor_alive = lambda: monitor.alive
    monitor.start()
    return monitor
