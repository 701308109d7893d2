"""The rtnetlink codec on hand-built messages: device-level messages."""

import struct
from ipaddress import IPv4Address

from overlayd.backend.rtnlcodec import (
    RTM_NEWLINK,
    Message,
    create_vxlan_request,
    decode_link,
)


def _attr(kind: int, value: bytes) -> bytes:
    length = 4 + len(value)
    return struct.pack("=HH", length, kind) + value + b"\0" * (-length % 4)


def test_a_created_vxlan_link_decodes_back_to_its_attributes() -> None:
    request = create_vxlan_request(9, "flannel.1", 1, IPv4Address("192.0.2.1"), 3, 8472, False, True,
                                   1450, "0a:00:00:00:00:01")
    length, kind, _, seq, _ = struct.unpack_from("=IHHII", request)
    assert (length, kind, seq) == (len(request), RTM_NEWLINK, 9)
    link = decode_link(Message(RTM_NEWLINK, seq, request[16:]))
    assert (link.name, link.mtu, link.mac, link.kind) == ("flannel.1", 1450, "0a:00:00:00:00:01", "vxlan")
    assert link.vxlan is not None
    assert (link.vxlan.vni, link.vxlan.link, link.vxlan.local, link.vxlan.port) == (
        1, 3, IPv4Address("192.0.2.1"), 8472)
    assert link.vxlan.gbp and not link.vxlan.learning
