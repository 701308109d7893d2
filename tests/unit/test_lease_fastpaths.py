"""The lease codec's fast paths give what ``ipaddress`` and ``json`` give, or the same error class.

The start-up listing parses every peer's key and value; the fast paths handle the canonical text
flanneld writes and hand everything else to the standard parsers. These properties check that a
caller cannot tell the two apart: the same value, or a ValueError where the standard parser raises.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from hypothesis import given, settings
from hypothesis import strategies as st

from overlayd.subnet.lease import _ipv4_address, _ipv4_network, _ipv6_address, _ipv6_network, _json_value

PROPERTY = settings(max_examples=500, deadline=None)

octets = st.integers(0, 300).map(str) | st.sampled_from(["00", "01", "007", "255", "256", "", "-1", "٣"])
dotted = st.lists(octets, min_size=3, max_size=5).map(".".join)
addresses = dotted | st.text(alphabet="0123456789. x", max_size=18) | st.text(max_size=12)


def outcome(parse: Callable[[], object]) -> str:
    """The parser's result, or the ValueError class it raised: what a caller can tell apart
    (as a repr, so that a NaN decoded by both compares equal)."""
    try:
        return repr(parse())
    except ValueError as exc:
        return repr(type(exc))


@PROPERTY
@given(addresses)
def test_address_parses_as_ipaddress_does(text: str) -> None:
    assert outcome(lambda: _ipv4_address(text)) == outcome(lambda: IPv4Address(text))


@PROPERTY
@given(addresses, st.integers(0, 40))
def test_network_parses_as_ipaddress_does(text: str, prefixlen: int) -> None:
    expected = outcome(lambda: IPv4Network(f"{text}/{prefixlen}"))
    assert outcome(lambda: _ipv4_network(text, prefixlen)) == expected


def test_network_keeps_ipaddress_strictness() -> None:
    assert _ipv4_network("198.18.3.0", 24) == IPv4Network("198.18.3.0/24")
    for bad in (("198.18.3.1", 24), ("198.18.3.0", 33), ("198.018.3.0", 24)):
        assert outcome(lambda bad=bad: _ipv4_network(*bad)).startswith("<class")


hextets = st.text(alphabet="0123456789abcdefABCDEF", max_size=5)
groups = st.lists(hextets, max_size=9).map(":".join)
ipv6_texts = (
    groups
    | st.builds("{}::{}".format, groups, groups)
    | st.text(alphabet="0123456789abcdefABCDEF:.%", max_size=45)
    | st.sampled_from(["::", "::1", "1::", ":::", "1:2:3:4:5:6:7::", "::1:2:3:4:5:6:7", "1::2:3:4:5:6:7:8",
                       "::ffff:192.0.2.1", "fe80::1%eth0", "2001:db8::/64", "٣::1", "2001:DB8::B"])
)  # fmt: skip


def message(parse: Callable[[], object]) -> str:
    """The parser's result, or the error it raised with its message: an IPv6 parse that goes wrong
    names the bad text in the same words either way."""
    try:
        return repr(parse())
    except ValueError as exc:
        return repr(exc)


@PROPERTY
@given(ipv6_texts, st.integers(0, 140))
def test_ipv6_addresses_and_networks_parse_as_ipaddress_does(text: str, prefixlen: int) -> None:
    assert message(lambda: _ipv6_address(text)) == message(lambda: IPv6Address(text))
    network = message(lambda: _ipv6_network(text, prefixlen))
    assert network == message(lambda: IPv6Network(f"{text}/{prefixlen}"))


def test_ipv6_network_keeps_ipaddress_strictness() -> None:
    assert _ipv6_network("2001:db8:1000:3::", 64) == IPv6Network("2001:db8:1000:3::/64")
    for bad in (("2001:db8:1000:3::1", 64), ("2001:db8::", 129), ("2001:db8:::", 64)):
        assert message(lambda bad=bad: _ipv6_network(*bad)).startswith(("ValueError", "Address", "Netmask"))


json_texts = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
).map(json.dumps)
spacing = st.sampled_from(["", " ", "\n", "\t "])
encodings = st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "utf-32"])


@PROPERTY
@given(spacing, json_texts, spacing, encodings)
def test_json_value_decodes_as_json_loads_does(before: str, text: str, after: str, encoding: str) -> None:
    raw = (before + text + after).encode(encoding)
    assert outcome(lambda: _json_value(raw)) == outcome(lambda: json.loads(raw))
    text = raw.decode(encoding)
    assert outcome(lambda: _json_value(text)) == outcome(lambda: json.loads(text))


@PROPERTY
@given(st.binary(max_size=40) | st.text(max_size=20).map(str.encode))
def test_json_value_rejects_what_json_loads_rejects(raw: bytes) -> None:
    assert outcome(lambda: _json_value(raw)) == outcome(lambda: json.loads(raw))
