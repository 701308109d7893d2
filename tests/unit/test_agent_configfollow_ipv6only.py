"""A running agent of an IPv6-only network: its lease is kept on every check (not taken for one
the config no longer hands out), and a changed IPv6-only config is applied in place (no root:
the agent loop on an in-memory etcd, as test_agent_daemon does)."""

from __future__ import annotations

import json
from ipaddress import IPv6Address, IPv6Network

from overlayd.agent.daemon import Agent
from overlayd.agent.events import Recheck, Trigger
from overlayd.agent.leasekeeper import LeaseAction, LeaseKeeper
from overlayd.backend.api import DeviceState
from overlayd.backend.iface import ExternalInterface
from overlayd.backend.vxlan.backend import Vxlan
from overlayd.etcd.leasing import LeaseManager
from overlayd.etcd.memory import ManualClock, MemoryEtcd, MemoryRegistry
from overlayd.options import AgentOptions
from overlayd.subnet.lease import NO_PUBLIC_IP, LeaseAttrs

CONFIG = {
    "EnableIPv4": False,
    "EnableIPv6": True,
    "IPv6Network": "2001:db8:1000::/48",
    "Backend": {"Type": "vxlan"},
}


def ipv6_only_agent() -> tuple[Agent, MemoryRegistry]:
    """An agent holding an IPv6-only lease, as start-up leaves it."""
    agent = Agent(AgentOptions(vxlan_ingress_allowlist=False))
    external = ExternalInterface("u0", 2, None, 1500, ipv6=IPv6Address("2001:db8::1"),
                                 ipv6_segments=(IPv6Network("2001:db8::/64"),))  # fmt: skip
    etcd = MemoryEtcd(ManualClock())
    registry = MemoryRegistry(etcd)
    registry.put_config(json.dumps(CONFIG).encode())
    manager = LeaseManager(registry, NO_PUBLIC_IP, ttl=600, clock=etcd.clock)
    agent.keeper = LeaseKeeper(manager, registry, "/coreos.com/network", clock=etcd.clock)
    agent.config = agent.keeper.read_config()
    agent.attach(external, NO_PUBLIC_IP, Vxlan())
    agent.reconciler.device = DeviceState(ifindex=7, mac="0a:00:00:00:06:01", mtu=1450, ipv6_ifindex=7)
    attrs = LeaseAttrs(NO_PUBLIC_IP, "vxlan", vni=1, public_ipv6=IPv6Address("2001:db8::1"),
                       vtep_mac_v6="0a:00:00:00:06:01")  # fmt: skip
    agent.lease = agent.keeper.acquire(agent.config, attrs, []).lease
    return agent, registry


def test_the_lease_check_keeps_an_ipv6_only_lease() -> None:
    """It was taken for one the config does not hand out (its IPv4 half 0.0.0.0/0), "lost" and
    re-put on a new etcd lease at every check."""
    agent, registry = ipv6_only_agent()
    assert agent.keeper is not None and agent.lease is not None
    held = agent.lease
    assert agent.keeper.check().action is not LeaseAction.LOST
    assert agent._handle([Recheck()]) is Trigger.SIGHUP and not agent.stopping.is_set()
    assert agent.lease == held
    assert [lease.key for lease in registry.list_leases()[0]] == [held.key]


def test_a_wider_ipv6_network_is_applied_in_place() -> None:
    agent, registry = ipv6_only_agent()
    registry.put_config(json.dumps({**CONFIG, "IPv6Network": "2001:db8:1000::/40"}).encode())
    assert agent._handle([Recheck()]) is Trigger.SIGHUP
    assert not agent.stopping.is_set()
    assert agent.config is not None and agent.config.ipv6 is not None
    assert agent.config.ipv6.network == IPv6Network("2001:db8:1000::/40")
    assert agent.metrics.pool_size._value.get() == agent.config.ipv6.subnet_count
