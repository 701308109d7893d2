"""Keeping this host's lease and network config: when to renew, when the lease is lost, what a
changed config means. Decisions come back as values; the agent writes the kernel, the metrics
and the log lines that follow from them.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from ipaddress import IPv4Network, IPv6Network

from overlayd.backend.select import CONFIG_PARSERS, default_type_notice, ipv6_half_notice
from overlayd.base.outage import Outage
from overlayd.etcd.api import RegistryError, SubnetRegistry
from overlayd.etcd.leasing import AcquireError, LeaseManager
from overlayd.subnet.allocate import OutOfSubnets, fits_config
from overlayd.subnet.confchange import ConfigAction, ConfigDecision, clear_message, decide, hold_message
from overlayd.subnet.config import ConfigError, NetworkConfig, parse_network_config
from overlayd.subnet.lease import Lease, LeaseAttrs

log = logging.getLogger(__name__)

# Seconds between etcd lease time-to-live checks on the timer. The peer watch already reports our
# key's deletion (an expired or revoked etcd lease deletes it); this only backs the watch up, so
# it need not cost an etcd round trip on every pass.
LEASE_CHECK_INTERVAL = 60.0


class LeaseAction(Enum):
    """What a lease check found."""

    WAIT = "wait"  # nothing due (or a reservation, which never expires)
    RENEWED = "renewed"  # extended by one TTL: ``lease`` is the renewed one
    ALIVE = "alive"  # the time-to-live check found our etcd lease live
    LOST = "lost"  # our key or its etcd lease is gone: re-acquire (``why``)
    UNREACHABLE = "unreachable"  # etcd did not answer; ``why`` is set once our TTL ran out meanwhile


@dataclass(frozen=True)
class LeaseCheck:
    action: LeaseAction
    lease: Lease | None = None
    why: str = ""
    renewal_failed: bool = False  # a renewal was tried and failed: count it


@dataclass(frozen=True)
class ConfigCheck:
    """A re-read of the stored config: the verdict (None: nothing changed, or it could not be
    read); ``valid`` False: the stored config is broken, None: etcd did not answer."""

    decision: ConfigDecision | None = None
    valid: bool | None = True


@dataclass(frozen=True)
class Acquired:
    """A lease granted; ``moved_from``: the subnet we held before, if it is another one."""

    lease: Lease
    moved_from: IPv4Network | IPv6Network | None


# What a failed acquisition raises; each is counted by its ``failure_reason`` and retried.
ACQUIRE_ERRORS = (OutOfSubnets, AcquireError, RegistryError)


def failure_reason(exc: Exception) -> str:
    """The ``reason`` label of a failed acquisition."""
    if isinstance(exc, OutOfSubnets):
        return "out_of_subnets"
    if isinstance(exc, AcquireError):
        return "contention"
    return "etcd"


class LeaseKeeper:
    """Our lease (acquire, renew, lost) and the network config in force (read, changed, held)."""

    def __init__(
        self,
        manager: LeaseManager,
        registry: SubnetRegistry,
        prefix: str,
        clock: Callable[[], float] = time.monotonic,
        check_interval: float = LEASE_CHECK_INTERVAL,
    ) -> None:
        self.manager, self.registry, self.prefix = manager, registry, prefix
        self.clock, self.check_interval = clock, check_interval
        self.lease: Lease | None = None
        # The IPv6 subnet to take back first in a dual-stack network (subnet.env's at start).
        self.previous_ipv6: IPv6Network | None = None
        # What our lease publishes under a config (the backend's ``lease_data``), and the config
        # it was last asked for: a config that turns IPv6 on or off publishes anew.
        self._lease_data: Callable[[NetworkConfig], LeaseAttrs] | None = None
        self._published: tuple[NetworkConfig, LeaseAttrs] | None = None
        self.renew_at = 0.0
        self.checked_at = 0.0  # clock time of the last time-to-live check
        self.config: NetworkConfig | None = None  # the config in force
        self.config_raw: bytes | None = None  # the config in force, as stored
        self.stored_raw: bytes | None = None  # the config last read, as stored
        # While the stored config would renumber live leases: the verdict that keeps ours in force.
        self.hold: ConfigDecision | None = None
        self.refused_switch: NetworkConfig | None = None  # a backend this host could not switch to
        # While etcd is down, log when each starts and stops failing, once.
        self.lease_check = Outage(log, "could not check our lease")
        self.config_check = Outage(log, "could not re-read the network config", logging.ERROR)
        # Told whether etcd answered with a valid config at start (not called when it did not answer).
        self.on_config_read: Callable[[bool], None] = lambda valid: None

    # ---- the lease -----------------------------------------------------------------------------

    def publish(
        self,
        lease_data: Callable[[NetworkConfig], LeaseAttrs],
        config: NetworkConfig,
        attrs: LeaseAttrs | None = None,
    ) -> LeaseAttrs:
        """What our lease publishes under ``config`` (``attrs``, else ``lease_data``'s), and
        ``lease_data`` to ask again when a later config adds or drops the IPv6 half (may raise
        what ``lease_data`` raises: OSError for the state directory)."""
        self._lease_data = lease_data
        self._published = (config, attrs if attrs is not None else lease_data(config))
        return self._published[1]

    def acquire(self, config: NetworkConfig, attrs: LeaseAttrs, previous: list[IPv4Network]) -> Acquired:
        """Hold a lease; raises OutOfSubnets, AcquireError or RegistryError (``failure_reason``).
        ``attrs`` are published, unless ``config`` differs in its IPv6 half from the one they
        were made for: then the backend is asked again (``publish``)."""
        published = self._published
        if self._lease_data is not None and published is not None and published[0].ipv6 != config.ipv6:
            self._published = (config, self._lease_data(config))
            attrs = self._published[1]
        before = self.lease
        previous_ipv6 = (before.ipv6_subnet if before is not None else None) or self.previous_ipv6
        # Only with an IPv6 pool: an IPv4-only network calls the manager as before.
        halves = {"previous_ipv6": previous_ipv6} if config.ipv6 is not None and previous_ipv6 else {}
        lease = self.manager.acquire(config, attrs, previous, **halves)
        self.lease = lease
        self.renew_at = self.manager.renew_at(lease)
        moved = before.own_subnet if before is not None and before.own_subnet != lease.own_subnet else None
        return Acquired(lease, moved)

    def check(self) -> LeaseCheck:
        """Renew when due; else, once per check interval, ask etcd whether our lease lives. The
        peer watch reports our key's deletion at once; this backs it up."""
        lease = self.lease
        assert lease is not None
        if lease.etcd_lease_id == 0:
            return LeaseCheck(LeaseAction.WAIT)  # a reservation: no expiry to manage
        if self.config is not None and self.hold is None and not fits_config(self.config, lease):
            # The config in force turned IPv6 on (or off): flanneld leases both halves as one key,
            # so the lease is taken again, its IPv4 subnet kept, while the data path stays.
            wanted = "with" if self.config.ipv6 is not None else "without"
            return LeaseCheck(LeaseAction.LOST, why=f"the network config in force wants a lease {wanted} "
                              f"an IPv6 subnet; taking one, keeping subnet {lease.own_subnet}")  # fmt: skip
        renewing = self.clock() >= self.renew_at
        try:
            checked = self._check(lease, renewing)
        except RegistryError as exc:
            self.lease_check.failed(exc, f"; will retry (lease {lease.key})")
            why = ""
            if self.manager.expired(lease):  # served from memory no longer: peers dropped our routes
                why = (
                    f"lease {lease.key} expired while etcd was unreachable ({exc}): peers no longer "
                    "route to this host; it is re-acquired once etcd answers"
                )
            return LeaseCheck(LeaseAction.UNREACHABLE, why=why, renewal_failed=renewing)
        if not checked.renewal_failed:
            self.lease_check.succeeded()
        return checked

    def _check(self, lease: Lease, renewing: bool) -> LeaseCheck:
        if renewing:
            renewed = self.manager.renew(lease)
            if renewed is None:
                return LeaseCheck(LeaseAction.LOST, why="renewal found our key gone", renewal_failed=True)
            self.lease, self.renew_at = renewed, self.manager.renew_at(renewed)
            return LeaseCheck(LeaseAction.RENEWED, renewed)
        if self.clock() - self.checked_at < self.check_interval:
            return LeaseCheck(LeaseAction.WAIT)
        remaining = self.registry.lease_remaining(lease)
        self.checked_at = self.clock()
        if remaining is None:
            return LeaseCheck(LeaseAction.LOST, why="its etcd lease expired or was revoked")
        return LeaseCheck(LeaseAction.ALIVE)

    def remaining(self) -> float | None:
        """Seconds our etcd lease has left, as etcd says; None for a reservation or no answer."""
        if self.lease is None or not self.lease.etcd_lease_id:
            return None
        try:
            return self.registry.lease_remaining(self.lease)
        except RegistryError:
            return None

    # ---- the network config --------------------------------------------------------------------

    def where(self) -> str:
        return f"network config at {self.prefix}/config"

    def restore_command(self) -> str:
        """The etcdctl command that puts the config in force back."""
        assert self.config_raw is not None
        return f"etcdctl put {self.prefix}/config '{json.dumps(json.loads(self.config_raw))}'"

    def read_config(self) -> NetworkConfig:
        """The stored config, parsed; ConfigError names what is wrong and the fix."""
        try:
            config = self._read_config()
        except ConfigError:
            self.on_config_read(False)
            raise
        self.on_config_read(True)
        return config

    def _read_config(self) -> NetworkConfig:
        raw, _revision = self.registry.get_config()
        if raw is None and self.config_raw is not None:
            # Running: the config in use is the one to put back. An example network here would
            # renumber every node whose subnet it does not hold.
            raise ConfigError(
                f"{self.where()} is missing; hosts that start now wait for it (restore the one in use "
                f"with: {self.restore_command()})"
            )
        if raw is None:
            raise ConfigError(
                f"{self.where()} is missing; waiting for it (create it with: etcdctl put "
                f'{self.prefix}/config \'{{"Network": "198.18.0.0/16"}}\')'
            )
        config = parse_network_config(raw, where=self.where(), backends=CONFIG_PARSERS)
        self.stored_raw = raw
        if self.config is None:  # starting: this is the config that goes in force
            self.config, self.config_raw = config, raw
            if not config.backend_type_given:
                log.warning("%s", default_type_notice(self.where()))
            if notice := ipv6_half_notice(config, self.where()):
                log.warning("%s", notice)
        return config

    def judge(self, stored: NetworkConfig, peers: Iterable[Lease]) -> ConfigDecision | None:
        """The verdict on a re-read config (None: the one in force, and no hold to clear). A hold
        is kept while the stored config would renumber live leases; APPLY and RESTART put the
        stored config in force here, SWITCH once the agent has switched (``switched``)."""
        assert self.config is not None and self.lease is not None
        if stored == self.config and self.hold is None:
            return None
        decision = decide(self.config, stored, self.lease, peers, self.hold)
        if decision.action is ConfigAction.HOLD:
            self.hold = decision
            return decision
        if decision.cleared:
            self.hold = None
        if decision.action in (ConfigAction.APPLY, ConfigAction.RESTART):
            self.config_raw = self.stored_raw
            if decision.action is ConfigAction.APPLY:
                self.config = stored
        return decision

    def recheck(self, peers: Iterable[Lease]) -> ConfigCheck:
        """Re-read the stored config and judge it against the live ``peers`` (ours may be among
        them); a broken one is logged and the one in force kept, as is one that would renumber
        live leases, until it is put back or fits."""
        try:
            stored = self.read_config()
        except (ConfigError, RegistryError) as exc:
            self.config_check.failed(exc, "; keeping the current config")
            # A ConfigError is the stored config itself, not an unreachable etcd.
            return ConfigCheck(valid=False if isinstance(exc, ConfigError) else None)
        self.config_check.succeeded()
        in_force = self.config
        decision = self.judge(stored, peers)
        if decision is None:
            return ConfigCheck()
        if decision.action is ConfigAction.HOLD:
            if decision.announce:
                log.error("%s", hold_message(decision, self.where(), self.restore_command()))
            return ConfigCheck(decision)
        if decision.cleared:
            log.warning("%s", clear_message(decision, self.where()))
        if decision.action is ConfigAction.RESTART:
            # What the data path cannot follow in place (a new VNI is a new device, MAC and lease
            # value): a clean restart is the safe path. Every live lease fits the new config (else
            # it is held), so the restart renumbers none.
            assert in_force is not None
            if (stored.ipv4 is None) != (in_force.ipv4 is None):
                why = "EnableIPv4 " + ("false -> true" if in_force.ipv4 is None else "true -> false")
            else:
                why = stored.backend.restart_reason(in_force.backend)
            log.warning("network config changed %s; restarting to rebuild the device", why)
        elif decision.action is ConfigAction.APPLY:
            log.warning("network config changed: %s", stored)
        elif decision.action is ConfigAction.SWITCH:
            if stored == self.refused_switch:
                return ConfigCheck()  # said when it failed; the next change is judged anew
            assert in_force is not None
            log.warning("network config changed Backend %s -> %s; switching backend in place",
                        in_force.backend.type, stored.backend.type)  # fmt: skip
        return ConfigCheck(decision)

    def switched(self, stored: NetworkConfig, raw: bytes | None) -> None:
        """Put ``stored`` (``raw`` as stored) in force: the agent runs its backend now."""
        self.config, self.config_raw, self.refused_switch = stored, raw, None
