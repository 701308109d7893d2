"""Decoding of the two etcd responses read in bulk: a prefix Range and the Watch stream.

etcd3's generated classes run on the pure-Python protobuf implementation, which takes ~40 us per
key-value on a slow machine: at 1000 peer leases the listing at start-up spent 40 ms decoding,
and each watch event 75 us before the agent saw it. These few message types are read straight
off the wire format instead (about a fifth of the time); the requests are still built and
encoded with etcd3's classes. Fields not listed here are skipped, as protobuf does, so a newer
etcd that adds fields still decodes. Pure functions, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NoReturn

EVENT_PUT, EVENT_DELETE = 0, 1  # mvccpb.Event.EventType
_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5
_INT64_WRAP = 1 << 64


class WireError(ValueError):
    """The bytes are not a well-formed message."""


@dataclass(frozen=True, slots=True)
class KeyValue:
    """mvccpb.KeyValue: the fields the agent reads."""

    key: bytes = b""
    value: bytes = b""
    create_revision: int = 0
    mod_revision: int = 0
    version: int = 0
    lease: int = 0


@dataclass(frozen=True, slots=True)
class RangeResult:
    """etcdserverpb.RangeResponse, with the header reduced to its revision."""

    revision: int = 0
    kvs: list[KeyValue] = field(default_factory=list)
    more: bool = False
    count: int = 0


@dataclass(frozen=True, slots=True)
class Event:
    type: int = EVENT_PUT
    kv: KeyValue = field(default_factory=KeyValue)
    prev_kv: KeyValue | None = None


@dataclass(frozen=True, slots=True)
class WatchResult:
    """etcdserverpb.WatchResponse, with the header reduced to its revision."""

    revision: int = 0
    watch_id: int = 0
    created: bool = False
    canceled: bool = False
    compact_revision: int = 0
    cancel_reason: str = ""
    events: list[Event] = field(default_factory=list)


def decode_range(data: bytes) -> RangeResult:
    numbers, spans = _parts(data, 0, len(data))
    return RangeResult(
        revision=_revision(data, spans),
        kvs=[_key_value(data, a, b) for number, a, b in spans if number == 2],
        more=bool(numbers.get(3, 0)),
        count=_int64(numbers.get(4, 0)),
    )


def decode_watch(data: bytes) -> WatchResult:
    # One pass, no intermediate containers: it runs once per peer event, on the event's path.
    revision = watch_id = compact = 0
    created = canceled = False
    reason = ""
    events = []
    for number, wire, a, b in _fields(data, 0, len(data)):
        if wire == _BYTES:
            if number == 11:
                events.append(_event(data, a, b))
            elif number == 1:
                revision = _header_revision(data, a, b)
            elif number == 6:
                reason = data[a:b].decode(errors="replace")
        elif wire == _VARINT:
            if number == 2:
                watch_id = _int64(a)
            elif number == 3:
                created = bool(a)
            elif number == 4:
                canceled = bool(a)
            elif number == 5:
                compact = _int64(a)
    return WatchResult(revision, watch_id, created, canceled, compact, reason, events)


def _event(data: bytes, start: int, end: int) -> Event:
    kind, kv, prev = EVENT_PUT, KeyValue(), None
    for number, wire, a, b in _fields(data, start, end):
        if wire == _BYTES and number == 2:
            kv = _key_value(data, a, b)
        elif wire == _BYTES and number == 3:
            prev = _key_value(data, a, b)
        elif wire == _VARINT and number == 1:
            kind = a
    return Event(kind, kv, prev)


def _revision(data: bytes, spans: list[tuple[int, int, int]]) -> int:
    """The response's revision: field 1 is its ResponseHeader."""
    revision = 0
    for number, a, b in spans:
        if number == 1:
            revision = _header_revision(data, a, b)
    return revision


def _header_revision(data: bytes, start: int, end: int) -> int:
    """ResponseHeader.revision (field 3)."""
    revision = 0
    for number, wire, a, _b in _fields(data, start, end):
        if number == 3 and wire == _VARINT:
            revision = _int64(a)
    return revision


def _parts(data: bytes, start: int, end: int) -> tuple[dict[int, int], list[tuple[int, int, int]]]:
    """A message's varint fields by number (the last one wins, as in protobuf) and its
    length-delimited fields as (number, start, end), in order."""
    numbers: dict[int, int] = {}
    spans: list[tuple[int, int, int]] = []
    for number, wire, a, b in _fields(data, start, end):
        if wire == _VARINT:
            numbers[number] = a
        elif wire == _BYTES:
            spans.append((number, a, b))
    return numbers, spans


def _key_value(data: bytes, start: int, end: int) -> KeyValue:
    key = value = b""
    ints = [0, 0, 0, 0, 0, 0, 0]  # by field number: create_revision 2, mod 3, version 4, lease 6
    for number, wire, a, b in _fields(data, start, end):
        if wire == _BYTES:
            if number == 1:
                key = data[a:b]
            elif number == 5:
                value = data[a:b]
        elif wire == _VARINT and number < 7:
            ints[number] = a
    return KeyValue(key, value, _int64(ints[2]), _int64(ints[3]), _int64(ints[4]), _int64(ints[6]))


def _int64(value: int) -> int:
    """A varint read as protobuf's int64: negative numbers arrive as ten-byte two's complement."""
    return value - _INT64_WRAP if value >= 1 << 63 else value


def _fields(data: bytes, pos: int, end: int) -> list[tuple[int, int, int, int]]:
    """(field number, wire type, a, b) of each field between ``pos`` and ``end``: the value in
    ``a`` for numbers, the bounds ``data[a:b]`` for length-delimited fields."""
    out = []
    while pos < end:
        tag = data[pos]
        pos += 1
        if tag & 0x80:
            tag, pos = _varint_rest(data, pos, tag)
        wire = tag & 7
        if wire == _VARINT:
            value = data[pos] if pos < end else _truncated()
            pos += 1
            if value & 0x80:
                value, pos = _varint_rest(data, pos, value)
            out.append((tag >> 3, wire, value, 0))
        elif wire == _BYTES:
            length = data[pos] if pos < end else _truncated()
            pos += 1
            if length & 0x80:
                length, pos = _varint_rest(data, pos, length)
            if pos + length > end:
                _truncated()
            out.append((tag >> 3, wire, pos, pos + length))
            pos += length
        elif wire in (_FIXED64, _FIXED32):
            size = 8 if wire == _FIXED64 else 4
            if pos + size > end:
                _truncated()
            out.append((tag >> 3, wire, int.from_bytes(data[pos:pos + size], "little"), 0))
            pos += size
        else:
            raise WireError(f"unsupported wire type {wire} at byte {pos}")
    if pos != end:
        _truncated()
    return out


def _varint_rest(data: bytes, pos: int, first: int) -> tuple[int, int]:
    """A varint whose first byte (``first``, continuation bit set) was already read."""
    result, shift = first & 0x7F, 7
    while True:
        if pos >= len(data) or shift > 63:
            _truncated()
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _truncated() -> NoReturn:
    raise WireError("truncated or malformed protobuf message")
