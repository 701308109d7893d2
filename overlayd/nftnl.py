"""nftables over netlink for the frequent operations: the ruleset generation and set elements.

Everything else about our table (creating, replacing, listing) goes through ``nft``; these
run often enough that a process start each was the cost:

- the generation: the kernel bumps one counter on every committed nftables transaction, whoever
  makes it (ours, ``nft delete table``, ``nft flush ruleset``, iptables-nft). Reading it is one
  netlink round trip (``NFT_MSG_GETGEN``) instead of ``nft list table`` on every periodic pass;
- adding or deleting one element of a set (a peer's PublicIP in the VXLAN allowlist) is one
  batched transaction (``NFT_MSG_NEWSETELEM``/``NFT_MSG_DELSETELEM``) in about 20 µs, where
  ``nft add element`` took a few milliseconds on every new peer, on the event's critical path;
- reading a set's elements (the sources the allowlist dropped) on every periodic pass is one
  dump (``NFT_MSG_GETSETELEM``) instead of an ``nft list set`` process.

The socket is bound to the network namespace current when it is first used.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterator
from ipaddress import IPv4Address

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END = 0x10, 0x11
NFT_MSG_NEWSETELEM, NFT_MSG_GETSETELEM, NFT_MSG_DELSETELEM = 12, 13, 14
NFT_MSG_NEWGEN, NFT_MSG_GETGEN = 15, 16
NFTA_GEN_ID = 1
NFTA_SET_ELEM_LIST_TABLE, NFTA_SET_ELEM_LIST_SET, NFTA_SET_ELEM_LIST_ELEMENTS = 1, 2, 3
NFTA_LIST_ELEM = NFTA_SET_ELEM_KEY = NFTA_DATA_VALUE = 1
NLA_F_NESTED = 0x8000
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP, NLM_F_CREATE = 0x1, 0x4, 0x300, 0x400
NLMSG_ERROR, NLMSG_DONE = 2, 3
_HEADER = struct.Struct("=IHHII")  # nlmsghdr
_NFGENMSG = struct.Struct("=BBH")  # family, version, res_id (big endian)
_ATTR = struct.Struct("=HH")
_ERRNO = struct.Struct("=i")
# Where a set element's key sits in a NEWSETELEM message: list, element, key, data value.
_ELEMENT_KEY = (NFTA_SET_ELEM_LIST_ELEMENTS, NFTA_LIST_ELEM, NFTA_SET_ELEM_KEY, NFTA_DATA_VALUE)


def _message(kind: int, flags: int, seq: int, family: int, body: bytes, res_id: int = 0) -> bytes:
    payload = _NFGENMSG.pack(family, 0, socket.htons(res_id)) + body
    return _HEADER.pack(_HEADER.size + len(payload), kind, flags, seq, 0) + payload


def _attr(kind: int, value: bytes) -> bytes:
    length = _ATTR.size + len(value)
    return _ATTR.pack(length, kind) + value + b"\0" * (-length % 4)


def generation_request(seq: int) -> bytes:
    """An ``NFT_MSG_GETGEN`` request (family unspecified)."""
    return _message(NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_GETGEN, NLM_F_REQUEST, seq, socket.AF_UNSPEC, b"")


def set_element_batch(table: str, set_name: str, ip: IPv4Address, add: bool, seq: int) -> bytes:
    """One transaction adding (or deleting) ``ip`` in ``ip <table>``'s set; the element is ``seq + 1``."""
    key = _attr(NFTA_SET_ELEM_KEY | NLA_F_NESTED, _attr(NFTA_DATA_VALUE, ip.packed))
    body = (_attr(NFTA_SET_ELEM_LIST_TABLE, table.encode() + b"\0")
            + _attr(NFTA_SET_ELEM_LIST_SET, set_name.encode() + b"\0")
            + _attr(NFTA_SET_ELEM_LIST_ELEMENTS | NLA_F_NESTED, _attr(NFTA_LIST_ELEM | NLA_F_NESTED, key)))
    kind, flags = ((NFT_MSG_NEWSETELEM, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE) if add
                   else (NFT_MSG_DELSETELEM, NLM_F_REQUEST | NLM_F_ACK))
    return (_message(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, seq, socket.AF_UNSPEC, b"", NFNL_SUBSYS_NFTABLES)
            + _message(NFNL_SUBSYS_NFTABLES << 8 | kind, flags, seq + 1, socket.AF_INET, body)
            + _message(NFNL_MSG_BATCH_END, NLM_F_REQUEST, seq + 2, socket.AF_UNSPEC, b"",
                       NFNL_SUBSYS_NFTABLES))


def _messages(data: bytes) -> Iterator[tuple[int, int, int, int]]:
    """(type, sequence number, body offset, end offset) of each whole message in ``data``."""
    offset = 0
    while offset + _HEADER.size <= len(data):
        length, kind, _flags, seq, _pid = _HEADER.unpack_from(data, offset)
        if length < _HEADER.size or offset + length > len(data):
            return
        yield kind, seq, offset + _HEADER.size, offset + length
        offset += (length + 3) & ~3


def _attributes(data: bytes, at: int, end: int) -> Iterator[tuple[int, bytes]]:
    """(type without flags, payload) of each attribute between ``at`` and ``end``."""
    while at + _ATTR.size <= end:
        attr_len, attr_kind = _ATTR.unpack_from(data, at)
        if attr_len < _ATTR.size or at + attr_len > end:
            return
        yield attr_kind & 0x3FFF, data[at + _ATTR.size:at + attr_len]
        at += (attr_len + 3) & ~3


def _nested(data: bytes, path: tuple[int, ...]) -> Iterator[bytes]:
    """The payloads reached by following attribute types ``path`` down from ``data``."""
    for kind, value in _attributes(data, 0, len(data)):
        if kind == path[0]:
            yield from (_nested(value, path[1:]) if len(path) > 1 else (value,))


def parse_answer(data: bytes, seq: int) -> tuple[int | None, int | None]:
    """(generation, errno) found for ``seq`` in ``data``: a ``NFT_MSG_NEWGEN`` or an ``NLMSG_ERROR``."""
    for kind, msg_seq, body, end in _messages(data):
        if msg_seq != seq:
            continue
        if kind == NLMSG_ERROR and end - body >= _ERRNO.size:
            return None, -_ERRNO.unpack_from(data, body)[0]
        if kind == NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWGEN:
            for attr_kind, value in _attributes(data, body + _NFGENMSG.size, end):
                if attr_kind == NFTA_GEN_ID and len(value) >= 4:
                    return int.from_bytes(value[:4], "big"), None
    return None, None


def set_elements_request(table: str, set_name: str, seq: int) -> bytes:
    """An ``NFT_MSG_GETSETELEM`` dump of ``ip <table>``'s set."""
    body = (_attr(NFTA_SET_ELEM_LIST_TABLE, table.encode() + b"\0")
            + _attr(NFTA_SET_ELEM_LIST_SET, set_name.encode() + b"\0"))
    return _message(NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_GETSETELEM, NLM_F_REQUEST | NLM_F_DUMP, seq,
                    socket.AF_INET, body)


def parse_elements(data: bytes, seq: int, found: list[IPv4Address]) -> tuple[bool, int | None]:
    """Append the IPv4 keys of ``seq``'s dump messages in ``data`` to ``found``; (dump done, errno)."""
    for kind, msg_seq, body, end in _messages(data):
        if msg_seq != seq:
            continue
        if kind in (NLMSG_ERROR, NLMSG_DONE):  # DONE carries the dump's own status: a dump can fail late
            code = -_ERRNO.unpack_from(data, body)[0] if end - body >= _ERRNO.size else 0
            return True, code or None
        if kind != NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWSETELEM:
            continue
        found.extend(IPv4Address(value) for value in _nested(data[body + _NFGENMSG.size:end], _ELEMENT_KEY)
                     if len(value) == 4)
    return False, None


class NftNetlink:
    """A NETLINK_NETFILTER socket for the generation and set elements; one caller thread at a time."""

    def __init__(self) -> None:
        self._sock: socket.socket | None = None
        self._seq = 0

    def generation(self) -> int | None:
        """The ruleset generation, or None where nftables netlink is unavailable."""
        try:
            generation, _ = self._ask(generation_request(self._next_seq(1)), self._seq)
        except OSError:
            self.close()
            return None
        return generation

    def set_element(self, table: str, set_name: str, ip: IPv4Address, add: bool) -> None:
        """Add or delete ``ip`` in the set; OSError with the kernel's errno if it refuses."""
        first = self._next_seq(3)
        _, code = self._ask(set_element_batch(table, set_name, ip, add, first), first + 1)
        if code:
            raise OSError(code, os.strerror(code))

    def set_elements(self, table: str, set_name: str) -> list[IPv4Address]:
        """The set's IPv4 elements; OSError with the kernel's errno if it refuses (ENOENT: no set)."""
        seq = self._next_seq(1)
        self._send(set_elements_request(table, set_name, seq))
        found: list[IPv4Address] = []
        while True:
            assert self._sock is not None
            done, code = parse_elements(self._sock.recv(65536), seq, found)
            if code:
                raise OSError(code, os.strerror(code))
            if done:
                return found

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _next_seq(self, count: int) -> int:
        first = self._seq + 1
        self._seq += count
        return first

    def _send(self, request: bytes) -> None:
        if self._sock is None:
            self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                       NETLINK_NETFILTER)
            self._sock.bind((0, 0))
        self._sock.send(request)

    def _ask(self, request: bytes, seq: int) -> tuple[int | None, int | None]:
        self._send(request)
        assert self._sock is not None
        while True:
            generation, code = parse_answer(self._sock.recv(65536), seq)
            if generation is not None or code is not None:
                return generation, code
