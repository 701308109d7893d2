"""Encode and decode the few rtnetlink messages the data plane needs, with ``struct`` only.

Pure functions over bytes: request messages for the per-peer entries (neighbour, FDB, route),
dump requests filtered in the kernel (strict checking), and a decoder that turns a neighbour or
route message back into the ``desired`` entry it describes. pyroute2's generic marshal decodes
every attribute of every message in Python; at thousands of entries per pass that decoding, not
the kernel, was the cost, so the hot paths use this instead.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from overlayd.backend.plane import DirectRoute, Entry, Fdb, Neigh, Route
from overlayd.base.netlink import (
    ATTR,
    NLA_F_NESTED,
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_DUMP,
    NLM_F_EXCL,
    NLM_F_REPLACE,
    NLM_F_REQUEST,
    Message,
)
from overlayd.base.netlink import attr as _attr
from overlayd.base.netlink import attribute_map as _attrs
from overlayd.base.netlink import message as _message

# <linux/rtnetlink.h>
RTM_NEWLINK, RTM_DELLINK = 16, 17
RTM_NEWADDR, RTM_DELADDR = 20, 21
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTM_NEWNEIGH, RTM_DELNEIGH, RTM_GETNEIGH = 28, 29, 30
MESSAGE_NAMES = {
    RTM_NEWLINK: "RTM_NEWLINK", RTM_DELLINK: "RTM_DELLINK",
    RTM_NEWADDR: "RTM_NEWADDR", RTM_DELADDR: "RTM_DELADDR",
    RTM_NEWROUTE: "RTM_NEWROUTE", RTM_DELROUTE: "RTM_DELROUTE",
    RTM_NEWNEIGH: "RTM_NEWNEIGH", RTM_DELNEIGH: "RTM_DELNEIGH",
}
NEW_MESSAGES = frozenset({RTM_NEWLINK, RTM_NEWADDR, RTM_NEWROUTE, RTM_NEWNEIGH})
IFLA_IFNAME = 3
IFA_ADDRESS = 1
NDA_DST, NDA_LLADDR, NDA_IFINDEX = 1, 2, 8
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_TABLE = 1, 4, 5, 15
NUD_PERMANENT = 0x80
NTF_SELF = 0x02
RTNH_F_ONLINK = 0x4
RTPROT_KERNEL = 2  # the kernel's own routes (an address's prefix)
RTPROT_BOOT = 3  # `ip route add`'s default, and flanneld's (its netlink library's default)
RTPROT_STATIC = 4  # "proto static": pyroute2's default, and overlayd's routes before
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK, RT_SCOPE_NOWHERE = 0, 253, 255
RTN_UNICAST = 1
MAIN_TABLE = 254
ZERO_MAC = b"\0" * 6

_NDMSG = struct.Struct("=BxxxiHBB")  # family, ifindex, state, flags, type
_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, protocol, scope, type, flags
_IFINFO = struct.Struct("=BxHiII")  # family, type, index, flags, change
_IFADDR = struct.Struct("=BBBBi")  # family, prefixlen, flags, scope, index
_U32 = struct.Struct("=I")
REPLACE = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE
DELETE = NLM_F_REQUEST | NLM_F_ACK


def _mac(mac: str) -> bytes:
    """``0a:00:00:00:00:02`` as 6 bytes; ValueError naming the value otherwise.

    Two per peer on every cold start: ``bytes.fromhex`` is ~4x faster than an ``int`` per part.
    """
    if len(mac) == 17 and mac[2::3] == ":::::":
        try:
            raw = bytes.fromhex(mac.replace(":", ""))
        except ValueError:
            raw = b""
        if len(raw) == 6:  # fromhex skips whitespace: a space among the digits shortens it
            return raw
    raise ValueError(f"invalid MAC address {mac!r}")


def encode_entry(entry: Entry, ifindex: int, replace: bool, seq: int) -> bytes:
    """A request that replaces (creates) or deletes ``entry`` on device ``ifindex``."""
    flags, state = (REPLACE, NUD_PERMANENT) if replace else (DELETE, 0)
    if isinstance(entry, Neigh):
        body = _NDMSG.pack(_FAMILY[entry.ip.version], ifindex, state, 0, 0)
        body += _attr(NDA_DST, entry.ip.packed) + _attr(NDA_LLADDR, _mac(entry.mac))
        return _message(RTM_NEWNEIGH if replace else RTM_DELNEIGH, flags, seq, body)
    if isinstance(entry, Fdb):
        body = _NDMSG.pack(socket.AF_BRIDGE, ifindex, state, NTF_SELF, 0)
        body += _attr(NDA_LLADDR, _mac(entry.mac)) + _attr(NDA_DST, entry.dst.packed)
        return _message(RTM_NEWNEIGH if replace else RTM_DELNEIGH, flags, seq, body)
    # A delete matches any protocol, scope and type, as `ip route del` does. A direct route names
    # no device (the kernel takes the one its gateway is on) and is not onlink.
    vxlan_route = type(entry) is Route  # not a DirectRoute: that one names no device
    onlink = RTNH_F_ONLINK if vxlan_route else 0
    protocol, scope, kind, rt_flags = (
        (RTPROT_BOOT, RT_SCOPE_UNIVERSE, RTN_UNICAST, onlink) if replace
        else (0, RT_SCOPE_NOWHERE, 0, 0)
    )
    body = _RTMSG.pack(_FAMILY[entry.dst.version], entry.dst.prefixlen, 0, 0, MAIN_TABLE, protocol, scope,
                       kind, rt_flags)
    body += _attr(RTA_DST, entry.dst.network_address.packed) + _attr(RTA_GATEWAY, entry.gateway.packed)
    if vxlan_route:
        body += _attr(RTA_OIF, _U32.pack(ifindex))
    body += _attr(RTA_TABLE, _U32.pack(MAIN_TABLE))
    return _message(RTM_NEWROUTE if replace else RTM_DELROUTE, flags, seq, body)


def dump_requests(ifindex: int, seq: int, family: int = socket.AF_INET) -> list[bytes]:
    """Dumps of the neighbours, FDB and main-table routes of ``ifindex`` (IPv4 ones, or
    ``family``'s: a VXLAN device carries one family), filtered in the kernel.

    Needs ``NETLINK_GET_STRICT_CHK`` on the socket; without it the kernel ignores the filters and
    ``decode_entry`` still drops what belongs elsewhere.
    """
    flags = NLM_F_REQUEST | NLM_F_DUMP
    neigh = _NDMSG.pack(family, 0, 0, 0, 0) + _attr(NDA_IFINDEX, _U32.pack(ifindex))
    fdb = _NDMSG.pack(socket.AF_BRIDGE, ifindex, 0, 0, 0)
    return [
        _message(RTM_GETNEIGH, flags, seq, neigh),
        _message(RTM_GETNEIGH, flags, seq + 1, fdb),
        route_dump_request(ifindex, seq + 2, family),
    ]


def route_dump_request(ifindex: int, seq: int, family: int = socket.AF_INET) -> bytes:
    """A dump of the main-table IPv4 (or ``family``'s) routes of ``ifindex``, filtered in the kernel."""
    route = _RTMSG.pack(family, 0, 0, 0, MAIN_TABLE, 0, 0, 0, 0) + _attr(RTA_OIF, _U32.pack(ifindex))
    return _message(RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP, seq, route)


_FAMILY = {4: socket.AF_INET, 6: socket.AF_INET6}  # an address's version -> its AF_ constant
Ip = IPv4Address | IPv6Address
Net = IPv4Network | IPv6Network


def _ip(value: bytes | None) -> IPv4Address | None:
    return IPv4Address(value) if value is not None and len(value) == 4 else None


def _ip_any(value: bytes | None) -> IPv4Address | IPv6Address | None:
    """An address attribute of either family, by its length."""
    if value is not None and len(value) == 16:
        return IPv6Address(value)
    return _ip(value)


def decode_entry(message: Message, ifindex: int) -> Entry | None:
    """The peer entry a neighbour or route message describes on ``ifindex``, else None.

    None also for what the kernel or an operator adds that is not a peer entry: non-permanent
    neighbours, FDB entries without a remote or with the all-zero MAC, routes without a gateway
    or outside the main table.
    """
    if message.type in (RTM_NEWNEIGH, RTM_DELNEIGH):
        family, index, state, flags, _ = _NDMSG.unpack_from(message.body)
        if index != ifindex or not state & NUD_PERMANENT:
            return None
        attrs = _attrs(message.body, _NDMSG.size)
        dst, mac = _ip_any(attrs.get(NDA_DST)), attrs.get(NDA_LLADDR)
        if dst is None or mac is None or len(mac) != 6:
            return None
        if family == _FAMILY[dst.version]:
            return Neigh(dst, mac.hex(":"))
        if family == socket.AF_BRIDGE and flags & NTF_SELF and mac != ZERO_MAC:
            return Fdb(mac.hex(":"), dst)
        return None
    if message.type in (RTM_NEWROUTE, RTM_DELROUTE):
        routed = _routed(message, ifindex)
        return Route(*routed) if routed is not None else None
    return None


def _routed(message: Message, ifindex: int) -> tuple[Net, Ip] | None:
    """(destination, gateway) of a main-table route message (IPv4 or IPv6) via a gateway on
    ``ifindex``."""
    family, dst_len, _, _, table, _, _, _, _ = _RTMSG.unpack_from(message.body)
    attrs = _attrs(message.body, _RTMSG.size)
    oif, table_attr = attrs.get(RTA_OIF), attrs.get(RTA_TABLE)
    if table_attr is not None:
        table = _U32.unpack(table_attr)[0]
    gateway = _ip_any(attrs.get(RTA_GATEWAY))
    if gateway is None or family != _FAMILY[gateway.version] or table != MAIN_TABLE or oif is None:
        return None
    if _U32.unpack(oif)[0] != ifindex:
        return None
    dst = int.from_bytes(attrs.get(RTA_DST, b""), "big")
    if gateway.version == 6:
        return IPv6Network((dst, dst_len)), gateway
    return IPv4Network((dst, dst_len)), gateway


def decode_direct_route(message: Message, underlay: int, network: IPv4Network) -> DirectRoute | None:
    """The direct route a route message describes: to a subnet of the overlay ``network`` (not
    the whole of it), via a gateway on the ``underlay`` device, added by hand or by a program
    like us or flanneld (protocol boot or static, not a routing daemon's). Such a route is a
    peer's, so one no peer wants is removed."""
    if message.type not in (RTM_NEWROUTE, RTM_DELROUTE):
        return None
    if message.body[5] not in (RTPROT_BOOT, RTPROT_STATIC):  # rtmsg's protocol
        return None
    routed = _routed(message, underlay)
    if routed is None or routed[0].prefixlen <= network.prefixlen or not routed[0].subnet_of(network):
        return None
    return DirectRoute(*routed)


NDA_CACHEINFO, NDA_PROBES = 3, 4  # change between dumps of an unchanged entry (ages, probe count)


def entry_key(message: Message) -> bytes:
    """The bytes of a neighbour or route message that ``decode_entry`` depends on.

    Equal keys decode to equal entries, so a pass can reuse the previous pass's decoding of an
    unchanged entry. A neighbour message's cache info and probe count change on every dump and
    are left out; IPv4 route dumps carry nothing that changes by itself.
    """
    head = message.type.to_bytes(2, "little")
    body = message.body
    if message.type not in (RTM_NEWNEIGH, RTM_DELNEIGH):
        return head + body
    # Runs once per neighbour and FDB entry on every pass (2000 at 1000 peers), so it only cuts
    # where a left-out attribute starts and ends, instead of copying each kept one.
    parts, kept_from, offset, size, unpack = [head], 0, _NDMSG.size, len(body), ATTR.unpack_from
    while offset + 4 <= size:
        length, kind = unpack(body, offset)
        if length < 4:
            break
        end = offset + ((length + 3) & ~3)
        if kind & 0x3FFF in _VOLATILE_NEIGH_ATTRS:
            parts.append(body[kept_from:offset])
            kept_from = end
        offset = end
    parts.append(body[kept_from:])
    return b"".join(parts)


_VOLATILE_NEIGH_ATTRS = frozenset((NDA_CACHEINFO, NDA_PROBES))


def device_of(message: Message) -> tuple[int, str | None]:
    """The ifindex (and for links the name) a link, address, neighbour or route message is about.

    Routes name their device in ``RTA_OIF`` (0 when absent, e.g. multipath).
    """
    if message.type in (RTM_NEWLINK, RTM_DELLINK):
        index = _IFINFO.unpack_from(message.body)[2]
        name = _attrs(message.body, _IFINFO.size).get(IFLA_IFNAME)
        return index, name.rstrip(b"\0").decode(errors="replace") if name is not None else None
    if message.type in (RTM_NEWADDR, RTM_DELADDR):
        return _IFADDR.unpack_from(message.body)[4], None
    if message.type in (RTM_NEWNEIGH, RTM_DELNEIGH):
        return _NDMSG.unpack_from(message.body)[1], None
    if message.type in (RTM_NEWROUTE, RTM_DELROUTE):
        oif = _attrs(message.body, _RTMSG.size).get(RTA_OIF)
        return (_U32.unpack(oif)[0] if oif is not None else 0), None
    return 0, None


def neigh_summary(message: Message) -> str:
    """``neigh <ip> <mac>`` or ``fdb <dst> <mac>`` from a neighbour message, whatever its state."""
    family = _NDMSG.unpack_from(message.body)[0]
    attrs = _attrs(message.body, _NDMSG.size)
    mac = attrs.get(NDA_LLADDR)
    kind = "fdb" if family == socket.AF_BRIDGE else "neigh"
    return f"{kind} {_ip(attrs.get(NDA_DST))} {mac.hex(':') if mac is not None else None}"


def neigh_address(message: Message) -> IPv4Address | IPv6Address | None:
    """``NDA_DST`` of an IPv4 or IPv6 neighbour message (not an FDB entry's), whatever its state:
    the kernel reports a deleted permanent neighbour as failed and without its MAC."""
    if _NDMSG.unpack_from(message.body)[0] not in (socket.AF_INET, socket.AF_INET6):
        return None
    return _ip_any(_attrs(message.body, _NDMSG.size).get(NDA_DST))


def address_of(message: Message) -> IPv4Address | IPv6Address | None:
    """``IFA_ADDRESS`` of an address message."""
    return _ip_any(_attrs(message.body, _IFADDR.size).get(IFA_ADDRESS))


# -- links, addresses and route lookups: the device and the external interface -------------------

RTM_GETLINK, RTM_GETADDR = 18, 22
IFF_UP = 0x1
IFLA_ADDRESS, IFLA_MTU, IFLA_LINKINFO = 1, 4, 18
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
IFLA_VXLAN_ID, IFLA_VXLAN_LINK, IFLA_VXLAN_LOCAL, IFLA_VXLAN_LEARNING = 1, 3, 4, 7
IFLA_VXLAN_PORT, IFLA_VXLAN_LOCAL6, IFLA_VXLAN_GBP = 15, 17, 23
IFA_LOCAL = 2
IFA_F_NODAD = 0x02
RTA_PREFSRC = 7
CREATE = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
_BE16 = struct.Struct("!H")


@dataclass(frozen=True)
class Link:
    """The fields of a link message the agent reads; ``vxlan`` is None for other kinds."""

    index: int
    name: str
    flags: int
    mtu: int
    mac: str
    kind: str | None
    vxlan: VxlanInfo | None


@dataclass(frozen=True)
class VxlanInfo:
    """What cannot change on a live VXLAN device, and its learning flag."""

    vni: int | None
    link: int | None
    local: IPv4Address | IPv6Address | None
    port: int | None
    gbp: bool
    learning: bool


@dataclass(frozen=True)
class Address:
    """One address message (IPv4 or IPv6): the interface, the address with its prefix, its scope."""

    index: int
    ip: IPv4Address | IPv6Address
    prefixlen: int
    scope: int


def _u32(value: bytes | None) -> int | None:
    return _U32.unpack(value)[0] if value is not None and len(value) >= 4 else None


def decode_link(message: Message) -> Link:
    _, _, index, flags, _ = _IFINFO.unpack_from(message.body)
    attrs = _attrs(message.body, _IFINFO.size)
    info = _attrs(attrs.get(IFLA_LINKINFO, b""), 0)
    kind = info[IFLA_INFO_KIND].rstrip(b"\0").decode() if IFLA_INFO_KIND in info else None
    vxlan = None
    if kind == "vxlan":
        data = _attrs(info.get(IFLA_INFO_DATA, b""), 0)
        port = data.get(IFLA_VXLAN_PORT)
        learning = data.get(IFLA_VXLAN_LEARNING)
        vxlan = VxlanInfo(
            vni=_u32(data.get(IFLA_VXLAN_ID)),
            link=_u32(data.get(IFLA_VXLAN_LINK)),
            local=_ip(data.get(IFLA_VXLAN_LOCAL)) or _ip_any(data.get(IFLA_VXLAN_LOCAL6)),
            port=_BE16.unpack(port[:2])[0] if port is not None and len(port) >= 2 else None,
            gbp=IFLA_VXLAN_GBP in data,
            learning=bool(learning and learning[0]),
        )
    mac = attrs.get(IFLA_ADDRESS, b"")
    return Link(index, attrs.get(IFLA_IFNAME, b"").rstrip(b"\0").decode(errors="replace"), flags,
                _u32(attrs.get(IFLA_MTU)) or 0, mac.hex(":"), kind, vxlan)


def decode_address(message: Message) -> Address | None:
    """An IPv4 or IPv6 address message (as dumped for its family); None for other families."""
    family, prefixlen, _, scope, index = _IFADDR.unpack_from(message.body)
    attrs = _attrs(message.body, _IFADDR.size)
    ip = _ip_any(attrs.get(IFA_LOCAL, attrs.get(IFA_ADDRESS)))
    if family not in (socket.AF_INET, socket.AF_INET6) or ip is None:
        return None
    return Address(index, ip, prefixlen, scope)


def get_link_request(seq: int, *, index: int = 0, name: str | None = None) -> bytes:
    """``RTM_GETLINK`` for one link, by index or by name; ``NLM_F_DUMP`` for all when neither."""
    body = _IFINFO.pack(socket.AF_UNSPEC, 0, index, 0, 0)
    if name is not None:
        body += _attr(IFLA_IFNAME, name.encode() + b"\0")
    flags = NLM_F_REQUEST if index or name is not None else NLM_F_REQUEST | NLM_F_DUMP
    return _message(RTM_GETLINK, flags, seq, body)


def create_vxlan_request(seq: int, name: str, vni: int, local: Ip, link: int, port: int,
                         learning: bool, gbp: bool, mtu: int, mac: str) -> bytes:
    """``RTM_NEWLINK`` creating a VXLAN device with flanneld's attributes (fails if it exists)."""
    data = (_attr(IFLA_VXLAN_ID, _U32.pack(vni)) + _attr(IFLA_VXLAN_LINK, _U32.pack(link))
            + _attr(IFLA_VXLAN_LOCAL6 if local.version == 6 else IFLA_VXLAN_LOCAL, local.packed)
            + _attr(IFLA_VXLAN_PORT, _BE16.pack(port))
            + _attr(IFLA_VXLAN_LEARNING, bytes([int(learning)])))
    if gbp:
        data += _attr(IFLA_VXLAN_GBP, b"")
    info = _attr(IFLA_INFO_KIND, b"vxlan") + _attr(IFLA_INFO_DATA | NLA_F_NESTED, data)
    body = (_IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + _attr(IFLA_IFNAME, name.encode() + b"\0")
            + _attr(IFLA_MTU, _U32.pack(mtu)) + _attr(IFLA_ADDRESS, _mac(mac))
            + _attr(IFLA_LINKINFO | NLA_F_NESTED, info))
    return _message(RTM_NEWLINK, CREATE, seq, body)


def set_link_request(seq: int, index: int, *, mtu: int | None = None, mac: str | None = None,
                     up: bool = False) -> bytes:
    """``RTM_NEWLINK`` changing the MTU, the MAC or bringing the link up."""
    body = _IFINFO.pack(socket.AF_UNSPEC, 0, index, IFF_UP if up else 0, IFF_UP if up else 0)
    if mtu is not None:
        body += _attr(IFLA_MTU, _U32.pack(mtu))
    if mac is not None:
        body += _attr(IFLA_ADDRESS, _mac(mac))
    return _message(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, seq, body)


def delete_link_request(seq: int, index: int) -> bytes:
    return _message(RTM_DELLINK, DELETE, seq, _IFINFO.pack(socket.AF_UNSPEC, 0, index, 0, 0))


def dump_addresses_request(seq: int, index: int = 0, family: int = socket.AF_INET) -> bytes:
    """IPv4 (or ``family``'s) addresses of ``index`` (all interfaces for 0), filtered in the kernel."""
    body = _IFADDR.pack(family, 0, 0, 0, index)
    return _message(RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, seq, body)


def address_request(seq: int, index: int, ip: IPv4Address | IPv6Address, prefixlen: int, add: bool) -> bytes:
    """``RTM_NEWADDR`` / ``RTM_DELADDR`` of ``ip/prefixlen`` (either family) on ``index``."""
    # An IPv6 address without duplicate detection: the device's is unique by construction (our
    # subnet's), and a tentative one cannot be used for the second or so DAD takes.
    nodad = IFA_F_NODAD if ip.version == 6 else 0
    body = (_IFADDR.pack(_FAMILY[ip.version], prefixlen, nodad, 0, index)
            + _attr(IFA_LOCAL, ip.packed) + _attr(IFA_ADDRESS, ip.packed))
    return _message(RTM_NEWADDR if add else RTM_DELADDR, CREATE if add else DELETE, seq, body)


def dump_routes_request(seq: int, family: int = socket.AF_INET) -> bytes:
    """Main-table IPv4 (or ``family``'s) routes (for the default route)."""
    body = _RTMSG.pack(family, 0, 0, 0, MAIN_TABLE, 0, 0, 0, 0)
    return _message(RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP, seq, body)


def route_get_request(seq: int, dst: IPv4Address | IPv6Address) -> bytes:
    """``ip route get <dst>``, of either family."""
    family = socket.AF_INET6 if dst.version == 6 else socket.AF_INET
    body = _RTMSG.pack(family, dst.max_prefixlen, 0, 0, 0, 0, 0, 0, 0) + _attr(RTA_DST, dst.packed)
    return _message(RTM_GETROUTE, NLM_F_REQUEST, seq, body)


def route_summary(message: Message) -> tuple[int, int | None, IPv4Address | IPv6Address | None]:
    """(dst_len, output interface, preferred source) of a route message of either family."""
    dst_len = _RTMSG.unpack_from(message.body)[1]
    attrs = _attrs(message.body, _RTMSG.size)
    return dst_len, _u32(attrs.get(RTA_OIF)), _ip_any(attrs.get(RTA_PREFSRC))


def create_link_request(seq: int, name: str, kind: str, mtu: int) -> bytes:
    """``RTM_NEWLINK`` creating a device of ``kind`` with no settings of its own (``wireguard``)."""
    info = _attr(IFLA_INFO_KIND, kind.encode())
    body = (_IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + _attr(IFLA_IFNAME, name.encode() + b"\0")
            + _attr(IFLA_MTU, _U32.pack(mtu)) + _attr(IFLA_LINKINFO | NLA_F_NESTED, info))
    return _message(RTM_NEWLINK, CREATE, seq, body)


# -- a route to a whole network on a device, without a gateway (the udp backend's into flannel0,
# -- the wireguard backend's Network onto flannel-wg) --


def device_route_request(
    seq: int, ifindex: int, dst: Net, add: bool, scope_link: bool = False
) -> bytes:
    """``ip route add|del <dst> dev <ifindex>`` (scope universe, protocol boot, as flanneld's udp;
    ``scope_link``: scope link, as flanneld's wireguard), of either family."""
    flags = CREATE if add else DELETE
    scope = RT_SCOPE_LINK if scope_link else RT_SCOPE_UNIVERSE
    protocol, scope, kind = (RTPROT_BOOT, scope, RTN_UNICAST) if add else (0, RT_SCOPE_NOWHERE, 0)
    body = _RTMSG.pack(_FAMILY[dst.version], dst.prefixlen, 0, 0, MAIN_TABLE, protocol, scope, kind, 0)
    body += _attr(RTA_DST, dst.network_address.packed) + _attr(RTA_OIF, _U32.pack(ifindex))
    body += _attr(RTA_TABLE, _U32.pack(MAIN_TABLE))
    return _message(RTM_NEWROUTE if add else RTM_DELROUTE, flags, seq, body)


def decode_device_route(message: Message, ifindex: int) -> Net | None:
    """The destination of a main-table unicast route (IPv4 or IPv6) on ``ifindex`` without a
    gateway, other than the kernel's own (an IPv6 device's ``fe80::/64`` and address prefixes)."""
    family, dst_len, _, _, table, protocol, _, kind, _ = _RTMSG.unpack_from(message.body)
    attrs = _attrs(message.body, _RTMSG.size)
    if RTA_TABLE in attrs:
        table = _U32.unpack(attrs[RTA_TABLE])[0]
    oif = attrs.get(RTA_OIF)
    if table != MAIN_TABLE or kind != RTN_UNICAST or RTA_GATEWAY in attrs or protocol == RTPROT_KERNEL:
        return None
    if oif is None or _U32.unpack(oif)[0] != ifindex:
        return None
    dst = int.from_bytes(attrs.get(RTA_DST, b""), "big")
    if family == socket.AF_INET6:
        return IPv6Network((dst, dst_len))
    return IPv4Network((dst, dst_len)) if family == socket.AF_INET else None
