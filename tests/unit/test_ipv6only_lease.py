"""IPv6-only leases: flanneld v0.20.2's key and value form, both ways, and every host's own
subnet, told apart by its PublicIPv6 (never by its PublicIP 0.0.0.0)."""

from __future__ import annotations

import json
import random
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

import pytest

from overlayd.backend import select
from overlayd.backend.select import CONFIG_PARSERS
from overlayd.subnet.allocate import OutOfSubnets, choose_subnets
from overlayd.subnet.config import parse_network_config
from overlayd.subnet.ipv6only import choose_ipv6_only_subnets, own_ipv6_only_lease, stale_own_ipv6_only_leases
from overlayd.subnet.lease import (
    NO_IPV4_SUBNET,
    NO_PUBLIC_IP,
    Lease,
    LeaseAttrs,
    LeaseError,
    decode_lease,
    encode_attrs,
    is_ipv6_only,
)
from overlayd.subnet.leasecheck import lease_problem

select.install()

KEY = "0.0.0.0-0&2001:db8:1000:2e::-64"
# What flanneld's vxlan backend writes with EnableIPv4 false: no BackendData (its RawMessage is
# nil and omitted), the IPv6 device's MAC in BackendV6Data, PublicIP its unset IPv4 address.
FLANNELD_V6_ONLY = (
    '{"PublicIP":"0.0.0.0","PublicIPv6":"2001:db8::11","BackendType":"vxlan",'
    '"BackendV6Data":{"VNI":1,"VtepMAC":"6e:2b:01:9c:44:d0"}}'
)
DUAL = parse_network_config(
    json.dumps({"Network": "198.18.0.0/16", "EnableIPv6": True, "IPv6Network": "2001:db8:1000::/48"}),
    backends=CONFIG_PARSERS,
)
V4_ONLY = parse_network_config('{"Network": "198.18.0.0/16"}', backends=CONFIG_PARSERS)
POOL = DUAL.ipv6
assert POOL is not None
OURS = IPv6Address("2001:db8::10")


def v6_lease(cidr6: str, public_ipv6: str | None, etcd_lease_id: int = 7, subnet: str = "0.0.0.0/0") -> Lease:
    attrs = LeaseAttrs(
        NO_PUBLIC_IP, "vxlan", vni=1, vtep_mac_v6="02:00:00:00:00:01",
        public_ipv6=IPv6Address(public_ipv6) if public_ipv6 else None,
    )  # fmt: skip
    return Lease(IPv4Network(subnet), attrs, ipv6_subnet=IPv6Network(cidr6), etcd_lease_id=etcd_lease_id)


def test_flanneld_ipv6_only_lease_reads_and_renders_byte_for_byte() -> None:
    lease = decode_lease(KEY, FLANNELD_V6_ONLY)
    assert lease.subnet == NO_IPV4_SUBNET and lease.ipv6_subnet == IPv6Network("2001:db8:1000:2e::/64")
    assert is_ipv6_only(lease) and lease.key == KEY
    attrs = lease.attrs
    assert (attrs.public_ip, attrs.public_ipv6) == (NO_PUBLIC_IP, IPv6Address("2001:db8::11"))
    assert (attrs.vni, attrs.vtep_mac, attrs.vtep_mac_v6) == (1, None, "6e:2b:01:9c:44:d0")
    assert encode_attrs(attrs) == FLANNELD_V6_ONLY


def test_an_ipv6_only_lease_with_bad_v6_data_is_refused_naming_the_key() -> None:
    bad = FLANNELD_V6_ONLY.replace('"VtepMAC":"6e:2b:01:9c:44:d0"', '"VtepMAC":"nope"')
    with pytest.raises(
        LeaseError, match=r"lease 0\.0\.0\.0-0&2001:db8:1000:2e::-64: vxlan BackendData"
    ) as err:
        decode_lease(KEY, bad)
    assert err.value.reason == "bad_backend_data"


def test_a_lease_with_an_ipv4_public_ip_still_needs_its_backend_data() -> None:
    """Only an unset PublicIP makes BackendData optional: a dual-stack lease without it is bad."""
    with pytest.raises(LeaseError, match="needs an integer VNI"):
        decode_lease(
            "198.18.46.0-24&2001:db8:1000:2e::-64", FLANNELD_V6_ONLY.replace("0.0.0.0", "192.0.2.11")
        )


def test_own_lease_is_found_by_public_ipv6_never_by_the_shared_public_ip() -> None:
    theirs = v6_lease("2001:db8:1000:1::/64", "2001:db8::20")
    nobodys = v6_lease("2001:db8:1000:2::/64", None)
    assert own_ipv6_only_lease(POOL, [theirs, nobodys], OURS) is None
    mine = v6_lease("2001:db8:1000:3::/64", str(OURS))
    assert own_ipv6_only_lease(POOL, [theirs, nobodys, mine], OURS) == mine
    [choice] = choose_ipv6_only_subnets(POOL, [theirs, mine], OURS)
    assert choice.existing == mine and choice.ipv6_subnet == mine.ipv6_subnet


def test_two_hosts_choose_two_different_subnets() -> None:
    """The flanneld v0.20.2 failure: the second host read the first's lease (PublicIP 0.0.0.0) as
    its own and took the same /64."""
    first = choose_ipv6_only_subnets(POOL, [], IPv6Address("2001:db8::1"), rng=random.Random(1))[0]
    held = v6_lease(str(first.ipv6_subnet), "2001:db8::1")
    second = choose_ipv6_only_subnets(POOL, [held], IPv6Address("2001:db8::2"), rng=random.Random(1))
    assert second[0].existing is None
    assert held.ipv6_subnet not in {choice.ipv6_subnet for choice in second}
    assert all(
        choice.subnet == NO_IPV4_SUBNET and POOL.contains_subnet(choice.ipv6_subnet) for choice in second
    )


def test_dual_stack_leases_count_as_taken_and_the_previous_subnet_comes_first() -> None:
    dual = v6_lease("2001:db8:1000:1::/64", "2001:db8::20", subnet="198.18.1.0/24")
    choices = choose_ipv6_only_subnets(POOL, [dual], OURS, previous=IPv6Network("2001:db8:1000:5::/64"))
    assert choices[0].ipv6_subnet == IPv6Network("2001:db8:1000:5::/64")
    assert dual.ipv6_subnet not in {choice.ipv6_subnet for choice in choices}
    taken_previous = choose_ipv6_only_subnets(POOL, [dual], OURS, previous=dual.ipv6_subnet)
    assert dual.ipv6_subnet not in {choice.ipv6_subnet for choice in taken_previous}


def test_a_dual_stack_lease_of_ours_is_stale_in_an_ipv6_only_network() -> None:
    dual = v6_lease("2001:db8:1000:1::/64", str(OURS), subnet="198.18.1.0/24")
    reservation = v6_lease("2001:db8:1000:2::/64", str(OURS), etcd_lease_id=0, subnet="198.18.2.0/24")
    current = v6_lease("2001:db8:1000:3::/64", str(OURS))
    assert stale_own_ipv6_only_leases(POOL, [dual, reservation, current], OURS) == [dual]
    assert own_ipv6_only_lease(POOL, [dual], OURS) is None


def test_a_full_pool_names_the_network_and_the_fix() -> None:
    small = parse_network_config(
        json.dumps({"Network": "198.18.0.0/16", "EnableIPv6": True, "IPv6Network": "2001:db8:1000::/62"}),
        backends=CONFIG_PARSERS,
    ).ipv6
    assert small is not None
    leases = [v6_lease(f"2001:db8:1000:{n}::/64", f"2001:db8::{n + 20}") for n in range(1, 4)]
    with pytest.raises(
        OutOfSubnets, match=r"IPv6Network 2001:db8:1000::/62 has no free /64 .* widen the IPv6Network"
    ):
        choose_ipv6_only_subnets(small, leases, OURS)


def test_an_ipv6_only_lease_holds_no_ipv4_space_in_a_network_with_ipv4() -> None:
    """flanneld counts its 0.0.0.0-0 as all of IPv4 and finds no subnet free; one such lease left
    in etcd must not stop every host from leasing, and its IPv6 subnet stays taken."""
    stray = decode_lease(KEY, FLANNELD_V6_ONLY)
    for network in (V4_ONLY, DUAL):
        choices = choose_subnets(network, [stray], IPv4Address("192.0.2.3"), rng=random.Random(2))
        assert choices and all(network.contains_subnet(choice.subnet) for choice in choices)
    assert stray.ipv6_subnet not in {
        choice.ipv6_subnet for choice in choose_subnets(DUAL, [stray], IPv4Address("192.0.2.3"))
    }


def test_an_ipv6_only_peer_lease_in_a_network_with_ipv4_is_skipped_and_named() -> None:
    stray = decode_lease(KEY, FLANNELD_V6_ONLY)
    for network in (V4_ONLY, DUAL):
        problem = lease_problem(stray, network, own=None)
        assert problem is not None and problem.reason == "outside_network"
        assert f"lease {KEY} is an IPv6-only one" in problem.message and "delete it" in problem.message
