"""The udp backend's pure parts: its config section, its lease, its place on the seam, the
forwarder's peer table and its ICMP "net unreachable"."""

from __future__ import annotations

import json
import socket
import struct
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from overlayd.backend.api import HostFacts, UnderlayIngress
from overlayd.backend.desired import DirectRoute
from overlayd.backend.select import CONFIG_PARSERS, default_type_notice
from overlayd.backend.udp.adopt import AdoptError, _udp_inode, adopt_flanneld
from overlayd.backend.udp.backend import Udp
from overlayd.backend.udp.config import UdpConfig
from overlayd.backend.udp.control import ForwarderSpec
from overlayd.backend.udp.forwarder import PeerTable, _checksum, code_id, hop, net_unreachable
from overlayd.backend.udp.lease import is_udp_peer, udp_lease_attrs
from overlayd.backend.vxlan.config import VxlanConfig
from overlayd.subnet.config import ConfigError, parse_network_config
from overlayd.subnet.lease import Lease, LeaseAttrs, decode_attrs, encode_attrs

FLANNELD_UDP_LEASE = '{"PublicIP":"192.0.2.11","PublicIPv6":null}'


def config(backend: dict[str, object] | None = None):  # type: ignore[no-untyped-def]
    raw = {"Network": "198.18.0.0/16", "Backend": {"Type": "udp", **(backend or {})}}
    return parse_network_config(json.dumps(raw), backends=CONFIG_PARSERS)


def lease(subnet: str, public_ip: str, attrs: LeaseAttrs | None = None) -> Lease:
    return Lease(IPv4Network(subnet), attrs or udp_lease_attrs(IPv4Address(public_ip)))


OWN = lease("198.18.5.0/24", "192.0.2.5")


@pytest.mark.parametrize(("section", "port"), [({}, 8285), ({"Port": 0}, 8285), ({"port": 9000}, 9000)])
def test_the_section_is_flannels_port_with_its_default(section: dict[str, object], port: int) -> None:
    parsed = config(section).backend
    assert parsed == UdpConfig(port=port) and parsed.summary == f"port {port}"
    assert Udp().config_fields(parsed) == {"Type": "udp", "Port": port}


def test_a_bad_port_is_named_with_the_fix() -> None:
    fix = r"Backend.Port 'x' is invalid; use a whole number between 0 and 65535"
    with pytest.raises(ConfigError, match=fix):
        config({"Port": "x"})


def test_the_mtu_is_the_interfaces_less_28_and_a_new_port_restarts() -> None:
    assert Udp().container_mtu(config(), 1500) == 1472 and Udp().container_mtu(config(), 9000) == 8972
    assert UdpConfig(port=9000).restart_key != UdpConfig().restart_key
    assert UdpConfig(port=9000).restart_reason(UdpConfig()) == "Port 8285 -> 9000"
    assert UdpConfig().restart_reason(VxlanConfig()) == "Backend vxlan -> udp"


def test_the_lease_is_flanneld_s_byte_for_byte_and_reads_back() -> None:
    attrs = udp_lease_attrs(IPv4Address("192.0.2.11"))
    assert encode_attrs(attrs) == FLANNELD_UDP_LEASE
    assert decode_attrs("198.18.11.0-24", FLANNELD_UDP_LEASE) == attrs


def test_peers_are_other_hosts_udp_leases() -> None:
    flanneld = lease("198.18.7.0/24", "", decode_attrs("198.18.7.0-24", FLANNELD_UDP_LEASE))
    assert is_udp_peer(flanneld, OWN)
    assert not is_udp_peer(OWN, OWN)
    assert not is_udp_peer(lease("198.18.8.0/24", "192.0.2.5"), OWN)  # our PublicIP, another subnet
    vxlan = LeaseAttrs(IPv4Address("192.0.2.7"), "vxlan", vni=1, vtep_mac="02:00:00:00:00:07")
    assert not is_udp_peer(lease("198.18.7.0/24", "", vxlan), OWN)
    extension = LeaseAttrs(IPv4Address("192.0.2.7"), "", extra_backend_data='"x"')
    assert not is_udp_peer(lease("198.18.7.0/24", "", extension), OWN)


def test_on_the_seam_each_peer_is_a_route_via_its_public_ip_and_the_port_is_guarded() -> None:
    udp = Udp()
    peer = lease("198.18.7.0/24", "192.0.2.7")
    assert udp.peer_entries(peer) == (DirectRoute(IPv4Network("198.18.7.0/24"), IPv4Address("192.0.2.7")),)
    address = IPv4Address("192.0.2.5")
    host = HostFacts(address, "eth0", address, 1500, (), Path("/nonexistent"))
    direct = udp.reached_directly(config(), host)
    assert direct is not None and direct(peer)
    assert udp.underlay_ingress(config({"Port": 9000})) == UnderlayIngress("udp", 9000, "udp")
    assert udp.device_names(config()) == ("flannel0",) and udp.owns_device("flannel0", None)
    assert not udp.owns_device("flannel.1", None)


def test_a_config_without_type_is_announced_with_the_one_line_fix() -> None:
    line = default_type_notice("network config at /coreos.com/network/config")
    assert line.startswith("network config at /coreos.com/network/config names no Backend.Type")
    assert "running the udp backend, as flanneld does" in line
    assert line.endswith('add "Backend": {"Type": "vxlan"} to the config')


def test_the_peer_table_finds_the_longest_prefix_and_forgets_removed_peers() -> None:
    table = PeerTable(8285)
    net = int(IPv4Address("198.18.7.0"))
    table.update([[net, 24, "192.0.2.7"], [int(IPv4Address("198.18.0.0")), 20, "192.0.2.9"]], [])

    def find(address: str) -> str | None:
        dst = int(IPv4Address(address))
        for shift, peers in table.lookup:
            if (peer := peers.get(dst >> shift)) is not None:
                return peer[0] if peer[1] == 8285 else None
        return None

    assert find("198.18.7.20") == "192.0.2.7" and find("198.18.3.1") == "192.0.2.9"
    assert find("198.18.200.1") is None
    table.update([], [[net, 24, "192.0.2.7"]])
    assert find("198.18.7.20") == "192.0.2.9"
    assert table.rows() == [[int(IPv4Address("198.18.0.0")), 20, "192.0.2.9"]]


def ipv4(protocol: int, payload: bytes, fragment: int = 0) -> bytes:
    src, dst = socket.inet_aton("198.18.5.2"), socket.inet_aton("198.18.200.1")
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, fragment, 63, protocol, 0, src, dst)
    return header + payload


def test_net_unreachable_quotes_the_offender_with_valid_checksums() -> None:
    offender = ipv4(socket.IPPROTO_TCP, b"\x30\x39\x00\x50" + b"\0" * 16)
    reply = net_unreachable(offender, int(IPv4Address("198.18.0.0")))
    assert reply is not None
    assert socket.inet_ntoa(reply[12:16]) == "198.18.0.0" and socket.inet_ntoa(reply[16:20]) == "198.18.5.2"
    assert (reply[8], reply[9], reply[20], reply[21]) == (8, socket.IPPROTO_ICMP, 3, 0)
    assert reply[28:] == offender[:28] and _checksum(reply[:20]) == 0 and _checksum(reply[20:]) == 0


def test_net_unreachable_answers_a_ping_but_not_an_icmp_error_nor_a_later_fragment() -> None:
    source = int(IPv4Address("198.18.0.0"))
    assert net_unreachable(ipv4(socket.IPPROTO_ICMP, b"\x08\0\0\0\0\1\0\1"), source) is not None
    assert net_unreachable(ipv4(socket.IPPROTO_ICMP, b"\x03\0\0\0\0\0\0\0"), source) is None
    assert net_unreachable(ipv4(socket.IPPROTO_UDP, b"\0" * 8, fragment=185), source) is None
    assert net_unreachable(b"\x45" + b"\0" * 10, source) is None


@pytest.mark.parametrize("ttl", [2, 64, 255])
def test_a_hop_takes_one_from_the_ttl_and_keeps_the_header_checksum_valid(ttl: int) -> None:
    for identification in range(0, 65536, 997):  # checksums all over the range, carries included
        header = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 84, identification, 0, ttl, 1, 0,
                                       socket.inet_aton("198.18.5.2"), socket.inet_aton("198.18.7.2")))
        struct.pack_into("!H", header, 10, _checksum(bytes(header)))
        assert hop(header) and header[8] == ttl - 1 and _checksum(bytes(header)) == 0


def test_a_packet_whose_ttl_would_reach_zero_is_not_forwarded() -> None:
    header = bytearray(ipv4(socket.IPPROTO_UDP, b"\0" * 8))
    header[8] = 1
    assert not hop(header) and header[8] == 1


def test_a_running_forwarder_is_kept_only_when_it_is_the_one_the_agent_would_start() -> None:
    spec = ForwarderSpec("flannel0", IPv4Address("192.0.2.11"), 8285)
    hello = {"code": code_id(), "device": "flannel0", "bind": "192.0.2.11", "port": 8285, "pid": 7}
    assert spec.matches(hello)
    for change in ({"code": "0" * 16}, {"port": 8286}, {"bind": "192.0.2.12"}, {"device": "flannel1"}):
        assert not spec.matches({**hello, **change}), change


UDP_TABLE = """\
   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref
  100: 0B0200C0:205D 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4242 2
  101: 00000000:2105 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4343 2
"""


def test_flanneld_s_socket_is_found_by_its_address_and_port(tmp_path: Path) -> None:
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "udp").write_text(UDP_TABLE)
    assert _udp_inode("192.0.2.11", 8285, tmp_path) == 4242  # 0B0200C0:205D
    assert _udp_inode("192.0.2.12", 8453, tmp_path) == 4343  # the wildcard 0.0.0.0
    assert _udp_inode("192.0.2.12", 8285, tmp_path) is None


def test_without_a_flanneld_there_is_nothing_to_take_over(tmp_path: Path) -> None:
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "udp").write_text(UDP_TABLE)
    with pytest.raises(AdoptError, match=r"no flanneld in this network namespace holds flannel0 and UDP"):
        adopt_flanneld("flannel0", "192.0.2.11", 8285, tmp_path)
