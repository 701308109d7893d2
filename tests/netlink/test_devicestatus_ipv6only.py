"""``overlayd status``'s device line in an IPv6-only network, read from a real kernel: the one
VXLAN device flannel-v6.<VNI> with its IPv6 entries, and for host-gw the interface holding the
PublicIPv6."""

from __future__ import annotations

import json
from ipaddress import IPv6Address, IPv6Network
from pathlib import Path

import pytest
from nsutil import in_netns, run

from overlayd.backend.api import HostFacts
from overlayd.backend.desired import DesiredEntries
from overlayd.backend.plane import PlaneDiff
from overlayd.backend.select import CONFIG_PARSERS, backend_for
from overlayd.ops.devicestatus import read_device
from overlayd.subnet.config import NetworkConfig, parse_network_config
from overlayd.subnet.lease import NO_IPV4_SUBNET, NO_PUBLIC_IP, Lease, LeaseAttrs

pytestmark = pytest.mark.root


def v6_only(backend: str) -> NetworkConfig:
    raw = {"EnableIPv4": False, "EnableIPv6": True, "IPv6Network": "2001:db8:1000::/48",
           "Backend": {"Type": backend, "VNI": 4}}  # fmt: skip
    return parse_network_config(json.dumps(raw), backends=CONFIG_PARSERS)


PEERS = [
    Lease(NO_IPV4_SUBNET, LeaseAttrs(NO_PUBLIC_IP, "vxlan", 4, public_ipv6=IPv6Address(f"2001:db8::{n}"),
                                     vtep_mac_v6=f"0a:00:00:00:06:0{n}"),
          ipv6_subnet=IPv6Network(f"2001:db8:1000:{n}::/64"))
    for n in (7, 8)
]  # fmt: skip


def host(state_dir: Path) -> HostFacts:
    address6 = IPv6Address("2001:db8::1")
    return HostFacts(NO_PUBLIC_IP, "u0", None, 1500, (), state_dir,
                     address6, address6, (IPv6Network("2001:db8::/64"),))  # fmt: skip


def vxlan_steps(state_dir: Path) -> dict[str, object]:
    run("ip", "-6", "addr", "add", "2001:db8::1/64", "dev", "u0", "nodad")
    config = v6_only("vxlan")
    backend = backend_for("vxlan")
    try:
        attrs = backend.lease_data(config, host(state_dir))
        own = Lease(NO_IPV4_SUBNET, attrs, ipv6_subnet=IPv6Network("2001:db8:1000:1::/64"))
        device, _ = backend.ensure(config, own, host(state_dir))
        desired = DesiredEntries()
        for peer in PEERS:
            desired.set_peer(peer.key, peer)
        backend.apply(device, PlaneDiff(add=desired.plane()))
    finally:
        backend.close()
    return {
        "status": read_device(config, None, "2001:db8::1"),
        # etcd unreachable: the device found by its name, read as subnet.env says
        "unknown config": read_device(None, None, None, ipv6_only=True),
    }


def test_the_ipv6_only_vxlan_device_is_shown_with_its_ipv6_entries(netns: str, tmp_path: Path) -> None:
    steps = in_netns(netns, vxlan_steps, tmp_path)
    device, error = steps["status"]  # type: ignore[misc]
    assert error is None and device is not None
    assert (device.name, device.mtu, device.ipv6_name) == ("flannel-v6.4", 1430, None)
    assert device.routes == ("2001:db8:1000:7::/64", "2001:db8:1000:8::/64")
    assert (device.neighbours, device.fdb_entries) == (2, 2)
    found, error = steps["unknown config"]  # type: ignore[misc]
    assert error is None and found is not None and found.name == "flannel-v6.4"
    assert found.routes == device.routes and (found.neighbours, found.fdb_entries) == (2, 2)


def hostgw_steps() -> dict[str, object]:
    run("ip", "-6", "addr", "add", "2001:db8::1/64", "dev", "u0", "nodad")
    config = v6_only("host-gw")
    return {
        "status": read_device(config, None, "2001:db8::1"),
        "elsewhere": read_device(config, None, "2001:db8::99"),
    }


def test_host_gw_in_an_ipv6_only_network_finds_the_interface_holding_the_public_ipv6(netns: str) -> None:
    steps = in_netns(netns, hostgw_steps)
    device, error = steps["status"]  # type: ignore[misc]
    assert error is None and device is not None and device.name == "u0"
    device, error = steps["elsewhere"]  # type: ignore[misc]
    assert device is None and error == "no interface holds this host's PublicIP 2001:db8::99"


def hostgw_route_steps() -> dict[str, object]:
    run("ip", "-6", "addr", "add", "2001:db8::1/64", "dev", "u0", "nodad")
    run("ip", "-6", "route", "add", "2001:db8:1000:7::/64", "via", "2001:db8::7", "dev", "u0")
    return {"status": read_device(v6_only("host-gw"), None, "2001:db8::1")}


def test_host_gw_status_shows_the_ipv6_routes_of_an_ipv6_only_network(netns: str) -> None:
    device, error = in_netns(netns, hostgw_route_steps)["status"]  # type: ignore[misc]
    assert error is None and device is not None
    assert device.routes == ("2001:db8:1000:7::/64",)
