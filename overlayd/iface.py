"""Choosing the external (underlay) interface the way flanneld does.

Order: ``--iface`` entries (a name or an IPv4 address each, first match wins), then
``--iface-regex`` (matched against names and addresses), then ``--iface-can-reach`` (the interface
the kernel would route through), else the interface holding the default route.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from ipaddress import IPv4Address

from pyroute2 import IPRoute

from overlayd.options import AgentOptions


class InterfaceError(RuntimeError):
    """No usable external interface; the message names what was asked for and the fix."""


@dataclass(frozen=True)
class ExternalInterface:
    name: str
    index: int
    ip: IPv4Address
    mtu: int


@dataclass(frozen=True)
class _Link:
    name: str
    index: int
    mtu: int
    addresses: tuple[IPv4Address, ...]


def _links(ipr: IPRoute) -> list[_Link]:
    addresses: dict[int, list[IPv4Address]] = {}
    for msg in ipr.get_addr(family=socket.AF_INET):
        if msg.get("scope") == 0:  # global addresses only: no loopback or link-local ones
            addresses.setdefault(msg["index"], []).append(IPv4Address(msg.get_attr("IFA_ADDRESS")))
    return [
        _Link(
            name=msg.get_attr("IFLA_IFNAME"),
            index=msg["index"],
            mtu=msg.get_attr("IFLA_MTU"),
            addresses=tuple(addresses.get(msg["index"], ())),
        )
        for msg in ipr.get_links()
    ]


def _usable(link: _Link, address: IPv4Address | None = None) -> ExternalInterface | None:
    if not link.addresses:
        return None
    ip = address if address in link.addresses else link.addresses[0]
    return ExternalInterface(link.name, link.index, ip, link.mtu)


def _by_spec(links: list[_Link], spec: str) -> ExternalInterface | None:
    try:
        wanted: IPv4Address | None = IPv4Address(spec)
    except ValueError:
        wanted = None
    for link in links:
        if (wanted is not None and wanted in link.addresses) or link.name == spec:
            return _usable(link, wanted)
    return None


def _by_regex(links: list[_Link], pattern: str) -> ExternalInterface | None:
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise InterfaceError(f"--iface-regex {pattern!r} is not a valid regex ({exc})") from None
    for link in links:
        for address in link.addresses:
            if regex.fullmatch(str(address)):
                return _usable(link, address)
        if regex.fullmatch(link.name) and link.addresses:
            return _usable(link)
    return None


def _by_route(ipr: IPRoute, links: list[_Link], target: IPv4Address | None) -> ExternalInterface | None:
    if target is None:
        routes = ipr.get_routes(family=socket.AF_INET, dst_len=0, table=254)
        index = routes[0].get_attr("RTA_OIF") if routes else None
        source = None
    else:
        try:
            route = ipr.route("get", dst=str(target))[0]
        except Exception:  # pyroute2 raises NetlinkError for an unreachable target
            return None
        index = route.get_attr("RTA_OIF")
        prefsrc = route.get_attr("RTA_PREFSRC")
        source = IPv4Address(prefsrc) if prefsrc else None
    for link in links:
        if link.index == index:
            return _usable(link, source)
    return None


def select_interface(options: AgentOptions) -> ExternalInterface:
    """The external interface and its address per the options; raises InterfaceError."""
    with IPRoute() as ipr:
        links = _links(ipr)
        if options.iface:
            for spec in options.iface:
                found = _by_spec(links, spec)
                if found:
                    return found
            raise InterfaceError(
                f"--iface {','.join(options.iface)}: no such interface with an IPv4 address; "
                "give an interface name or address that `ip -4 addr` shows"
            )
        if options.iface_regex:
            for pattern in options.iface_regex:
                found = _by_regex(links, pattern)
                if found:
                    return found
            raise InterfaceError(
                f"--iface-regex {','.join(options.iface_regex)}: no interface name or IPv4 address "
                "matches; fix the pattern or use --iface"
            )
        found = _by_route(ipr, links, options.iface_can_reach)
        if found:
            return found
        if options.iface_can_reach:
            raise InterfaceError(
                f"--iface-can-reach {options.iface_can_reach}: no route to it from an interface "
                "with an IPv4 address; check routing or use --iface"
            )
        raise InterfaceError(
            "no default route, so no external interface to pick; pass --iface NAME or --iface-can-reach IP"
        )
