"""Choosing the external (underlay) interface the way flanneld does.

Order: ``--iface`` entries (a name or an IPv4 address each, first match wins), then
``--iface-regex`` (matched against names and addresses), then ``--iface-can-reach`` (the interface
the kernel would route through): each is tried when the ones before found nothing, and the choice
fails only when every one given failed. With none of them given, the interface holding
``--public-ip``, else the interface holding the default route (``--public-ip`` may be a NAT's
address that no interface here holds).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from overlayd.backend.rtnl.codec import (
    RTM_NEWROUTE,
    decode_address,
    decode_link,
    dump_addresses_request,
    dump_routes_request,
    get_link_request,
    route_get_request,
    route_summary,
)
from overlayd.backend.rtnl.socket import RtnlSocket


class InterfaceError(RuntimeError):
    """No usable external interface; the message names what was asked for and the fix."""


@dataclass(frozen=True)
class InterfaceChoice:
    """What the operator asked for: ``--iface`` names or addresses, ``--iface-regex`` patterns,
    ``--iface-can-reach`` and ``--public-ip``."""

    names: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    can_reach: IPv4Address | None = None
    public_ip: IPv4Address | None = None


@dataclass(frozen=True)
class ExternalInterface:
    name: str
    index: int
    ip: IPv4Address
    mtu: int
    segments: tuple[IPv4Network, ...] = ()  # its connected prefixes: DirectRouting's peers are on them


@dataclass(frozen=True)
class _Link:
    name: str
    index: int
    mtu: int
    addresses: tuple[IPv4Address, ...]
    segments: tuple[IPv4Network, ...] = ()


def _links(rtnl: RtnlSocket) -> list[_Link]:
    addresses: dict[int, list[IPv4Address]] = {}
    segments: dict[int, list[IPv4Network]] = {}
    seq = rtnl.next_seq()
    for message in rtnl.dump(dump_addresses_request(seq), seq):
        address = decode_address(message)
        if address is not None and address.scope == 0:  # global only: no loopback or link-local
            addresses.setdefault(address.index, []).append(address.ip)
            segment = IPv4Network((address.ip, address.prefixlen), strict=False)
            segments.setdefault(address.index, []).append(segment)
    seq = rtnl.next_seq()
    links = [decode_link(message) for message in rtnl.dump(get_link_request(seq), seq)]
    return [
        _Link(link.name, link.index, link.mtu, tuple(addresses.get(link.index, ())),
              tuple(segments.get(link.index, ())))
        for link in links
    ]  # fmt: skip


def _usable(link: _Link, address: IPv4Address | None = None) -> ExternalInterface | None:
    if not link.addresses:
        return None
    ip = address if address in link.addresses else link.addresses[0]
    return ExternalInterface(link.name, link.index, ip, link.mtu, link.segments)


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
    """As flanneld matches: unanchored (Go's ``MatchString``, so ``eth`` matches ``eth0``), every
    interface's addresses first, then the interfaces' names."""
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise InterfaceError(f"--iface-regex {pattern!r} is not a valid regex ({exc})") from None
    for link in links:
        for address in link.addresses:
            if regex.search(str(address)):
                return _usable(link, address)
    for link in links:
        if regex.search(link.name) and link.addresses:
            return _usable(link)
    return None


def _by_route(rtnl: RtnlSocket, links: list[_Link], target: IPv4Address | None) -> ExternalInterface | None:
    seq = rtnl.next_seq()
    if target is None:
        routes = [route_summary(message) for message in rtnl.dump(dump_routes_request(seq), seq)
                  if message.type == RTM_NEWROUTE]
        index = next((oif for dst_len, oif, _ in routes if dst_len == 0), None)
        source = None
    else:
        try:
            _, index, source = route_summary(rtnl.get(route_get_request(seq, target), seq))
        except OSError:  # unreachable target
            return None
    for link in links:
        if link.index == index:
            return _usable(link, source)
    return None


def select_interface(choice: InterfaceChoice) -> ExternalInterface:
    """The external interface and its address per the operator's choice; raises InterfaceError."""
    rtnl = RtnlSocket()
    try:
        links = _links(rtnl)
        for spec in choice.names:
            if found := _by_spec(links, spec):
                return found
        for pattern in choice.patterns:
            if found := _by_regex(links, pattern):
                return found
        if choice.can_reach and (found := _by_route(rtnl, links, choice.can_reach)):
            return found
        if tried := _selectors(choice):
            raise InterfaceError(
                f"{tried}: no interface with an IPv4 address matches; give an interface name or "
                "address that `ip -4 addr` shows, fix the pattern, or check the route to the address"
            )
        if choice.public_ip and (found := _by_spec(links, str(choice.public_ip))):
            return found
        if found := _by_route(rtnl, links, None):
            return found
        raise InterfaceError(
            "no default route, so no external interface to pick; pass --iface NAME or --iface-can-reach IP"
        )
    finally:
        rtnl.close()


def _selectors(choice: InterfaceChoice) -> str:
    """The interface selectors given, as the operator wrote them ("" when none)."""
    given = [
        ("--iface", ",".join(choice.names)),
        ("--iface-regex", ",".join(choice.patterns)),
        ("--iface-can-reach", str(choice.can_reach or "")),
    ]
    return "; ".join(f"{flag} {value}" for flag, value in given if value)
