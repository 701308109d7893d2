"""VxlanBackend against a real kernel, inside throwaway network namespaces."""

from __future__ import annotations

import dataclasses
import socket
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

import pytest
from nsutil import SPEC, in_netns, ip_json, peer, run, union

from overlayd.backend.api import ApplyError, BackendError, DeviceState
from overlayd.backend.desired import DirectRoute, Neigh, Plane, PlaneDiff, diff_planes
from overlayd.backend.vxlan.device import DeviceSpec, DirectRoutes, VxlanBackend

pytestmark = pytest.mark.root


def ensure(spec: DeviceSpec) -> tuple[DeviceState, list[str]]:
    backend = VxlanBackend()
    try:
        return backend.ensure_device(spec)
    finally:
        backend.close()


def find_mac(spec: DeviceSpec) -> str | None:
    backend = VxlanBackend()
    try:
        return backend.find_compatible_mac(spec)
    finally:
        backend.close()


def sync(desired: Plane) -> Plane:
    """Full reconcile as the agent does it: ensure, read, diff, apply; return what is read after."""
    backend = VxlanBackend()
    try:
        state, _ = backend.ensure_device(SPEC)
        backend.apply(state.ifindex, diff_planes(desired, backend.read_plane(state.ifindex)))
        return backend.read_plane(state.ifindex)
    finally:
        backend.close()


def read_plane() -> Plane:
    backend = VxlanBackend()
    try:
        state, _ = backend.ensure_device(SPEC)
        return backend.read_plane(state.ifindex)
    finally:
        backend.close()


def link(ns: str) -> dict:
    [device] = ip_json(ns, "link", "show", "flannel.1")
    return device


def underlay(ns: str) -> int:
    return ip_json(ns, "link", "show", "u0")[0]["ifindex"]


def accept_ra(ns: str) -> str:
    return run("ip", "netns", "exec", ns, "cat", "/proc/sys/net/ipv6/conf/flannel.1/accept_ra").stdout.strip()


def route_protocols(ns: str) -> dict[str, str]:
    """Each route's destination and protocol (``ip -j`` omits ``boot``, as the plain output does)."""
    return {route["dst"]: route.get("protocol", "boot") for route in ip_json(ns, "route", "show")}


def test_creates_device_like_flanneld(netns: str) -> None:
    state, actions = in_netns(netns, ensure, SPEC)
    assert actions == ["created flannel.1", "set up", "added address 198.18.1.0/32"]
    device = link(netns)
    info = device["linkinfo"]["info_data"]
    assert device["linkinfo"]["info_kind"] == "vxlan"
    assert (info["id"], info["local"], info["link"], info["port"]) == (1, "192.0.2.1", "u0", 8472)
    assert info["learning"] is False
    assert (device["mtu"], device["address"]) == (1450, SPEC.mac)
    assert "UP" in device["flags"]
    assert state == DeviceState(device["ifindex"], SPEC.mac, 1450, underlay(netns))
    [addr] = ip_json(netns, "-4", "addr", "show", "flannel.1")[0]["addr_info"]
    assert (addr["local"], addr["prefixlen"]) == ("198.18.1.0", 32)
    assert accept_ra(netns) == "0"  # as flanneld: no router advertisement configures the overlay
    assert in_netns(netns, ensure, SPEC) == (state, [])


def test_reuses_compatible_device_and_fixes_drift(netns: str) -> None:
    run("ip", "-n", netns, "link", "add", "flannel.1", "type", "vxlan", "id", "1",
        "local", "192.0.2.1", "dev", "u0", "dstport", "8472", "nolearning")
    run("ip", "-n", netns, "link", "set", "flannel.1", "mtu", "1300", "address", "0a:00:00:00:0f:0f")
    run("ip", "-n", netns, "addr", "add", "198.18.99.1/24", "dev", "flannel.1")
    ifindex = link(netns)["ifindex"]
    assert accept_ra(netns) == "1"  # the kernel's default for a device made by hand
    assert in_netns(netns, find_mac, SPEC) == "0a:00:00:00:0f:0f"

    adopted = dataclasses.replace(SPEC, mac="0a:00:00:00:0f:0f")
    state, actions = in_netns(netns, ensure, adopted)
    assert state == DeviceState(ifindex, "0a:00:00:00:0f:0f", 1450, underlay(netns))
    assert actions == [
        "set mtu 1450 (was 1300)",
        "set up",
        "removed address 198.18.99.1/24",
        "added address 198.18.1.0/32",
    ]
    assert link(netns)["mtu"] == 1450
    assert accept_ra(netns) == "0"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"local_ip": IPv4Address("192.0.2.9")}, "local 192.0.2.1, want 192.0.2.9"),
        ({"port": 4789}, "port 8472, want 4789"),
        ({"gbp": True}, "gbp False, want True"),
    ],
)
def test_recreates_incompatible_device(netns: str, change: dict, reason: str) -> None:
    run("ip", "-n", netns, "addr", "add", "192.0.2.9/24", "dev", "u0")
    in_netns(netns, ensure, SPEC)
    old_ifindex = link(netns)["ifindex"]
    changed = dataclasses.replace(SPEC, **change)
    assert in_netns(netns, find_mac, changed) is None

    state, actions = in_netns(netns, ensure, changed)
    assert actions[:2] == [f"deleted incompatible flannel.1 ({reason})", "created flannel.1"]
    assert state.ifindex != old_ifindex
    assert state.mac == SPEC.mac  # the persisted MAC survives re-creation
    info = link(netns)["linkinfo"]["info_data"]
    assert (info["local"], info["port"]) == (str(changed.local_ip), changed.port or 8472)


def test_recreates_learning_device(netns: str) -> None:
    run("ip", "-n", netns, "link", "add", "flannel.1", "type", "vxlan", "id", "1",
        "local", "192.0.2.1", "dev", "u0", "dstport", "8472", "learning")
    _, actions = in_netns(netns, ensure, SPEC)
    assert actions[0] == "deleted incompatible flannel.1 (learning True, want False)"
    assert link(netns)["linkinfo"]["info_data"]["learning"] is False


def test_apply_and_read_plane_round_trip(netns: str) -> None:
    two = union(peer(2), peer(3))
    assert in_netns(netns, sync, two) == two
    routes = run("ip", "-n", netns, "route", "show", "dev", "flannel.1").stdout
    assert "198.18.2.0/24 via 198.18.2.0 onlink" in routes  # protocol boot, as flanneld's
    assert {route_protocols(netns)[dst] for dst in ("198.18.2.0/24", "198.18.3.0/24")} == {"boot"}

    # Peer 3 leaves, peer 2's VTEP MAC changes: stale neighbour and FDB entries must go.
    moved = peer(2, mac="0a:00:00:00:02:99")
    assert in_netns(netns, sync, moved) == moved
    fdb = run("bridge", "-n", netns, "fdb", "show", "dev", "flannel.1").stdout
    assert "0a:00:00:00:00:02" not in fdb
    assert "0a:00:00:00:02:99 dst 192.0.2.2 self permanent" in fdb
    assert in_netns(netns, sync, Plane()) == Plane()


def test_read_plane_ignores_kernel_entries(netns: str) -> None:
    in_netns(netns, sync, peer(2))
    # Entries the kernel or an operator adds that are not peer entries.
    run("bridge", "-n", netns, "fdb", "append", "00:00:00:00:00:00", "dev", "flannel.1",
        "dst", "192.0.2.7")
    run("ip", "-n", netns, "route", "add", "198.18.200.0/24", "dev", "flannel.1")
    run("ip", "-n", netns, "neigh", "add", "198.18.201.1", "lladdr", "0a:00:00:00:00:07",
        "dev", "flannel.1", "nud", "stale")
    assert in_netns(netns, read_plane) == peer(2)


@pytest.mark.parametrize(
    "delete",
    [
        ("ip", "route", "del", "198.18.2.0/24"),
        ("ip", "neigh", "del", "198.18.2.0", "dev", "flannel.1"),
        ("bridge", "fdb", "del", "0a:00:00:00:00:02", "dev", "flannel.1", "dst", "192.0.2.2"),
    ],
    ids=["route", "neigh", "fdb"],
)
def test_hand_deletion_is_seen_and_repaired(netns: str, delete: tuple[str, ...]) -> None:
    in_netns(netns, sync, peer(2))
    run(delete[0], "-n", netns, *delete[1:])
    actual = in_netns(netns, read_plane)
    assert len(actual) == 2
    assert in_netns(netns, sync, peer(2)) == peer(2)


def test_apply_tolerates_gone_entries_and_collects_failures(netns: str) -> None:
    malformed = Plane(neighs=frozenset({Neigh(IPv4Address("198.18.6.0"), "not-a-mac")}))

    def apply_all() -> tuple[list[str], Plane]:
        backend = VxlanBackend()
        try:
            state, _ = backend.ensure_device(SPEC)
            backend.apply(state.ifindex, PlaneDiff(remove=peer(5)))  # absent: not an error
            try:
                backend.apply(state.ifindex, PlaneDiff(add=union(malformed, peer(7))))
            except ApplyError as err:
                return err.failures, backend.read_plane(state.ifindex)
            return [], backend.read_plane(state.ifindex)
        finally:
            backend.close()

    failures, actual = in_netns(netns, apply_all)
    assert len(failures) == 1
    assert failures[0].startswith("replace neigh 198.18.6.0 lladdr not-a-mac: ")
    assert actual == peer(7)  # the good peer was programmed despite the bad entry


def test_two_hosts_ping_across_overlay(netns_pair: tuple[str, str]) -> None:
    hosts = []
    for n, ns in enumerate(netns_pair, start=1):
        spec = dataclasses.replace(
            SPEC, local_ip=IPv4Address(f"192.0.2.{n}"),
            address=IPv4Interface(f"198.18.{n}.0/32"), mac=f"0a:00:00:00:00:{n:02x}")
        hosts.append((ns, spec))

    def program(spec: DeviceSpec, peer_number: int) -> None:
        backend = VxlanBackend()
        try:
            state, _ = backend.ensure_device(spec)
            backend.apply(state.ifindex, PlaneDiff(add=peer(peer_number)))
        finally:
            backend.close()

    in_netns(hosts[0][0], program, hosts[0][1], 2)
    in_netns(hosts[1][0], program, hosts[1][1], 1)
    ping = run("ip", "netns", "exec", hosts[0][0], "ping", "-c", "1", "-W", "2",
               "-I", "198.18.1.0", "198.18.2.0", check=False)
    assert ping.returncode == 0, ping.stdout + ping.stderr


def test_too_large_mtu_is_a_clear_error(netns: str) -> None:
    def ensure_huge_mtu() -> str:
        try:
            ensure(dataclasses.replace(SPEC, mtu=9000))
        except BackendError as err:
            return str(err)
        return "no error"

    # The kernel caps a new device's MTU silently but refuses to raise it beyond the underlay's.
    message = in_netns(netns, ensure_huge_mtu)
    assert message == "flannel.1: cannot set mtu 9000 (was 1450): Invalid argument"


def test_one_backend_rereads_only_what_changed(netns: str) -> None:
    """The agent keeps one backend: an unchanged dump gives the same Plane object back (its
    'nothing changed' signal), any change a fresh and correct one, also on a new device."""

    def scenario() -> list[object]:
        backend = VxlanBackend()
        try:
            state, _ = backend.ensure_device(SPEC)
            backend.apply(state.ifindex, diff_planes(peer(2), backend.read_plane(state.ifindex)))
            first, again = backend.read_plane(state.ifindex), backend.read_plane(state.ifindex)
            run("ip", "route", "del", "198.18.2.0/24")
            after_delete = backend.read_plane(state.ifindex)
            run("ip", "link", "del", "flannel.1")
            recreated, _ = backend.ensure_device(SPEC)
            on_new_device = backend.read_plane(recreated.ifindex)
            return [first, again, after_delete, on_new_device]
        finally:
            backend.close()

    first, again, after_delete, on_new_device = in_netns(netns, scenario)
    assert first == peer(2) and again is first
    assert after_delete is not first and after_delete.routes == frozenset()
    assert len(after_delete) == 2  # neighbour and FDB entry still there
    assert on_new_device == Plane()


OVERLAY = IPv4Network("198.18.0.0/16")


def sync_direct(desired: Plane) -> Plane:
    """``sync`` with DirectRouting's routes on the underlay ``u0`` read and written too."""
    backend = VxlanBackend()
    try:
        state, _ = backend.ensure_device(SPEC)
        direct = DirectRoutes(underlay=socket.if_nametoindex("u0"), network=OVERLAY)
        backend.apply(state.ifindex, diff_planes(desired, backend.read_plane(state.ifindex, direct)))
        return backend.read_plane(state.ifindex, direct)
    finally:
        backend.close()


def direct(n: int) -> Plane:
    route = DirectRoute(IPv4Network(f"198.18.{n}.0/24"), IPv4Address(f"192.0.2.{n}"))
    return Plane(direct=frozenset({route}))


def test_direct_routes_go_on_the_underlay_and_are_read_back(netns: str) -> None:
    """DirectRouting: ``<subnet> via <PublicIP>`` on the underlay, no VXLAN entries; routes
    into the overlay via an underlay gateway are read as direct routes, others are not."""
    # Not peers' direct routes: outside the overlay, the whole overlay, a routing daemon's.
    others = [("198.19.9.0/24", "via", "192.0.2.9"), ("198.18.0.0/16", "via", "192.0.2.8"),
              ("198.18.9.0/24", "via", "192.0.2.7", "proto", "bird")]  # fmt: skip
    for route in others:
        run("ip", "-n", netns, "route", "add", *route)
    both = union(direct(2), peer(3))
    assert in_netns(netns, sync_direct, both) == both
    routes = run("ip", "-n", netns, "route", "show").stdout
    assert "198.18.2.0/24 via 192.0.2.2 dev u0" in routes
    assert "198.18.3.0/24 via 198.18.3.0 dev flannel.1 onlink" in routes
    assert {route_protocols(netns)[dst] for dst in ("198.18.2.0/24", "198.18.3.0/24")} == {"boot"}

    # Peer 2 is reached over VXLAN again (DirectRouting off for it): its direct route goes.
    assert in_netns(netns, sync_direct, union(peer(2), peer(3))) == union(peer(2), peer(3))
    routes = run("ip", "-n", netns, "route", "show").stdout
    assert "198.18.2.0/24 via 192.0.2.2" not in routes
    # ... and back: the VXLAN route removed, the direct one added.
    assert in_netns(netns, sync_direct, union(direct(2), peer(3))) == union(direct(2), peer(3))
    assert in_netns(netns, sync_direct, Plane()) == Plane()
    routes = run("ip", "-n", netns, "route", "show").stdout
    assert all(" ".join(route[:3]) in routes for route in others)


@pytest.mark.parametrize("bad_mac", ["00:00:00:00:00:00", "ff:ff:ff:ff:ff:ff", "01:00:5e:00:00:01"])
def test_an_fdb_entry_the_kernel_refuses_fails_alone(netns: str, bad_mac: str) -> None:
    """A lease's multicast, broadcast or zero VtepMAC (leasecheck skips such leases; this is the
    backend's own guard): the kernel refuses its FDB entry in the middle of one batch, the peers
    before and after it are programmed all the same, and the failure names the entry."""
    hostile = peer(6, mac=bad_mac)

    def apply_batch() -> tuple[list[str], Plane]:
        backend = VxlanBackend()
        try:
            state, _ = backend.ensure_device(SPEC)
            try:
                backend.apply(state.ifindex, PlaneDiff(add=union(peer(5), hostile, peer(7))))
            except ApplyError as err:
                return err.failures, backend.read_plane(state.ifindex)
            return [], backend.read_plane(state.ifindex)
        finally:
            backend.close()

    failures, actual = in_netns(netns, apply_batch)
    assert len(failures) == 1 and failures[0].startswith(f"replace fdb {bad_mac} dst 192.0.2.6: ")
    assert union(peer(5), peer(7)) == dataclasses.replace(
        actual, neighs=actual.neighs - hostile.neighs, routes=actual.routes - hostile.routes
    )
    assert bad_mac not in run("bridge", "-n", netns, "fdb", "show", "dev", "flannel.1").stdout
    # The next pass retries it, and the good peers stay as they are.
    assert in_netns(netns, sync, union(peer(5), peer(7))) == union(peer(5), peer(7))
