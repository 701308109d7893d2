"""The agent's hold-down of a deleted peer against a real kernel: held entries survive a full
pass, go once due, and a returning lease is applied in place. The clock is passed in, so no
step depends on timing."""

from __future__ import annotations

import json
import logging
import time
from ipaddress import IPv4Address, IPv4Network

import pytest
from nsutil import SPEC, in_netns

from overlayd.agent.daemon import Agent
from overlayd.agent.events import Trigger
from overlayd.agent.peerlog import PeerLogBudget
from overlayd.backend.iface import ExternalInterface
from overlayd.backend.plane import Plane
from overlayd.backend.select import CONFIG_PARSERS
from overlayd.backend.vxlan.backend import Vxlan
from overlayd.etcd.peerwatch import PeerEvents, PeerSnapshot
from overlayd.etcd.registry import LeaseEvent
from overlayd.options import AgentOptions
from overlayd.subnet.config import parse_network_config
from overlayd.subnet.lease import Lease, LeaseAttrs

CONFIG = json.dumps({"Network": "198.18.0.0/16", "SubnetLen": 24, "Backend": {"Type": "vxlan"}})


def lease(n: int, mac: str | None = None, revision: int = 1) -> Lease:
    attrs = LeaseAttrs(IPv4Address(f"192.0.2.{n}"), "vxlan", vni=1, vtep_mac=mac or f"0a:00:00:00:00:{n:02x}")
    return Lease(IPv4Network(f"198.18.{n}.0/24"), attrs, mod_revision=revision)


def key(n: int) -> str:
    return f"198.18.{n}.0-24"


def agent_on_device() -> Agent:
    """An agent with its device and peers 2 and 3 programmed, as after its first listing."""
    agent = Agent(AgentOptions(vxlan_ingress_allowlist=False))
    external = ExternalInterface("u0", 0, IPv4Address("192.0.2.1"), 1500)
    backend = Vxlan()
    agent.attach(external, external.ip, backend)
    agent.reconciler.device, _ = backend.kernel.ensure_device(SPEC)
    agent.config = parse_network_config(CONFIG.encode(), where="test", backends=CONFIG_PARSERS)
    agent.lease = lease(1)
    agent._handle([PeerSnapshot({key(1): agent.lease, key(2): lease(2), key(3): lease(3)}, 1)])
    agent.reconciler.reconcile_entries(Trigger.RESYNC)
    return agent


def kernel_gateways(agent: Agent) -> set[str]:
    """The gateways of the routes on the device, read back from the kernel."""
    assert agent.reconciler.backend is not None and agent.reconciler.device is not None
    plane: Plane = agent.reconciler.backend.read_entries(agent.reconciler.device, None)
    return {str(route.gateway) for route in plane.routes}


def event(kind: str, n: int, lease_: Lease | None, at: float) -> PeerEvents:
    return PeerEvents([LeaseEvent(kind, key(n), lease_, 9)], received=at)  # type: ignore[arg-type]


def held_through_passes_then_removed() -> dict[str, object]:
    agent = agent_on_device()
    seen: dict[str, object] = {"start": kernel_gateways(agent)}
    agent._handle([event("delete", 2, None, at=100.0)])
    agent.reconciler.reconcile_entries(
        Trigger.TIMER
    )  # a full pass during the hold-down keeps the held entries
    # So does a re-list without it.
    agent._handle([PeerSnapshot({key(1): agent.lease, key(3): lease(3)}, 2, "error")])
    agent.reconciler.reconcile_entries(Trigger.RESYNC)
    seen["held"] = kernel_gateways(agent)
    seen["held gauge"] = agent.metrics.peers_held._value.get()
    seen["released early"] = agent.reconciler.release_holds(100.0 + agent.state.holds.seconds - 0.01) or len(
        agent.state.holds
    )
    agent.reconciler.release_holds(100.0 + agent.state.holds.seconds)
    seen["due"] = kernel_gateways(agent)
    agent.reconciler.reconcile_entries(Trigger.TIMER)  # and a full pass after it keeps them removed
    seen["after pass"] = kernel_gateways(agent)
    seen["removed"] = agent.metrics.peer_holds.labels(outcome="removed")._value.get()
    return seen


def returned_in_place_or_replaced() -> dict[str, object]:
    agent = agent_on_device()
    writes: list[object] = []
    apply = agent.reconciler.backend.apply  # type: ignore[union-attr]
    agent.reconciler.backend.apply = lambda device, diff: (writes.append(diff), apply(device, diff))  # type: ignore
    agent._handle([event("delete", 2, None, at=100.0)])
    agent._handle([event("put", 2, lease(2, revision=7), at=100.01)])  # its owner re-created it
    seen: dict[str, object] = {"returned writes": len(writes), "returned": kernel_gateways(agent)}
    seen["returned count"] = agent.metrics.peer_holds.labels(outcome="returned")._value.get()
    agent._handle([event("delete", 3, None, at=101.0)])
    agent._handle([event("put", 3, lease(3, mac="0a:00:00:00:09:03", revision=8), at=101.01)])
    assert agent.reconciler.backend is not None and agent.reconciler.device is not None
    neighs = agent.reconciler.backend.read_entries(agent.reconciler.device, None).neighs
    seen["replaced mac"] = sorted(n.mac for n in neighs if str(n.ip) == "198.18.3.0")
    seen["replaced count"] = agent.metrics.peer_holds.labels(outcome="replaced")._value.get()
    seen["still held"] = len(agent.state.holds)
    agent.reconciler.release_holds(1000.0)  # nothing held any more: nothing removed
    seen["later"] = kernel_gateways(agent)
    return seen


@pytest.mark.root
def test_held_entries_survive_full_passes_and_go_once_due(netns: str) -> None:
    seen = in_netns(netns, held_through_passes_then_removed)
    assert seen["start"] == {"198.18.2.0", "198.18.3.0"}
    assert seen["held"] == {"198.18.2.0", "198.18.3.0"} and seen["held gauge"] == 1
    assert seen["released early"] == 1  # not due yet: still held
    assert seen["due"] == seen["after pass"] == {"198.18.3.0"}
    assert seen["removed"] == 1


@pytest.mark.root
def test_a_returning_lease_is_applied_in_place_and_another_one_replaces_at_once(netns: str) -> None:
    seen = in_netns(netns, returned_in_place_or_replaced)
    assert seen["returned writes"] == 0 and seen["returned count"] == 1
    assert seen["returned"] == {"198.18.2.0", "198.18.3.0"}
    assert seen["replaced mac"] == ["0a:00:00:00:09:03"] and seen["replaced count"] == 1
    assert seen["still held"] == 0 and seen["later"] == {"198.18.2.0", "198.18.3.0"}


def flood_logged() -> list[str]:
    agent = agent_on_device()
    agent.reconciler.peer_log = PeerLogBudget(burst=3, rate=0.001, interval=10)  # no refill within the test
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("overlayd.agent.reconciler").addHandler(handler)
    logging.getLogger("overlayd.agent.reconciler").setLevel(logging.INFO)
    for n in range(10, 20):
        agent._handle([event("put", n, lease(n), at=time.monotonic())])
    agent._handle([event("delete", 10, None, at=time.monotonic())])
    agent.reconciler.release_holds(time.monotonic() + 2)
    agent.reconciler.log_summary(time.monotonic() + 11)
    return lines


@pytest.mark.root
def test_a_flood_of_peer_changes_logs_its_first_lines_and_one_summary(netns: str) -> None:
    lines = in_netns(netns, flood_logged)
    first = [f"peer 198.18.{n}.0/24 at 192.0.2.{n} (MAC 0a:00:00:00:00:{n:02x})" for n in (10, 11, 12)]
    assert lines[:3] == first
    assert lines[3:] == [
        "8 more peer changes in the last 11 s, not logged one by one: "
        "7 added, 0 changed, 1 removed, 0 returned"
    ]
