"""The udp backend's forwarder: a process of its own that moves packets between ``flannel0`` and
a UDP socket, as flanneld's C proxy does, with the same wire format.

``python -m overlayd.backend.udp.forwarder --device flannel0 --bind 192.0.2.11 --port 8285``

- TUN to UDP: an IPv4 packet read from the device goes, whole, as the payload of one datagram to
  the PublicIP of the peer whose subnet holds its destination; one for no peer is answered with
  ICMP "net unreachable", as flanneld's proxy does, but from the Network's first address:
  flanneld's comes from flannel0's own address, which the kernel drops as a martian source.
- UDP to TUN: a datagram's payload is written to the device if it is an IPv4 packet for this
  host's own subnet (flanneld's proxy writes whatever arrives).
- Both ways the TTL is decremented (a packet reaching 0 is dropped), as flanneld's proxy does.

It outlives the agent that started it, so an agent restart or crash drops no packet; the agent
finds it again by its control socket, an abstract unix socket named after the device (abstract
names are per network namespace) that answers only its own user. The agent keeps the peer table
in it level-triggered: it reads the table back on each pass and sends what differs.

Standard library only (and ``adopt``, which takes a running flanneld's device and socket over):
the process starts in ~50 ms and holds only what it forwards.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import hashlib
import json
import os
import signal
import socket
import struct
import sys
import threading
import time
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from overlayd.backend.udp.adopt import Adopted, adopt_flanneld

TUNSETIFF = 0x400454CA
SO_SNDBUFFORCE, SO_RCVBUFFORCE = 32, 33  # <asm-generic/socket.h>; not in the socket module
IFF_TUN, IFF_NO_PI = 0x0001, 0x1000
BUFFER = 65536  # any IPv4 packet: the device's MTU may be raised under a running forwarder
SOCKET_BUFFER = 4 << 20  # room for a burst while the other thread holds the interpreter
CONTROL_MESSAGE = 16 << 20  # a whole peer table in one reply
ICMP_QUERIES = frozenset({8, 13, 15, 17})  # echo, timestamp, information, address mask requests
ICMP_TTL = 8  # flanneld's proxy sends its "net unreachable" with TTL 8
REOPEN_PAUSE = 0.2
SOURCE = Path(__file__)


def code_id(source: Path = SOURCE) -> str:
    """What an agent compares to decide whether a running forwarder is the one it would start:
    the code itself, so an upgrade replaces it and a restart re-attaches."""
    return hashlib.sha256(source.read_bytes()).hexdigest()[:16]


CODE_ID = code_id()


def control_address(device: str) -> str:
    """The abstract unix socket a forwarder of ``device`` answers on."""
    return f"\0overlayd-udp-forwarder/{device}"


def open_tun(device: str) -> int:
    """A descriptor of the TUN device ``device`` (created, no packet information header)."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", device.encode(), IFF_TUN | IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    return fd


def ifindex_of(device: str) -> int:
    try:
        return socket.if_nametoindex(device)
    except OSError:
        return 0


def hop(packet: bytearray) -> bool:
    """Count one hop in the IPv4 header at the start of ``packet``: the TTL less one and the
    header checksum patched (RFC 1624); False, untouched, when the TTL would reach 0."""
    ttl = packet[8]
    if ttl <= 1:
        return False
    packet[8] = ttl - 1
    # The TTL is the high byte of its 16-bit word, so the one's-complement sum grows by 0x100.
    check = (packet[10] << 8 | packet[11]) + 0x100
    check = (check & 0xFFFF) + (check >> 16)
    packet[10], packet[11] = check >> 8, check & 0xFF
    return True


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def net_unreachable(offender: bytes, source: int) -> bytes | None:
    """ICMP "net unreachable" for ``offender`` from ``source``, or None where RFC 1122 sends none
    (about an ICMP error, about a later fragment) or the packet is malformed. flanneld's proxy
    answers no ICMP at all, so a ping to a subnet nobody holds just times out there."""
    header_len = (offender[0] & 0x0F) * 4
    if header_len < 20 or len(offender) < header_len + 8:
        return None
    if offender[9] == socket.IPPROTO_ICMP and offender[header_len] not in ICMP_QUERIES:
        return None
    if struct.unpack_from("!H", offender, 6)[0] & 0x1FFF:
        return None
    quoted = offender[: header_len + 8]
    icmp = bytearray(struct.pack("!BBHI", 3, 0, 0, 0) + quoted)
    struct.pack_into("!H", icmp, 2, _checksum(bytes(icmp)))
    total = 20 + len(icmp)
    ip = bytearray(struct.pack("!BBHHHBBHI4s", 0x45, 0, total, 0, 0, ICMP_TTL, socket.IPPROTO_ICMP, 0,
                               source, offender[12:16]))
    struct.pack_into("!H", ip, 10, _checksum(bytes(ip)))
    return bytes(ip + icmp)


class PeerTable:
    """Peers' subnets and the PublicIPs behind them, looked up by shift and dict, longest first.

    Readers take ``lookup`` once per packet; an update builds a new one and swaps the reference,
    so the forwarding thread never sees a half-made table and takes no lock."""

    def __init__(self, port: int) -> None:
        self.port = port  # where every peer listens: the config's, the same on every host
        self.entries: dict[tuple[int, int], str] = {}  # (network, prefix length) -> PublicIP
        self.lookup: tuple[tuple[int, dict[int, tuple[str, int]]], ...] = ()

    def update(self, add: list[list], remove: list[list]) -> None:
        entries = dict(self.entries)
        for network, prefixlen, _ in remove:
            entries.pop((network, prefixlen), None)
        for network, prefixlen, ip in add:
            entries[(network, prefixlen)] = str(IPv4Address(ip))
        # The socket address tuples are made here, once, not per packet.
        by_length: dict[int, dict[int, tuple[str, int]]] = {}
        for (network, prefixlen), ip in entries.items():
            shift = 32 - prefixlen
            by_length.setdefault(shift, {})[network >> shift] = (ip, self.port)
        self.entries = entries
        self.lookup = tuple(sorted(by_length.items()))  # smallest shift: longest prefix first

    def rows(self) -> list[list]:
        return [[network, prefixlen, ip] for (network, prefixlen), ip in self.entries.items()]


class Forwarder:
    """The two forwarding loops and the control server of one device."""

    def __init__(self, device: str, bind: str, port: int, adopted: Adopted | None = None) -> None:
        """Opens ``device`` and binds ``bind:port``, or takes flanneld's (``adopted``)."""
        self.device, self.bind, self.port = device, bind, port
        self.adopted_from = adopted.pid if adopted else None
        self.tun = adopted.tun if adopted else open_tun(device)
        self.sock = adopted.sock if adopted else socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for option in (SO_RCVBUFFORCE, SO_SNDBUFFORCE):
            with contextlib.suppress(OSError):  # not privileged: the system's limits stand
                self.sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
        if adopted is None:
            self.sock.bind((bind, port))
        self.peers = PeerTable(port)
        self.own = (0, 1 << 32)  # (subnet >> shift, shift): matches nothing until told
        self.icmp_source = 0
        self.network: str | None = None
        self.counters = dict.fromkeys(
            ("to_peers", "from_peers", "unreachable", "not_ours", "ttl_expired", "not_ipv4",
             "send_errors", "device_errors", "reopened"), 0)  # fmt: skip

    # ---- forwarding -----------------------------------------------------------------------------

    def tun_to_udp(self) -> None:
        buffer = bytearray(BUFFER)
        view = memoryview(buffer)
        readv, sendto, peers, counters = os.readv, self.sock.sendto, self.peers, self.counters
        while True:
            try:
                size = readv(self.tun, (buffer,))
            except BlockingIOError:  # someone sharing the descriptor made it non-blocking
                os.set_blocking(self.tun, True)
                continue
            except OSError as exc:
                if exc.errno != errno.EINTR:
                    self._reopen(exc)
                continue
            if size < 20 or buffer[0] >> 4 != 4:
                counters["not_ipv4"] += 1
                continue
            dst = buffer[16] << 24 | buffer[17] << 16 | buffer[18] << 8 | buffer[19]
            peer = None
            for shift, table in peers.lookup:
                peer = table.get(dst >> shift)
                if peer is not None:
                    break
            if peer is None:
                counters["unreachable"] += 1
                self._unreachable(bytes(view[:size]))
                continue
            if not hop(buffer):
                counters["ttl_expired"] += 1
                continue
            try:
                sendto(view[:size], peer)
            except OSError:
                counters["send_errors"] += 1
                continue
            counters["to_peers"] += 1

    def udp_to_tun(self) -> None:
        buffer = bytearray(BUFFER)
        view = memoryview(buffer)
        recv_into, write, counters = self.sock.recv_into, os.write, self.counters
        while True:
            try:
                size = recv_into(buffer)
            except BlockingIOError:
                self.sock.setblocking(True)
                continue
            except OSError:
                continue
            if size < 20 or buffer[0] >> 4 != 4:
                counters["not_ipv4"] += 1
                continue
            dst = buffer[16] << 24 | buffer[17] << 16 | buffer[18] << 8 | buffer[19]
            own, shift = self.own
            if dst >> shift != own:
                counters["not_ours"] += 1
                continue
            if not hop(buffer):
                counters["ttl_expired"] += 1
                continue
            try:
                write(self.tun, view[:size])
            except OSError:
                counters["device_errors"] += 1
                continue
            counters["from_peers"] += 1

    def _unreachable(self, packet: bytes) -> None:
        reply = net_unreachable(packet, self.icmp_source)
        if reply is not None:
            try:
                os.write(self.tun, reply)
            except OSError:
                self.counters["device_errors"] += 1

    def _reopen(self, exc: OSError) -> None:
        """The device went away under us (deleted): make it anew on the same descriptor number,
        which the other thread keeps writing to. The agent configures it again."""
        print(f"overlayd udp forwarder: {self.device}: {exc.strerror}; creating it again",
              file=sys.stderr, flush=True)
        while True:
            try:
                fresh = open_tun(self.device)
            except OSError as again:
                print(f"overlayd udp forwarder: cannot create {self.device}: {again.strerror}; retrying",
                      file=sys.stderr, flush=True)
                time.sleep(REOPEN_PAUSE * 5)
                continue
            os.dup2(fresh, self.tun)
            os.close(fresh)
            self.counters["reopened"] += 1
            return

    # ---- control --------------------------------------------------------------------------------

    def hello(self) -> dict[str, object]:
        own, shift = self.own
        return {
            "pid": os.getpid(), "code": CODE_ID, "device": self.device, "bind": self.bind,
            "port": self.port, "ifindex": ifindex_of(self.device),
            "subnet": str(IPv4Network((own << shift, 32 - shift))) if shift <= 32 else None,
            "network": self.network,
            "peers": len(self.peers.entries), "counters": dict(self.counters),
            "adopted_from": self.adopted_from,
        }  # fmt: skip

    def handle(self, request: dict) -> dict[str, object]:
        op = request.get("op")
        if op == "hello":
            return self.hello()
        if op == "subnet":
            subnet = IPv4Network(request["subnet"])
            shift = 32 - subnet.prefixlen
            self.network = str(IPv4Network(request["network"]))
            self.icmp_source = int(IPv4Network(self.network).network_address)
            self.own = (int(subnet.network_address) >> shift, shift)
            return self.hello()
        if op == "table":
            return {"table": self.peers.rows()}
        if op == "update":
            self.peers.update(request.get("add", []), request.get("remove", []))
            return {"peers": len(self.peers.entries)}
        if op == "stop":
            os.kill(os.getpid(), signal.SIGTERM)
            return {"stopping": True}
        return {"error": f"unknown op {op!r}"}

    def serve(self, server: socket.socket) -> None:
        uid = os.getuid()
        while True:
            conn, _ = server.accept()
            with conn:
                credentials = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
                _, peer_uid, _ = struct.unpack("3i", credentials)
                if peer_uid not in (0, uid):
                    continue
                with contextlib.suppress(OSError):
                    conn.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, CONTROL_MESSAGE)
                try:
                    request = json.loads(conn.recv(CONTROL_MESSAGE))
                    reply = self.handle(request) if isinstance(request, dict) else {"error": "not an object"}
                except (ValueError, KeyError, TypeError) as exc:
                    reply = {"error": str(exc)}
                with contextlib.suppress(OSError):
                    conn.send(json.dumps(reply, separators=(",", ":")).encode())


def open_forwarder(device: str, bind: str, port: int) -> Forwarder:
    """A forwarder with its own device and socket or, when another process holds the device
    (EBUSY), with flanneld's; OSError if neither can be had."""
    try:
        return Forwarder(device, bind, port)
    except OSError as exc:
        if exc.errno != errno.EBUSY:
            raise
    adopted = adopt_flanneld(device, bind, port)
    print(f"overlayd udp forwarder: took over {device} and UDP {bind}:{port} from flanneld "
          f"(pid {adopted.pid}); it can be stopped now", file=sys.stderr, flush=True)
    return Forwarder(device, bind, port, adopted)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="overlayd-udp-forwarder")
    parser.add_argument("--device", required=True)
    parser.add_argument("--bind", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the agent's terminal closing is no reason to stop
    server = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        server.bind(control_address(args.device))
    except OSError as exc:
        print(f"overlayd udp forwarder: another forwarder of {args.device} runs ({exc.strerror})",
              file=sys.stderr, flush=True)
        return 2
    try:
        forwarder = open_forwarder(args.device, args.bind, args.port)
    except OSError as exc:
        print(f"overlayd udp forwarder: cannot open {args.device} or bind {args.bind}:{args.port}: "
              f"{exc.strerror or exc}", file=sys.stderr, flush=True)
        return 2
    server.listen(8)
    for loop in (forwarder.tun_to_udp, forwarder.udp_to_tun):
        threading.Thread(target=loop, name=loop.__name__, daemon=True).start()
    forwarder.serve(server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
