"""The shim's prefix parser agrees with ``ipaddress`` (which it avoids importing for speed)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cni_shim.prefix import parse_prefix

v4 = st.builds(
    lambda ip, n: f"{ipaddress.IPv4Address(ip)}/{n}", st.integers(0, 2**32 - 1), st.integers(0, 32)
)
# Groups drawn mostly from 0 and 1, so runs of zero groups (what "::" compresses) are common.
v6_groups = st.lists(st.sampled_from([0, 0, 1, 0xFFFF]) | st.integers(0, 0xFFFF), min_size=8, max_size=8)
v6 = st.builds(
    lambda groups, n: f"{ipaddress.IPv6Address(int(''.join(f'{g:04x}' for g in groups), 16))}/{n}",
    v6_groups,
    st.integers(0, 128),
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(v4, v6), st.one_of(v4, v6))
def test_parse_network_address_and_containment_match_ipaddress(text: str, outer_text: str) -> None:
    prefix, outer = parse_prefix(text), parse_prefix(outer_text)
    reference = ipaddress.ip_interface(text)
    reference_outer = ipaddress.ip_interface(outer_text).network
    assert prefix.version == reference.version
    assert prefix.ip == str(reference.ip)
    assert str(prefix) == str(reference)
    assert str(prefix.network) == str(reference.network)
    same_family = reference.version == reference_outer.version
    assert prefix.inside(outer) == (same_family and reference.network.subnet_of(reference_outer))


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("198.18.0.0", "no /length"),
        ("198.18.0.0/33", "length '33' is not 0..32"),
        ("2001:db8::/129", "length '129' is not 0..128"),
        ("198.18.0.0/²", "length '²'"),
        ("198.18.0.0/-1", "length '-1'"),
        ("198.18.0/24", "'198.18.0' is not an IPv4 or IPv6 address"),
        ("host.example/24", "is not an IPv4 or IPv6 address"),
        ("2001:db8::1::/64", "is not an IPv4 or IPv6 address"),
    ],
)
def test_bad_prefixes_say_what_is_wrong(text: str, problem: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse_prefix(text)
    assert problem in str(raised.value)


def _ipaddress_accepts(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


# Text built from address characters, mostly near-misses: stray colons and dots, long groups,
# leading zeros, octets over 255, a dotted quad in the wrong place.
address_like = st.text(alphabet="0123456789abcdefABCDEFg:.", max_size=45) | st.builds(
    lambda ip, cut, junk: ip[:cut] + junk + ip[cut:],
    st.sampled_from(["198.18.5.1", "2001:db8::1", "::ffff:198.18.0.1", "1:2:3:4:5:6:7:8", "::"]),
    st.integers(0, 20),
    st.sampled_from(["", ":", "::", ".", "0", "00", "256", "fffff", "1.2.3.4", ":1.2.3.4"]),
)


@settings(max_examples=1500, deadline=None)
@given(address_like)
def test_accepts_exactly_the_addresses_ipaddress_accepts(address: str) -> None:
    try:
        prefix = parse_prefix(f"{address}/0")
    except ValueError:
        assert not _ipaddress_accepts(address)
    else:
        assert _ipaddress_accepts(address)
        assert prefix.ip == str(ipaddress.ip_address(address))
