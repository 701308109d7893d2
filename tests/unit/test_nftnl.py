"""nftables netlink messages: the generation request and answer, the set-element transaction."""

import struct
from ipaddress import IPv4Address

from overlayd.netfilter.nftnl import (
    generation_request,
    parse_answer,
    parse_elements,
    set_element_batch,
    set_elements_request,
)

NEWGEN = 10 << 8 | 15


def _answer(seq: int, generation: int, kind: int = NEWGEN) -> bytes:
    attr = struct.pack("=HH", 8, 1) + generation.to_bytes(4, "big")
    body = struct.pack("=BBH", 0, 0, 0) + attr
    return struct.pack("=IHHII", 16 + len(body), kind, 0, seq, 0) + body


def _error(seq: int, errno: int) -> bytes:
    return struct.pack("=IHHIIi", 20, 2, 0, seq, 0, -errno)


def test_request_is_a_getgen_for_the_sequence_number() -> None:
    length, kind, flags, seq, pid = struct.unpack_from("=IHHII", generation_request(7))
    assert (length, kind, flags, seq, pid) == (20, 10 << 8 | 16, 1, 7, 0)


def test_answer_of_the_matching_sequence_number_only() -> None:
    data = _answer(3, 41) + _answer(4, 1234567) + _error(5, 2)
    assert parse_answer(data, 4) == (1234567, None)
    assert parse_answer(data, 3) == (41, None)
    assert parse_answer(data, 5) == (None, 2)
    assert parse_answer(data, 6) == (None, None)
    assert parse_answer(_answer(1, 9)[:10], 1) == (None, None)


def test_set_element_batch_wraps_one_element_message_in_begin_and_end() -> None:
    data = set_element_batch("overlayd", "vxlan_peers", IPv4Address("192.0.2.7"), True, 10)
    messages, offset = [], 0
    while offset < len(data):
        length, kind, flags, seq, _ = struct.unpack_from("=IHHII", data, offset)
        messages.append((kind, flags, seq, data[offset + 16:offset + length]))
        offset += (length + 3) & ~3
    assert [(kind, seq) for kind, _, seq, _ in messages] == [(0x10, 10), (10 << 8 | 12, 11), (0x11, 12)]
    _, flags, _, body = messages[1]
    assert flags & 0x4 and flags & 0x400  # acknowledged, created
    assert b"overlayd\0" in body and b"vxlan_peers\0" in body and bytes([192, 0, 2, 7]) in body
    delete = set_element_batch("overlayd", "vxlan_peers", IPv4Address("192.0.2.7"), False, 10)
    assert struct.unpack_from("=H", delete, 16 + 4 + 4)[0] == 10 << 8 | 14


def _attr(kind: int, value: bytes) -> bytes:
    length = 4 + len(value)
    return struct.pack("=HH", length, kind) + value + b"\0" * (-length % 4)


def _elements(seq: int, *addresses: str) -> bytes:
    nested = 0x8000
    elements = b"".join(
        _attr(1 | nested, _attr(1 | nested, _attr(1, IPv4Address(a).packed)) + _attr(6, b"\0" * 8))
        for a in addresses
    )
    body = struct.pack("=BBH", 2, 0, 0) + _attr(1, b"t\0") + _attr(2, b"d\0") + _attr(3 | nested, elements)
    return struct.pack("=IHHII", 16 + len(body), 10 << 8 | 12, 2, seq, 0) + body


def _done(seq: int, status: int = 0) -> bytes:
    return struct.pack("=IHHIIi", 20, 3, 2, seq, 0, status)


def test_set_elements_request_is_a_dump_of_the_named_set() -> None:
    data = set_elements_request("overlayd", "vxlan_dropped", 9)
    _, kind, flags, seq, _ = struct.unpack_from("=IHHII", data)
    assert (kind, flags & 0x300, seq) == (10 << 8 | 13, 0x300, 9)
    assert data[16] == 2  # AF_INET
    assert b"overlayd\0" in data and b"vxlan_dropped\0" in data


def test_parse_elements_collects_keys_across_messages_until_done() -> None:
    found: list[IPv4Address] = []
    assert parse_elements(_elements(9, "192.0.2.1", "192.0.2.2") + _elements(8, "192.0.2.99"), 9, found) == (
        False,
        None,
    )
    assert parse_elements(_elements(9, "192.0.2.3") + _done(9), 9, found) == (True, None)
    assert found == [IPv4Address(f"192.0.2.{n}") for n in (1, 2, 3)]
    assert parse_elements(_error(9, 2), 9, []) == (True, 2)
    assert parse_elements(_done(9, -16), 9, []) == (True, 16), "a dump that failed part-way is no answer"
    truncated: list[IPv4Address] = []
    assert parse_elements(_elements(9, "192.0.2.1")[:30], 9, truncated) == (False, None) and truncated == []
