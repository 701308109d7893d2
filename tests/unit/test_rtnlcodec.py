"""The rtnetlink codec on hand-built messages: decoding keys and device-level messages."""

import re
import socket
import struct
from ipaddress import IPv4Address

from hypothesis import given, settings
from hypothesis import strategies as st

from overlayd.backend.plane import Neigh
from overlayd.backend.rtnl.codec import (
    RTM_NEWLINK,
    RTM_NEWNEIGH,
    Message,
    _mac,
    create_vxlan_request,
    decode_entry,
    decode_link,
    entry_key,
)


def _attr(kind: int, value: bytes) -> bytes:
    length = 4 + len(value)
    return struct.pack("=HH", length, kind) + value + b"\0" * (-length % 4)


def _neigh(mac: bytes, used: int) -> Message:
    body = struct.pack("=BxxxiHBB", socket.AF_INET, 7, 0x80, 0, 1)
    body += _attr(1, bytes([198, 18, 0, 64])) + _attr(2, mac) + _attr(3, struct.pack("=4I", used, 0, 0, 1))
    body += _attr(4, struct.pack("=I", used))
    return Message(RTM_NEWNEIGH, 1, body)


def test_entry_key_ignores_cache_info_and_probes_but_not_the_entry() -> None:
    mac = bytes.fromhex("0a0000000001")
    first, later = _neigh(mac, 5), _neigh(mac, 900)
    assert first.body != later.body
    assert entry_key(first) == entry_key(later)
    assert decode_entry(first, 7) == Neigh(IPv4Address("198.18.0.64"), "0a:00:00:00:00:01")
    assert entry_key(_neigh(bytes.fromhex("0a0000000002"), 5)) != entry_key(first)


def test_a_created_vxlan_link_decodes_back_to_its_attributes() -> None:
    request = create_vxlan_request(9, "flannel.1", 1, IPv4Address("192.0.2.1"), 3, 8472, False, True,
                                   1450, "0a:00:00:00:00:01")
    length, kind, _, seq, _ = struct.unpack_from("=IHHII", request)
    assert (length, kind, seq) == (len(request), RTM_NEWLINK, 9)
    link = decode_link(Message(RTM_NEWLINK, seq, request[16:]))
    assert (link.name, link.mtu, link.mac, link.kind) == ("flannel.1", 1450, "0a:00:00:00:00:01", "vxlan")
    assert link.vxlan is not None
    assert (link.vxlan.vni, link.vxlan.link, link.vxlan.local, link.vxlan.port) == (
        1, 3, IPv4Address("192.0.2.1"), 8472)
    assert link.vxlan.gbp and not link.vxlan.learning


def _key_by_copying_each_kept_attribute(message: Message) -> bytes:
    """The plain way to key a neighbour message, to check the faster one against."""
    body, parts, offset = message.body, [message.type.to_bytes(2, "little"), message.body[:12]], 12
    while offset + 4 <= len(body):
        length, kind = struct.unpack_from("=HH", body, offset)
        if length < 4:
            break
        end = offset + ((length + 3) & ~3)
        if kind & 0x3FFF not in (3, 4):
            parts.append(body[offset:end])
        offset = end
    parts.append(body[offset:])
    return b"".join(parts)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from([1, 2, 3, 4, 5, 3 | 0x8000, 12]), st.binary(max_size=24)), max_size=8),
    st.binary(max_size=6),
)
def test_entry_key_equals_the_plain_attribute_walk(attrs: list[tuple[int, bytes]], tail: bytes) -> None:
    body = struct.pack("=BxxxiHBB", socket.AF_INET, 7, 0x80, 0, 1)
    body += b"".join(_attr(kind, value) for kind, value in attrs) + tail  # tail: a truncated attribute
    message = Message(RTM_NEWNEIGH, 1, body)
    assert entry_key(message) == _key_by_copying_each_kept_attribute(message)


MAC_FORM = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")


@settings(max_examples=300)
@given(st.binary(min_size=6, max_size=6), st.booleans())
def test_mac_parses_every_address(raw: bytes, upper: bool) -> None:
    text = ":".join(f"{byte:02x}" for byte in raw)
    assert _mac(text.upper() if upper else text) == raw


@settings(max_examples=500)
@given(st.text(alphabet="0123456789abcdefABCDEFg: +-x\t", max_size=20))
def test_mac_accepts_exactly_the_colon_hex_form(text: str) -> None:
    """Anything but six colon-separated pairs of hex digits is refused, naming the value."""
    if MAC_FORM.fullmatch(text):
        assert _mac(text) == bytes(int(part, 16) for part in text.split(":"))
    else:
        try:
            _mac(text)
        except ValueError as err:
            assert repr(text) in str(err)
        else:
            raise AssertionError(f"{text!r} was accepted")
