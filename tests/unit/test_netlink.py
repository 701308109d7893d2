"""Netlink framing shared by rtnetlink and nftables: what is packed walks back, and bad lengths end a walk."""

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from overlayd.base.netlink import (
    NLA_F_NESTED,
    NLMSG_DONE,
    NLMSG_ERROR,
    Message,
    align,
    attr,
    attribute_map,
    attributes,
    error_code,
    message,
    nested,
    split_messages,
)

KINDS = st.integers(min_value=0, max_value=0x3FFF)
ATTRS = st.lists(st.tuples(KINDS, st.binary(max_size=40)), max_size=8)


def test_a_message_is_its_header_then_its_body() -> None:
    data = message(28, 0x405, 7, b"\x01\x02\x03")
    assert struct.unpack_from("=IHHII", data) == (19, 28, 0x405, 7, 0)
    assert data[16:] == b"\x01\x02\x03"


def test_an_attribute_is_padded_to_four_bytes_but_its_length_is_not() -> None:
    packed = attr(3, b"abcde")
    assert struct.unpack_from("=HH", packed) == (9, 3)
    assert packed == struct.pack("=HH", 9, 3) + b"abcde\0\0\0"
    assert [align(n) for n in (0, 1, 4, 5, 8)] == [0, 4, 4, 8, 8]


@settings(max_examples=300)
@given(ATTRS, st.booleans())
def test_packed_attributes_walk_back_with_their_flags_stripped(
    attrs: list[tuple[int, bytes]], flag: bool
) -> None:
    data = b"".join(attr(kind | (NLA_F_NESTED if flag else 0), value) for kind, value in attrs)
    assert list(attributes(data)) == attrs
    assert attribute_map(data) == dict(attrs)


@settings(max_examples=300)
@given(st.lists(st.tuples(st.integers(0, 0xFFFF), st.integers(0, 2**32 - 1), st.binary(max_size=40)),
                max_size=6))
def test_messages_in_one_datagram_split_back(messages: list[tuple[int, int, bytes]]) -> None:
    # The kernel pads each message of a datagram to four bytes; message() leaves that to the sender.
    data = b"".join(packed + b"\0" * (-len(packed) % 4) for packed in
                    (message(kind, 0, seq, body) for kind, seq, body in messages))
    assert list(split_messages(data)) == [Message(kind, seq, body) for kind, seq, body in messages]


def test_a_truncated_message_ends_the_datagram() -> None:
    first, second = message(16, 0, 1, b"abcd"), message(16, 0, 2, b"efgh")
    assert list(split_messages(first + second[:-1])) == [Message(16, 1, b"abcd")]
    assert list(split_messages(first[:10])) == []


def test_a_length_shorter_than_a_header_ends_the_walk_instead_of_looping() -> None:
    bad_message = struct.pack("=IHHII", 3, 16, 0, 1, 0) + b"x" * 16
    assert list(split_messages(bad_message)) == []
    bad_attr = attr(1, b"ok") + struct.pack("=HH", 0, 2) + attr(3, b"never")
    assert list(attributes(bad_attr)) == [(1, b"ok")]
    assert attribute_map(bad_attr) == {1: b"ok"}


def test_a_truncated_attribute_is_left_out() -> None:
    data = attr(1, b"ok") + attr(2, b"cut short")[:-4]
    assert list(attributes(data)) == [(1, b"ok")]
    assert attribute_map(data) == {1: b"ok"}


def test_the_walk_starts_after_a_family_header() -> None:
    data = b"\xff" * 12 + attr(5, b"\x01\x02\x03\x04")
    assert attribute_map(data, 12) == {5: b"\x01\x02\x03\x04"}
    assert list(attributes(data, 12)) == [(5, b"\x01\x02\x03\x04")]


def test_nested_follows_a_path_of_types() -> None:
    inner = attr(1 | NLA_F_NESTED, attr(3, b"\xc0\x00\x02\x01") + attr(4, b"other"))
    data = attr(9, b"skip") + attr(2 | NLA_F_NESTED, inner + attr(1, attr(3, b"\xc0\x00\x02\x02")))
    assert list(nested(data, (2, 1, 3))) == [b"\xc0\x00\x02\x01", b"\xc0\x00\x02\x02"]
    assert list(nested(data, (7, 1))) == []


def test_error_code_is_the_negated_errno_and_zero_for_an_ack() -> None:
    assert error_code(Message(NLMSG_ERROR, 1, struct.pack("=i", -17) + b"\0" * 16)) == 17
    assert error_code(Message(NLMSG_ERROR, 1, struct.pack("=i", 0))) == 0
    assert error_code(Message(NLMSG_DONE, 1, struct.pack("=i", -16))) == 16, "a dump can fail late"
    assert error_code(Message(NLMSG_ERROR, 1, b"\0\0")) == 0, "too short to hold an errno"
