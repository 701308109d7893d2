"""The wireguard backend in an IPv6-only network (EnableIPv4 false), its pure parts: the lease as
flanneld writes it (BackendV6Data alone, PublicIP 0.0.0.0), the peers told apart by their IPv6
half, the one device each Mode makes, the ingress port, the probe target, and Mode ipv4 refused."""

from __future__ import annotations

import json
import subprocess
import sys
from ipaddress import IPv6Address, IPv6Network
from pathlib import Path

import pytest

from overlayd.backend.api import HostFacts, HostUnfit, probe_targets
from overlayd.backend.desired import DesiredEntries
from overlayd.backend.plane import Route, WgPeer
from overlayd.backend.select import CONFIG_PARSERS, install
from overlayd.backend.wireguard.backend import Wireguard
from overlayd.backend.wireguard.config import Mode
from overlayd.backend.wireguard.lease import public_key_of, public_key_v6_of, wireguard_ipv6_only_attrs
from overlayd.backend.wireguard.peers import is_wireguard_ipv6_only_peer, is_wireguard_peer, wireguard_entries
from overlayd.subnet.config import ConfigError, NetworkConfig, parse_network_config
from overlayd.subnet.lease import NO_PUBLIC_IP, Lease, decode_attrs, decode_lease, encode_attrs

KEY_A = "jgQAnMQ91M0t55uzuZmiNjCG7mAlloiqiNr3gwF4h28="
KEY_B = "yf0lszjYyzqxpGRar7aa/VVYqqfRStHipxk4XaLW3ig="
OWN_KEY, PEER_KEY = "0.0.0.0-0&2001:db8:1000:1::-64", "0.0.0.0-0&2001:db8:1000:2::-64"
# As flanneld v0.20.2 writes an IPv6-only wireguard lease: no BackendData, the key as BackendV6Data.
FLANNELD_VALUE = ('{"PublicIP":"0.0.0.0","PublicIPv6":"2001:db8::c","BackendType":"wireguard",'
                  f'"BackendV6Data":{{"PublicKey":"{KEY_B}"}}}}')
# flanneld v0.28 adds the port the peer listens on.
FLANNELD_028_VALUE = FLANNELD_VALUE.replace(f'"{KEY_B}"}}', f'"{KEY_B}","Port":51821}}')
SUBNET6, IP6 = IPv6Network("2001:db8:1000:2::/64"), IPv6Address("2001:db8::c")
PEER_ENTRIES = {WgPeer(KEY_B, IP6, SUBNET6), Route(SUBNET6, SUBNET6.network_address)}


def config(mode: str | None = None) -> NetworkConfig:
    backend: dict[str, object] = {"Type": "wireguard"} | ({"Mode": mode} if mode else {})
    value = {"EnableIPv4": False, "EnableIPv6": True, "IPv6Network": "2001:db8:1000::/48", "Backend": backend}
    return parse_network_config(json.dumps(value), backends=CONFIG_PARSERS)


def lease(value: str = FLANNELD_VALUE, key: str = PEER_KEY) -> Lease:
    install()
    return decode_lease(key, value, create_revision=5, mod_revision=5)


def own() -> Lease:
    return lease(FLANNELD_VALUE.replace("2001:db8::c", "2001:db8::b").replace(KEY_B, KEY_A), OWN_KEY)


def test_the_ipv6_only_lease_is_flanneld_s_byte_for_byte_both_ways() -> None:
    install()
    attrs = decode_attrs(PEER_KEY, FLANNELD_VALUE)
    assert public_key_v6_of(attrs) == KEY_B and public_key_of(attrs) is None
    assert attrs == wireguard_ipv6_only_attrs(IP6, KEY_B)
    assert attrs.public_ip == NO_PUBLIC_IP
    assert encode_attrs(wireguard_ipv6_only_attrs(IP6, KEY_B)) == FLANNELD_VALUE


def test_flanneld_0_28_s_port_is_read_and_not_written_back() -> None:
    install()
    attrs = decode_attrs(PEER_KEY, FLANNELD_028_VALUE)
    assert attrs == wireguard_ipv6_only_attrs(IP6, KEY_B)
    assert set(wireguard_entries(lease(FLANNELD_028_VALUE))) == PEER_ENTRIES


@pytest.mark.parametrize("mode", [Mode.SEPARATE, Mode.IPV6, Mode.AUTO])
def test_every_mode_reaches_an_ipv6_only_peer_at_its_public_ipv6(mode: Mode) -> None:
    for ipv6 in (True, False):  # the IPv6 half is all such a lease has, however asked
        assert set(wireguard_entries(lease(), ipv6=ipv6, mode=mode)) == PEER_ENTRIES


def test_peers_are_told_apart_by_their_ipv6_half() -> None:
    me, other = own(), lease()
    assert is_wireguard_ipv6_only_peer(other, me)
    assert not is_wireguard_ipv6_only_peer(me, me)
    assert not is_wireguard_peer(other, me, Mode.SEPARATE), "every PublicIP is 0.0.0.0: not this test"
    # Our own PublicIPv6 under another subnet (an older lease of ours), another backend, a dual-stack lease.
    mine_elsewhere = lease(FLANNELD_VALUE.replace("2001:db8::c", "2001:db8::b"))
    vxlan = lease('{"PublicIP":"0.0.0.0","PublicIPv6":"2001:db8::c","BackendType":"vxlan",'
                  '"BackendV6Data":{"VNI":1,"VtepMAC":"0a:00:00:00:06:01"}}')  # fmt: skip
    dual = lease(FLANNELD_VALUE.replace('"0.0.0.0"', '"192.0.2.12"').replace(
        '"BackendV6Data"', f'"BackendData":{{"PublicKey":"{KEY_B}"}},"BackendV6Data"'),
        "198.18.2.0-24&2001:db8:1000:2::-64")  # fmt: skip
    for stranger in (mine_elsewhere, vxlan, dual):
        assert not is_wireguard_ipv6_only_peer(stranger, me), stranger
    assert Wireguard().wants_peer(other, me, config()) and not Wireguard().wants_peer(dual, me, config())


def test_desired_entries_keep_ipv6_only_peers_apart_and_let_in_their_public_ipv6() -> None:
    desired = DesiredEntries(entries=wireguard_entries, ipv6=True)
    third = lease(FLANNELD_VALUE.replace("2001:db8::c", "2001:db8::d").replace(KEY_B, KEY_A),
                  "0.0.0.0-0&2001:db8:1000:3::-64")  # fmt: skip
    desired.load(PEER_KEY, lease())
    desired.load("0.0.0.0-0&2001:db8:1000:3::-64", third)
    assert desired.public_ips() == {IP6, IPv6Address("2001:db8::d")}
    assert len(desired.plane().peers) == 2 and len(desired.plane().routes) == 2


def test_the_probe_target_is_the_first_address_of_the_ipv6_subnet() -> None:
    assert probe_targets(Wireguard(), lease(), ipv6=True) == (SUBNET6.network_address,)


@pytest.mark.parametrize(
    ("mode", "device", "port6"),
    [(None, "flannel-wg-v6", 51821), ("separate", "flannel-wg-v6", 51821), ("ipv6", "flannel-wg", None),
     ("auto", "flannel-wg", None)],
)
def test_each_mode_makes_one_device_and_guards_its_port(
    mode: str | None, device: str, port6: int | None
) -> None:
    backend, network = Wireguard(), config(mode)
    assert backend.device_names(network) == (device,)
    assert backend.owns_device(device, network)
    assert not backend.owns_device({"flannel-wg": "flannel-wg-v6"}.get(device, "flannel-wg"), network)
    ingress = backend.underlay_ingress(network)
    # The ip6 table guards ListenPortV6 (Mode separate) or ListenPort (flannel-wg's).
    assert ingress.ipv6_port == port6 and ingress.port == 51820


def test_the_lease_published_is_ipv6_only(tmp_path: Path) -> None:
    host = HostFacts(NO_PUBLIC_IP, "eth0", None, 1500, (), tmp_path, IPv6Address("2001:db8::b"),
                     IPv6Address("2001:db8::b"))  # fmt: skip
    attrs = Wireguard().lease_data(config(), host)
    key = public_key_v6_of(attrs)
    assert key is not None and attrs == wireguard_ipv6_only_attrs(IPv6Address("2001:db8::b"), key)
    without = HostFacts(NO_PUBLIC_IP, "eth0", None, 1500, (), tmp_path)
    with pytest.raises(HostUnfit) as caught:
        Wireguard().lease_data(config(), without)
    assert "IPv6-only but eth0 has no global IPv6 address" in str(caught.value)


MODE_IPV4_REFUSAL = (
    "network config: Backend.Mode ipv4 reaches peers at their PublicIP, which an IPv6-only network "
    "(EnableIPv4 false) leaves 0.0.0.0; use Mode separate (flannel-wg-v6), ipv6 or auto (flannel-wg), "
    "or set EnableIPv4 true with an IPv4 Network"
)


def test_mode_ipv4_in_an_ipv6_only_network_is_refused_naming_the_fix() -> None:
    with pytest.raises(ConfigError) as caught:
        config("ipv4")
    assert str(caught.value) == MODE_IPV4_REFUSAL
    # Mode ipv4 with IPv4 (alone or dual-stack) is as before.
    for extra in ({}, {"EnableIPv6": True, "IPv6Network": "2001:db8:1000::/48"}):
        value = {"Network": "198.18.0.0/16", "Backend": {"Type": "wireguard", "Mode": "ipv4"}} | extra
        assert parse_network_config(json.dumps(value), backends=CONFIG_PARSERS).backend.type == "wireguard"


def test_config_validate_refuses_mode_ipv4_in_an_ipv6_only_network(tmp_path: Path) -> None:
    path = tmp_path / "net.json"
    path.write_text(json.dumps({"EnableIPv4": False, "EnableIPv6": True, "IPv6Network": "2001:db8:1000::/48",
                                "Backend": {"Type": "wireguard", "Mode": "ipv4"}}))  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "overlayd", "config", "validate", str(path)],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode != 0, done
    assert "Backend.Mode ipv4 reaches peers at their PublicIP" in done.stdout + done.stderr
