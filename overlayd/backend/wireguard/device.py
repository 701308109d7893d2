"""A WireGuard device (``flannel-wg``, and ``flannel-wg-v6`` for a dual-stack network's IPv6
half in Mode separate): created in the kernel where it has WireGuard, else by wireguard-go; its
addresses, MTU and the route of the whole Network onto it; its per-peer routes and peers.

Like flanneld, the device holds its subnet's network address as a /32 (IPv6: /128) and the whole
Network (IPv6Network) is routed onto it (scope link): a packet for a subnet whose peer is unknown
or was skipped reaches the device, which has no peer for it and drops it, and never leaves in
clear on the underlay.
Each peer gets, besides its WireGuard peer, the route to its subnet via its ``<subnet>.0`` as the
vxlan device has, so routes list the peers the device serves.

wireguard-go runs as a process of its own (its own session; it daemonizes): a SIGKILL of the agent
leaves it, its TUN device and its peers running, and the next agent adopts them.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from overlayd.backend.api import ApplyError, BackendError, DeviceState
from overlayd.backend.plane import Ip, Net, Plane, PlaneDiff, Route
from overlayd.backend.rtnl.codec import (
    IFF_UP,
    Link,
    address_request,
    create_link_request,
    decode_address,
    decode_device_route,
    decode_entry,
    delete_link_request,
    device_route_request,
    dump_addresses_request,
    encode_entry,
    route_dump_request,
    set_link_request,
)
from overlayd.backend.rtnl.socket import RtnlSocket
from overlayd.backend.wireguard import wgtool
from overlayd.backend.wireguard.wgtool import NOTHING, NOTHING6, NOWHERE, NOWHERE6, DeviceDump, PeerSettings

PeerConfig = tuple[Ip, set[Net]]  # a peer's endpoint address and allowed IPs

log = logging.getLogger(__name__)

KERNEL_KIND = "wireguard"
USERSPACE_KIND = "tun"  # what wireguard-go's device reports
WIREGUARD_GO = "wireguard-go"
GONE_ERRNOS = frozenset({errno.ENOENT, errno.ESRCH})
UAPI_DIR = Path("/var/run/wireguard")  # wireguard-go's sockets, where `wg` looks for them
SERVED_WITHIN = 5.0  # seconds a started wireguard-go gets to open its socket
DISCARD_PORT = 9  # where the datagrams that start handshakes go


def wireguard_go_command(binary: str, name: str) -> list[str]:
    """How to start wireguard-go so that it outlives the agent: it daemonizes itself (its first
    process exits once the device is up), here in a session of its own. Under the shipped systemd
    unit it stays in the agent's unit, whose ``KillMode=process`` leaves it running when the agent
    stops or restarts, as the udp backend's forwarder."""
    return [binary, name]


@dataclass(frozen=True)
class WgDeviceSpec:
    name: str
    mtu: int
    addresses: tuple[Ip, ...]  # the own subnets' network addresses, as a /32 (IPv6: /128)
    networks: tuple[Net, ...]  # routed onto the device: the Network, and or the IPv6Network
    private_key_file: Path
    public_key: str
    listen_port: int
    log_file: Path  # wireguard-go's output


class WgKernel:
    """The device and its peer entries; owns a raw rtnetlink socket in the current namespace."""

    def __init__(self) -> None:
        self._rtnl = RtnlSocket()
        self.implementation = ""  # "kernel" or "wireguard-go", once the device exists
        # By device: each peer's endpoint and allowed IPs, last known.
        self.peers: dict[str, dict[str, PeerConfig]] = {}
        # By device: its configuration as last read (``wgtool.DeviceDump``).
        self.fingerprints: dict[str, str] = {}

    def close(self) -> None:
        self._rtnl.close()

    # -- the device -----------------------------------------------------------------------------

    def find(self, name: str) -> Link | None:
        return self._rtnl.find_link(name)

    def ensure(self, spec: WgDeviceSpec) -> tuple[DeviceState, list[str]]:
        """Make the device match ``spec`` (creating it, or starting wireguard-go); the changes."""
        actions: list[str] = []
        link = self.find(spec.name)
        if link is not None and link.kind not in (KERNEL_KIND, USERSPACE_KIND):
            self._write_link(spec.name, "delete a device of another kind", delete_link_request, link.index)
            _record(spec.name, f"deleted {spec.name} of kind {link.kind}", actions)
            link = None
        if link is None:
            link = self._create(spec, actions)
        self._set_implementation(link)
        try:
            dump = wgtool.show(spec.name)
        except BackendError as err:
            if link.kind != USERSPACE_KIND:
                raise
            # A TUN device nobody answers for (a wedged or foreign process): ours to replace.
            self._write_link(spec.name, "delete the unserved device", delete_link_request, link.index)
            _record(spec.name, f"deleted {spec.name}, which no wireguard-go serves ({err})", actions)
            link = self._create(spec, actions)
            dump = wgtool.show(spec.name)
        if dump.public_key != spec.public_key or dump.listen_port != spec.listen_port:
            wgtool.set_interface(spec.name, spec.private_key_file, spec.listen_port)
            change = f"set public key {spec.public_key} and listen port {spec.listen_port}"
            _record(spec.name, change, actions)
        if link.mtu != spec.mtu:
            self._write_link(spec.name, "set its MTU", set_link_request, link.index, mtu=spec.mtu)
            _record(spec.name, f"set mtu {spec.mtu} (was {link.mtu})", actions)
        if not link.flags & IFF_UP:
            self._write_link(spec.name, "set it up", set_link_request, link.index, up=True)
            _record(spec.name, "set up", actions)
        self._fix_address(link.index, spec, actions)
        self._fix_network_route(link.index, spec, actions)
        return DeviceState(link.index, link.mac, spec.mtu), actions

    def _set_implementation(self, link: Link) -> None:
        implementation = "kernel" if link.kind == KERNEL_KIND else WIREGUARD_GO
        if implementation != self.implementation:
            self.implementation = implementation
            log.info("%s: WireGuard of the %s", link.name, "kernel" if link.kind == KERNEL_KIND
                     else "userspace implementation wireguard-go (the kernel has no WireGuard)")

    def _create(self, spec: WgDeviceSpec, actions: list[str]) -> Link:
        seq = self._rtnl.next_seq()
        try:
            self._rtnl.write(create_link_request(seq, spec.name, KERNEL_KIND, spec.mtu), seq)
            _record(spec.name, f"created {spec.name} (kernel WireGuard)", actions)
        except OSError as err:
            if err.errno not in (errno.EOPNOTSUPP, errno.EAFNOSUPPORT, errno.EINVAL):
                raise BackendError(f"{spec.name}: cannot create the device: {err.strerror}") from None
            self._start_wireguard_go(spec)
            _record(spec.name, f"created {spec.name} by starting wireguard-go", actions)
        link = self.find(spec.name)
        if link is None:
            raise BackendError(f"{spec.name}: created, but gone at once; see {spec.log_file}")
        return link

    def _start_wireguard_go(self, spec: WgDeviceSpec) -> None:
        """Start wireguard-go for ``spec.name`` in a session of its own; it daemonizes, and its
        UAPI socket is up when the first process exits."""
        binary = shutil.which(WIREGUARD_GO)
        if binary is None:
            raise BackendError(f"{spec.name}: the kernel has no WireGuard and {WIREGUARD_GO} is not "
                               "installed; install the wireguard-go package (or the kernel module)")
        spec.log_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with spec.log_file.open("ab") as out:
            done = subprocess.run(wireguard_go_command(binary, spec.name), stdin=subprocess.DEVNULL,
                                  stdout=out, stderr=subprocess.STDOUT, start_new_session=True, timeout=30,
                                  check=False, env={**os.environ, "LOG_LEVEL": "error"})
        if done.returncode != 0:
            raise BackendError(
                f"{spec.name}: {WIREGUARD_GO} exited with {done.returncode}; see {spec.log_file}"
            )
        self._wait_served(spec.name)

    def _wait_served(self, name: str) -> None:
        """Wait up to ``SERVED_WITHIN`` for wireguard-go's device and UAPI socket (a transient
        systemd unit returns before they are there)."""
        deadline = time.monotonic() + SERVED_WITHIN
        while time.monotonic() < deadline:
            if (UAPI_DIR / f"{name}.sock").exists() and self.find(name) is not None:
                return
            time.sleep(0.02)

    def _write_link(self, name: str, what: str, build: Callable[..., bytes], index: int,
                    **attrs: object) -> None:
        seq = self._rtnl.next_seq()
        try:
            self._rtnl.write(build(seq, index, **attrs), seq)
        except OSError as err:
            raise BackendError(f"{name}: cannot {what}: {err.strerror}") from None

    def _fix_address(self, index: int, spec: WgDeviceSpec, actions: list[str]) -> None:
        """Leave exactly ``spec.addresses`` on the device, each as a /32 (IPv6: /128); the
        kernel's IPv6 link-local address stays."""
        wanted = {(ip, ip.max_prefixlen) for ip in spec.addresses}
        present = set()
        for family in (socket.AF_INET, socket.AF_INET6):
            seq = self._rtnl.next_seq()
            # Read whole before any change: a write on the socket amid a dump would end the dump.
            dump = list(self._rtnl.dump(dump_addresses_request(seq, index, family), seq))
            for item in (decode_address(message) for message in dump):
                if item is None or item.index != index or (item.ip.version == 6 and item.scope):
                    continue
                if (item.ip, item.prefixlen) in wanted:
                    present.add((item.ip, item.prefixlen))
                    continue
                stray = partial(address_request, ip=item.ip, prefixlen=item.prefixlen, add=False)
                self._write_link(spec.name, f"remove address {item.ip}/{item.prefixlen}", stray, index)
                _record(spec.name, f"removed address {item.ip}/{item.prefixlen}", actions)
        for address, prefixlen in sorted(wanted - present, key=lambda pair: pair[0].version):
            self._write_link(spec.name, f"add address {address}/{prefixlen}",
                             lambda s, i, a=address, n=prefixlen: address_request(s, i, a, n, True), index)
            _record(spec.name, f"added address {address}/{prefixlen}", actions)

    def _device_routes(self, index: int) -> list[bytes]:
        """Both families' main-table routes on ``index``, as messages."""
        messages = []
        for family in (socket.AF_INET, socket.AF_INET6):
            seq = self._rtnl.next_seq()
            messages += self._rtnl.dump(route_dump_request(index, seq, family), seq)
        return messages

    def _fix_network_route(self, index: int, spec: WgDeviceSpec, actions: list[str]) -> None:
        """Route exactly ``spec.networks`` onto the device (a changed Network's old route goes)."""
        routed = {decode_device_route(message, index) for message in self._device_routes(index)}
        routed.discard(None)
        for stale in sorted(routed - set(spec.networks), key=str):  # type: ignore[operator]
            self._write_link(spec.name, f"remove the route of {stale}",
                             lambda s, i, stale=stale: device_route_request(s, i, stale, add=False), index)
            _record(spec.name, f"removed the route of {stale} from {spec.name}", actions)
        for network in spec.networks:
            if network not in routed:
                route = partial(device_route_request, dst=network, add=True, scope_link=True)
                self._write_link(spec.name, f"route {network} onto it", route, index)
                _record(spec.name, f"routed {network} onto {spec.name}", actions)

    def delete(self, name: str) -> bool:
        """Delete the device (wireguard-go exits when its TUN goes); False if there is none."""
        link = self.find(name)
        if link is None or link.kind not in (KERNEL_KIND, USERSPACE_KIND):
            return False
        self._write_link(name, "delete the device", delete_link_request, link.index)
        log.info("%s: deleted", name)
        return True

    # -- per-peer entries -------------------------------------------------------------------------

    def read_plane(self, name: str, ifindex: int, settings: PeerSettings) -> Plane:
        """The device's routes via a gateway (both families), and its WireGuard peers."""
        routes = {decode_entry(m, ifindex) for m in self._device_routes(ifindex)}
        dump = wgtool.show(name, settings)
        self._remember(name, dump)
        return Plane(routes=frozenset(r for r in routes if type(r) is Route), peers=dump.peers)

    def _remember(self, name: str, dump: DeviceDump) -> None:
        peers: dict[str, PeerConfig] = {}
        for peer in dump.peers:
            peers.setdefault(peer.public_key, (peer.dst, set()))[1].add(peer.allowed)
        self.peers[name], self.fingerprints[name] = peers, dump.fingerprint

    def apply(self, name: str, ifindex: int, diff: PlaneDiff, settings: PeerSettings) -> None:
        """Routes removed, peers changed in one ``wg set``, routes added; ApplyError on failures."""
        failures = self._routes(ifindex, diff.remove.routes, replace=False)
        known = self.peers.setdefault(name, {})
        wanted, gone = peer_changes(known, diff, settings.family)
        try:
            if wanted or gone:
                wgtool.set_peers(name, wanted, gone, settings)
            for key in gone:
                known.pop(key, None)
            known.update(wanted)
        except BackendError as err:
            failures.append(str(err))
        failures += self._routes(ifindex, diff.add.routes, replace=True)
        if failures:
            raise ApplyError(failures)
        start_handshakes(min(nets, key=lambda net: (net.version, net)).network_address
                         for _, nets in wanted.values() if nets)  # fmt: skip

    def _routes(self, ifindex: int, routes: frozenset[Route], replace: bool) -> list[str]:
        requests = []
        for route in sorted(routes, key=lambda r: r._key):
            seq = self._rtnl.next_seq()
            requests.append((seq, encode_entry(route, ifindex, replace, seq), route))
        results = self._rtnl.request([(seq, message) for seq, message, _ in requests]) if requests else {}
        verb = "replace" if replace else "del"
        return [f"{verb} route {route.dst} via {route.gateway}: {os.strerror(results[seq])}"
                for seq, _, route in requests
                if results.get(seq) and not (not replace and results[seq] in GONE_ERRNOS)]


def peer_changes(
    known: Mapping[str, PeerConfig], diff: PlaneDiff, family: int = 0
) -> tuple[dict[str, PeerConfig], set[str]]:
    """What ``wg set`` must do for ``diff``, given each peer's configuration ``known`` to the
    device: the peers to configure (key -> endpoint and *all* its allowed IPs, which ``wg``
    replaces as a whole) and the keys to remove (no allowed IPs left). ``family``: the
    device's placeholders' (``wgtool.parse_dump``)."""
    nowhere, nothing = (NOWHERE6, NOTHING6) if family == 6 else (NOWHERE, NOTHING)
    removed: dict[str, set[Net]] = {}
    for peer in diff.remove.peers:
        removed.setdefault(peer.public_key, set()).add(peer.allowed)
    added: dict[str, PeerConfig] = {}
    for peer in diff.add.peers:
        added.setdefault(peer.public_key, (peer.dst, set()))[1].add(peer.allowed)
    wanted: dict[str, PeerConfig] = {}
    gone: set[str] = set()
    for key in removed.keys() | added.keys():
        dst, nets = known.get(key, (nowhere, set()))
        dst = added[key][0] if key in added else dst
        nets = (nets - removed.get(key, set()) - {nothing}) | added.get(key, (dst, set()))[1]
        if nets:
            wanted[key] = (dst, nets)
        else:
            gone.add(key)
    return wanted, gone


def start_handshakes(addresses: Iterable[Ip]) -> None:
    """Send one empty datagram through the tunnel to each of ``addresses`` (peers' device
    addresses, of either family), so WireGuard starts their handshakes now. The side that adds the
    other as a peer first has its handshake dropped (the other does not know its key yet) and
    tries again only after 5 s; the side that adds it second gets through at once, and the first
    pings pass."""
    sockets: dict[int, socket.socket] = {}
    try:
        for address in addresses:
            family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
            if family not in sockets:
                sockets[family] = socket.socket(family, socket.SOCK_DGRAM)
                sockets[family].setblocking(False)
            try:
                sockets[family].sendto(b"", (str(address), DISCARD_PORT))
            except OSError as err:  # no route yet, a full queue: the first real packet starts it
                log.debug("no handshake started towards %s: %s", address, err)
    finally:
        for sock in sockets.values():
            sock.close()


def _record(name: str, action: str, actions: list[str]) -> None:
    log.info("%s: %s", name, action)
    actions.append(action)
