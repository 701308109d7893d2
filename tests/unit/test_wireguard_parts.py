"""The wireguard backend's pure parts: its section, key pair, lease codec, ``wg`` dump parsing, and
its peers in the desired entries."""

from __future__ import annotations

import json
import shutil
import subprocess
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from overlayd.backend.desired import DesiredEntries
from overlayd.backend.plane import Plane, PlaneDiff, Route, WgPeer
from overlayd.backend.select import install
from overlayd.backend.wireguard.config import Mode, WireguardConfig, config_fields, parse_wireguard_config
from overlayd.backend.wireguard.device import peer_changes
from overlayd.backend.wireguard.keys import KEY_FILE_ENV, BadKey, key_file, load_or_create_key, parse_key
from overlayd.backend.wireguard.lease import public_key_of, wireguard_lease_attrs
from overlayd.backend.wireguard.peers import wireguard_entries
from overlayd.backend.wireguard.wgtool import NOTHING, NOWHERE, parse_dump
from overlayd.netfilter.firewall import FirewallSpec, render_table
from overlayd.subnet.config import ConfigError, ConfigFields
from overlayd.subnet.lease import Lease, LeaseError, decode_attrs, encode_attrs

KEY_A = "jgQAnMQ91M0t55uzuZmiNjCG7mAlloiqiNr3gwF4h28="
KEY_B = "yf0lszjYyzqxpGRar7aa/VVYqqfRStHipxk4XaLW3ig="
WHERE = "network config at /coreos.com/network/config"


def section(**fields: object) -> WireguardConfig:
    return parse_wireguard_config(ConfigFields(WHERE, {"Type": "wireguard", **fields}, "Backend."))


def test_the_section_has_flannels_defaults() -> None:
    parsed = section()
    assert parsed == WireguardConfig(listen_port=51820, listen_port_v6=51821, psk="", keepalive=0,
                                     mode=Mode.SEPARATE)  # fmt: skip
    assert parsed.device_mtu(1500) == 1420
    assert section(mode="auto", listenport=51000, PersistentKeepaliveInterval=25).keepalive == 25


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"Mode": "both"}, f"{WHERE}: Backend.Mode 'both' is invalid; use one of separate, auto, ipv4, ipv6"),
        ({"ListenPort": 0},
         f"{WHERE}: Backend.ListenPort 0 is invalid; use a whole number between 1 and 65535"),
        ({"PSK": "c2VjcmV0"}, f"{WHERE}: Backend.PSK '<hidden>' is invalid; use a 32-byte base64 key, "
                              "as `wg genpsk` prints"),
    ],
)
def test_a_bad_section_is_named_and_a_bad_psk_is_not_shown(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        section(**fields)
    assert str(caught.value) == message


def test_the_psk_is_never_shown() -> None:
    parsed = section(PSK=KEY_B)
    assert parsed.psk == KEY_B
    assert KEY_B not in parsed.summary and KEY_B not in json.dumps(config_fields(parsed))
    assert KEY_B not in repr(parsed)  # a log line of the whole config shows no secret


def test_a_key_pair_is_made_once_kept_0600_and_derived_as_wg_does(tmp_path: Path) -> None:
    path = tmp_path / "state" / "wireguard-key"
    first = load_or_create_key(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_or_create_key(path) == first
    if shutil.which("wg"):  # the real tool derives the same public key
        derived = subprocess.run(["wg", "pubkey"], input=path.read_text(), capture_output=True, text=True)
        assert derived.stdout.strip() == first.public_key


def test_a_key_file_readable_by_others_is_made_0600(tmp_path: Path) -> None:
    path = tmp_path / "key"
    load_or_create_key(path)
    path.chmod(0o644)
    load_or_create_key(path)
    assert path.stat().st_mode & 0o777 == 0o600


def test_a_key_file_holding_no_key_is_an_error_naming_it_and_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text("hunter2\n")
    with pytest.raises(BadKey) as caught:
        load_or_create_key(path)
    assert str(path) in str(caught.value) and "wg genkey" in str(caught.value)
    assert "hunter2" not in str(caught.value)
    assert path.read_text() == "hunter2\n"  # nothing lost


def test_wireguard_key_file_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert key_file(tmp_path) == tmp_path / "wireguard-key"
    monkeypatch.setenv(KEY_FILE_ENV, str(tmp_path / "elsewhere"))
    assert key_file(tmp_path) == tmp_path / "elsewhere"


@pytest.mark.parametrize("raw", ["", "abc=", KEY_A[:-2], KEY_A + "AA", 42, None, "!" * 44])
def test_parse_key_refuses_what_is_not_32_bytes_of_base64(raw: object) -> None:
    with pytest.raises(BadKey):
        parse_key(raw)


def test_leases_read_and_write_flanneld_s_backend_data_byte_for_byte() -> None:
    install()
    raw = ('{"PublicIP":"192.0.2.11","PublicIPv6":null,"BackendType":"wireguard",'
           f'"BackendData":{{"PublicKey":"{KEY_A}"}}}}')  # fmt: skip
    attrs = decode_attrs("198.18.1.0-24", raw)
    assert public_key_of(attrs) == KEY_A
    assert encode_attrs(attrs) == raw
    assert attrs == wireguard_lease_attrs(IPv4Address("192.0.2.11"), KEY_A)


@pytest.mark.parametrize("data", ['{"PublicKey":"not-a-key"}', "{}", '{"PublicKey":7}'])
def test_a_lease_with_a_bad_key_is_a_bad_lease_naming_it(data: str) -> None:
    install()
    raw = f'{{"PublicIP":"192.0.2.11","BackendType":"wireguard","BackendData":{data}}}'
    with pytest.raises(LeaseError) as caught:
        decode_attrs("198.18.1.0-24", raw)
    assert caught.value.reason == "bad_backend_data"
    assert "lease 198.18.1.0-24: wireguard BackendData needs a PublicKey" in str(caught.value)


def test_the_dump_is_read_without_the_private_key() -> None:
    private = "SECRETSECRETSECRETSECRETSECRETSECRETSECRET0="
    text = (f"{private}\t{KEY_A}\t51820\toff\n"
            f"{KEY_B}\t(none)\t192.0.2.12:51820\t198.18.2.0/24\t0\t0\t0\toff\n"
            f"{KEY_A}\t(none)\t(none)\t(none)\t0\t0\t0\toff\n")  # fmt: skip
    dump = parse_dump(text)
    assert dump.public_key == KEY_A and dump.listen_port == 51820
    assert dump.peers == {
        WgPeer(KEY_B, IPv4Address("192.0.2.12"), IPv4Network("198.18.2.0/24")),
        WgPeer(KEY_A, NOWHERE, NOTHING),  # a peer without endpoint or subnet: never wanted
    }
    assert private not in dump.fingerprint and private not in repr(dump)


def test_a_peer_whose_psk_or_keepalive_differs_reads_as_reached_nowhere() -> None:
    psk = "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI="
    line = f"{KEY_B}\t{psk}\t192.0.2.12:51820\t198.18.2.0/24\t0\t0\t0\t25\n"
    text = f"(none)\t{KEY_A}\t51820\toff\n{line}"
    assert {p.dst for p in parse_dump(text, psk, 25).peers} == {IPv4Address("192.0.2.12")}
    assert {p.dst for p in parse_dump(text, "", 25).peers} == {NOWHERE}
    assert {p.dst for p in parse_dump(text, psk, 0).peers} == {NOWHERE}
    assert {p.dst for p in parse_dump(text, psk, 25, 51000).peers} == {NOWHERE}  # ListenPort changed
    assert psk not in parse_dump(text, psk, 25).fingerprint


def wg_lease(subnet: str, public_ip: str, key: str, revision: int) -> Lease:
    attrs = wireguard_lease_attrs(IPv4Address(public_ip), key)
    return Lease(IPv4Network(subnet), attrs, create_revision=revision, mod_revision=revision)


def test_every_host_with_its_own_key_is_a_peer() -> None:
    desired = DesiredEntries(entries=wireguard_entries)
    desired.load("a", wg_lease("198.18.1.0/24", "192.0.2.11", KEY_A, 1))
    desired.load("b", wg_lease("198.18.2.0/24", "192.0.2.12", KEY_B, 2))
    plane = desired.plane()
    assert {peer.public_key for peer in plane.peers} == {KEY_A, KEY_B}
    assert Route(IPv4Network("198.18.2.0/24"), IPv4Address("198.18.2.0")) in plane.routes
    assert desired.public_ips() == {IPv4Address("192.0.2.11"), IPv4Address("192.0.2.12")}


def test_a_key_claimed_at_a_second_address_loses_to_the_older_lease() -> None:
    rivalries = []
    desired = DesiredEntries(report=rivalries.append, entries=wireguard_entries)
    desired.load("a", wg_lease("198.18.1.0/24", "192.0.2.11", KEY_A, 1))
    desired.load("b", wg_lease("198.18.2.0/24", "192.0.2.77", KEY_A, 2))
    assert [peer.dst for peer in desired.plane().peers] == [IPv4Address("192.0.2.11")]
    assert [(r.key, r.reason) for r in rivalries] == [("b", "public_key_taken")]
    assert f"PublicKey {KEY_A} at PublicIP 192.0.2.77" in rivalries[0].message


def test_a_sealed_underlay_drops_new_clear_connections_into_the_network_only() -> None:
    net, own = IPv4Network("198.18.0.0/16"), IPv4Network("198.18.1.0/24")
    rule = 'iifname "eth0" ip daddr 198.18.0.0/16 ct state != { established, related } ct status ! dnat'
    sealed = render_table(FirewallSpec(net, own, False, True, sealed_underlay="eth0"))
    assert sealed.index(rule) < sealed.index("ip saddr 198.18.0.0/16 accept")  # before the accepts
    assert rule in render_table(FirewallSpec(net, own, False, False, sealed_underlay="eth0"))
    assert "iifname" not in render_table(FirewallSpec(net, own, False, True))


def test_peer_changes_give_wg_each_touched_peer_whole_and_remove_only_the_emptied() -> None:
    ip, other_ip = IPv4Address("192.0.2.12"), IPv4Address("192.0.2.13")
    one, two = IPv4Network("198.18.2.0/24"), IPv4Network("198.18.3.0/24")
    known = {KEY_A: (ip, {one, two}), KEY_B: (other_ip, {IPv4Network("198.18.9.0/24")})}
    # One of KEY_A's two subnets goes: KEY_A keeps the other, at its known endpoint.
    wanted, gone = peer_changes(known, PlaneDiff(remove=Plane(peers=frozenset({WgPeer(KEY_A, ip, two)}))))
    assert (wanted, gone) == ({KEY_A: (ip, {one})}, set())
    # KEY_B's only subnet goes, and KEY_A moves to another endpoint with its subnets.
    diff = PlaneDiff(
        add=Plane(peers=frozenset({WgPeer(KEY_A, other_ip, one), WgPeer(KEY_A, other_ip, two)})),
        remove=Plane(peers=frozenset({WgPeer(KEY_B, other_ip, IPv4Network("198.18.9.0/24")),
                                      WgPeer(KEY_A, ip, one), WgPeer(KEY_A, ip, two)})),
    )  # fmt: skip
    assert peer_changes(known, diff) == ({KEY_A: (other_ip, {one, two})}, {KEY_B})
    # A peer the device holds with no endpoint or subnet (NOTHING) gets its subnet set.
    stale = {KEY_A: (NOWHERE, {NOTHING})}
    diff = PlaneDiff(add=Plane(peers=frozenset({WgPeer(KEY_A, ip, one)})),
                     remove=Plane(peers=frozenset({WgPeer(KEY_A, NOWHERE, NOTHING)})))  # fmt: skip
    assert peer_changes(stale, diff) == ({KEY_A: (ip, {one})}, set())
