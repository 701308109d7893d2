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
from ipaddress import IPv4Address, IPv6Address, ip_address

from overlayd.base.netlink import (
    NLA_F_NESTED,
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_DUMP,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
    attributes,
    error_code,
    nested,
    split_messages,
)
from overlayd.base.netlink import attr as _attr
from overlayd.base.netlink import message as _netlink_message

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END = 0x10, 0x11
NFT_MSG_NEWSETELEM, NFT_MSG_GETSETELEM, NFT_MSG_DELSETELEM = 12, 13, 14
NFT_MSG_NEWGEN, NFT_MSG_GETGEN = 15, 16
NFTA_GEN_ID = 1
NFTA_SET_ELEM_LIST_TABLE, NFTA_SET_ELEM_LIST_SET, NFTA_SET_ELEM_LIST_ELEMENTS = 1, 2, 3
NFTA_LIST_ELEM = NFTA_SET_ELEM_KEY = NFTA_DATA_VALUE = 1
_NFGENMSG = struct.Struct("=BBH")  # family, version, res_id (big endian)
# Where a set element's key sits in a NEWSETELEM message: list, element, key, data value.
_ELEMENT_KEY = (NFTA_SET_ELEM_LIST_ELEMENTS, NFTA_LIST_ELEM, NFTA_SET_ELEM_KEY, NFTA_DATA_VALUE)


def _message(kind: int, flags: int, seq: int, family: int, body: bytes, res_id: int = 0) -> bytes:
    return _netlink_message(kind, flags, seq, _NFGENMSG.pack(family, 0, socket.htons(res_id)) + body)


_FAMILY = {4: socket.AF_INET, 6: socket.AF_INET6}  # NFPROTO_IPV4/IPV6 equal these


def generation_request(seq: int) -> bytes:
    """An ``NFT_MSG_GETGEN`` request (family unspecified)."""
    return _message(NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_GETGEN, NLM_F_REQUEST, seq, socket.AF_UNSPEC, b"")


def set_element_batch(table: str, set_name: str, ip: IPv4Address | IPv6Address, add: bool, seq: int) -> bytes:
    """One transaction adding (or deleting) ``ip`` in ``ip <table>``'s set (``ip6 <table>``'s
    for an IPv6 address); the element is ``seq + 1``."""
    key = _attr(NFTA_SET_ELEM_KEY | NLA_F_NESTED, _attr(NFTA_DATA_VALUE, ip.packed))
    body = (_attr(NFTA_SET_ELEM_LIST_TABLE, table.encode() + b"\0")
            + _attr(NFTA_SET_ELEM_LIST_SET, set_name.encode() + b"\0")
            + _attr(NFTA_SET_ELEM_LIST_ELEMENTS | NLA_F_NESTED, _attr(NFTA_LIST_ELEM | NLA_F_NESTED, key)))
    kind, flags = ((NFT_MSG_NEWSETELEM, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE) if add
                   else (NFT_MSG_DELSETELEM, NLM_F_REQUEST | NLM_F_ACK))
    return (_message(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, seq, socket.AF_UNSPEC, b"", NFNL_SUBSYS_NFTABLES)
            + _message(NFNL_SUBSYS_NFTABLES << 8 | kind, flags, seq + 1, _FAMILY[ip.version], body)
            + _message(NFNL_MSG_BATCH_END, NLM_F_REQUEST, seq + 2, socket.AF_UNSPEC, b"",
                       NFNL_SUBSYS_NFTABLES))


def parse_answer(data: bytes, seq: int) -> tuple[int | None, int | None]:
    """(generation, errno) found for ``seq`` in ``data``: a ``NFT_MSG_NEWGEN`` or an ``NLMSG_ERROR``."""
    for msg in split_messages(data):
        if msg.seq != seq:
            continue
        if msg.type == NLMSG_ERROR and len(msg.body) >= 4:  # shorter: not an answer, keep reading
            return None, error_code(msg)
        if msg.type == NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWGEN:
            for attr_kind, value in attributes(msg.body, _NFGENMSG.size):
                if attr_kind == NFTA_GEN_ID and len(value) >= 4:
                    return int.from_bytes(value[:4], "big"), None
    return None, None


def set_elements_request(table: str, set_name: str, seq: int, version: int = 4) -> bytes:
    """An ``NFT_MSG_GETSETELEM`` dump of ``ip <table>``'s set (``ip6 <table>``'s for version 6)."""
    body = (_attr(NFTA_SET_ELEM_LIST_TABLE, table.encode() + b"\0")
            + _attr(NFTA_SET_ELEM_LIST_SET, set_name.encode() + b"\0"))
    return _message(NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_GETSETELEM, NLM_F_REQUEST | NLM_F_DUMP, seq,
                    _FAMILY[version], body)


def parse_elements(data: bytes, seq: int, found: list[IPv4Address | IPv6Address]) -> tuple[bool, int | None]:
    """Append the address keys of ``seq``'s dump messages in ``data`` to ``found``; (dump done, errno)."""
    for msg in split_messages(data):
        if msg.seq != seq:
            continue
        if msg.type in (NLMSG_ERROR, NLMSG_DONE):  # DONE carries the dump's own status: a dump can fail late
            return True, error_code(msg) or None
        if msg.type != NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWSETELEM:
            continue
        found.extend(ip_address(value) for value in nested(msg.body[_NFGENMSG.size:], _ELEMENT_KEY)
                     if len(value) in (4, 16))
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

    def set_element(self, table: str, set_name: str, ip: IPv4Address | IPv6Address, add: bool) -> None:
        """Add or delete ``ip`` in the set; OSError with the kernel's errno if it refuses."""
        first = self._next_seq(3)
        _, code = self._ask(set_element_batch(table, set_name, ip, add, first), first + 1)
        if code:
            raise OSError(code, os.strerror(code))

    def set_elements(self, table: str, set_name: str, version: int = 4) -> list[IPv4Address | IPv6Address]:
        """The set's elements (of the ``ip`` table, or the ``ip6`` one for version 6); OSError
        with the kernel's errno if it refuses (ENOENT: no set)."""
        seq = self._next_seq(1)
        self._send(set_elements_request(table, set_name, seq, version))
        found: list[IPv4Address | IPv6Address] = []
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
