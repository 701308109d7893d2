"""What the agent tells its supervisors: /readyz's snapshot, systemd's STATUS, READY and watchdog,
and the gauges of its peers and config hold.

The HTTP listeners read ``metrics.health``, which this replaces whole (an atomic reference);
everything here runs on the loop's thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

from overlayd.agent.metrics import Metrics
from overlayd.agent.peerstate import PeerState
from overlayd.agent.sdnotify import Notifier
from overlayd.agent.statedump import AgentState, lease_expires_in
from overlayd.options import AgentOptions
from overlayd.subnet.confchange import ConfigDecision, hold_reason


class HealthReporter:
    """Readiness and status, from the values the loop hands in."""

    def __init__(self, metrics: Metrics, notifier: Notifier, state: PeerState) -> None:
        self.metrics, self.notifier, self.state = metrics, notifier, state
        self.on_peers: Callable[[], None] | None = None  # told after each count (the probe feed)

    def set(self, ready: bool, reason: str) -> None:
        """Ready or not, and why (/readyz says why, not only what)."""
        self.metrics.health = replace(
            self.metrics.health, ready=ready, reason=reason, last_loop=time.monotonic()
        )
        self.metrics.ready.set(1 if ready else 0)
        if ready:
            self.notifier.ready(self.status_line())

    def after_pass(self, failed: list[str], lease_expired: str, failing_entries: int) -> None:
        """/readyz after a pass: not ready while a step that serves every peer keeps failing (the
        firewall, the device, reading the entries). One peer's entries the kernel refuses leave
        the node ready, named in the reason: a single careless lease must not take every node
        in the cluster out of service."""
        if lease_expired:
            self.set(False, lease_expired)
        elif failed:
            self.set(
                False, f"full pass failing at step {', '.join(failed)} (see the log); retried every pass"
            )
        elif failing_entries:
            self.set(True, f"ready; the kernel refuses {failing_entries} peer entries (see the log)")
        else:
            self.set(True, "ready")

    def loop_turned(self) -> None:
        self.metrics.health = replace(self.metrics.health, last_loop=time.monotonic())

    def etcd_problem(self, problem: str) -> None:
        """Record whether the peer watch reaches etcd ("" when it does), for /readyz and STATUS."""
        self.metrics.watch_up.set(0 if problem else 1)
        self.metrics.health = replace(self.metrics.health, etcd_problem=problem)

    def config_hold(self, decision: ConfigDecision | None) -> None:
        """Record a config hold (None: none) for /readyz, systemd's STATUS and the metrics."""
        self.metrics.config_mismatch.set(1 if decision else 0)
        self.metrics.config_mismatch_leases.set(decision.outside_count if decision else 0)
        problem = hold_reason(decision) if decision else ""
        self.metrics.health = replace(self.metrics.health, config_problem=problem)

    def count_peers(self) -> None:
        state = self.state
        self.metrics.subnet_leases.set(len(state.peers))
        if state.lease is not None and state.config is not None:
            self.metrics.peers_known.set(len(state.wanted()))
        self.metrics.peers_programmed.set(len(state.programmed))
        self.metrics.peers_held.set(len(state.holds))
        if self.on_peers is not None:
            self.on_peers()

    def status_line(self) -> str:
        """One line for systemd's STATUS: what we hold and how many peers, or what we wait for."""
        health = self.metrics.health
        if self.state.lease is None or not health.ready:
            return health.reason
        line = f"holding subnet {self.state.lease.own_subnet}, {len(self.state.programmed)} peers"
        if health.etcd_problem:
            line += "; etcd unreachable, data path served from memory"
        if health.config_problem:
            line += f"; {health.config_problem}"
        return line

    def watchdog(self) -> None:
        """Ping the watchdog and refresh STATUS: once per turn of the loop."""
        self.notifier.watchdog()
        self.notifier.status(self.status_line())

    def state_dump(self, options: AgentOptions) -> AgentState:
        """The state SIGUSR1 logs."""
        [expiry] = self.metrics.lease_expiry.collect()[0].samples
        state = self.state
        return AgentState(
            options, state.config, state.lease, lease_expires_in(expiry.value),
            len(state.peers), len(state.programmed), self.metrics.health,
        )  # fmt: skip
