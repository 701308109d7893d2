"""NetlinkMonitor in a real namespace: it fires for our device's objects and only for those."""

from __future__ import annotations

import queue
import subprocess
import time

import pytest
from nsutil import SPEC, in_netns, peer

from overlayd.backend.vxlan import VxlanBackend
from overlayd.desired import PlaneDiff
from overlayd.netmon import NetlinkMonitor, change_reason

# Each step runs inside the namespace, after flannel.1 exists with peer 2 programmed.
STEPS = [
    ("other device", "ip link set x0 mtu 1400; ip route add 198.18.77.0/24 dev x0"),
    ("route", "ip route del 198.18.2.0/24"),
    ("neigh", "ip neigh del 198.18.2.0 dev flannel.1"),
    ("fdb", "bridge fdb del 0a:00:00:00:00:02 dev flannel.1 dst 192.0.2.2"),
    ("address", "ip addr del 198.18.1.0/32 dev flannel.1"),
    ("device", "ip link del flannel.1"),
]


def collect(events: queue.Queue[str], first_wait: float) -> list[str]:
    """Reasons signalled within ``first_wait`` and a short settle time after the first one."""
    reasons = []
    deadline = time.monotonic() + first_wait
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            reasons.append(events.get(timeout=remaining))
        except queue.Empty:
            break
        deadline = min(deadline, time.monotonic() + 0.05)
    return reasons


def watch_steps() -> dict[str, list[str]]:
    subprocess.run("ip link add x0 type veth peer name x1; ip link set x0 up", shell=True,
                   check=True)
    backend = VxlanBackend()
    state, _ = backend.ensure_device(SPEC)
    backend.apply(state.ifindex, PlaneDiff(add=peer(2)))
    backend.close()
    events: queue.Queue[str] = queue.Queue()
    monitor = NetlinkMonitor(SPEC.name, lambda: state.ifindex, events.put)
    monitor.start()
    try:
        seen = {}
        for label, command in STEPS:
            subprocess.run(command, shell=True, check=True)
            seen[label] = collect(events, first_wait=0.3 if label == "other device" else 2)
        return seen
    finally:
        started = time.monotonic()
        monitor.stop()
        seen["stop seconds"] = [f"{time.monotonic() - started:.3f}"]


@pytest.mark.root
def test_fires_for_our_objects_only(netns: str) -> None:
    seen = in_netns(netns, watch_steps)
    assert seen["other device"] == []
    assert any(r.startswith("RTM_DELROUTE 198.18.2.0/24") for r in seen["route"])
    assert any(r.startswith("RTM_DELNEIGH neigh 198.18.2.0") for r in seen["neigh"])
    assert any(r.startswith("RTM_DELNEIGH fdb 192.0.2.2 0a:00:00:00:00:02") for r in seen["fdb"])
    assert any(r.startswith("RTM_DELADDR 198.18.1.0") for r in seen["address"])
    assert "RTM_DELLINK flannel.1" in seen["device"]
    assert float(seen["stop seconds"][0]) < 0.5


def test_link_matches_by_name_even_after_recreation() -> None:
    recreated = {"event": "RTM_NEWLINK", "IFLA_IFNAME": "flannel.1", "index": 99}
    assert change_reason(recreated, "flannel.1", ifindex=7) == "RTM_NEWLINK flannel.1"
    other = {"event": "RTM_NEWROUTE", "RTA_OIF": 8, "RTA_DST": "198.18.3.0", "dst_len": 24}
    assert change_reason(other, "flannel.1", ifindex=7) is None
    assert change_reason(other, "flannel.1", ifindex=None) is None
