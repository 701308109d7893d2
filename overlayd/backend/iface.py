"""Choosing the external (underlay) interface the way flanneld does.

Order: ``--iface`` entries (a name or an IPv4 or IPv6 address each, first match wins), then
``--iface-regex`` (matched against names and addresses), then ``--iface-can-reach`` (the interface
the kernel would route through, to an IPv4 or IPv6 address): each is tried when the ones before
found nothing, and the choice fails only when every one given failed. With none of them given, the
interface holding ``--public-ip``, else the interface holding the default route (``--public-ip``
may be a NAT's address that no interface here holds).

The chosen interface needs a global address: an IPv4 one for a network with IPv4 (the agent
checks that once it has read the config), an IPv6 one alone serves an IPv6-only network. Its IPv6
address is the one an IPv6 selector matched, else ``--public-ipv6`` if the interface holds it,
else its first global one (as flanneld finds it); an interface without one has ``ipv6`` None.
Without a selector or an IPv4 default route, the IPv6 default route's interface is taken.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

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

Ip = IPv4Address | IPv6Address


class InterfaceError(RuntimeError):
    """No usable external interface; the message names what was asked for and the fix."""


@dataclass(frozen=True)
class InterfaceChoice:
    """What the operator asked for: ``--iface`` names or addresses, ``--iface-regex`` patterns,
    ``--iface-can-reach``, ``--public-ip`` and ``--public-ipv6``."""

    names: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    can_reach: IPv4Address | IPv6Address | None = None
    public_ip: IPv4Address | None = None
    public_ipv6: IPv6Address | None = None


@dataclass(frozen=True)
class ExternalInterface:
    name: str
    index: int
    ip: IPv4Address | None  # None: an interface with IPv6 addresses alone (an IPv6-only network's)
    mtu: int
    segments: tuple[IPv4Network, ...] = ()  # its connected prefixes: DirectRouting's peers are on them
    ipv6: IPv6Address | None = None  # its global IPv6 address, for a dual-stack network
    ipv6_segments: tuple[IPv6Network, ...] = ()


@dataclass(frozen=True)
class _Link:
    name: str
    index: int
    mtu: int
    addresses: tuple[IPv4Address, ...]
    segments: tuple[IPv4Network, ...] = ()
    addresses6: tuple[IPv6Address, ...] = ()
    segments6: tuple[IPv6Network, ...] = ()


def _global_addresses(rtnl: RtnlSocket, family: int) -> dict[int, list[tuple[Ip, int]]]:
    """Each interface's global addresses of ``family`` (no loopback or link-local), with prefixes."""
    found: dict[int, list[tuple[Ip, int]]] = {}
    seq = rtnl.next_seq()
    for message in rtnl.dump(dump_addresses_request(seq, family=family), seq):
        address = decode_address(message)
        if address is not None and address.scope == 0:
            found.setdefault(address.index, []).append((address.ip, address.prefixlen))
    return found


def _links(rtnl: RtnlSocket) -> list[_Link]:
    v4 = _global_addresses(rtnl, socket.AF_INET)
    v6 = _global_addresses(rtnl, socket.AF_INET6)
    seq = rtnl.next_seq()
    links = [decode_link(message) for message in rtnl.dump(get_link_request(seq), seq)]

    def addresses(found: list[tuple[Ip, int]]) -> tuple[tuple, tuple]:
        return (tuple(ip for ip, _ in found),
                tuple(ip_network((ip, prefixlen), strict=False) for ip, prefixlen in found))  # fmt: skip

    result = []
    for link in links:
        ips, segments = addresses(v4.get(link.index, []))
        ips6, segments6 = addresses(v6.get(link.index, []))
        result.append(_Link(link.name, link.index, link.mtu, ips, segments, ips6, segments6))
    return result


def _usable(link: _Link, address: Ip | None = None) -> ExternalInterface | None:
    """``link`` as the external interface, preferring ``address`` (of either family) if it holds it."""
    if not link.addresses and not link.addresses6:
        return None
    ip = address if address in link.addresses else (link.addresses[0] if link.addresses else None)
    ipv6 = address if address in link.addresses6 else (link.addresses6[0] if link.addresses6 else None)
    return ExternalInterface(
        link.name, link.index, ip, link.mtu, link.segments, ipv6, link.segments6  # type: ignore[arg-type]
    )


def _by_spec(links: list[_Link], spec: str) -> ExternalInterface | None:
    try:
        wanted: Ip | None = ip_address(spec)
    except ValueError:
        wanted = None
    for link in links:
        if (wanted is not None and wanted in (*link.addresses, *link.addresses6)) or link.name == spec:
            return _usable(link, wanted)
    return None


def _by_regex(links: list[_Link], pattern: str) -> ExternalInterface | None:
    """As flanneld matches: unanchored (Go's ``MatchString``, so ``eth`` matches ``eth0``), every
    interface's addresses first (IPv4, then IPv6), then the interfaces' names."""
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise InterfaceError(f"--iface-regex {pattern!r} is not a valid regex ({exc})") from None
    for link in links:
        for address in link.addresses:
            if regex.search(str(address)):
                return _with_matched_ipv6(_usable(link, address), link, regex)
    for link in links:
        for address6 in link.addresses6:
            if regex.search(str(address6)):
                return _usable(link, address6)
    for link in links:
        if regex.search(link.name) and (link.addresses or link.addresses6):
            return _with_matched_ipv6(_usable(link), link, regex)
    return None


def _with_matched_ipv6(
    found: ExternalInterface | None, link: _Link, regex: re.Pattern[str]
) -> ExternalInterface | None:
    """``found`` with the first of its IPv6 addresses the pattern matches, if one does."""
    matched = next((a for a in link.addresses6 if regex.search(str(a))), None)
    return replace(found, ipv6=matched) if found is not None and matched is not None else found


def _by_route(
    rtnl: RtnlSocket, links: list[_Link], target: Ip | None, family: int = socket.AF_INET
) -> ExternalInterface | None:
    """The interface of the route to ``target``, or of ``family``'s default route (None)."""
    seq = rtnl.next_seq()
    if target is None:
        request = dump_routes_request(seq, family)
        routes = [route_summary(message) for message in rtnl.dump(request, seq)
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


def _with_public_ipv6(
    found: ExternalInterface, choice: InterfaceChoice, links: list[_Link]
) -> ExternalInterface:
    """``found`` sending from ``--public-ipv6`` when it holds that address (else it is a NAT's)."""
    if choice.public_ipv6 is None or found.ipv6 == choice.public_ipv6:
        return found
    link = next(link for link in links if link.index == found.index)
    return replace(found, ipv6=choice.public_ipv6) if choice.public_ipv6 in link.addresses6 else found


def select_interface(choice: InterfaceChoice) -> ExternalInterface:
    """The external interface and its addresses per the operator's choice; raises InterfaceError."""
    rtnl = RtnlSocket()
    try:
        links = _links(rtnl)
        found = _select(rtnl, links, choice)
        return _with_public_ipv6(found, choice, links)
    finally:
        rtnl.close()


def _select(rtnl: RtnlSocket, links: list[_Link], choice: InterfaceChoice) -> ExternalInterface:
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
            f"{tried}: no interface with a global address matches; give an interface name or "
            "address that `ip addr` shows, fix the pattern, or check the route to the address"
        )
    if choice.public_ip and (found := _by_spec(links, str(choice.public_ip))):
        return found
    if found := _by_route(rtnl, links, None):
        return found
    if choice.public_ipv6 and (found := _by_spec(links, str(choice.public_ipv6))):
        return found
    if found := _by_route(rtnl, links, None, socket.AF_INET6):
        return found
    raise InterfaceError(
        "no default route, so no external interface to pick; pass --iface NAME or --iface-can-reach IP"
    )


def _selectors(choice: InterfaceChoice) -> str:
    """The interface selectors given, as the operator wrote them ("" when none)."""
    given = [
        ("--iface", ",".join(choice.names)),
        ("--iface-regex", ",".join(choice.patterns)),
        ("--iface-can-reach", str(choice.can_reach or "")),
    ]
    return "; ".join(f"{flag} {value}" for flag, value in given if value)
