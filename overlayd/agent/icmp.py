"""ICMP echo through raw sockets, one per address family: the packets (pure) and the socket that
sends and reads them.

Every host answers an echo to its own addresses in the kernel, so a peer needs nothing of ours
(a flanneld node answers as well as an overlayd one). A raw socket sees every echo reply that
reaches this network namespace; ours are told apart by their identifier and sequence number. An
ICMPv6 socket asks the kernel to pass it echo replies alone (``ICMP6_FILTER``): neighbour
discovery, which a busy IPv6 segment is full of, never wakes it.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

ECHO_REQUEST, ECHO_REPLY = 8, 0
ECHO_REQUEST_V6, ECHO_REPLY_V6 = 128, 129
# The kernel stamps each packet as it arrives, so a round trip is exact however late the probe
# thread reads it (it wakes a few times a second, not once a packet). Linux's number, by name
# where Python has it.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
ICMP6_FILTER = 1  # <netinet/icmp6.h>: the socket option at level IPPROTO_ICMPV6
PAYLOAD = b"overlayd-probe\x00\x00"  # 16 bytes: a reply is recognisable in a capture

Address = IPv4Address | IPv6Address


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``."""
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def echo_request(ident: int, sequence: int) -> bytes:
    header = struct.pack("!BBHHH", ECHO_REQUEST, 0, 0, ident, sequence)
    return struct.pack("!BBHHH", ECHO_REQUEST, 0, checksum(header + PAYLOAD), ident, sequence) + PAYLOAD


def echo_request_v6(ident: int, sequence: int) -> bytes:
    """An ICMPv6 echo request with its checksum left 0: the kernel fills it in on a raw ICMPv6
    socket (the checksum covers the IPv6 pseudo-header, whose source the kernel picks)."""
    return struct.pack("!BBHHH", ECHO_REQUEST_V6, 0, 0, ident, sequence) + PAYLOAD


def echo_reply_filter() -> bytes:
    """The ``ICMP6_FILTER`` value that passes echo replies alone: eight 32-bit words in host
    order, a set bit blocking that type (Linux's ``ICMP6_FILTER_SETBLOCK``)."""
    words = [0xFFFFFFFF] * 8
    words[ECHO_REPLY_V6 >> 5] &= ~(1 << (ECHO_REPLY_V6 & 31)) & 0xFFFFFFFF
    return struct.pack("8I", *words)


@dataclass(frozen=True)
class EchoReply:
    source: Address
    ident: int
    sequence: int
    received: float | None = None  # unix time the kernel received it


def parse_reply(packet: bytes, received: float | None = None) -> EchoReply | None:
    """The echo reply in an IPv4 packet as a raw socket returns it; None for anything else."""
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return None
    start = (packet[0] & 0x0F) * 4
    if len(packet) < start + 8 or packet[start] != ECHO_REPLY:
        return None
    ident, sequence = struct.unpack_from("!HH", packet, start + 4)
    return EchoReply(IPv4Address(int.from_bytes(packet[12:16])), ident, sequence, received)


def parse_reply_v6(message: bytes, source: str, received: float | None = None) -> EchoReply | None:
    """The echo reply in an ICMPv6 message as a raw ICMPv6 socket returns it (no IPv6 header:
    ``source`` is the address ``recvmsg`` names); None for anything else."""
    if len(message) < 8 or message[0] != ECHO_REPLY_V6 or message[1] != 0:
        return None
    ident, sequence = struct.unpack_from("!HH", message, 4)
    return EchoReply(IPv6Address(source.split("%", 1)[0]), ident, sequence, received)


def _stamp(ancillary: list[tuple[int, int, bytes]]) -> float | None:
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
            seconds, nanoseconds = struct.unpack_from("qq", data)
            return seconds + nanoseconds / 1e9
    return None


class EchoSocket:
    """A non-blocking raw ICMP socket, or with ``ipv6`` ICMPv6 (needs CAP_NET_RAW, which the agent
    has as root)."""

    def __init__(self, ipv6: bool = False) -> None:
        self.ipv6 = ipv6
        if ipv6:
            self.sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
            self.sock.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, echo_reply_filter())
        else:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        self.sock.setblocking(False)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, target: Address, ident: int, sequence: int) -> bool:
        """Send one echo request; False when the kernel refused it (no route, buffer full)."""
        packet = echo_request_v6(ident, sequence) if self.ipv6 else echo_request(ident, sequence)
        try:
            self.sock.sendto(packet, (str(target), 0))
            return True
        except OSError:
            return False

    def replies(self) -> list[EchoReply]:
        """The echo replies waiting on the socket."""
        found: list[EchoReply] = []
        while True:
            try:
                packet, ancillary, _, address = self.sock.recvmsg(2048, 64)
            except OSError:  # nothing waiting (BlockingIOError) or a transient error: next turn
                return found
            if self.ipv6:
                reply = parse_reply_v6(packet, address[0], _stamp(ancillary))
            elif len(packet) <= 20 or packet[(packet[0] & 0x0F) * 4] != ECHO_REPLY:
                continue  # a request (a peer probing us), or other ICMP: no stamp to decode
            else:
                reply = parse_reply(packet, _stamp(ancillary))
            if reply is not None:
                found.append(reply)

    def close(self) -> None:
        self.sock.close()
