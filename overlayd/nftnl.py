"""nftables over netlink for the two hot operations: the ruleset generation and one set element.

Everything else about our table (creating, replacing, listing) goes through ``nft``; these two
run often enough that a process start each was the cost:

- the generation: the kernel bumps one counter on every committed nftables transaction, whoever
  makes it (ours, ``nft delete table``, ``nft flush ruleset``, iptables-nft). Reading it is one
  netlink round trip (``NFT_MSG_GETGEN``) instead of ``nft list table`` on every periodic pass;
- adding or deleting one element of a set (a peer's PublicIP in the VXLAN allowlist) is one
  batched transaction (``NFT_MSG_NEWSETELEM``/``NFT_MSG_DELSETELEM``) in about 20 µs, where
  ``nft add element`` took a few milliseconds on every new peer, on the event's critical path.

The socket is bound to the network namespace current when it is first used.
"""

from __future__ import annotations

import os
import socket
import struct
from ipaddress import IPv4Address

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END = 0x10, 0x11
NFT_MSG_NEWSETELEM, NFT_MSG_DELSETELEM = 12, 14
NFT_MSG_NEWGEN, NFT_MSG_GETGEN = 15, 16
NFTA_GEN_ID = 1
NFTA_SET_ELEM_LIST_TABLE, NFTA_SET_ELEM_LIST_SET, NFTA_SET_ELEM_LIST_ELEMENTS = 1, 2, 3
NFTA_LIST_ELEM = NFTA_SET_ELEM_KEY = NFTA_DATA_VALUE = 1
NLA_F_NESTED = 0x8000
NLM_F_REQUEST, NLM_F_ACK, NLM_F_CREATE = 0x1, 0x4, 0x400
NLMSG_ERROR = 2
_HEADER = struct.Struct("=IHHII")  # nlmsghdr
_NFGENMSG = struct.Struct("=BBH")  # family, version, res_id (big endian)
_ATTR = struct.Struct("=HH")
_ERRNO = struct.Struct("=i")


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


def parse_answer(data: bytes, seq: int) -> tuple[int | None, int | None]:
    """(generation, errno) found for ``seq`` in ``data``: a ``NFT_MSG_NEWGEN`` or an ``NLMSG_ERROR``."""
    offset = 0
    while offset + _HEADER.size <= len(data):
        length, kind, _flags, msg_seq, _pid = _HEADER.unpack_from(data, offset)
        if length < _HEADER.size:
            break
        body = offset + _HEADER.size
        if msg_seq == seq and kind == NLMSG_ERROR and length >= _HEADER.size + _ERRNO.size:
            return None, -_ERRNO.unpack_from(data, body)[0]
        if msg_seq == seq and kind == NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWGEN:
            at, end = body + _NFGENMSG.size, offset + length
            while at + _ATTR.size <= end:
                attr_len, attr_kind = _ATTR.unpack_from(data, at)
                if attr_len < _ATTR.size:
                    break
                if attr_kind & 0x3FFF == NFTA_GEN_ID and attr_len >= _ATTR.size + 4:
                    return int.from_bytes(data[at + _ATTR.size:at + _ATTR.size + 4], "big"), None
                at += (attr_len + 3) & ~3
        offset += (length + 3) & ~3
    return None, None


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

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _next_seq(self, count: int) -> int:
        first = self._seq + 1
        self._seq += count
        return first

    def _ask(self, request: bytes, seq: int) -> tuple[int | None, int | None]:
        if self._sock is None:
            self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                       NETLINK_NETFILTER)
            self._sock.bind((0, 0))
        self._sock.send(request)
        while True:
            generation, code = parse_answer(self._sock.recv(65536), seq)
            if generation is not None or code is not None:
                return generation, code
