"""``flannel-wg`` made by wireguard-go (this kernel has no WireGuard) in a throwaway namespace: the
device's settings, a stale route removed, 1200 peers written in chunks and read back, all removed,
the device deleted; a device carrying both families (a dual-stack network's Mode auto, ipv4 or
ipv6) and one carrying IPv6 alone (``flannel-wg-v6``).

The code runs in a forked child inside the namespace (``in_netns``) that also has a mount
namespace of its own with a private ``/run/wireguard``, as the lab gives each host.
"""

from __future__ import annotations

import base64
import ctypes
import shutil
import subprocess
import time
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from pathlib import Path

import pytest
from nsutil import in_netns

from overlayd.backend.plane import Plane, PlaneDiff, Route, WgPeer
from overlayd.backend.wireguard.device import WgDeviceSpec, WgKernel
from overlayd.backend.wireguard.keys import load_or_create_key
from overlayd.backend.wireguard.wgtool import PeerSettings
from overlayd.lab.shell import kill_namespace_processes

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not (shutil.which("wireguard-go") and shutil.which("wg")),
                       reason="needs wireguard-go and wg (deploy/setup.sh installs them)"),
]

CLONE_NEWNS = 0x00020000
PEERS = 1200
SETTINGS = PeerSettings(port=51820, psk_file=None, keepalive=0)


def _private_run_wireguard(directory: Path) -> None:
    """Give this (single-threaded, forked) process its own mount namespace and /run/wireguard."""
    if ctypes.CDLL(None, use_errno=True).unshare(CLONE_NEWNS) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS)")
    directory.mkdir(parents=True, exist_ok=True)
    for argv in (["mount", "--make-rslave", "/"], ["mkdir", "-p", "/run/wireguard"],
                 ["mount", "--bind", str(directory), "/run/wireguard"]):  # fmt: skip
        subprocess.run(argv, check=True, capture_output=True)


def peers(count: int) -> Plane:
    entries = []
    for n in range(count):
        key = base64.b64encode(n.to_bytes(32, "big")).decode()
        subnet = IPv4Network((int(IPv4Address("198.18.0.0")) + 64 * n, 26))
        entries.append((WgPeer(key, IPv4Address(f"192.0.2.{1 + n % 250}"), subnet),
                        Route(subnet, subnet[0])))  # fmt: skip
    return Plane(routes=frozenset(r for _, r in entries), peers=frozenset(p for p, _ in entries))


def _exercise(work: Path) -> dict[str, object]:
    _private_run_wireguard(work / "run-wireguard")
    keys = load_or_create_key(work / "key")
    spec = WgDeviceSpec(name="flannel-wg", mtu=1420, addresses=(IPv4Address("198.19.255.192"),),
                        networks=(IPv4Network("198.18.0.0/15"),), private_key_file=keys.private_key_file,
                        public_key=keys.public_key, listen_port=51820,
                        log_file=work / "wireguard-go.log")  # fmt: skip
    kernel = WgKernel()
    device, created = kernel.ensure(spec)
    _, again = kernel.ensure(spec)
    subprocess.run(["ip", "route", "add", "198.19.0.0/16", "dev", "flannel-wg"], check=True)
    _, stale = kernel.ensure(spec)  # a route left from another Network
    link = subprocess.run(["ip", "-j", "addr", "show", "flannel-wg"], capture_output=True, text=True)
    routes = subprocess.run(["ip", "route", "show", "dev", "flannel-wg"], capture_output=True, text=True)
    wanted = peers(PEERS)
    started = time.monotonic()
    kernel.apply("flannel-wg", device.ifindex, PlaneDiff(add=wanted), SETTINGS)
    applied = time.monotonic() - started
    started = time.monotonic()
    read = kernel.read_plane("flannel-wg", device.ifindex, SETTINGS)
    read_seconds = time.monotonic() - started
    kernel.apply("flannel-wg", device.ifindex, PlaneDiff(remove=wanted), SETTINGS)
    emptied = kernel.read_plane("flannel-wg", device.ifindex, SETTINGS)
    deleted = kernel.delete("flannel-wg")
    for _ in range(100):  # wireguard-go exits once its device is gone
        if kernel.find("flannel-wg") is None:
            break
        time.sleep(0.05)
    kernel.close()
    return {
        "created": created, "again": again, "stale": stale, "implementation": kernel.implementation,
        "link": link.stdout, "routes": routes.stdout, "read_equal": read == wanted,
        "read_peers": len(read.peers),
        "emptied": len(emptied), "deleted": deleted, "applied": applied, "read_seconds": read_seconds,
    }  # fmt: skip


def test_wireguard_go_device_holds_and_gives_back_1200_peers(netns: str, tmp_path: Path) -> None:
    try:
        result = in_netns(netns, _exercise, tmp_path)
    finally:
        kill_namespace_processes(netns)
    assert "created flannel-wg by starting wireguard-go" in result["created"], result["created"]
    assert result["again"] == [], "a second ensure must find nothing to change"
    assert result["implementation"] == "wireguard-go"
    assert '"mtu":1420' in result["link"] and '"local":"198.19.255.192","prefixlen":32' in result["link"]
    assert "198.18.0.0/15 scope link" in result["routes"] and "198.19.0.0/16" not in result["routes"]
    assert result["stale"] == ["removed the route of 198.19.0.0/16 from flannel-wg"]
    assert result["read_equal"], f"read back {result['read_peers']} peers, not the {PEERS} written"
    assert result["emptied"] == 0 and result["deleted"]
    print(f"{PEERS} peers: written in {result['applied']:.2f} s, read back in {result['read_seconds']:.3f} s")


def _both_families(work: Path) -> dict[str, object]:
    _private_run_wireguard(work / "run-wireguard")
    keys = load_or_create_key(work / "key")
    own4, own6 = IPv4Address("198.18.1.0"), IPv6Address("2001:db8:1000:1::")
    spec = WgDeviceSpec(name="flannel-wg", mtu=1420, addresses=(own4, own6),
                        networks=(IPv4Network("198.18.0.0/16"), IPv6Network("2001:db8:1000::/48")),
                        private_key_file=keys.private_key_file, public_key=keys.public_key,
                        listen_port=51820, log_file=work / "wireguard-go.log")  # fmt: skip
    kernel = WgKernel()
    device, _ = kernel.ensure(spec)
    _, again = kernel.ensure(spec)
    key = base64.b64encode(bytes(range(32))).decode()
    subnet, subnet6 = IPv4Network("198.18.2.0/24"), IPv6Network("2001:db8:1000:2::/64")
    # Mode ipv6: one peer, both subnets, reached over IPv6.
    wanted = Plane(routes=frozenset({Route(subnet, subnet[0]), Route(subnet6, subnet6[0])}),
                   peers=frozenset({WgPeer(key, IPv6Address("2001:db8::c"), subnet),
                                    WgPeer(key, IPv6Address("2001:db8::c"), subnet6)}))  # fmt: skip
    kernel.apply("flannel-wg", device.ifindex, PlaneDiff(add=wanted), SETTINGS)
    read = kernel.read_plane("flannel-wg", device.ifindex, SETTINGS)
    dump = subprocess.run(["wg", "show", "flannel-wg", "dump"], capture_output=True, text=True).stdout
    # The IPv6 half alone, as flannel-wg-v6 is made: the IPv4 address and Network go.
    only6 = replace(spec, addresses=(own6,), networks=(IPv6Network("2001:db8:1000::/48"),), listen_port=51821)
    _, to_v6 = kernel.ensure(only6)
    link, routes = (subprocess.run(argv, capture_output=True, text=True).stdout for argv in (
        ["ip", "-j", "addr", "show", "flannel-wg"], ["ip", "route", "show", "dev", "flannel-wg"]))
    kernel.delete("flannel-wg")
    kernel.close()
    return {"again": again, "read_equal": read == wanted, "read": repr(read),
            "dump": dump.split("\n", 1)[-1], "to_v6": to_v6, "link": link, "routes": routes}  # fmt: skip


def test_one_device_carries_both_families_and_gives_up_one(netns: str, tmp_path: Path) -> None:
    try:
        result = in_netns(netns, _both_families, tmp_path)
    finally:
        kill_namespace_processes(netns)
    assert result["again"] == [], "a second ensure must find nothing to change (a link-local address stays)"
    assert result["read_equal"], result["read"]
    assert "[2001:db8::c]:51820\t198.18.2.0/24,2001:db8:1000:2::/64" in result["dump"], result["dump"]
    assert "removed address 198.18.1.0/32" in result["to_v6"], result["to_v6"]
    assert "198.18." not in result["routes"], result["routes"]  # the Network's route went with the address
    assert '"local":"2001:db8:1000:1::","prefixlen":128' in result["link"]
    assert "198.18.1.0" not in result["link"]
