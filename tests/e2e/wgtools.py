"""The wireguard lab tests' reads of ``wg``: a device's peers and key, whether every host knows
every other as a peer of a device, and a peer removed by hand (dual-stack and IPv6-only alike)."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator

import pytest
from labtools import log_mark, log_since, running_lab, wait_for

from overlayd.lab.hosts import lab_network_config
from overlayd.lab.namespaces import Lab, LabHost

PORT, PORT6 = 51820, 51821
DEVICE, DEVICE6 = "flannel-wg", "flannel-wg-v6"


@contextlib.contextmanager
def wireguard_lab(tmp_path_factory: pytest.TempPathFactory, **families: bool) -> Iterator[Lab]:
    """Three hosts with one container each, on a wireguard network of ``families``
    (``lab_network_config``'s ``ipv6``, ``ipv4``) over a dual-stack underlay."""
    config = lab_network_config("wireguard", **families)
    with running_lab(tmp_path_factory, hosts=3, ipv6=True, network_config=config) as lab:
        lab.add_containers(1)
        yield lab


def wg(host: LabHost, *args: str) -> str:
    return subprocess.run(host.command(["wg", *args]), capture_output=True, text=True, check=False).stdout


def peers(host: LabHost, device: str) -> dict[str, tuple[str, str]]:
    """The device's peers: public key -> (endpoint, allowed IPs)."""
    lines = wg(host, "show", device, "dump").splitlines()[1:]
    return {f[0]: (f[2], f[3]) for f in (line.split("\t") for line in lines)}


def public_key(host: LabHost, device: str = DEVICE) -> str:
    return wg(host, "show", device, "public-key").strip()


def subnet6(host: LabHost) -> str:
    """The host's IPv6 subnet, as ``wg`` shows allowed IPs."""
    return f"{host.flannel_ipv6_address()}/{host.subnet_env()['FLANNEL_IPV6_SUBNET'].split('/')[1]}"


def all_v6_peers_know(lab: Lab, device: str = DEVICE6, port: int = PORT6) -> bool:
    """Every host has every other host as a peer of ``device`` at its PublicIPv6 and ``port``,
    allowed its IPv6 subnet."""
    for host in lab.hosts:
        want = {public_key(other, device): (f"[{other.ipv6}]:{port}", subnet6(other))
                for other in lab.hosts if other is not host}  # fmt: skip
        if peers(host, device) != want:
            return False
    return True


def remove_peer_by_hand_and_see_it_back(lab: Lab, device: str = DEVICE6) -> None:
    """h2's peer removed from h1's ``device`` with ``wg``; the agent puts it back (the drift probe
    sees the change) and says so, and every host knows every other again."""
    h1, h2 = lab.hosts[0], lab.hosts[1]
    wait_for(lambda: all_v6_peers_know(lab), 10, "every host's IPv6 peers")
    mark = log_mark(h1)
    key = public_key(h2, device)
    wg(h1, "set", device, "peer", key, "remove")
    assert key not in peers(h1, device)
    wait_for(lambda: key in peers(h1, device), 5, f"h2's peer back on h1's {device}")
    assert all_v6_peers_know(lab)
    assert "add 1 wireguard_peer entries" in log_since(h1, mark)
    assert lab.ping(h1, h2.flannel_ipv6_address() or "", count=2)
