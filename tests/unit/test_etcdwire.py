"""etcdwire against etcd3's generated protobuf classes: what they encode, it decodes alike."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overlayd.etcd.registry import etcdrpc
from overlayd.etcd.wire import EVENT_DELETE, EVENT_PUT, WireError, decode_range, decode_watch

INT64 = st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1)
KEY_VALUES = st.fixed_dictionaries({
    "key": st.binary(max_size=80),
    "value": st.binary(max_size=300),
    "create_revision": INT64,
    "mod_revision": INT64,
    "version": INT64,
    "lease": INT64,
})  # fmt: skip


def fields(kv) -> dict:
    return {name: getattr(kv, name) for name in ("key", "value", "create_revision", "mod_revision",
                                                 "version", "lease")}  # fmt: skip


def fill(kv, values: dict) -> None:
    for name, value in values.items():
        setattr(kv, name, value)


@settings(max_examples=200, deadline=None)
@given(st.lists(KEY_VALUES, max_size=20), INT64, st.booleans(), INT64)
def test_range_response_decodes_as_protobuf_does(kvs: list[dict], revision: int, more: bool, count: int):
    message = etcdrpc.RangeResponse(more=more, count=count)
    message.header.revision = revision
    message.header.cluster_id = 7  # fields we do not read are skipped
    for kv in kvs:
        message.kvs.add(**kv)
    decoded = decode_range(message.SerializeToString())
    assert (decoded.revision, decoded.more, decoded.count) == (revision, more, count)
    assert [fields(kv) for kv in decoded.kvs] == kvs


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from([EVENT_PUT, EVENT_DELETE]), KEY_VALUES, st.none() | KEY_VALUES),
             max_size=8),
    INT64, INT64, st.booleans(), st.booleans(), INT64, st.text(max_size=40),
)  # fmt: skip
def test_watch_response_decodes_as_protobuf_does(
    events, revision, watch_id, created, canceled, compact, reason
) -> None:
    message = etcdrpc.WatchResponse(watch_id=watch_id, created=created, canceled=canceled,
                                    compact_revision=compact, cancel_reason=reason)  # fmt: skip
    message.header.revision = revision
    for kind, kv, prev in events:
        event = message.events.add(type=kind)
        fill(event.kv, kv)
        if prev is not None:
            fill(event.prev_kv, prev)
    decoded = decode_watch(message.SerializeToString())
    assert (decoded.revision, decoded.watch_id, decoded.created, decoded.canceled, decoded.compact_revision,
            decoded.cancel_reason) == (revision, watch_id, created, canceled, compact, reason)  # fmt: skip
    assert [(e.type, fields(e.kv), e.prev_kv and fields(e.prev_kv)) for e in decoded.events] == [
        (kind, kv, prev) for kind, kv, prev in events
    ]


def test_fields_a_newer_etcd_adds_are_skipped():
    message = etcdrpc.RangeResponse(count=1)
    message.header.revision = 9
    message.kvs.add(key=b"k", value=b"v", mod_revision=3)
    # Unknown fields of every wire type: varint 12, 64-bit 13, length-delimited 14, 32-bit 15,
    # and field 100 (a two-byte tag).
    extra = bytes([12 << 3 | 0, 0x96, 0x01, 13 << 3 | 1, *range(8), 14 << 3 | 2, 3, 1, 2, 3,
                   15 << 3 | 5, *range(4), 0xA0, 0x06, 0x01])  # fmt: skip
    decoded = decode_range(message.SerializeToString() + extra)
    assert decoded.revision == 9 and decoded.count == 1
    assert [(kv.key, kv.value, kv.mod_revision) for kv in decoded.kvs] == [(b"k", b"v", 3)]


@pytest.mark.parametrize("cut", [1, 5, 20])
def test_a_truncated_message_is_an_error_not_a_short_answer(cut: int):
    message = etcdrpc.RangeResponse(count=2)
    message.kvs.add(key=b"/coreos.com/network/subnets/198.18.1.0-24", value=b'{"PublicIP":"192.0.2.1"}')
    data = message.SerializeToString()
    with pytest.raises(WireError, match="truncated"):
        decode_range(data[:-cut])
