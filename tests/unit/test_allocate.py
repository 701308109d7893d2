"""Subnet choice: our own lease, then the previous subnet, then a random free one."""

from __future__ import annotations

import json
import random
import time
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network

import pytest

from overlayd.backend.select import CONFIG_PARSERS
from overlayd.subnet.allocate import (
    RANDOM_POOL,
    OutOfSubnets,
    SubnetChoice,
    all_subnets,
    choose_subnets,
    free_subnets,
    own_lease,
    stale_own_leases,
)
from overlayd.subnet.config import NetworkConfig, parse_network_config
from overlayd.subnet.lease import Lease, LeaseAttrs, decode_lease

OUR_IP = IPv4Address("192.0.2.10")
CONFIG = parse_network_config('{"Network": "198.18.0.0/16"}', backends=CONFIG_PARSERS)


def net(cidr: str) -> IPv4Network:
    return IPv4Network(cidr)


def lease(cidr: str, public_ip: str = "192.0.2.20", mac: str = "02:00:00:00:00:01") -> Lease:
    return Lease(IPv4Network(cidr), LeaseAttrs(IPv4Address(public_ip), "vxlan", vni=1, vtep_mac=mac))


def config(**keys: object) -> NetworkConfig:
    return parse_network_config(json.dumps(keys), backends=CONFIG_PARSERS)


def chosen(choices: list[SubnetChoice]) -> list[IPv4Network]:
    return [c.subnet for c in choices]


# --- own lease ------------------------------------------------------------------------------


def test_own_lease_is_reused_alone() -> None:
    mine = lease("198.18.46.0/24", public_ip=str(OUR_IP))
    leases = [lease("198.18.1.0/24"), mine, lease("198.18.2.0/24", public_ip="192.0.2.21")]
    assert own_lease(CONFIG, leases, OUR_IP) is mine
    assert choose_subnets(CONFIG, leases, OUR_IP, previous=net("198.18.7.0/24")) == [
        SubnetChoice(net("198.18.46.0/24"), existing=mine)
    ]


def test_a_dual_stack_lease_with_our_public_ip_is_stale_and_its_subnet_ours_again() -> None:
    """flanneld deletes an own lease whose IPv6 half the config does not ask for. Left to
    expire it would take our VTEP MAC's FDB entry with it on flanneld peers."""
    flanneld = replace(
        decode_lease(
            "198.18.46.0-24&2001:db8:0:2e::-64",
            '{"PublicIP":"192.0.2.10","PublicIPv6":"2001:db8::10","BackendType":"vxlan",'
            '"BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:00:01"},'
            '"BackendV6Data":{"VNI":1,"VtepMAC":"02:00:00:00:00:02"}}',
        ),
        etcd_lease_id=9,
    )
    assert own_lease(CONFIG, [flanneld], OUR_IP) is None
    assert stale_own_leases(CONFIG, [flanneld], OUR_IP) == [flanneld]
    assert stale_own_leases(CONFIG, [replace(flanneld, etcd_lease_id=0)], OUR_IP) == []  # a reservation
    # Once deleted, subnet.env's subnet (the lease's IPv4 half) is the first choice.
    previous = net("198.18.46.0/24")
    assert choose_subnets(CONFIG, [], OUR_IP, previous=previous)[0] == SubnetChoice(previous)


def test_stale_own_leases_are_ours_outside_the_config_with_an_etcd_lease() -> None:
    narrowed = config(Network="198.18.0.0/16", SubnetMin="198.18.100.0")
    outside = replace(lease("198.18.46.0/24", public_ip=str(OUR_IP)), etcd_lease_id=5)
    inside = replace(lease("198.18.146.0/24", public_ip=str(OUR_IP)), etcd_lease_id=6)
    reservation = lease("198.18.47.0/24", public_ip=str(OUR_IP))  # no etcd lease: an operator's
    theirs = replace(lease("198.18.48.0/24"), etcd_lease_id=7)
    wrong_length = replace(lease("198.18.128.0/25", public_ip=str(OUR_IP)), etcd_lease_id=8)
    leases = [outside, inside, reservation, theirs, wrong_length]
    assert stale_own_leases(narrowed, leases, OUR_IP) == [outside, wrong_length]


def test_no_own_lease_when_no_public_ip_matches() -> None:
    assert own_lease(CONFIG, [lease("198.18.1.0/24"), lease("198.18.2.0/24")], OUR_IP) is None
    assert own_lease(CONFIG, [], OUR_IP) is None


def test_lowest_of_several_own_leases_is_reused() -> None:
    high = lease("198.18.90.0/24", public_ip=str(OUR_IP))
    low = lease("198.18.9.0/24", public_ip=str(OUR_IP))
    assert own_lease(CONFIG, [high, low], OUR_IP) is low


@pytest.mark.parametrize(
    "cidr",
    [
        "198.18.0.0/24",  # below the default SubnetMin (the first subnet is never handed out)
        "198.18.46.0/25",  # wrong length
        "198.18.46.0/23",  # wrong length
        "198.19.46.0/24",  # outside the Network
    ],
)
def test_own_lease_that_no_longer_fits_is_not_reused(cidr: str) -> None:
    stale = lease(cidr, public_ip=str(OUR_IP))
    assert own_lease(CONFIG, [stale], OUR_IP) is None
    choices = choose_subnets(CONFIG, [stale], OUR_IP, rng=random.Random(1))
    assert all(c.existing is None for c in choices)
    # The stale lease still occupies its addresses until it expires.
    assert not any(c.subnet.overlaps(stale.subnet) for c in choices)


def test_own_lease_outside_configured_min_max_is_not_reused() -> None:
    narrow = config(Network="198.18.0.0/16", SubnetMin="198.18.10.0", SubnetMax="198.18.20.0")
    stale = lease("198.18.46.0/24", public_ip=str(OUR_IP))
    assert own_lease(narrow, [stale], OUR_IP) is None
    choices = choose_subnets(narrow, [stale], OUR_IP, rng=random.Random(1))
    assert sorted(chosen(choices)) == [net(f"198.18.{i}.0/24") for i in range(10, 21)]
    assert all(c.existing is None for c in choices)


# --- previous subnet ------------------------------------------------------------------------


def test_previous_subnet_comes_first_when_free() -> None:
    choices = choose_subnets(
        CONFIG, [lease("198.18.1.0/24")], OUR_IP, previous=net("198.18.46.0/24"), rng=random.Random(3)
    )
    assert choices[0] == SubnetChoice(net("198.18.46.0/24"))
    rest = chosen(choices[1:])
    assert net("198.18.46.0/24") not in rest  # not offered twice
    # The rest is the first 100 free subnets, the previous one (already first) left out.
    assert sorted(rest) == [net(f"198.18.{i}.0/24") for i in range(2, 102) if i != 46]


@pytest.mark.parametrize(
    ("previous", "taken"),
    [
        ("198.18.46.0/24", ["198.18.46.0/24"]),  # exact lease by another host
        ("198.18.46.0/24", ["198.18.46.0/23"]),  # covered by a larger lease
        ("198.18.46.0/24", ["198.18.46.128/25"]),  # overlaps a smaller lease
    ],
)
def test_previous_subnet_ignored_when_taken(previous: str, taken: list[str]) -> None:
    choices = choose_subnets(
        CONFIG, [lease(t) for t in taken], OUR_IP, previous=net(previous), rng=random.Random(3)
    )
    assert net(previous) not in chosen(choices)
    assert chosen(choices)[0] != net(previous)


@pytest.mark.parametrize(
    "previous",
    ["198.18.0.0/24", "198.19.46.0/24", "198.18.46.0/25", "198.18.46.0/23", "198.18.46.0/26"],
)
def test_previous_subnet_ignored_when_outside_the_config(previous: str) -> None:
    choices = choose_subnets(CONFIG, [], OUR_IP, previous=net(previous), rng=random.Random(5))
    assert net(previous) not in chosen(choices)
    assert all(CONFIG.contains_subnet(s) for s in chosen(choices))
    assert len(choices) == RANDOM_POOL


def test_previous_outside_configured_min_max_is_ignored() -> None:
    narrow = config(Network="198.18.0.0/16", SubnetMin="198.18.10.0", SubnetMax="198.18.12.0")
    choices = choose_subnets(narrow, [], OUR_IP, previous=net("198.18.46.0/24"), rng=random.Random(5))
    assert sorted(chosen(choices)) == [net("198.18.10.0/24"), net("198.18.11.0/24"), net("198.18.12.0/24")]


# --- random pool ----------------------------------------------------------------------------


def test_all_subnets_walks_min_to_max() -> None:
    small = config(Network="198.18.4.0/26")
    assert list(all_subnets(small)) == [net("198.18.4.16/28"), net("198.18.4.32/28"), net("198.18.4.48/28")]


def test_free_subnets_in_order_skip_taken_and_respect_limit() -> None:
    taken = [net("198.18.1.0/24"), net("198.18.3.0/24")]
    assert free_subnets(CONFIG, taken, 3) == [
        net("198.18.2.0/24"),
        net("198.18.4.0/24"),
        net("198.18.5.0/24"),
    ]
    assert free_subnets(CONFIG, taken, 1) == [net("198.18.2.0/24")]
    assert free_subnets(CONFIG, taken, 0) == []


def test_free_subnets_skip_overlap_with_differently_sized_leases() -> None:
    taken = [net("198.18.2.0/23"), net("198.18.5.128/25"), net("198.18.0.0/22")]
    assert free_subnets(CONFIG, taken, 3) == [
        net("198.18.4.0/24"),
        net("198.18.6.0/24"),
        net("198.18.7.0/24"),
    ]


def test_free_subnets_ignore_leases_outside_the_network() -> None:
    taken = [net("198.19.1.0/24"), net("192.0.2.0/24")]
    assert free_subnets(CONFIG, taken, 2) == [net("198.18.1.0/24"), net("198.18.2.0/24")]


def test_pool_is_the_first_hundred_free_subnets_minus_taken() -> None:
    leases = [lease(f"198.18.{i}.0/24") for i in range(1, 51, 2)]  # 25 odd-numbered subnets taken
    choices = choose_subnets(CONFIG, leases, OUR_IP, rng=random.Random(7))
    expected = [net(f"198.18.{i}.0/24") for i in range(2, 51, 2)] + [
        net(f"198.18.{i}.0/24") for i in range(51, 126)
    ]
    assert len(expected) == RANDOM_POOL
    assert sorted(chosen(choices)) == expected
    assert all(c.existing is None for c in choices)


def test_pool_excludes_overlap_with_differently_sized_leases() -> None:
    small = config(Network="198.18.4.0/24", SubnetLen=26)  # subnets .64, .128, .192
    leases = [lease("198.18.4.128/25")]  # covers .128 and .192
    assert chosen(choose_subnets(small, leases, OUR_IP, rng=random.Random(0))) == [net("198.18.4.64/26")]
    leases = [lease("198.18.4.100/30")]  # inside .64/26
    assert sorted(chosen(choose_subnets(small, leases, OUR_IP, rng=random.Random(0)))) == [
        net("198.18.4.128/26"),
        net("198.18.4.192/26"),
    ]


def test_pool_is_shuffled() -> None:
    choices = chosen(choose_subnets(CONFIG, [], OUR_IP, rng=random.Random(11)))
    assert choices != sorted(choices)
    assert sorted(choices) == [net(f"198.18.{i}.0/24") for i in range(1, 101)]


def test_same_seed_same_order_different_seed_different_order() -> None:
    leases = [lease("198.18.5.0/24")]
    first = choose_subnets(CONFIG, leases, OUR_IP, rng=random.Random(42))
    again = choose_subnets(CONFIG, leases, OUR_IP, rng=random.Random(42))
    other = choose_subnets(CONFIG, leases, OUR_IP, rng=random.Random(43))
    assert first == again
    assert first != other
    assert sorted(chosen(first)) == sorted(chosen(other))


def test_works_without_an_rng() -> None:
    assert len(choose_subnets(CONFIG, [], OUR_IP)) == RANDOM_POOL


def test_leases_may_be_an_iterator() -> None:
    mine = lease("198.18.46.0/24", public_ip=str(OUR_IP))
    assert choose_subnets(CONFIG, iter([lease("198.18.1.0/24"), mine]), OUR_IP)[0].existing is mine
    choices = choose_subnets(CONFIG, iter([lease("198.18.1.0/24")]), OUR_IP, rng=random.Random(1))
    assert net("198.18.1.0/24") not in chosen(choices)


# --- exhaustion -----------------------------------------------------------------------------


def test_last_free_subnet_is_offered() -> None:
    small = config(Network="198.18.4.0/26")  # three /28s: .16, .32, .48
    leases = [lease("198.18.4.16/28"), lease("198.18.4.48/28")]
    assert choose_subnets(small, leases, OUR_IP) == [SubnetChoice(net("198.18.4.32/28"))]


def test_out_of_subnets_names_network_and_lease_count() -> None:
    small = config(Network="198.18.4.0/26")
    leases = [
        lease("198.18.4.16/28"),
        lease("198.18.4.32/28"),
        lease("198.18.4.48/28"),
        lease("198.18.4.0/28"),
    ]
    with pytest.raises(OutOfSubnets) as info:
        choose_subnets(small, leases, OUR_IP, previous=net("198.18.4.32/28"))
    message = str(info.value)
    assert message == (
        "out of subnets: Network 198.18.4.0/26 has no free /28 between SubnetMin 198.18.4.16 and "
        "SubnetMax 198.18.4.48 (4 leases held); remove stale leases or widen the Network"
    )


def test_out_of_subnets_when_a_large_lease_covers_the_range() -> None:
    small = config(Network="198.18.4.0/26")
    with pytest.raises(OutOfSubnets, match=r"Network 198\.18\.4\.0/26 .*\(1 leases held\)"):
        choose_subnets(small, [lease("198.18.4.0/26")], OUR_IP)


# --- scale ----------------------------------------------------------------------------------


def test_large_network_with_a_thousand_leases_is_fast() -> None:
    big = config(Network="198.18.0.0/15", SubnetLen=26)  # 2047 subnets
    base = int(IPv4Address("198.18.0.0"))
    leases = [
        Lease(
            IPv4Network((base + i * 64, 26)),
            LeaseAttrs(IPv4Address("192.0.2.20"), "vxlan", vni=1, vtep_mac="02:00:00:00:00:01"),
        )
        for i in range(1, 1001)
    ]
    start = time.perf_counter()
    choices = choose_subnets(big, leases, OUR_IP, rng=random.Random(1))
    elapsed = time.perf_counter() - start
    assert sorted(chosen(choices)) == [IPv4Network((base + i * 64, 26)) for i in range(1001, 1101)]
    assert elapsed < 0.2, f"choose_subnets took {elapsed:.3f}s"


def test_full_slash_15_with_subnet_len_24_is_fast_and_finds_the_one_gap() -> None:
    big = config(Network="198.18.0.0/15", SubnetLen=24)  # 511 subnets
    subnets = list(all_subnets(big))
    assert len(subnets) == 511
    gap = net("198.19.200.0/24")
    leases = [lease(str(s)) for s in subnets if s != gap] * 2  # 1020 leases, duplicates included
    start = time.perf_counter()
    choices = choose_subnets(big, leases, OUR_IP, rng=random.Random(1))
    elapsed = time.perf_counter() - start
    assert choices == [SubnetChoice(gap)]
    assert elapsed < 0.2, f"choose_subnets took {elapsed:.3f}s"


# --- earlier subnets, across a renumbering and its revert -------------------------------------


def test_earlier_subnets_are_tried_newest_first_where_the_config_hands_them_out() -> None:
    """subnet.env names the subnet of the Network that was put back out; the one before fits."""
    history = [net("198.19.9.0/24"), net("198.18.5.0/24"), net("198.18.6.0/24")]
    choices = choose_subnets(CONFIG, [lease("198.18.6.0/24")], OUR_IP, previous=history, rng=random.Random(3))
    assert choices[0] == SubnetChoice(net("198.18.5.0/24"))
    assert net("198.18.6.0/24") not in chosen(choices) and net("198.19.9.0/24") not in chosen(choices)
    assert chosen(choices).count(net("198.18.5.0/24")) == 1


def test_old_new_old_takes_back_the_first_subnet() -> None:
    """Renumbered under a new Network by a restart, then the old config back and another restart:
    the node's own lease is gone (deleted as stale at the first restart), subnet.env names the new
    Network's subnet, and the history still names the first."""
    new = config(Network="198.19.0.0/16")
    first = choose_subnets(CONFIG, [], OUR_IP, rng=random.Random(1))[0].subnet
    second = choose_subnets(new, [], OUR_IP, previous=[first], rng=random.Random(2))[0].subnet
    assert second.subnet_of(new.network)
    back = choose_subnets(CONFIG, [lease("198.18.77.0/24")], OUR_IP, previous=[second, first])[0]
    assert back == SubnetChoice(first)
