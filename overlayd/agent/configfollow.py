"""Following the network config while running: a changed one applied, held, restarted for, or
its new backend switched to in place.

A part of ``Agent`` (``daemon``) kept apart by job: the config's verdict comes from
``LeaseKeeper.recheck``; a switch of backend (``backendswitch.switch_live``) stops the netlink
monitor on the old backend's device, starts it on the new one's, and re-acquires our lease so
that its value says the new backend, which also runs a full pass.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from queue import Queue

from overlayd.agent.backendswitch import switch_live
from overlayd.agent.events import AgentEvent
from overlayd.agent.health import HealthReporter
from overlayd.agent.leasekeeper import LeaseKeeper
from overlayd.agent.metrics import Metrics
from overlayd.agent.peerstate import PeerState
from overlayd.agent.reconciler import Reconciler
from overlayd.backend.api import Backend, HostFacts
from overlayd.backend.iface import ExternalInterface
from overlayd.backend.monitor import DeviceChange, NetlinkMonitor
from overlayd.subnet.confchange import ConfigAction
from overlayd.subnet.config import NetworkConfig
from overlayd.subnet.lease import Lease, LeaseAttrs

RESTART_EXIT_CODE = 75  # EX_TEMPFAIL: systemd's Restart=on-failure brings us back with the new VNI


class ConfigFollower:
    """The agent's config-following steps; ``Agent`` provides the state they work on."""

    keeper: LeaseKeeper | None
    reconciler: Reconciler
    state: PeerState
    metrics: Metrics
    health: HealthReporter
    events: Queue[AgentEvent]
    monitor: NetlinkMonitor | None
    external: ExternalInterface | None
    public_ip: IPv4Address | None
    own_attrs: LeaseAttrs | None
    exit_code: int
    config: NetworkConfig | None
    lease: Lease | None

    def request_stop(self, *_: object) -> None: ...
    def attach(self, external: ExternalInterface, public_ip: IPv4Address, backend: Backend) -> HostFacts: ...
    def _acquire(self, previous: list[IPv4Network]) -> bool: ...
    def _is_echo(self, change: DeviceChange) -> bool: ...

    def _recheck_config(self) -> None:
        """Pick up a changed network config (``LeaseKeeper.recheck`` judges and logs it)."""
        assert self.keeper is not None
        check = self.keeper.recheck(self.state.others())
        if check.valid is not None:
            self.metrics.config_ok.set(1 if check.valid else 0)
        decision = check.decision
        if decision is None:
            return
        if decision.action is ConfigAction.HOLD or decision.cleared:
            self.health.config_hold(decision if decision.action is ConfigAction.HOLD else None)
        if decision.action is ConfigAction.RESTART:
            self.exit_code = RESTART_EXIT_CODE
            self.request_stop()
        elif decision.action is ConfigAction.SWITCH:
            self._switch(decision.stored)
        elif decision.action is ConfigAction.APPLY:
            self.config = decision.stored
            self.metrics.pool_size.set(decision.stored.primary.subnet_count)

    def _watch_kernel(self, backend: Backend, config: NetworkConfig, external: str) -> None:
        """Start the netlink monitor on ``backend``'s device (none: the ``external`` interface)."""
        reconciler = self.reconciler
        self.monitor = monitor = NetlinkMonitor(
            (*backend.device_names(config), external)[0],
            lambda: reconciler.device.ifindex if reconciler.device else 0,
            self.events.put, self._is_echo, reconciler.writing, reconciler.ipv6_device,
            backend.drift_probe(config),
        )  # fmt: skip
        reconciler.monitor_alive = lambda: monitor.alive
        monitor.start()

    def _switch(self, stored: NetworkConfig) -> None:
        """Run ``stored``'s backend from now on, in this process (``backendswitch.switch_live``);
        our lease is re-published with what the new backend says and everything re-programmed."""
        keeper, reconciler, external, public_ip = self.keeper, self.reconciler, self.external, self.public_ip
        assert keeper is not None and reconciler.backend is not None and reconciler.host is not None
        assert self.config is not None and self.lease is not None and external and public_ip
        raw = keeper.stored_raw or b""
        switched = switch_live(reconciler.backend, self.config, stored, raw, reconciler.host)
        if switched is None:
            keeper.refused_switch = stored
            return
        if self.monitor is not None:
            self.monitor.stop()
        keeper.switched(stored, keeper.stored_raw)
        host = reconciler.host
        keeper.publish(lambda in_force: switched.backend.lease_data(in_force, host), stored, switched.attrs)
        self.config, self.own_attrs = stored, switched.attrs
        reconciler.device, reconciler.in_sync = None, None
        self.attach(external, public_ip, switched.backend)
        self._watch_kernel(switched.backend, stored, external.name)
        self._acquire([self.lease.subnet])
