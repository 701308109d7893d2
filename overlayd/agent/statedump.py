"""What SIGUSR1 writes to the log, and the signals that must not end the agent.

Left at their defaults, SIGUSR1, SIGUSR2, SIGALRM and a few others end a process, so a stray
``kill -USR1`` (a log rotation script meant for another daemon, say) would take the node's
network agent down. SIGUSR1 instead logs one line with the agent's state, as many daemons do;
the others are logged once each and ignored.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

from overlayd.agent.metrics import Health
from overlayd.options import AgentOptions
from overlayd.subnet.config import NetworkConfig
from overlayd.subnet.lease import Lease

log = logging.getLogger(__name__)

# Signals whose default action ends the process and that mean nothing to the agent.
STRAY_SIGNALS = (
    signal.SIGUSR2, signal.SIGALRM, signal.SIGVTALRM, signal.SIGPROF, signal.SIGIO, signal.SIGPWR,
)  # fmt: skip


@dataclass(frozen=True)
class AgentState:
    """The parts of the agent's state an operator asks about, read by the loop's thread."""

    options: AgentOptions
    config: NetworkConfig | None
    lease: Lease | None
    lease_expires_in: float | None  # seconds; None without a lease or before the first renewal
    subnet_leases: int  # in etcd, ours included
    peers_programmed: int
    health: Health


def describe(state: AgentState) -> str:
    """One log line: lease, peers, health and the config in use; never a password or key file."""
    if state.lease is None:
        lease = "no lease"
    else:
        lease = f"lease {state.lease.own_subnet} (public IP {state.lease.public_address}"
        lease += f", VTEP MAC {state.lease.attrs.vtep_mac or '-'}"
        if state.lease.ipv6_subnet is not None:
            attrs = state.lease.attrs
            lease += (f"; IPv6 {state.lease.ipv6_subnet}, public IPv6 {attrs.public_ipv6 or '-'}, "
                      f"VTEP MAC {attrs.vtep_mac_v6 or '-'}")  # fmt: skip
        if state.lease_expires_in is not None:
            lease += f", expires in {state.lease_expires_in:.0f}s"
        lease += ")"
    health = f"{'ready' if state.health.ready else 'not ready'}: {state.health.reason}"
    if state.health.etcd_problem:
        health += f"; etcd unreachable ({state.health.etcd_problem})"
    if state.config is None:
        config = "no network config yet"
    else:
        c = state.config
        ipv6 = f", IPv6Network {c.ipv6.network}, IPv6SubnetLen {c.ipv6.subnet_len}" if c.ipv6 else ""
        backend = f"backend {c.backend.type} {c.backend.summary}"
        ipv4 = f"Network {c.network}, SubnetLen {c.subnet_len}" if c.ipv4 is not None else "IPv6-only"
        config = f"{ipv4}{ipv6}, {backend}"
    o = state.options
    security = "TLS" if o.etcd_cafile or any(e.startswith("https://") for e in o.etcd_endpoints) else "plain"
    if o.etcd_username:
        security += ", password auth"  # whose and which: not for a log
    return (
        f"state: {lease}; {state.subnet_leases} subnet leases, {state.peers_programmed} peers programmed; "
        f"{health}; "
        f"{config}; etcd {','.join(o.etcd_endpoints)} ({security}) prefix {o.etcd_prefix}; "
        f"state dir {o.state_dir}; subnet file {o.subnet_file}"
    )


class StraySignals:
    """Handler for STRAY_SIGNALS: each is logged the first time it arrives, then ignored."""

    def __init__(self) -> None:
        self.seen: set[int] = set()

    def __call__(self, signum: int, _frame: object) -> None:
        if signum not in self.seen:
            self.seen.add(signum)
            log.warning("ignoring %s: it has no meaning for overlayd (SIGUSR1 logs the state)",
                        signal.Signals(signum).name)  # fmt: skip


def install_signal_handlers(dump: Callable[[], AgentState]) -> None:
    """SIGUSR1 logs ``describe(dump())``; the stray signals are ignored. Main thread only."""

    def log_state(_signum: int, _frame: object) -> None:
        try:
            log.info("%s", describe(dump()))
        except Exception:  # raised here, it would surface in whatever the loop was doing
            log.exception("SIGUSR1: could not describe the state")

    signal.signal(signal.SIGUSR1, log_state)
    stray = StraySignals()
    for signum in STRAY_SIGNALS:
        signal.signal(signum, stray)


def lease_expires_in(expiry_unix: float) -> float | None:
    """Seconds until a Unix time (the lease expiry gauge's value), None if unset (0)."""
    return expiry_unix - time.time() if expiry_unix else None
