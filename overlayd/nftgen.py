"""The nftables ruleset generation, read over netlink: a cheap "has any rule changed?" check.

The kernel bumps one generation counter on every committed nftables transaction, whoever makes
it (ours, ``nft delete table``, ``nft flush ruleset``, iptables-nft). Reading it is one netlink
round trip (``NFT_MSG_GETGEN``) instead of running ``nft list table`` — a process start and a
full listing — on every periodic pass, which at idle was most of the agent's firewall cost.
The socket is bound to the network namespace current when it is created.
"""

from __future__ import annotations

import socket
import struct

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_GETGEN, NFT_MSG_NEWGEN = 16, 15
NFTA_GEN_ID = 1
NLM_F_REQUEST = 0x1
NLMSG_ERROR = 2
_HEADER = struct.Struct("=IHHII")  # nlmsghdr
_NFGENMSG = struct.Struct("=BBH")  # family, version, res_id (big endian, 0 here)
_ATTR = struct.Struct("=HH")


def generation_request(seq: int) -> bytes:
    """An ``NFT_MSG_GETGEN`` request (family unspecified, nfnetlink version 0)."""
    body = _NFGENMSG.pack(socket.AF_UNSPEC, 0, 0)
    return _HEADER.pack(_HEADER.size + len(body), NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_GETGEN,
                        NLM_F_REQUEST, seq, 0) + body


def parse_generation(data: bytes, seq: int) -> int | None:
    """``NFTA_GEN_ID`` of the ``NFT_MSG_NEWGEN`` answer to ``seq`` in ``data``, else None."""
    offset = 0
    while offset + _HEADER.size <= len(data):
        length, kind, _flags, msg_seq, _pid = _HEADER.unpack_from(data, offset)
        if length < _HEADER.size:
            return None
        if msg_seq == seq and kind == NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWGEN:
            at, end = offset + _HEADER.size + _NFGENMSG.size, offset + length
            while at + _ATTR.size <= end:
                attr_len, attr_kind = _ATTR.unpack_from(data, at)
                if attr_len < _ATTR.size:
                    return None
                if attr_kind & 0x3FFF == NFTA_GEN_ID and attr_len >= _ATTR.size + 4:
                    return int.from_bytes(data[at + _ATTR.size:at + _ATTR.size + 4], "big")
                at += (attr_len + 3) & ~3
            return None
        offset += (length + 3) & ~3
    return None


class GenerationReader:
    """Reads the generation; ``read`` returns None where nftables netlink is unavailable."""

    def __init__(self) -> None:
        self._sock: socket.socket | None = None
        self._seq = 0

    def read(self) -> int | None:
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                           NETLINK_NETFILTER)
                self._sock.bind((0, 0))
            self._seq += 1
            self._sock.send(generation_request(self._seq))
            while True:
                data = self._sock.recv(65536)
                generation = parse_generation(data, self._seq)
                if generation is not None:
                    return generation
                if _is_error(data, self._seq):
                    return None
        except OSError:
            self.close()
            return None

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _is_error(data: bytes, seq: int) -> bool:
    """True if ``data`` holds an ``NLMSG_ERROR`` answering ``seq`` (nftables refused or absent)."""
    offset = 0
    while offset + _HEADER.size <= len(data):
        length, kind, _flags, msg_seq, _pid = _HEADER.unpack_from(data, offset)
        if length < _HEADER.size:
            return True
        if msg_seq == seq and kind == NLMSG_ERROR:
            return True
        offset += (length + 3) & ~3
    return False
