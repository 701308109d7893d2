"""ICMP echo through one raw socket: the packets (pure) and the socket that sends and reads them.

Every host answers an echo to its own addresses in the kernel, so a peer needs nothing of ours
(a flanneld node answers as well as an overlayd one). A raw socket sees every echo reply that
reaches this network namespace; ours are told apart by their identifier and sequence number.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from ipaddress import IPv4Address

ECHO_REQUEST, ECHO_REPLY = 8, 0
# The kernel stamps each packet as it arrives, so a round trip is exact however late the probe
# thread reads it (it wakes a few times a second, not once a packet). Linux's number, by name
# where Python has it.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
PAYLOAD = b"overlayd-probe\x00\x00"  # 16 bytes: a reply is recognisable in a capture


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


@dataclass(frozen=True)
class EchoReply:
    source: IPv4Address
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


def _stamp(ancillary: list[tuple[int, int, bytes]]) -> float | None:
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
            seconds, nanoseconds = struct.unpack_from("qq", data)
            return seconds + nanoseconds / 1e9
    return None


class EchoSocket:
    """A non-blocking raw ICMP socket (needs CAP_NET_RAW, which the agent has as root)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        self.sock.setblocking(False)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, target: IPv4Address, ident: int, sequence: int) -> bool:
        """Send one echo request; False when the kernel refused it (no route, buffer full)."""
        try:
            self.sock.sendto(echo_request(ident, sequence), (str(target), 0))
            return True
        except OSError:
            return False

    def replies(self) -> list[EchoReply]:
        """The echo replies waiting on the socket."""
        found: list[EchoReply] = []
        while True:
            try:
                packet, ancillary, _, _ = self.sock.recvmsg(2048, 64)
            except OSError:  # nothing waiting (BlockingIOError) or a transient error: next turn
                return found
            if len(packet) <= 20 or packet[(packet[0] & 0x0F) * 4] != ECHO_REPLY:
                continue  # a request (a peer probing us), or other ICMP: no stamp to decode
            if (reply := parse_reply(packet, _stamp(ancillary))) is not None:
                found.append(reply)

    def close(self) -> None:
        self.sock.close()
