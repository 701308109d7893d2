"""IPv6-only peers' entries: the IPv6 half alone, and rival claims judged by the IPv6 subnet and
by the IPv6 VTEP MAC, told apart by PublicIPv6 (every such lease's PublicIP is 0.0.0.0)."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv6Address, IPv6Network

from overlayd.backend.desired import DesiredEntries, Rivalry, entries_for
from overlayd.backend.plane import DirectRoute, Fdb, Neigh, Route
from overlayd.subnet.lease import NO_IPV4_SUBNET, NO_PUBLIC_IP, Lease, LeaseAttrs


def v6_peer(cidr6: str, ip6: str | None = "2001:db8::c", mac6: str | None = "02:00:00:00:00:6c",
            revision: int = 1) -> Lease:  # fmt: skip
    attrs = LeaseAttrs(NO_PUBLIC_IP, "vxlan", vni=1, public_ipv6=IPv6Address(ip6) if ip6 else None,
                       vtep_mac_v6=mac6)  # fmt: skip
    return Lease(NO_IPV4_SUBNET, attrs, ipv6_subnet=IPv6Network(cidr6), create_revision=revision)


def key(lease: Lease) -> str:
    return lease.key


def reporting() -> tuple[DesiredEntries, list[Rivalry]]:
    """Desired entries judged in /64 blocks, and the rivalries they report."""
    rivalries: list[Rivalry] = []
    return DesiredEntries(claim_prefixlen=64, report=rivalries.append), rivalries


def entries_of(cidr6: str, mac6: str, ip6: str) -> tuple[Neigh, Fdb, Route]:
    subnet = IPv6Network(cidr6)
    gateway = subnet.network_address
    return Neigh(gateway, mac6), Fdb(mac6, IPv6Address(ip6)), Route(subnet, gateway)


def test_an_ipv6_only_peer_wants_its_ipv6_entries_alone_whatever_the_ipv6_flag() -> None:
    lease = v6_peer("2001:db8:1000:2f::/64")
    want = entries_of("2001:db8:1000:2f::/64", "02:00:00:00:00:6c", "2001:db8::c")
    assert entries_for(lease, direct=False) == want
    assert entries_for(lease, direct=False, ipv6=True) == want
    # No neighbour, FDB entry or route at 0.0.0.0 for its unset IPv4 half.
    assert all(entry.ip.version == 6 for entry in want if isinstance(entry, Neigh))


def test_a_directly_reached_ipv6_only_peer_gets_one_route_via_its_public_ipv6() -> None:
    lease = v6_peer("2001:db8:1000:2f::/64")
    assert entries_for(lease, direct=True) == (
        DirectRoute(IPv6Network("2001:db8:1000:2f::/64"), IPv6Address("2001:db8::c")),
    )


def test_an_ipv6_only_peer_without_public_ipv6_or_mac_gets_nothing() -> None:
    assert entries_for(v6_peer("2001:db8:1000:2f::/64", ip6=None), direct=False) == ()
    assert entries_for(v6_peer("2001:db8:1000:2f::/64", ip6=None), direct=True) == ()
    assert entries_for(v6_peer("2001:db8:1000:2f::/64", mac6=None), direct=False) == ()


def test_two_ipv6_only_peers_on_distinct_subnets_are_both_programmed() -> None:
    """Both leases have PublicIP 0.0.0.0 and IPv4 half 0.0.0.0/0: neither is a rival for that."""
    desired, rivalries = reporting()
    a = v6_peer("2001:db8:1000:2f::/64", "2001:db8::c", "02:00:00:00:00:6c", revision=5)
    b = v6_peer("2001:db8:1000:30::/64", "2001:db8::d", "02:00:00:00:00:6d", revision=6)
    desired.load(key(a), a)
    diff = desired.set_peer(key(b), b)
    assert rivalries == []
    assert set(diff.add.fdbs) == {Fdb("02:00:00:00:00:6d", IPv6Address("2001:db8::d"))}
    assert desired.public_ips() == {IPv6Address("2001:db8::c"), IPv6Address("2001:db8::d")}
    assert len(desired) == 2


def test_overlapping_ipv6_subnets_the_older_lease_keeps_it_and_the_message_names_both() -> None:
    desired, rivalries = reporting()
    older = v6_peer("2001:db8:1000:2f::/64", "2001:db8::c", "02:00:00:00:00:6c", revision=5)
    newer = v6_peer("2001:db8:1000:2f::/80", "2001:db8::d", "02:00:00:00:00:6d", revision=9)
    desired.load(key(older), older)
    desired.set_peer(key(newer), newer)
    assert list(desired.programmed_keys()) == [key(older)]
    (rivalry,) = rivalries
    assert rivalry.reason == "subnet_taken" and rivalry.key == key(newer)
    assert rivalry.message.startswith(
        f"subnet 2001:db8:1000:2f::/80 overlaps 2001:db8:1000:2f::/64 of the older lease {key(older)} "
        "(PublicIP 2001:db8::c), which keeps it"
    )
    # The winner going lets the newer one in.
    diff = desired.set_peer(key(older), None)
    assert set(diff.add.routes) == {
        Route(IPv6Network("2001:db8:1000:2f::/80"), IPv6Address("2001:db8:1000:2f::"))
    }


def test_one_ipv6_vtep_mac_at_two_public_ipv6s_the_older_keeps_it() -> None:
    desired, rivalries = reporting()
    older = v6_peer("2001:db8:1000:2f::/64", "2001:db8::c", "02:00:00:00:00:6c", revision=5)
    thief = v6_peer("2001:db8:1000:30::/64", "2001:db8::e", "02:00:00:00:00:6c", revision=9)
    desired.load(key(older), older)
    diff = desired.set_peer(key(thief), thief)
    assert not diff.add.fdbs and list(desired.programmed_keys()) == [key(older)]
    (rivalry,) = rivalries
    assert rivalry.reason == "vtep_mac_taken"
    assert rivalry.message.startswith(
        f"VtepMAC 02:00:00:00:00:6c at PublicIP 2001:db8::e is already claimed by the older lease "
        f"{key(older)} at 2001:db8::c, which keeps it"
    )


def test_one_host_holding_two_ipv6_only_subnets_agrees_with_itself() -> None:
    """Same MAC and same PublicIPv6 (a host that moved to a new subnet): both programmed, the FDB
    entry counted twice so the old lease going keeps it."""
    desired, rivalries = reporting()
    old = v6_peer("2001:db8:1000:2f::/64", revision=5)
    new = replace(v6_peer("2001:db8:1000:31::/64"), create_revision=8)
    desired.load(key(old), old)
    desired.set_peer(key(new), new)
    assert rivalries == [] and len(desired) == 2
    diff = desired.set_peer(key(old), None)
    assert (
        not diff.remove.fdbs and Fdb("02:00:00:00:00:6c", IPv6Address("2001:db8::c")) in desired.plane().fdbs
    )
