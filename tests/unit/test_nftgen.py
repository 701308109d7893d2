"""The NFT_MSG_GETGEN request and the parsing of its answer, on hand-built messages."""

import struct

from overlayd.nftgen import generation_request, parse_generation

NEWGEN = 10 << 8 | 15


def _answer(seq: int, generation: int, kind: int = NEWGEN) -> bytes:
    attr = struct.pack("=HH", 8, 1) + generation.to_bytes(4, "big")
    body = struct.pack("=BBH", 0, 0, 0) + attr
    return struct.pack("=IHHII", 16 + len(body), kind, 0, seq, 0) + body


def test_request_is_a_getgen_for_the_sequence_number() -> None:
    length, kind, flags, seq, pid = struct.unpack_from("=IHHII", generation_request(7))
    assert (length, kind, flags, seq, pid) == (20, 10 << 8 | 16, 1, 7, 0)


def test_parses_the_generation_of_the_matching_answer_only() -> None:
    data = _answer(3, 41) + _answer(4, 1234567)
    assert parse_generation(data, 4) == 1234567
    assert parse_generation(data, 3) == 41
    assert parse_generation(data, 5) is None


def test_other_message_types_and_truncated_data_give_none() -> None:
    assert parse_generation(_answer(1, 9, kind=2), 1) is None
    assert parse_generation(_answer(1, 9)[:10], 1) is None
