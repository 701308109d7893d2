"""``--ip-blackhole-route``: a blackhole route for this host's own subnet of each family (flanneld
v0.28's flag; it adds an IPv6 one for the IPv6 subnet too).

Without it, a packet to an address of our subnet that no container holds follows the default
route out of the host (and back in through a peer, or to the internet). Where container routes
are per address (Canal's, or no bridge) nothing else covers the subnet; the blackhole drops such
packets here.

flanneld adds the route at metric 0, where it is refused beside a bridge's connected route for the
same subnet (``cni0``, added first) or, added first itself, hides that route and drops every local
container's traffic. Ours has the highest metric, so any other route to the subnet wins and the
blackhole only catches what nothing else takes. That metric and our Network are how our route is
recognised: a subnet of our Network we no longer hold loses its blackhole, while an operator's
(another metric) and another network's agent's (outside our Network) are never touched.
Level-triggered: every full pass compares the kernel's blackhole routes with the one wanted.
"""

from __future__ import annotations

import logging
import socket
import struct
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network

from overlayd.backend.rtnl.socket import RtnlSocket
from overlayd.base.netlink import (
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_DUMP,
    NLM_F_REPLACE,
    NLM_F_REQUEST,
    attr,
    attribute_map,
    message,
)

log = logging.getLogger(__name__)

RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTA_DST, RTA_PRIORITY, RTA_TABLE = 1, 6, 15
RTN_BLACKHOLE = 6
RTPROT_BOOT = 3  # `ip route add`'s default, as flanneld's route has
RT_SCOPE_UNIVERSE = 0
MAIN_TABLE = 254
METRIC = 0xFFFFFFFF  # the highest: every other route to the subnet is preferred
_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, protocol, scope, type, flags
_U32 = struct.Struct("=I")
Subnet = IPv4Network | IPv6Network
_FAMILY = {4: socket.AF_INET, 6: socket.AF_INET6}


def route_request(subnet: Subnet, add: bool, seq: int) -> bytes:
    """Replace (create) or delete our blackhole route for ``subnet`` in the main table."""
    body = _RTMSG.pack(_FAMILY[subnet.version], subnet.prefixlen, 0, 0, MAIN_TABLE, RTPROT_BOOT if add else 0,
                       RT_SCOPE_UNIVERSE, RTN_BLACKHOLE, 0)
    body += attr(RTA_DST, subnet.network_address.packed) + attr(RTA_PRIORITY, _U32.pack(METRIC))
    body += attr(RTA_TABLE, _U32.pack(MAIN_TABLE))
    flags = NLM_F_REQUEST | NLM_F_ACK | (NLM_F_CREATE | NLM_F_REPLACE if add else 0)
    return message(RTM_NEWROUTE if add else RTM_DELROUTE, flags, seq, body)


def dump_request(seq: int, version: int = 4) -> bytes:
    """A dump of the main table's blackhole routes of IP ``version`` (filtered in the kernel where
    it can)."""
    body = _RTMSG.pack(_FAMILY[version], 0, 0, 0, MAIN_TABLE, 0, 0, RTN_BLACKHOLE, 0)
    return message(RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP, seq, body)


def ours(body: bytes) -> Subnet | None:
    """The subnet of a route message's body if it is one of our blackhole routes, else None."""
    family, dst_len, _, _, table, _, _, kind, _ = _RTMSG.unpack_from(body)
    attrs = attribute_map(body, _RTMSG.size)
    table = _U32.unpack(attrs[RTA_TABLE])[0] if RTA_TABLE in attrs else table
    metric = _U32.unpack(attrs[RTA_PRIORITY])[0] if RTA_PRIORITY in attrs else 0
    if family not in _FAMILY.values() or kind != RTN_BLACKHOLE or table != MAIN_TABLE or metric != METRIC:
        return None
    dst = attrs.get(RTA_DST, bytes(4 if family == socket.AF_INET else 16))
    return ip_network((ip_address(dst), dst_len))


class BlackholeRoute:
    """Keeps our blackhole routes equal to the one wanted (or none)."""

    def __init__(self) -> None:
        self._rtnl: RtnlSocket | None = None

    def ensure(self, network: Subnet, subnet: Subnet | None) -> bool:
        """Our blackhole for ``subnet`` (None: for no subnet), and no other of ours inside
        ``network`` (of either family); True if it wrote. OSError if the kernel refuses."""
        rtnl = self._rtnl = self._rtnl or RtnlSocket()
        seq = rtnl.next_seq()
        found = {
            net for msg in rtnl.dump(dump_request(seq, network.version), seq)
            if (net := ours(msg.body)) is not None and net.version == network.version
            and net.subnet_of(network)  # type: ignore[arg-type]
        }  # fmt: skip
        changed = False
        for stale in sorted(found - {subnet}):  # type: ignore[type-var]
            seq = rtnl.next_seq()
            rtnl.write(route_request(stale, add=False, seq=seq), seq)
            log.info("deleted blackhole route %s (not our subnet any more)", stale)
            changed = True
        if subnet is not None and subnet not in found:
            seq = rtnl.next_seq()
            rtnl.write(route_request(subnet, add=True, seq=seq), seq)
            log.info("added blackhole route %s metric %d: traffic to addresses of our subnet that no "
                     "container route takes is dropped here", subnet, METRIC)
            changed = True
        return changed

    def close(self) -> None:
        if self._rtnl is not None:
            self._rtnl.close()
            self._rtnl = None
