"""host-gw's routes against a real kernel: flanneld's route read back as ours and left alone, the
underlay's own routes never touched, and what a previous run left found on any interface."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest
from nsutil import in_netns, ip_json, run

from overlayd.backend.desired import DirectRoute, Plane, PlaneDiff
from overlayd.backend.hostgw.routes import HostRoutes

pytestmark = pytest.mark.root

NETWORK = IPv4Network("198.18.0.0/16")
PEER = DirectRoute(IPv4Network("198.18.2.0/24"), IPv4Address("192.0.2.2"))


def _read(name: str) -> Plane:
    table = HostRoutes()
    try:
        return table.read(table.interface(name).index, NETWORK)
    finally:
        table.close()


def _apply(name: str, diff: PlaneDiff) -> None:
    table = HostRoutes()
    try:
        table.apply(table.interface(name).index, diff)
    finally:
        table.close()


def _routes(netns: str) -> list[dict]:
    return ip_json(netns, "-4", "route", "show", "table", "main")


def test_flanneld_s_route_is_read_as_ours_and_rewriting_it_changes_nothing(netns: str) -> None:
    # flanneld's netlink.RouteAdd{Dst, Gw, LinkIndex}: its library's defaults are proto boot,
    # scope universe, type unicast, main table; `ip route add` has the same defaults.
    run("ip", "-n", netns, "route", "add", "198.18.2.0/24", "via", "192.0.2.2", "dev", "u0")
    before = _routes(netns)
    assert in_netns(netns, _read, "u0") == Plane(direct=frozenset({PEER}))
    in_netns(netns, _apply, "u0", PlaneDiff(add=Plane(direct=frozenset({PEER}))))
    assert _routes(netns) == before  # the same route, not a second one with other attributes


def test_the_underlay_s_own_routes_are_not_read(netns: str) -> None:
    for route in (
        ("default", "via", "192.0.2.254"),
        ("198.18.0.0/16", "via", "192.0.2.254"),  # the whole Network: an operator's, not a peer's
        ("198.51.100.0/24", "via", "192.0.2.3"),  # outside the Network
        ("198.18.9.0/24", "via", "192.0.2.9", "proto", "bird"),  # a routing daemon's
        ("198.18.8.0/24",),  # no gateway
    ):
        run("ip", "-n", netns, "route", "add", *route, "dev", "u0")
    assert in_netns(netns, _read, "u0") == Plane()


def test_added_routes_have_flanneld_s_attributes_and_are_removed_anywhere(netns: str) -> None:
    in_netns(netns, _apply, "u0", PlaneDiff(add=Plane(direct=frozenset({PEER}))))
    [route] = [r for r in _routes(netns) if r["dst"] == "198.18.2.0/24"]
    wanted = ("192.0.2.2", "u0", "boot", "global", [])
    assert (route["gateway"], route["dev"], route["protocol"], route["scope"], route.get("flags")) == wanted

    def remove() -> Plane:
        table = HostRoutes()
        try:
            found = table.read_anywhere(NETWORK)
            table.remove_all(found)
            return found
        finally:
            table.close()

    assert in_netns(netns, remove) == Plane(direct=frozenset({PEER}))
    assert not [r for r in _routes(netns) if r["dst"] == "198.18.2.0/24"]


def test_a_gateway_off_the_segment_is_refused_by_the_kernel_and_named(netns: str) -> None:
    far = DirectRoute(IPv4Network("198.18.3.0/24"), IPv4Address("198.19.0.5"))
    with pytest.raises(AssertionError, match=r"route 198\.18\.3\.0/24 via 198\.19\.0\.5"):
        in_netns(netns, _apply, "u0", PlaneDiff(add=Plane(direct=frozenset({far}))))
