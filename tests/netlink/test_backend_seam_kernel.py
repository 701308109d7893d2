"""The VXLAN backend through the seam, against a real kernel: publish, ensure, program a peer,
read back, and remove everything when the network switches to another backend."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest
from nsutil import in_netns, ip_json, run

from overlayd.backend.api import HostFacts
from overlayd.backend.plane import DirectRoute, Fdb, Neigh, Plane, PlaneDiff, Route
from overlayd.backend.select import CONFIG_PARSERS, backend_for
from overlayd.subnet.config import NetworkConfig, parse_network_config
from overlayd.subnet.lease import Lease, LeaseAttrs

pytestmark = pytest.mark.root

CONFIG = parse_network_config(
    '{"Network": "198.18.0.0/16", "Backend": {"Type": "vxlan", "VNI": 3}}', backends=CONFIG_PARSERS
)


def peer(n: int) -> Lease:
    attrs = LeaseAttrs(IPv4Address(f"192.0.2.{n}"), "vxlan", 3, f"0a:00:00:00:00:{n:02x}")
    return Lease(IPv4Network(f"198.18.{n}.0/24"), attrs)


PEER, NEAR = peer(7), peer(8)  # NEAR is reached directly


def host(state_dir: Path) -> HostFacts:
    address = IPv4Address("192.0.2.1")
    return HostFacts(address, "u0", address, 1500, (IPv4Network("192.0.2.0/24"),), state_dir)


def publish_ensure_program(config: NetworkConfig, state_dir: Path) -> dict[str, object]:
    backend = backend_for(config.backend.type)
    try:
        attrs = backend.lease_data(config, host(state_dir))
        own = Lease(IPv4Network("198.18.1.0/24"), attrs)
        device, actions = backend.ensure(config, own, host(state_dir))
        wanted = [*backend.peer_entries(PEER), *backend.peer_entries(NEAR, direct=True)]
        kinds = (Neigh, Fdb, Route, DirectRoute)
        add = Plane(*(frozenset(entry for entry in wanted if type(entry) is kind) for kind in kinds))
        backend.apply(device, PlaneDiff(add=add))
        plane = backend.read_entries(device, config.network)
        return {"attrs": attrs, "device": device, "actions": actions, "plane": plane,
                "names": backend.device_names(config), "mtu": backend.container_mtu(config, 1500)}
    finally:
        backend.close()


def remove(config: NetworkConfig) -> list[str]:
    backend = backend_for(config.backend.type)
    try:
        return backend.remove(config)
    finally:
        backend.close()


def test_vxlan_through_the_seam_and_removed_on_a_switch(netns: str, tmp_path: Path) -> None:
    found = in_netns(netns, publish_ensure_program, CONFIG, tmp_path)
    attrs, device, plane = found["attrs"], found["device"], found["plane"]
    assert (attrs.backend_type, attrs.vni, attrs.public_ip) == ("vxlan", 3, IPv4Address("192.0.2.1"))
    assert attrs.vtep_mac == (tmp_path / "vtep-mac-3").read_text().strip() == device.mac
    assert found["names"] == ("flannel.3",) and found["mtu"] == 1450 == device.mtu
    assert "created flannel.3" in found["actions"]
    assert len(plane.neighs) == len(plane.fdbs) == len(plane.routes) == len(plane.direct) == 1
    assert [route["dst"] for route in ip_json(netns, "route", "show", "dev", "u0") if "gateway" in route] == [
        "198.18.8.0/24"
    ]

    actions = in_netns(netns, remove, CONFIG)
    assert actions == ["removed 1 direct route(s) into 198.18.0.0/16", "deleted flannel.3"]
    assert run("ip", "-n", netns, "link", "show", "flannel.3", check=False).returncode != 0
    assert all("gateway" not in route for route in ip_json(netns, "route", "show", "dev", "u0"))
    assert run("ip", "-n", netns, "link", "show", "u0").returncode == 0  # the underlay is left alone
    assert in_netns(netns, remove, CONFIG) == []  # nothing left: nothing to do
