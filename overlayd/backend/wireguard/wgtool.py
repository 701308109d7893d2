"""The WireGuard device's keys, port and peers, through the ``wg`` tool.

``wg`` is the one interface both implementations share: it speaks generic netlink to the kernel's
WireGuard and the UAPI socket (``/var/run/wireguard/<dev>.sock``) to wireguard-go, trying the
socket first. Speaking either ourselves would mean two codecs (the kernel's is generic netlink,
whose family must be resolved first); a ``wg`` call costs a fork and ~2 ms. Secrets (the private
key, the PSK) go to ``wg`` as file paths, never as arguments, and ``dump`` output, whose first
line holds the private key, is parsed here and never logged.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from pathlib import Path

from overlayd.backend.api import BackendError
from overlayd.backend.plane import Ip, Net, WgPeer

WG = "wg"
TIMEOUT = 10.0
EMPTY_FILE = Path("/dev/null")
PEERS_PER_CALL = 500  # ~80 kB of arguments
# What a peer without an endpoint or allowed IPs reads as: never wanted, so it is replaced. The
# IPv6 device's are IPv6 ones, so that what is read there is written back there.
NOWHERE = IPv4Address(0)
NOTHING = IPv4Network("0.0.0.0/32")
NOWHERE6 = IPv6Address(0)
NOTHING6 = IPv6Network("::/128")


@dataclass(frozen=True)
class DeviceDump:
    """What ``wg show <dev> dump`` says, without the private key."""

    public_key: str  # "" when no private key is set
    listen_port: int
    peers: frozenset[WgPeer]
    fingerprint: str  # keys, endpoints and allowed IPs only: what changes when configuration does


def run_wg(args: list[str], what: str) -> str:
    """Run ``wg`` with ``args``; BackendError naming ``what`` (never the output) if it fails."""
    try:
        done = subprocess.run([WG, *args], capture_output=True, text=True, timeout=TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise BackendError(f"cannot {what}: {err}; install wireguard-tools") from None
    if done.returncode != 0:
        raise BackendError(f"cannot {what}: {done.stderr.strip()[:300]}")
    return done.stdout


def _endpoint(text: str) -> tuple[Ip | None, str]:
    """(address, port) of a ``wg`` endpoint, ``192.0.2.12:51820`` or ``[2001:db8::c]:51821``;
    None for no address."""
    host, _, port = text.rpartition(":")
    try:
        return ip_address(host.strip("[]")), port
    except ValueError:
        return None, port


def parse_dump(text: str, psk: str = "", keepalive: int = 0, port: int = 0, family: int = 0) -> DeviceDump:
    """``wg show <dev> dump``: the interface line, then one line per peer (tab-separated). A peer
    whose preshared key, keepalive or endpoint port is not ``psk``, ``keepalive`` and ``port`` (0:
    any), or whose endpoint is not of ``family`` (4 or 6, the device's; 0: any) reads as reached
    nowhere, so that it is configured again."""
    nowhere, nothing = (NOWHERE6, NOTHING6) if family == 6 else (NOWHERE, NOTHING)
    lines = text.splitlines()
    if not lines:
        return DeviceDump("", 0, frozenset(), "")
    head = lines[0].split("\t")
    public_key = head[1] if len(head) > 1 and head[1] != "(none)" else ""
    listen_port = int(head[2]) if len(head) > 2 and head[2].isdigit() else 0
    peers: set[WgPeer] = set()
    shape = [public_key, str(listen_port)]
    for line in lines[1:]:
        fields = line.split("\t")
        if len(fields) < 4:
            continue
        key, endpoint, allowed = fields[0], fields[2], fields[3]
        peer_psk = "" if fields[1] == "(none)" else fields[1]
        peer_keepalive = fields[7] if len(fields) > 7 else "off"
        shape.append(f"{key} {endpoint} {allowed} {peer_keepalive} {bool(peer_psk)}")  # never the PSK
        address, peer_port = _endpoint(endpoint)
        dst = address if address is not None and family in (0, address.version) else nowhere
        wanted_keepalive = str(keepalive) if keepalive else "off"
        if peer_psk != psk or peer_keepalive != wanted_keepalive or (port and peer_port != str(port)):
            dst = nowhere
        nets = [ip_network(net) for net in allowed.split(",") if net and net != "(none)"]
        peers.update(WgPeer(key, dst, net) for net in nets or [nothing])
    return DeviceDump(public_key, listen_port, frozenset(peers), "\n".join(shape))


def show(device: str, expected: PeerSettings | None = None) -> DeviceDump:
    """The device's configuration; peers that differ from ``expected`` read as reached nowhere."""
    text = run_wg(["show", device, "dump"], f"read WireGuard device {device}")
    if expected is None:
        return parse_dump(text)
    return parse_dump(text, expected.psk, expected.keepalive, expected.port, expected.family)


def set_interface(device: str, private_key_file: Path, listen_port: int) -> None:
    run_wg(["set", device, "listen-port", str(listen_port), "private-key", str(private_key_file)],
           f"set the private key and listen port {listen_port} of {device}")


@dataclass(frozen=True)
class PeerSettings:
    """What every peer gets besides its key, endpoint and allowed IPs."""

    port: int  # the peers' listen port: the network's, as flanneld assumes
    psk_file: Path | None
    keepalive: int
    psk: str = ""  # what ``psk_file`` holds, to compare with what the device has
    family: int = 0  # the family of the peers' endpoints (the IPv6 device's: 6); 0: either


def endpoint(dst: Ip, port: int) -> str:
    """``dst:port`` as ``wg`` takes it, an IPv6 address in brackets."""
    return f"[{dst}]:{port}" if dst.version == 6 else f"{dst}:{port}"


def set_peers(device: str, wanted: dict[str, tuple[Ip, Iterable[Net]]],
              gone: set[str], settings: PeerSettings) -> None:
    """Configure ``wanted`` peers (key -> endpoint, all its allowed IPs) and remove ``gone`` ones:
    one ``wg set`` per ``PEERS_PER_CALL``, so that thousands of peers stay within the kernel's
    limit on a command line."""
    peers = [["peer", key, "remove"] for key in sorted(gone)]
    for key, (dst, nets) in sorted(wanted.items()):
        peers.append(["peer", key, "endpoint", endpoint(dst, settings.port),
                      "allowed-ips", ",".join(str(net) for net in sorted(nets, key=_net_order)),
                      "persistent-keepalive", str(settings.keepalive) if settings.keepalive else "off",
                      # An empty file clears a preshared key the network no longer has.
                      "preshared-key", str(settings.psk_file or EMPTY_FILE)])  # fmt: skip
    for start in range(0, len(peers), PEERS_PER_CALL):
        args = ["set", device, *(word for peer in peers[start:start + PEERS_PER_CALL] for word in peer)]
        run_wg(args, f"configure {len(wanted)} and remove {len(gone)} peer(s) on {device}")


def _net_order(net: Net) -> tuple[int, Net]:
    return net.version, net
