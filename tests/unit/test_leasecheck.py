"""Bad peer leases: which are skipped under a config, and that each is reported once."""

from __future__ import annotations

import logging
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overlayd.backend.select import CONFIG_PARSERS
from overlayd.subnet.config import parse_network_config
from overlayd.subnet.lease import Lease, LeaseAttrs, LeaseError, decode_lease
from overlayd.subnet.leasecheck import BadLeaseLog, Underlay, lease_problem

CONFIG = parse_network_config('{"Network": "198.18.0.0/16"}', backends=CONFIG_PARSERS)
OWN = Lease(
    IPv4Network("198.18.5.0/24"),
    LeaseAttrs(IPv4Address("192.0.2.11"), "vxlan", vni=1, vtep_mac="02:00:00:00:00:01"),
)


def peer(subnet: str, ip: str = "192.0.2.12") -> Lease:
    attrs = LeaseAttrs(IPv4Address(ip), "vxlan", vni=1, vtep_mac="02:00:00:00:00:02")
    return Lease(IPv4Network(subnet), attrs)


@pytest.mark.parametrize(
    ("lease", "reason"),
    [
        (peer("198.18.6.0/24"), None),
        (OWN, None),
        (peer("192.0.2.0/24"), "outside_network"),
        (peer("198.19.0.0/24"), "outside_network"),
        (peer("198.18.0.0/15"), "outside_network"),
        (peer("198.18.5.0/24"), "own_subnet"),  # another PublicIP writing our key
        (peer("198.18.5.128/25"), "own_subnet"),
        (peer("198.18.0.0/16"), "own_subnet"),
    ],
)
def test_lease_problem(lease: Lease, reason: str | None) -> None:
    problem = lease_problem(lease, CONFIG, OWN)
    assert (problem.reason if problem else None) == reason
    if problem:
        assert str(lease.subnet) in problem.message


networks = st.builds(
    lambda address, prefixlen: IPv4Network((address, prefixlen), strict=False),
    st.integers(0, 2**32 - 1) | st.sampled_from([0xC6120000, 0xC6120500, 0xC6130000]),
    st.integers(0, 32),
)


@settings(max_examples=500, deadline=None)
@given(networks, networks, networks)
def test_lease_problem_agrees_with_ipaddress(
    subnet: IPv4Network, network: IPv4Network, own: IPv4Network
) -> None:
    """The checks run on plain ints; ``subnet_of`` and ``overlaps`` are the reference."""
    config = replace(CONFIG, ipv4=replace(CONFIG.ipv4, network=network))
    own_lease = Lease(own, OWN.attrs)
    problem = lease_problem(peer(str(subnet)), config, own_lease)
    if not subnet.subnet_of(network):
        expected = "outside_network"
    elif subnet.overlaps(own) and (subnet != own or peer(str(subnet)).attrs != own_lease.attrs):
        expected = "own_subnet"
    elif not subnet.overlaps(own) and subnet.prefixlen not in (config.subnet_len, own.prefixlen):
        expected = "subnet_size"
    else:
        expected = None
    assert (problem.reason if problem else None) == expected


@pytest.mark.parametrize(
    ("key", "raw", "reason"),
    [
        ("198.18.6.0-24", b"not json", "not_json"),
        ("198.18.6.0-24", b"[1]", "not_json"),
        ("198.18.6.0-24", b'{"PublicIP": "192.0.2.300", "BackendData": {"VNI": 1, "VtepMAC": "02:00:00:00:00:02"}}',  # noqa: E501
         "bad_public_ip"),
        ("198.18.6.0-24", b'{"PublicIP": "192.0.2.12", "BackendType": "vxlan", "BackendData": {"VNI": 1}}',
         "bad_backend_data"),
        ("198.18.6.0-24", b'{"PublicIP": "192.0.2.12", "pad": "' + b"x" * (1 << 20) + b'"}', "oversized"),
        ("../etc", b"{}", "bad_key"),
    ],
)  # fmt: skip
def test_codec_errors_carry_a_reason(key: str, raw: bytes, reason: str) -> None:
    with pytest.raises(LeaseError) as err:
        decode_lease(key, raw)
    assert err.value.reason == reason
    assert key in str(err.value)


def test_bad_lease_log_reports_each_key_and_revision_once(caplog: pytest.LogCaptureFixture) -> None:
    counted: list[str] = []
    log = BadLeaseLog(counted.append)
    with caplog.at_level(logging.WARNING, logger="overlayd.subnet.leasecheck"):
        for _ in range(3):  # three reconcile passes see the same bad lease
            log.report("198.18.6.0-24", 7, "not_json", "value is not JSON")
        log.report("198.18.6.0-24", 9, "outside_network", "subnet is outside")  # rewritten: news
        log.report("198.18.7.0-24", 7, "not_json", "value is not JSON")
    assert counted == ["not_json", "outside_network", "not_json"]
    assert len(caplog.records) == 3
    assert "198.18.6.0-24" in caplog.records[0].getMessage()


UNDERLAY = Underlay(
    frozenset({IPv4Address("192.0.2.11"), IPv4Address("192.0.2.99")}), (IPv4Network("192.0.2.0/24"),)
)


def peer_with(mac: str = "02:00:00:00:00:02", ip: str = "192.0.2.12", subnet: str = "198.18.6.0/24") -> Lease:
    return Lease(IPv4Network(subnet), LeaseAttrs(IPv4Address(ip), "vxlan", vni=1, vtep_mac=mac))


@pytest.mark.parametrize(
    ("lease", "reason", "named"),
    [
        (peer_with(), None, ""),
        (peer_with(mac="00:00:00:00:00:00"), "bad_vtep_mac", "all-zero"),
        (peer_with(mac="ff:ff:ff:ff:ff:ff"), "bad_vtep_mac", "broadcast"),
        (peer_with(mac="01:00:5e:00:00:01"), "bad_vtep_mac", "multicast"),
        (peer_with(mac="33:33:00:00:00:01"), "bad_vtep_mac", "multicast"),
        (peer_with(mac="06:00:00:00:00:02"), None, ""),  # locally administered unicast: fine
        (peer_with(subnet="198.18.6.128/25"), "subnet_size", "not a /24"),  # inside a peer's /24
        (peer_with(subnet="198.18.6.7/32"), "subnet_size", "not a /24"),  # one container's address
        (peer_with(subnet="198.18.128.0/17"), "subnet_size", "not a /24"),  # half the Network
        (peer_with(ip="127.0.0.1"), "bad_public_ip", "loopback"),
        (peer_with(ip="0.0.0.0"), "bad_public_ip", "unspecified"),
        (peer_with(ip="224.0.0.1"), "bad_public_ip", "multicast"),
        (peer_with(ip="255.255.255.255"), "bad_public_ip", "broadcast"),
        (peer_with(ip="192.0.2.255"), "bad_public_ip", "segment 192.0.2.0/24"),
        (peer_with(ip="192.0.2.0"), "bad_public_ip", "segment 192.0.2.0/24"),
        (peer_with(ip="169.254.1.1"), "bad_public_ip", "link-local"),
        (peer_with(ip="192.0.2.11"), "own_public_ip", "this host's own address"),  # our PublicIP
        (peer_with(ip="192.0.2.99"), "own_public_ip", "this host's own address"),  # our interface's
        (peer_with(ip="203.0.113.7"), None, ""),  # routed, off our segment: fine
    ],
)
def test_hostile_lease_values_are_refused_and_named(lease: Lease, reason: str | None, named: str) -> None:
    problem = lease_problem(lease, CONFIG, OWN, UNDERLAY)
    assert (problem.reason if problem else None) == reason
    if problem:
        assert named in problem.message
        assert str(lease.attrs.vtep_mac) in problem.message or str(lease.subnet) in problem.message or (
            str(lease.attrs.public_ip) in problem.message
        )


def test_a_link_local_underlay_of_our_own_is_accepted() -> None:
    underlay = Underlay(frozenset({IPv4Address("169.254.0.5")}), (IPv4Network("169.254.0.0/16"),))
    assert lease_problem(peer_with(ip="169.254.0.6"), CONFIG, OWN, underlay) is None


def test_our_own_lease_is_never_refused_for_our_address() -> None:
    """Our lease carries our PublicIP: judging it as a peer's would make us drop our own lease."""
    assert lease_problem(OWN, CONFIG, OWN, UNDERLAY) is None


def test_the_length_we_hold_is_accepted_after_a_subnet_len_change() -> None:
    """SubnetLen changed to 25 while the nodes still hold /24s: they keep reaching each other."""
    config = replace(CONFIG, ipv4=replace(CONFIG.ipv4, subnet_len=25))
    assert lease_problem(peer_with(), config, OWN, UNDERLAY) is None
    assert lease_problem(peer_with(subnet="198.18.6.128/25"), config, OWN, UNDERLAY) is None
    assert lease_problem(peer_with(subnet="198.18.6.0/26"), config, OWN, UNDERLAY).reason == "subnet_size"


def test_a_bad_vtep_mac_is_logged_once_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    counted: list[str] = []
    bad = BadLeaseLog(counted.append)
    lease = replace(peer_with(mac="ff:ff:ff:ff:ff:ff"), mod_revision=7)
    with caplog.at_level(logging.WARNING):
        for _ in range(3):  # three passes
            problem = lease_problem(lease, CONFIG, OWN, UNDERLAY)
            assert problem is not None
            bad.report(lease.key, lease.mod_revision, problem.reason, problem.message)
    assert counted == ["bad_vtep_mac"]
    assert [r.getMessage() for r in caplog.records] == [
        "skipping peer lease 198.18.6.0-24 (revision 7, bad_vtep_mac): VtepMAC ff:ff:ff:ff:ff:ff is the "
        "broadcast address; a VTEP needs a unicast, non-zero MAC"
    ]
