"""NetlinkMonitor in a real namespace: it fires for our device's objects and only for those."""

from __future__ import annotations

import contextlib
import queue
import struct
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from ipaddress import IPv4Address, IPv4Network

import pytest
from nsutil import SPEC, in_netns, peer

from overlayd.backend.desired import DesiredEntries
from overlayd.backend.monitor import DeviceChange, NetlinkMonitor, change_reason, is_echo
from overlayd.backend.plane import PlaneDiff, Route, without_overwritten
from overlayd.backend.rtnl.codec import RTM_NEWLINK, RTM_NEWROUTE, Message, encode_entry
from overlayd.backend.vxlan.device import VxlanBackend
from overlayd.subnet.lease import Lease, LeaseAttrs

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
    monitor = NetlinkMonitor(SPEC.name, lambda: state.ifindex, lambda change: events.put(change.reason))
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


def link_message(index: int, name: str) -> Message:
    """An RTM_NEWLINK body as the kernel sends it: ifinfomsg, then IFLA_IFNAME."""
    ifname = name.encode() + b"\0"
    attr = struct.pack("=HH", 4 + len(ifname), 3) + ifname + b"\0" * (-len(ifname) % 4)
    return Message(RTM_NEWLINK, 0, struct.pack("=BxHiII", 0, 1, index, 0, 0) + attr)


def test_link_matches_by_name_even_after_recreation() -> None:
    recreated = change_reason(link_message(99, "flannel.1"), "flannel.1", ifindex=7)
    assert recreated is not None and recreated.reason == "RTM_NEWLINK flannel.1"
    route = Route(IPv4Network("198.18.3.0/24"), IPv4Address("198.18.3.0"))
    other = Message(RTM_NEWROUTE, 0, encode_entry(route, 8, True, 1)[16:])
    assert change_reason(other, "flannel.1", ifindex=7) is None
    assert change_reason(other, "flannel.1", ifindex=None) is None
    ours = change_reason(other, "flannel.1", ifindex=8)
    assert ours == DeviceChange("RTM_NEWROUTE 198.18.3.0/24 on flannel.1", route, added=True)


@contextlib.contextmanager
def watched_device(
    is_echo: Callable[[DeviceChange], bool],
) -> Iterator[tuple[VxlanBackend, int, queue.Queue[str]]]:
    """flannel.1 made, and a monitor with ``is_echo`` signalling into the queue yielded."""
    backend = VxlanBackend()
    state, _ = backend.ensure_device(SPEC)
    events: queue.Queue[str] = queue.Queue()
    monitor = NetlinkMonitor(SPEC.name, lambda: state.ifindex, lambda c: events.put(c.reason), is_echo)
    monitor.start()
    try:
        yield backend, state.ifindex, events
    finally:
        monitor.stop()
        backend.close()


def ours_then_theirs(
    echo: Callable[[DeviceChange], bool], ours: Iterable[Callable[[], PlaneDiff]], theirs: str
) -> tuple[list[str], list[str]]:
    """Reasons signalled while we apply each of ``ours`` in turn (each read before the next, as
    in the agent), then when the command ``theirs`` changes the device by hand."""
    with watched_device(echo) as (backend, ifindex, events):
        signalled = []
        for diff in ours:
            backend.apply(ifindex, diff())
            signalled += collect(events, first_wait=0.3)
        subprocess.run(theirs, shell=True, check=True)
        return signalled, collect(events, first_wait=2)


def echoes_and_repairs() -> tuple[list[str], list[str]]:
    """Reasons signalled while we program peer 2 (wanted), then when a hand deletion follows."""
    wanted = set(peer(2).neighs | peer(2).fdbs | peer(2).routes)

    def echo(change: DeviceChange) -> bool:
        return change.entry is not None and (change.entry in wanted) == change.added

    return ours_then_theirs(echo, [lambda: PlaneDiff(add=peer(2))], "ip route del 198.18.2.0/24")


@pytest.mark.root
def test_echoes_of_our_writes_are_dropped_hand_changes_are_not(netns: str) -> None:
    echoes, repairs = in_netns(netns, echoes_and_repairs)
    assert echoes == []
    assert repairs == ["RTM_DELROUTE 198.18.2.0/24 on flannel.1"]


def lease_of_peer(n: int, mac: str | None = None) -> Lease:
    """The lease whose entries are ``peer(n, mac)``."""
    attrs = LeaseAttrs(IPv4Address(f"192.0.2.{n}"), "vxlan", vni=1, vtep_mac=mac or f"0a:00:00:00:00:{n:02x}")
    return Lease(IPv4Network(f"198.18.{n}.0/24"), attrs)


def peer_changes_and_a_hand_deletion() -> tuple[list[str], list[str]]:
    """Reasons signalled while the agent's wanted entries (``is_echo`` on a DesiredEntries) add
    peer 2, give it a new MAC, then remove it; then when a hand deletion hits peer 3's neighbour."""
    desired = DesiredEntries()
    steps = [("2", lease_of_peer(2)), ("3", lease_of_peer(3)), ("2", lease_of_peer(2, "0a:00:00:00:01:02")),
             ("2", None)]  # fmt: skip
    return ours_then_theirs(
        lambda change: is_echo(desired, change),
        [lambda k=key, lease=lease: without_overwritten(desired.set_peer(k, lease)) for key, lease in steps],
        "ip neigh del 198.18.3.0 dev flannel.1",
    )


@pytest.mark.root
def test_a_removed_or_replaced_neighbour_is_our_echo_but_a_hand_deletion_is_not(netns: str) -> None:
    # The kernel reports a removed neighbour without its MAC: it is ours where we want none.
    ours, theirs = in_netns(netns, peer_changes_and_a_hand_deletion)
    assert ours == []
    assert theirs and all(reason.startswith("RTM_") and "198.18.3.0" in reason for reason in theirs), theirs
