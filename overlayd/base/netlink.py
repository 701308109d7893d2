"""Netlink framing shared by the rtnetlink codec and nftables netlink: headers, attributes, errors.

Pure functions over bytes, with ``struct`` only (see ``backend/rtnl/codec`` for why not pyroute2's
marshal). Every netlink family frames its messages the same way: a 16-byte ``nlmsghdr``, then a
family header, then type-length-value attributes, each padded to 4 bytes. What the bytes after the
family header mean is the caller's business; here a malformed length ends the walk instead of
raising, because a datagram comes from the kernel and one bad message must not stop a pass.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

# <linux/netlink.h>
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_DUMP = 0x300
NLM_F_CREATE = 0x400
NLA_F_NESTED = 0x8000
NLA_TYPE_MASK = 0x3FFF  # an attribute's type without its NESTED and NET_BYTEORDER flags

HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, seq, pid
ATTR = struct.Struct("=HH")  # nlattr: length, type
_ERRNO = struct.Struct("=i")


@dataclass(frozen=True)
class Message:
    """One netlink message: its type, sequence number and the bytes after the header."""

    type: int
    seq: int
    body: bytes


def align(length: int) -> int:
    """``length`` rounded up to netlink's 4-byte alignment (NLMSG_ALIGN, NLA_ALIGN)."""
    return (length + 3) & ~3


def message(kind: int, flags: int, seq: int, body: bytes) -> bytes:
    """A whole message: the header (port id 0: the kernel fills in ours) and ``body``."""
    return HEADER.pack(HEADER.size + len(body), kind, flags, seq, 0) + body


def attr(kind: int, value: bytes) -> bytes:
    """One attribute, padded so the next one starts aligned."""
    length = ATTR.size + len(value)
    return ATTR.pack(length, kind) + value + b"\0" * (-length % 4)


def split_messages(data: bytes) -> Iterator[Message]:
    """The whole messages in one datagram read from a netlink socket; a truncated one ends it."""
    offset = 0
    while offset + HEADER.size <= len(data):
        length, kind, _flags, seq, _pid = HEADER.unpack_from(data, offset)
        if length < HEADER.size or offset + length > len(data):
            return
        yield Message(kind, seq, data[offset + HEADER.size:offset + length])
        offset += align(length)


def error_code(msg: Message) -> int:
    """The errno of an ``NLMSG_ERROR`` message, or of an ``NLMSG_DONE`` that carries one (0: none).

    0 for an acknowledgement, and for a body too short to hold an errno.
    """
    if len(msg.body) < _ERRNO.size:
        return 0
    return -_ERRNO.unpack_from(msg.body)[0]


def attributes(data: bytes, offset: int = 0) -> Iterator[tuple[int, bytes]]:
    """(type without flags, payload) of each whole attribute in ``data`` from ``offset`` on."""
    end = len(data)
    while offset + ATTR.size <= end:
        length, kind = ATTR.unpack_from(data, offset)
        if length < ATTR.size or offset + length > end:
            return
        yield kind & NLA_TYPE_MASK, data[offset + ATTR.size:offset + length]
        offset += align(length)


def attribute_map(data: bytes, offset: int = 0) -> dict[int, bytes]:
    """The whole attributes in ``data`` from ``offset`` on, by type without flags (the last wins).

    The same walk as ``attributes``, written out: it runs for every neighbour and route message
    of every pass, where a generator's overhead shows.
    """
    found = {}
    end, unpack = len(data), ATTR.unpack_from
    while offset + 4 <= end:
        length, kind = unpack(data, offset)
        if length < 4 or offset + length > end:
            break
        found[kind & NLA_TYPE_MASK] = data[offset + 4:offset + length]
        offset += (length + 3) & ~3
    return found


def nested(data: bytes, path: tuple[int, ...]) -> Iterator[bytes]:
    """The payloads reached by following attribute types ``path`` down from ``data``."""
    for kind, value in attributes(data):
        if kind == path[0]:
            yield from (nested(value, path[1:]) if len(path) > 1 else (value,))
