"""Desired VXLAN entries from leases, and the diff that turns actual into desired."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network, IPv6Network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overlayd.backend.desired import DesiredEntries, Rivalry
from overlayd.backend.plane import (
    DirectRoute,
    Fdb,
    Neigh,
    Plane,
    PlaneDiff,
    Route,
    diff_planes,
    without_overwritten,
)
from overlayd.backend.vxlan.peers import is_vxlan_peer, reached_directly
from overlayd.subnet.lease import Lease, LeaseAttrs, key_to_subnets

OWN = IPv4Network("198.18.46.0/24")
MAC_A = "8a:da:7f:e8:8a:5f"
MAC_B = "02:00:00:00:00:0b"
MAC_C = "02:00:00:00:00:0c"


def lease(
    cidr: str, public_ip: str, mac: str | None = MAC_A, vni: int | None = 1, backend_type: str = "vxlan"
) -> Lease:
    return Lease(
        IPv4Network(cidr),
        LeaseAttrs(IPv4Address(public_ip), backend_type=backend_type, vni=vni, vtep_mac=mac),
    )


def entries(cidr: str, public_ip: str, mac: str) -> Plane:
    subnet = IPv4Network(cidr)
    gateway = subnet.network_address
    return Plane(
        neighs=frozenset({Neigh(gateway, mac)}),
        fdbs=frozenset({Fdb(mac, IPv4Address(public_ip))}),
        routes=frozenset({Route(subnet, gateway)}),
    )


def desired_plane(leases: Iterable[Lease], own: IPv4Network, vni: int) -> Plane:
    """What the agent wants for ``leases``: each one that is a peer, by its key."""
    desired = DesiredEntries()
    for peer in leases:
        desired.set_peer(peer.key, peer if is_vxlan_peer(peer, own, vni) else None)
    return desired.plane()


def peer_entries(peer: Lease) -> Plane:
    return desired_plane([peer], OWN, 1)


def union(*planes: Plane) -> Plane:
    """Every kind of entry of all ``planes`` together."""
    kinds = (field.name for field in dataclasses.fields(Plane))
    return Plane(*(frozenset().union(*(getattr(plane, kind) for plane in planes)) for kind in kinds))


# --- peer entries ---------------------------------------------------------------------------


def test_peer_entries_are_neigh_fdb_and_route() -> None:
    plane = peer_entries(lease("198.18.47.0/24", "192.0.2.12", MAC_B))
    assert plane.neighs == frozenset({Neigh(IPv4Address("198.18.47.0"), MAC_B)})
    assert plane.fdbs == frozenset({Fdb(MAC_B, IPv4Address("192.0.2.12"))})
    assert plane.routes == frozenset({Route(IPv4Network("198.18.47.0/24"), IPv4Address("198.18.47.0"))})
    assert len(plane) == 3


def test_peer_entries_for_a_small_subnet_use_its_network_address() -> None:
    plane = peer_entries(lease("198.18.4.48/28", "192.0.2.13", MAC_C))
    assert plane == entries("198.18.4.48/28", "192.0.2.13", MAC_C)
    assert next(iter(plane.routes)).gateway == IPv4Address("198.18.4.48")


# --- which leases are peers -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("peer", "expected"),
    [
        (lease("198.18.47.0/24", "192.0.2.12"), True),
        (lease("198.18.46.0/24", "192.0.2.11"), False),  # our own subnet
        (lease("198.18.47.0/24", "192.0.2.12", vni=2), False),  # other VNI
        (lease("198.18.47.0/24", "192.0.2.12", vni=None), False),
        (lease("198.18.47.0/24", "192.0.2.12", mac=None, vni=None, backend_type="host-gw"), False),
        (lease("198.18.47.0/24", "192.0.2.12", backend_type="udp"), False),
        (lease("198.18.47.0/24", "192.0.2.12", mac=None), False),  # no VTEP MAC to point at
        (lease("198.18.47.0/24", "192.0.2.12", mac=""), False),
    ],
)
def test_is_vxlan_peer(peer: Lease, expected: bool) -> None:
    assert is_vxlan_peer(peer, OWN, 1) is expected


@pytest.mark.parametrize(
    ("ours", "theirs", "expected"),
    [
        (70000, 4464, True),  # flanneld writes VNI 70000 as 16 bits
        (70000, 70000, True),  # a lease holding all 24 bits
        (4464, 70000, True),
        (70000, 70001, False),
        (65536, 0, True),
        (65536, 1, False),
    ],
)
def test_vnis_above_16_bits_compare_as_flanneld_writes_them(ours: int, theirs: int, expected: bool) -> None:
    assert is_vxlan_peer(lease("198.18.47.0/24", "192.0.2.12", vni=theirs), OWN, ours) is expected


def test_a_lease_carrying_our_public_ip_is_never_a_peer() -> None:
    """Our own lease under another subnet (a dual-stack one flanneld left): programmed, its
    route would replace the local bridge's."""
    ours_elsewhere = lease("198.18.47.0/24", "192.0.2.11")
    assert not is_vxlan_peer(ours_elsewhere, OWN, 1, own_ip=IPv4Address("192.0.2.11"))
    assert is_vxlan_peer(ours_elsewhere, OWN, 1, own_ip=IPv4Address("192.0.2.10"))


def test_without_own_subnet_every_vxlan_lease_is_a_peer() -> None:
    assert is_vxlan_peer(lease("198.18.46.0/24", "192.0.2.11"), None, 1)


def test_desired_plane_excludes_own_other_vni_and_foreign_backends() -> None:
    leases = [
        lease("198.18.46.0/24", "192.0.2.11", MAC_A),  # ours
        lease("198.18.47.0/24", "192.0.2.12", MAC_B),
        lease("198.18.48.0/24", "192.0.2.13", MAC_C),
        lease("198.18.49.0/24", "192.0.2.14", "02:00:00:00:00:0d", vni=4096),
        lease("198.18.50.0/24", "192.0.2.15", None, vni=None, backend_type="host-gw"),
    ]
    plane = desired_plane(leases, OWN, 1)
    assert plane == union(
        entries("198.18.47.0/24", "192.0.2.12", MAC_B), entries("198.18.48.0/24", "192.0.2.13", MAC_C)
    )
    assert len(plane) == 6


def test_desired_plane_selects_by_vni() -> None:
    leases = [
        lease("198.18.47.0/24", "192.0.2.12", MAC_B, vni=1),
        lease("198.18.49.0/24", "192.0.2.14", MAC_C, vni=4096),
    ]
    assert desired_plane(leases, OWN, 4096) == entries("198.18.49.0/24", "192.0.2.14", MAC_C)


def test_desired_plane_of_nothing_is_empty() -> None:
    assert desired_plane([], OWN, 1) == Plane()
    assert desired_plane([lease("198.18.46.0/24", "192.0.2.11")], OWN, 1) == Plane()
    assert len(Plane()) == 0


def test_desired_plane_accepts_an_iterator() -> None:
    plane = desired_plane(iter([lease("198.18.47.0/24", "192.0.2.12", MAC_B)]), OWN, 1)
    assert plane == entries("198.18.47.0/24", "192.0.2.12", MAC_B)


# --- diff -----------------------------------------------------------------------------------


def test_empty_diff_when_equal() -> None:
    plane = union(
        entries("198.18.47.0/24", "192.0.2.12", MAC_B), entries("198.18.48.0/24", "192.0.2.13", MAC_C)
    )
    diff = diff_planes(plane, plane)
    assert diff.empty
    assert diff == PlaneDiff()
    assert diff_planes(Plane(), Plane()).empty


def test_diff_adds_everything_to_an_empty_device() -> None:
    desired = union(
        entries("198.18.47.0/24", "192.0.2.12", MAC_B), entries("198.18.48.0/24", "192.0.2.13", MAC_C)
    )
    diff = diff_planes(desired, Plane())
    assert diff.add == desired
    assert diff.remove == Plane()
    assert not diff.empty


def test_diff_removes_a_departed_peer_and_adds_a_new_one() -> None:
    staying = entries("198.18.47.0/24", "192.0.2.12", MAC_B)
    gone = entries("198.18.48.0/24", "192.0.2.13", MAC_C)
    new = entries("198.18.49.0/24", "192.0.2.14", "02:00:00:00:00:0d")
    diff = diff_planes(union(staying, new), union(staying, gone))
    assert diff.add == new
    assert diff.remove == gone


def test_mac_change_replaces_neigh_and_fdb_but_keeps_the_route() -> None:
    old = desired_plane([lease("198.18.47.0/24", "192.0.2.12", MAC_B)], OWN, 1)
    new = desired_plane([lease("198.18.47.0/24", "192.0.2.12", MAC_C)], OWN, 1)
    diff = diff_planes(new, old)
    desired = DesiredEntries()  # the fast path's diff, one peer's lease replaced, is the same
    desired.set_peer("198.18.47.0-24", lease("198.18.47.0/24", "192.0.2.12", MAC_B))
    assert desired.set_peer("198.18.47.0-24", lease("198.18.47.0/24", "192.0.2.12", MAC_C)) == diff
    gateway = IPv4Address("198.18.47.0")
    assert diff.remove == Plane(
        neighs=frozenset({Neigh(gateway, MAC_B)}),
        fdbs=frozenset({Fdb(MAC_B, IPv4Address("192.0.2.12"))}),
    )
    assert diff.add == Plane(
        neighs=frozenset({Neigh(gateway, MAC_C)}),
        fdbs=frozenset({Fdb(MAC_C, IPv4Address("192.0.2.12"))}),
    )
    assert diff.add.routes == frozenset() and diff.remove.routes == frozenset()


def test_public_ip_change_replaces_only_the_fdb() -> None:
    old = desired_plane([lease("198.18.47.0/24", "192.0.2.12", MAC_B)], OWN, 1)
    new = desired_plane([lease("198.18.47.0/24", "192.0.2.99", MAC_B)], OWN, 1)
    diff = diff_planes(new, old)
    assert diff.remove == Plane(fdbs=frozenset({Fdb(MAC_B, IPv4Address("192.0.2.12"))}))
    assert diff.add == Plane(fdbs=frozenset({Fdb(MAC_B, IPv4Address("192.0.2.99"))}))


def test_a_replaced_neighbour_or_fdb_entry_is_overwritten_in_place_not_removed_first() -> None:
    gateway = IPv4Address("198.18.47.0")
    desired = DesiredEntries()
    desired.set_peer("198.18.47.0-24", lease("198.18.47.0/24", "192.0.2.12", MAC_B))
    new_mac = desired.set_peer("198.18.47.0-24", lease("198.18.47.0/24", "192.0.2.12", MAC_C))
    # The neighbour at the same address is replaced in place; the FDB entry of the MAC no
    # longer used is removed.
    assert without_overwritten(new_mac) == PlaneDiff(
        add=new_mac.add, remove=Plane(fdbs=frozenset({Fdb(MAC_B, IPv4Address("192.0.2.12"))}))
    )
    new_ip = desired.set_peer("198.18.47.0-24", lease("198.18.47.0/24", "192.0.2.99", MAC_C))
    assert without_overwritten(new_ip) == PlaneDiff(add=new_ip.add)  # the MAC's entry gets a new dst
    gone = desired.set_peer("198.18.47.0-24", None)
    assert without_overwritten(gone) == gone  # nothing added: every removal stays
    assert gone.remove.neighs == frozenset({Neigh(gateway, MAC_C)})


def test_a_neighbour_address_is_wanted_while_any_peer_wants_a_neighbour_there() -> None:
    gateway = IPv4Address("198.18.47.0")
    desired = DesiredEntries()
    assert not desired.wants_neigh_at(gateway)
    desired.set_peer("198.18.47.0-24", lease("198.18.47.0/24", "192.0.2.12", MAC_B))
    assert desired.wants_neigh_at(gateway)
    desired.set_peer("198.18.47.0-24", lease("198.18.47.0/24", "192.0.2.12", MAC_C))  # a new MAC
    assert desired.wants_neigh_at(gateway)
    desired.set_peer("198.18.47.0-24", None)
    assert not desired.wants_neigh_at(gateway)
    direct = DesiredEntries(lambda peer: True)  # DirectRouting: a route only, no neighbour
    direct.set_peer("198.18.47.0-24", lease("198.18.47.0/24", "192.0.2.12", MAC_B))
    assert not direct.wants_neigh_at(gateway)


def test_foreign_entries_on_the_device_are_removed() -> None:
    desired = entries("198.18.47.0/24", "192.0.2.12", MAC_B)
    stray = Plane(
        neighs=frozenset({Neigh(IPv4Address("198.18.99.0"), MAC_C)}),
        routes=frozenset({Route(IPv4Network("198.18.99.0/24"), IPv4Address("198.18.99.0"))}),
    )
    diff = diff_planes(desired, union(desired, stray))
    assert diff.add == Plane()
    assert diff.remove == stray


def test_applying_the_diff_reaches_desired() -> None:
    desired = union(
        entries("198.18.47.0/24", "192.0.2.12", MAC_C), entries("198.18.49.0/24", "192.0.2.14", MAC_A)
    )
    actual = union(
        entries("198.18.47.0/24", "192.0.2.12", MAC_B), entries("198.18.48.0/24", "192.0.2.13", MAC_A)
    )
    diff = diff_planes(desired, actual)
    result = Plane(
        (actual.neighs - diff.remove.neighs) | diff.add.neighs,
        (actual.fdbs - diff.remove.fdbs) | diff.add.fdbs,
        (actual.routes - diff.remove.routes) | diff.add.routes,
    )
    assert result == desired
    assert diff_planes(desired, result).empty


def test_entries_sort_deterministically() -> None:
    neighs = [Neigh(IPv4Address("198.18.48.0"), MAC_A), Neigh(IPv4Address("198.18.47.0"), MAC_B)]
    assert sorted(neighs)[0].ip == IPv4Address("198.18.47.0")


# --- desired entries kept peer by peer ----------------------------------------------------------

KEY_B = "198.18.47.0-24"


def test_an_equal_lease_changes_nothing_and_keeps_the_plane_object() -> None:
    desired = DesiredEntries()
    first = desired.set_peer(KEY_B, lease("198.18.47.0/24", "192.0.2.12", MAC_B))
    assert first.add == entries("198.18.47.0/24", "192.0.2.12", MAC_B) and first.remove == Plane()
    plane = desired.plane()
    assert desired.set_peer(KEY_B, lease("198.18.47.0/24", "192.0.2.12", MAC_B)).empty
    assert desired.plane() is plane
    assert desired.set_peer("198.18.99.0-24", None).empty  # nothing known, nothing wanted
    assert list(desired.keys()) == [KEY_B] and len(desired) == 1


def test_an_entry_two_leases_share_stays_until_both_are_gone() -> None:
    # A host that moved to 198.18.48.0/24 keeps its PublicIP and MAC: one FDB entry, two leases.
    old, new = lease("198.18.47.0/24", "192.0.2.12", MAC_B), lease("198.18.48.0/24", "192.0.2.12", MAC_B)
    shared = Fdb(MAC_B, IPv4Address("192.0.2.12"))
    desired = DesiredEntries()
    desired.set_peer(old.key, old)
    assert shared not in desired.set_peer(new.key, new).add.fdbs  # already wanted (and programmed)
    gone = desired.set_peer(old.key, None)
    assert gone.remove == Plane(
        neighs=frozenset({Neigh(IPv4Address("198.18.47.0"), MAC_B)}),
        routes=frozenset({Route(IPv4Network("198.18.47.0/24"), IPv4Address("198.18.47.0"))}),
    )
    assert desired.wants(shared) and desired.plane() == entries("198.18.48.0/24", "192.0.2.12", MAC_B)
    assert desired.set_peer(new.key, None).remove.fdbs == frozenset({shared})
    assert not desired.wants(shared) and desired.plane() == Plane() and len(desired) == 0


# Two keys for 198.18.47.0/24 (the second with an IPv6 subnet): rivals for one subnet.
PEER_KEYS = [f"198.18.{n}.0-24" for n in range(47, 52)] + ["198.18.47.0-24&2001:db8::-64"]


def flat(plane: Plane) -> set:
    return set().union(plane.neighs, plane.fdbs, plane.routes, plane.direct)


DIRECT_SEGMENT = IPv4Network("192.0.2.13/32")  # the peers at 192.0.2.13 are reached directly


def scratch_entries(peer: Lease, direct: bool) -> Plane:
    if direct and peer.attrs.public_ip in DIRECT_SEGMENT:
        return Plane(direct=frozenset({DirectRoute(peer.subnet, peer.attrs.public_ip)}))
    return peer_entries(peer)


def winners(current: dict[str, Lease], direct: bool) -> dict[str, Lease]:
    """The leases that win their claims, from scratch: per subnet the oldest (revision, then
    key); per MAC, among those, the oldest and the others at its PublicIP."""
    def age(key: str) -> tuple[int, str]:
        return (current[key].mod_revision, key)

    by_subnet: dict[IPv4Network, str] = {}
    for key, peer in current.items():
        if peer.subnet not in by_subnet or age(key) < age(by_subnet[peer.subnet]):
            by_subnet[peer.subnet] = key
    is_direct = {key: direct and current[key].attrs.public_ip in DIRECT_SEGMENT for key in by_subnet.values()}
    first: dict[str, str] = {}
    for key in by_subnet.values():
        mac = current[key].attrs.vtep_mac or ""
        if not is_direct[key] and (mac not in first or age(key) < age(first[mac])):
            first[mac] = key
    return {
        key: current[key] for key in by_subnet.values()
        if is_direct[key]
        or current[first[current[key].attrs.vtep_mac or ""]].attrs.public_ip == current[key].attrs.public_ip
    }


def scratch_plane(current: dict[str, Lease], direct: bool) -> Plane:
    """The plane from scratch: the entries of every lease that wins its claims."""
    return union(Plane(), *(scratch_entries(p, direct) for p in winners(current, direct).values()))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(PEER_KEYS),
            st.none()
            | st.tuples(
                st.sampled_from(["192.0.2.12", "192.0.2.13"]),
                st.sampled_from([MAC_B, MAC_C]),
                st.integers(0, 3),  # the lease's etcd revision: equal ones happen too
            ),
        ),
        max_size=30,
    )
)
@pytest.mark.parametrize("direct", [False, True], ids=["vxlan", "direct-routing"])
def test_kept_peer_by_peer_equals_computed_from_scratch(direct: bool, steps: list) -> None:
    """Any sequence of lease changes: the plane is the union of the current peers' entries (one
    FDB entry per MAC), and the diffs returned, applied in order to an empty device, build
    exactly that plane; ``load`` (no diffs) keeps the same plane. With DirectRouting, the peers
    at one PublicIP are direct."""
    test = reached_directly((DIRECT_SEGMENT,)) if direct else None
    desired, loaded, current, device = DesiredEntries(test), DesiredEntries(test), {}, set()
    for key, value in steps:
        peer = None
        if value:
            ip, mac, revision = value
            subnet, ipv6_subnet = key_to_subnets(key)
            peer = replace(lease(str(subnet), ip, mac), ipv6_subnet=ipv6_subnet, mod_revision=revision)
        diff = desired.set_peer(key, peer)
        loaded.load(key, peer)
        assert not flat(diff.add) & flat(diff.remove)
        device = (device - flat(diff.remove)) | flat(diff.add)
        if peer is None:
            current.pop(key, None)
        else:
            current[key] = peer
        scratch = scratch_plane(current, direct)
        assert desired.plane() == scratch == loaded.plane()
        wanted_ips = {p.attrs.public_ip for p in winners(current, direct).values()}
        assert desired.public_ips() == wanted_ips
        for ip in (IPv4Address("192.0.2.12"), IPv4Address("192.0.2.13")):
            assert desired.wants_public_ip(ip) == (ip in wanted_ips)
        assert device == flat(scratch)
        assert all(desired.wants(entry) for entry in device)
        assert len({fdb.mac for fdb in device if isinstance(fdb, Fdb)}) == len(scratch.fdbs)
        assert len({neigh.ip for neigh in device if isinstance(neigh, Neigh)}) == len(scratch.neighs)
        assert set(desired.programmed_keys()) == set(winners(current, direct))


def test_a_direct_peer_gets_one_route_via_its_public_ip_and_stays_allowed() -> None:
    """DirectRouting: no neighbour, FDB entry or VXLAN route, but its PublicIP stays in the
    allowlist (a node without DirectRouting still sends it VXLAN)."""
    desired = DesiredEntries(reached_directly((IPv4Network("192.0.2.0/28"),)))
    near, far = lease("198.18.47.0/24", "192.0.2.12"), lease("198.18.48.0/24", "192.0.2.100")
    diff = desired.set_peer(near.key, near)
    assert diff.add == Plane(direct=frozenset({DirectRoute(near.subnet, IPv4Address("192.0.2.12"))}))
    assert desired.set_peer(far.key, far).add == peer_entries(far)
    assert desired.public_ips() == {IPv4Address("192.0.2.12"), IPv4Address("192.0.2.100")}
    assert desired.set_peer(near.key, None).remove.direct == diff.add.direct
    assert not desired.wants_public_ip(IPv4Address("192.0.2.12"))


def test_direct_and_vxlan_entries_are_diffed_apart() -> None:
    route = Route(IPv4Network("198.18.47.0/24"), IPv4Address("198.18.47.0"))
    direct = DirectRoute(IPv4Network("198.18.47.0/24"), IPv4Address("198.18.47.0"))
    assert route != direct and hash(route) == hash(direct)
    diff = diff_planes(Plane(direct=frozenset({direct})), Plane(routes=frozenset({route})))
    assert (diff.add, diff.remove) == (Plane(direct=frozenset({direct})), Plane(routes=frozenset({route})))


def test_a_lease_claiming_another_hosts_mac_is_skipped_and_named() -> None:
    """A lease giving h2's VTEP MAC another PublicIP would send h2's traffic there: the older
    claim keeps the MAC, the newer lease gets no entries at all and may not send VXLAN."""
    h2 = replace(lease("198.18.47.0/24", "192.0.2.12", MAC_B), create_revision=5, mod_revision=40)
    thief = replace(lease("198.18.48.0/24", "192.0.2.66", MAC_B), create_revision=9, mod_revision=9)
    rivalries: list[Rivalry] = []
    desired = DesiredEntries(report=rivalries.append)
    desired.set_peer(h2.key, h2)
    assert desired.set_peer(thief.key, thief).empty
    assert desired.plane() == entries("198.18.47.0/24", "192.0.2.12", MAC_B)
    assert not desired.wants_public_ip(IPv4Address("192.0.2.66"))
    assert [(r.key, r.reason) for r in rivalries] == [(thief.key, "vtep_mac_taken")]
    assert "older lease 198.18.47.0-24 at 192.0.2.12" in rivalries[0].message
    assert list(desired.programmed_keys()) == [h2.key] and set(desired.keys()) == {h2.key, thief.key}
    # The older claim goes (h2 left): the remaining lease takes the MAC.
    assert desired.set_peer(h2.key, None).add == entries("198.18.48.0/24", "192.0.2.66", MAC_B)


def test_one_host_with_two_subnets_keeps_both() -> None:
    """Same MAC and same PublicIP: one host (a moved subnet until the old lease expires)."""
    old = replace(lease("198.18.47.0/24", "192.0.2.12", MAC_B), create_revision=5)
    new = replace(lease("198.18.48.0/24", "192.0.2.12", MAC_B), create_revision=9)
    rivalries: list[Rivalry] = []
    desired = DesiredEntries(report=rivalries.append)
    desired.set_peer(old.key, old)
    desired.set_peer(new.key, new)
    assert desired.plane() == union(peer_entries(old), peer_entries(new)) and not rivalries


def test_a_lease_inside_a_peers_subnet_gets_nothing_and_the_peer_keeps_its_gateway() -> None:
    """A /25 inside h2's /24 (blocks of 24 compared): h2's neighbour, FDB and route stay; the
    newer lease is named, whatever order the two arrive in."""
    h2 = replace(lease("198.18.47.0/24", "192.0.2.12", MAC_B), create_revision=5)
    thief = replace(lease("198.18.47.0/25", "192.0.2.66", MAC_C), create_revision=9)
    for order in ([h2, thief], [thief, h2]):
        rivalries: list[Rivalry] = []
        desired = DesiredEntries(claim_prefixlen=24, report=rivalries.append)
        for item in order:
            desired.set_peer(item.key, item)
        assert desired.plane() == entries("198.18.47.0/24", "192.0.2.12", MAC_B)
        assert {r.key for r in rivalries} == {thief.key} and rivalries[-1].reason == "subnet_taken"
        assert "overlaps 198.18.47.0/24 of the older lease 198.18.47.0-24" in rivalries[-1].message


def test_two_keys_for_one_subnet_get_one_neighbour() -> None:
    """Two keys of one IPv4 subnet (one with an IPv6 part) with different MACs: the kernel holds
    one neighbour for the gateway, so only the older lease is programmed."""
    older = replace(lease("198.18.47.0/24", "192.0.2.12", MAC_B), create_revision=5)
    newer = replace(older, ipv6_subnet=IPv6Network("2001:db8::/64"), create_revision=6,
                    attrs=replace(older.attrs, public_ip=IPv4Address("192.0.2.66"), vtep_mac=MAC_C))
    desired = DesiredEntries()
    desired.set_peer(newer.key, newer)
    swap = desired.set_peer(older.key, older)
    route = peer_entries(older).routes  # the same route for both: kept
    assert swap.add == replace(peer_entries(older), routes=frozenset())
    assert swap.remove == replace(peer_entries(newer), routes=frozenset()) and desired.plane().routes == route
    assert {n.ip for n in desired.plane().neighs} == {IPv4Address("198.18.47.0")}
    assert desired.set_peer(older.key, None).add.fdbs == peer_entries(newer).fdbs  # the next oldest
