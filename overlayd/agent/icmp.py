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


def parse_reply(packet: bytes) -> EchoReply | None:
    """The echo reply in an IPv4 packet as a raw socket returns it; None for anything else."""
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return None
    start = (packet[0] & 0x0F) * 4
    if len(packet) < start + 8 or packet[start] != ECHO_REPLY:
        return None
    ident, sequence = struct.unpack_from("!HH", packet, start + 4)
    return EchoReply(IPv4Address(packet[12:16]), ident, sequence)


class EchoSocket:
    """A non-blocking raw ICMP socket (needs CAP_NET_RAW, which the agent has as root)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        self.sock.setblocking(False)

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
                packet = self.sock.recv(2048)
            except (BlockingIOError, InterruptedError):
                return found
            except OSError:
                return found
            if (reply := parse_reply(packet)) is not None:
                found.append(reply)

    def close(self) -> None:
        self.sock.close()
