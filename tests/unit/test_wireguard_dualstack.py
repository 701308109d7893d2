"""The wireguard backend in a dual-stack network, its pure parts: the lease's BackendV6Data as
flanneld writes it, each Mode's entries, which device an entry goes to, the Mode's refusals, the
``wg`` dump of an IPv6 device, and the ingress allowlist's IPv6 port."""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from pathlib import Path

import pytest

from overlayd.backend.api import HostFacts, HostUnfit
from overlayd.backend.desired import DesiredEntries
from overlayd.backend.plane import Plane, PlaneDiff, Route, WgPeer
from overlayd.backend.select import CONFIG_PARSERS, install
from overlayd.backend.wireguard.backend import Wireguard
from overlayd.backend.wireguard.config import Mode
from overlayd.backend.wireguard.device import peer_changes
from overlayd.backend.wireguard.lease import public_key_of, public_key_v6_of, wireguard_lease_attrs
from overlayd.backend.wireguard.peers import auto_family, is_wireguard_peer, split_diff, wireguard_entries
from overlayd.backend.wireguard.wgtool import NOTHING6, NOWHERE6, endpoint, parse_dump
from overlayd.netfilter.family import IP as NFT_IP
from overlayd.netfilter.family import IP6 as NFT_IP6
from overlayd.netfilter.rules import FirewallSpec, IngressGuard, render_table
from overlayd.subnet.config import NetworkConfig, parse_network_config
from overlayd.subnet.lease import Lease, LeaseError, decode_attrs, decode_lease, encode_attrs

KEY_A = "jgQAnMQ91M0t55uzuZmiNjCG7mAlloiqiNr3gwF4h28="
KEY_B = "yf0lszjYyzqxpGRar7aa/VVYqqfRStHipxk4XaLW3ig="
DUAL_KEY = "198.18.2.0-24&2001:db8:1000:2::-64"
# As flanneld v0.20.2 writes a dual-stack wireguard lease: the same key in both data objects.
FLANNELD_VALUE = ('{"PublicIP":"192.0.2.12","PublicIPv6":"2001:db8::c","BackendType":"wireguard",'
                  f'"BackendData":{{"PublicKey":"{KEY_B}"}},"BackendV6Data":{{"PublicKey":"{KEY_B}"}}}}')
SUBNET, SUBNET6 = IPv4Network("198.18.2.0/24"), IPv6Network("2001:db8:1000:2::/64")
IP, IP6_ADDR = IPv4Address("192.0.2.12"), IPv6Address("2001:db8::c")


def config(mode: str | None = None, ipv6: bool = True) -> NetworkConfig:
    backend: dict[str, object] = {"Type": "wireguard"} | ({"Mode": mode} if mode else {})
    value: dict[str, object] = {"Network": "198.18.0.0/16", "Backend": backend}
    if ipv6:
        value |= {"EnableIPv6": True, "IPv6Network": "2001:db8:1000::/48"}
    return parse_network_config(json.dumps(value), backends=CONFIG_PARSERS)


def peer(value: str = FLANNELD_VALUE, key: str = DUAL_KEY) -> Lease:
    install()
    return decode_lease(key, value, create_revision=5, mod_revision=5)


def test_the_dual_stack_lease_is_flanneld_s_byte_for_byte_both_ways() -> None:
    install()
    attrs = decode_attrs(DUAL_KEY, FLANNELD_VALUE)
    assert public_key_of(attrs) == public_key_v6_of(attrs) == KEY_B
    assert attrs == wireguard_lease_attrs(IP, KEY_B, IP6_ADDR)
    assert encode_attrs(attrs) == FLANNELD_VALUE
    # IPv4 only: no PublicIPv6, no BackendV6Data, as before.
    assert encode_attrs(wireguard_lease_attrs(IP, KEY_B)) == (
        '{"PublicIP":"192.0.2.12","PublicIPv6":null,"BackendType":"wireguard",'
        f'"BackendData":{{"PublicKey":"{KEY_B}"}}}}')  # fmt: skip


def test_a_bad_key_in_backend_v6_data_is_a_bad_lease() -> None:
    install()
    v6_data = f'"BackendV6Data":{{"PublicKey":"{KEY_B}"}}'
    value = FLANNELD_VALUE.replace(v6_data, '"BackendV6Data":{"PublicKey":7}')
    with pytest.raises(LeaseError) as caught:
        decode_attrs(DUAL_KEY, value)
    assert caught.value.reason == "bad_backend_data" and "needs a PublicKey" in str(caught.value)


def test_a_vxlan_dual_stack_lease_still_reads_and_writes_as_before() -> None:
    install()
    raw = ('{"PublicIP":"192.0.2.12","PublicIPv6":"2001:db8::c","BackendType":"vxlan",'
           '"BackendData":{"VNI":1,"VtepMAC":"0a:00:00:00:00:01"},'
           '"BackendV6Data":{"VNI":1,"VtepMAC":"0a:00:00:00:06:01"}}')  # fmt: skip
    attrs = decode_attrs(DUAL_KEY, raw)
    assert (attrs.vtep_mac, attrs.vtep_mac_v6, attrs.extra_backend_v6_data) == (
        "0a:00:00:00:00:01", "0a:00:00:00:06:01", "")
    assert encode_attrs(attrs) == raw


def test_mode_separate_gives_each_half_its_peer_at_its_own_address() -> None:
    entries = set(wireguard_entries(peer(), ipv6=True))
    assert entries == {
        WgPeer(KEY_B, IP, SUBNET), Route(SUBNET, SUBNET.network_address),
        WgPeer(KEY_B, IP6_ADDR, SUBNET6), Route(SUBNET6, SUBNET6.network_address),
    }  # fmt: skip
    # An IPv4-only network (or a lease without its IPv6 half) carries the IPv4 half alone.
    ipv4_half = {WgPeer(KEY_B, IP, SUBNET), Route(SUBNET, SUBNET.network_address)}
    assert set(wireguard_entries(peer(), ipv6=False)) == ipv4_half
    ipv4_only = peer(FLANNELD_VALUE.replace(f',"BackendV6Data":{{"PublicKey":"{KEY_B}"}}', ""))
    assert len(wireguard_entries(ipv4_only, ipv6=True)) == 2


@pytest.mark.parametrize(("mode", "dst"), [(Mode.IPV4, IP), (Mode.IPV6, IP6_ADDR), (Mode.AUTO, IP)])
def test_one_device_modes_give_one_peer_allowed_both_subnets(mode: Mode, dst: object) -> None:
    entries = set(wireguard_entries(peer(), ipv6=True, mode=mode, own_ipv6=IPv6Address("2001:db8::b")))
    assert {entry for entry in entries if isinstance(entry, WgPeer)} == {
        WgPeer(KEY_B, dst, SUBNET), WgPeer(KEY_B, dst, SUBNET6)}  # type: ignore[arg-type]
    assert {entry.dst for entry in entries if isinstance(entry, Route)} == {SUBNET, SUBNET6}


@pytest.mark.parametrize(
    ("peer_ip", "peer_ip6", "own_ip6", "family"),
    [
        ("192.0.2.12", "2001:db8::c", "2001:db8::b", 4),  # a PublicIP outside RFC 1918
        ("10.0.0.12", "2001:db8::c", "2001:db8::b", 6),  # a private PublicIP, both IPv6 global
        ("10.0.0.12", "fd00::c", "2001:db8::b", 4),  # the peer's IPv6 is unique-local
        ("172.16.0.12", "2001:db8::c", "fd00::b", 4),  # ours is
        ("192.168.0.12", "2001:db8::c", None, 4),  # we have none
        ("10.0.0.12", None, "2001:db8::b", 4),  # the peer has none
    ],
)
def test_mode_auto_picks_the_family_as_flanneld(
    peer_ip: str, peer_ip6: str | None, own_ip6: str | None, family: int
) -> None:
    chosen = auto_family(IPv4Address(peer_ip), IPv6Address(peer_ip6) if peer_ip6 else None,
                         IPv6Address(own_ip6) if own_ip6 else None)  # fmt: skip
    assert chosen == family


def test_mode_ipv6_programs_no_peer_without_a_public_ipv6() -> None:
    own = peer(FLANNELD_VALUE.replace("192.0.2.12", "192.0.2.11"), "198.18.1.0-24&2001:db8:1000:1::-64")
    no_ipv6 = peer(FLANNELD_VALUE.replace('"2001:db8::c"', "null"))
    assert is_wireguard_peer(no_ipv6, own, Mode.SEPARATE) and not is_wireguard_peer(no_ipv6, own, Mode.IPV6)
    assert is_wireguard_peer(peer(), own, Mode.IPV6)
    assert wireguard_entries(no_ipv6, ipv6=True, mode=Mode.IPV6) == ()  # asked anyway (a probe): none


def test_each_entry_goes_to_its_family_s_device_and_a_removal_where_it_was_read() -> None:
    v4_peer, v6_peer = WgPeer(KEY_B, IP, SUBNET), WgPeer(KEY_B, IP6_ADDR, SUBNET6)
    v4_route, v6_route = Route(SUBNET, SUBNET.network_address), Route(SUBNET6, SUBNET6.network_address)
    add = Plane(routes=frozenset({v4_route, v6_route}), peers=frozenset({v4_peer, v6_peer}))
    # An IPv6 route found on flannel-wg (left by Mode auto) is removed there, not on flannel-wg-v6.
    stray = Route(IPv6Network("2001:db8:1000:9::/64"), IPv6Address("2001:db8:1000:9::"))
    read = (Plane(routes=frozenset({stray})), Plane())
    diff4, diff6 = split_diff(PlaneDiff(add=add, remove=Plane(routes=frozenset({stray}))), read)
    assert diff4.add == Plane(routes=frozenset({v4_route}), peers=frozenset({v4_peer}))
    assert diff6.add == Plane(routes=frozenset({v6_route}), peers=frozenset({v6_peer}))
    assert diff4.remove.routes == {stray} and not diff6.remove


def test_desired_entries_let_in_both_public_addresses() -> None:
    desired = DesiredEntries(entries=wireguard_entries, ipv6=True)
    desired.load(DUAL_KEY, peer())
    assert desired.public_ips() == {IP, IP6_ADDR}
    assert len(desired.plane().peers) == 2 and len(desired.plane().routes) == 2


def test_mode_changes_restart_and_ipv6_is_refused_without_ipv6(tmp_path: Path) -> None:
    separate, auto = config().backend, config("auto").backend
    assert separate.restart_key != auto.restart_key
    assert auto.restart_reason(separate) == "Mode separate -> auto"
    host = HostFacts(IPv4Address("192.0.2.11"), "eth0", IPv4Address("192.0.2.11"), 1500, (), tmp_path)
    with pytest.raises(HostUnfit) as caught:
        Wireguard().lease_data(config("ipv6", ipv6=False), host)
    assert str(caught.value) == (
        "network config: Backend.Mode ipv6 reaches peers at their PublicIPv6, which a network without "
        "EnableIPv6 does not publish; use Mode separate, auto or ipv4, or make the network dual-stack "
        "(EnableIPv6 with an IPv6Network)")  # fmt: skip
    assert not list(tmp_path.iterdir()), "refused before any key was made"


def test_the_devices_a_mode_makes() -> None:
    backend = Wireguard()
    assert backend.device_names(config()) == ("flannel-wg", "flannel-wg-v6")
    assert backend.device_names(config("auto")) == ("flannel-wg",)
    assert backend.device_names(config(ipv6=False)) == ("flannel-wg",)
    assert backend.owns_device("flannel-wg-v6", None)
    assert not backend.owns_device("flannel-wg-v6", config("ipv4"))
    ingress = backend.underlay_ingress(config())
    assert (ingress.port, ingress.ipv6_port) == (51820, 51821)
    assert backend.underlay_ingress(config("auto")).ipv6_port is None


def test_the_ip6_allowlist_guards_listen_port_v6() -> None:
    spec = FirewallSpec(
        IPv4Network("198.18.0.0/16"), IPv4Network("198.18.1.0/24"), False, True, ingress_allowlist=True,
        ingress=IngressGuard("udp", 51820, "wireguard", ipv6_port=51821),
        ingress_sources=frozenset({IP, IP6_ADDR}), ipv6_network=IPv6Network("2001:db8:1000::/48"),
        ipv6_own_subnet=IPv6Network("2001:db8:1000:1::/64"),
    )  # fmt: skip
    table6 = render_table(spec.family_part(NFT_IP6), family=NFT_IP6)
    assert "udp dport 51821 ip6 saddr != @wireguard_peers" in table6 and "2001:db8::c" in table6
    assert "udp dport 51820 ip saddr != @wireguard_peers" in render_table(spec.family_part(NFT_IP))


def test_an_ipv6_device_s_dump_reads_its_endpoints_and_placeholders() -> None:
    text = (f"(none)\t{KEY_A}\t51821\toff\n"
            f"{KEY_B}\t(none)\t[2001:db8::c]:51821\t2001:db8:1000:2::/64\t0\t0\t0\toff\n"
            f"{KEY_A}\t(none)\t192.0.2.11:51821\t(none)\t0\t0\t0\toff\n")  # fmt: skip
    dump = parse_dump(text, port=51821, family=6)
    # An IPv4 endpoint on the IPv6 device is not one we set: it reads as reached nowhere.
    assert dump.peers == {WgPeer(KEY_B, IP6_ADDR, SUBNET6), WgPeer(KEY_A, NOWHERE6, NOTHING6)}
    assert endpoint(IP6_ADDR, 51821) == "[2001:db8::c]:51821" and endpoint(IP, 51820) == "192.0.2.12:51820"
    # The IPv6 placeholder is replaced by the peer's subnet on that device.
    diff = PlaneDiff(add=Plane(peers=frozenset({WgPeer(KEY_A, IP6_ADDR, SUBNET6)})),
                     remove=Plane(peers=frozenset({WgPeer(KEY_A, NOWHERE6, NOTHING6)})))  # fmt: skip
    known = {KEY_A: (NOWHERE6, {NOTHING6})}
    assert peer_changes(known, diff, family=6) == ({KEY_A: (IP6_ADDR, {SUBNET6})}, set())
