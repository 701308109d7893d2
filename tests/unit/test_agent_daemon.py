"""The agent loop's decisions on typed events: which full pass each batch asks for, what the fast
path writes, how health follows. A fake backend records the writes; no root, kernel or etcd."""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv4Network

from overlayd.agent.daemon import Agent
from overlayd.agent.events import Recheck, Trigger, Wake
from overlayd.agent.leasekeeper import LeaseKeeper
from overlayd.backend.api import DeviceState
from overlayd.backend.iface import ExternalInterface
from overlayd.backend.monitor import DeviceChange
from overlayd.backend.plane import PlaneDiff
from overlayd.backend.vxlan.backend import Vxlan
from overlayd.etcd.api import LeaseEvent
from overlayd.etcd.leasing import LeaseManager
from overlayd.etcd.memory import ManualClock, MemoryEtcd, MemoryRegistry
from overlayd.etcd.peerwatch import PeerEvents, PeerSnapshot, PeerWatchDown
from overlayd.options import AgentOptions
from overlayd.subnet.lease import Lease, LeaseAttrs
from tests.integration.support import host_attrs, network_config


class FakeBackend(Vxlan):
    """VXLAN's decisions; records the entry writes instead of making them. ``refuse`` makes
    them fail as a netlink error would."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[PlaneDiff] = []
        self.refuse = False

    def apply(self, device: DeviceState, diff: PlaneDiff) -> None:
        if self.refuse:
            raise OSError("netlink: EINVAL")
        self.writes.append(diff)


def lease(n: int) -> Lease:
    attrs = LeaseAttrs(IPv4Address(f"192.0.2.{n}"), "vxlan", vni=1, vtep_mac=f"0a:00:00:00:00:{n:02x}")
    return Lease(IPv4Network(f"198.18.{n}.0/24"), attrs, mod_revision=1)


def key(n: int) -> str:
    return f"198.18.{n}.0-24"


def agent_with_peers(*peers: int) -> tuple[Agent, FakeBackend]:
    agent = Agent(AgentOptions(vxlan_ingress_allowlist=False))
    backend = FakeBackend()
    external = ExternalInterface("u0", 2, IPv4Address("192.0.2.1"), 1500)
    agent.attach(external, external.ip, backend)
    agent.reconciler.device = DeviceState(ifindex=7, mac="0a:00:00:00:00:01", mtu=1450)
    agent.config, agent.lease = network_config(), lease(1)
    assert (
        agent._handle([PeerSnapshot({key(1): lease(1), **{key(n): lease(n) for n in peers}}, 1)])
        is Trigger.RESYNC
    )
    return agent, backend


def put(n: int) -> PeerEvents:
    return PeerEvents([LeaseEvent("put", key(n), lease(n), 9)])  # type: ignore[arg-type]


def test_the_trigger_labels_are_the_metric_labels_of_before_and_only_some_repair() -> None:
    assert {trigger.value for trigger in Trigger} == {
        "lease",
        "resync",
        "event",
        "netlink",
        "timer",
        "sighup",
    }
    assert {trigger for trigger in Trigger if trigger.repairs} == {
        Trigger.TIMER,
        Trigger.NETLINK,
        Trigger.SIGHUP,
    }


def test_a_peer_event_is_written_directly_and_asks_for_no_pass() -> None:
    agent, backend = agent_with_peers(2)
    assert agent._handle([put(3)]) is None
    [diff] = backend.writes
    assert {str(route.gateway) for route in diff.add.routes} == {"198.18.3.0"}
    assert agent.state.programmed == {key(3)}  # the snapshot's peers wait for the resync pass
    assert agent.metrics.peer_events.labels(kind="put")._value.get() == 1
    assert agent.metrics.peers_known._value.get() == 2


def test_a_refused_write_asks_for_a_full_pass_and_is_not_counted_programmed() -> None:
    agent, backend = agent_with_peers(2)
    backend.refuse = True
    assert agent._handle([put(3)]) is Trigger.EVENT
    assert key(3) not in agent.state.programmed and key(3) in agent.state.peers


def test_netlink_watch_down_and_wake_events() -> None:
    agent, _ = agent_with_peers(2)
    assert agent._handle([DeviceChange("link changed")]) is Trigger.NETLINK
    assert (
        agent._handle([DeviceChange("link changed"), PeerSnapshot({key(1): lease(1)}, 2)]) is Trigger.RESYNC
    )
    assert agent._handle([PeerWatchDown("etcd unreachable")]) is None
    assert (
        agent.metrics.health.etcd_problem == "etcd unreachable" and agent.metrics.watch_up._value.get() == 0
    )
    assert agent._handle([Wake()]) is None
    assert agent._handle([PeerSnapshot({key(1): lease(1)}, 3, "error")]) is Trigger.RESYNC
    assert (
        agent.metrics.health.etcd_problem == ""
        and agent.metrics.relists.labels(reason="error")._value.get() == 1
    )


def test_sighup_rechecks_and_a_new_vni_stops_the_agent_for_a_restart() -> None:
    agent, _ = agent_with_peers(2)
    etcd = MemoryEtcd(ManualClock())
    registry = MemoryRegistry(etcd)
    config = {"Network": "198.18.0.0/16", "SubnetLen": 24, "Backend": {"Type": "vxlan", "VNI": 1}}
    registry.put_config(json.dumps(config).encode())
    manager = LeaseManager(registry, IPv4Address("192.0.2.1"), ttl=600, clock=etcd.clock)
    agent.keeper = LeaseKeeper(manager, registry, "/coreos.com/network", clock=etcd.clock)
    agent.config = agent.keeper.read_config()
    agent.lease = agent.keeper.acquire(agent.config, host_attrs(1), [IPv4Network("198.18.1.0/24")]).lease
    assert agent._handle([Recheck()]) is Trigger.SIGHUP and not agent.stopping.is_set()
    registry.put_config(json.dumps({**config, "Backend": {"Type": "vxlan", "VNI": 2}}).encode())
    assert agent._handle([Recheck()]) is Trigger.SIGHUP
    assert agent.stopping.is_set() and agent.exit_code == 75
