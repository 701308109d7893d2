"""What this host publishes as PublicIP, by network family: the interface's IPv4 address,
--public-ip, or 0.0.0.0 in an IPv6-only network; and the start refused without an address."""

from __future__ import annotations

import json
import logging
from ipaddress import IPv4Address, IPv6Address

import pytest

from overlayd.agent.startup import StartError, host_facts, published_ip
from overlayd.backend.iface import ExternalInterface
from overlayd.backend.select import CONFIG_PARSERS
from overlayd.cli import make_parser
from overlayd.option_sources import normalize_argv
from overlayd.options import AgentOptions, resolve_options
from overlayd.subnet.config import parse_network_config

V6 = {"EnableIPv6": True, "IPv6Network": "2001:db8:1000::/48", "Backend": {"Type": "vxlan"}}
IPV6_ONLY = parse_network_config(json.dumps({"EnableIPv4": False, **V6}), backends=CONFIG_PARSERS)
DUAL = parse_network_config(json.dumps({"Network": "198.18.0.0/16", **V6}), backends=CONFIG_PARSERS)
V6_ONLY_IFACE = ExternalInterface("eth0", 2, None, 1500, ipv6=IPv6Address("2001:db8::b"))
BOTH_IFACE = ExternalInterface("eth0", 2, IPv4Address("192.0.2.11"), 1500, ipv6=IPv6Address("2001:db8::b"))


def options(*argv: str) -> AgentOptions:
    return resolve_options(make_parser().parse_args(normalize_argv(["run", *argv])), {})


def test_an_ipv6_only_network_publishes_0_0_0_0_and_ignores_public_ip_saying_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert published_ip(options(), V6_ONLY_IFACE, IPV6_ONLY) == IPv4Address("0.0.0.0")
    assert published_ip(options(), BOTH_IFACE, IPV6_ONLY) == IPv4Address("0.0.0.0")
    with caplog.at_level(logging.WARNING):
        given = options("--public-ip=192.0.2.99")
        assert published_ip(given, BOTH_IFACE, IPV6_ONLY) == IPv4Address("0.0.0.0")
    assert "ignoring --public-ip 192.0.2.99: the network is IPv6-only (EnableIPv4 false)" in caplog.text
    host = host_facts(options(), V6_ONLY_IFACE, IPv4Address("0.0.0.0"), IPV6_ONLY)
    assert host.public_ipv6 == IPv6Address("2001:db8::b")
    assert IPv4Address("0.0.0.0") not in host.own_ips  # no peer's 0.0.0.0 is taken for ours


def test_a_network_with_ipv4_on_an_interface_without_it_is_refused_naming_both() -> None:
    expected = (
        r"interface eth0 has no IPv4 address and the network config has IPv4 Network 198.18.0.0/16; "
        r".*--public-ip, or make the network IPv6-only"
    )
    with pytest.raises(StartError, match=expected):
        published_ip(options(), V6_ONLY_IFACE, DUAL)
    assert published_ip(options("--public-ip=192.0.2.99"), V6_ONLY_IFACE, DUAL) == IPv4Address("192.0.2.99")
    assert published_ip(options(), BOTH_IFACE, DUAL) == IPv4Address("192.0.2.11")


def test_an_ipv6_only_network_without_an_ipv6_address_is_refused_naming_the_interface() -> None:
    iface = ExternalInterface("eth0", 2, IPv4Address("192.0.2.11"), 1500)
    expected = r"the network config is IPv6-only .* interface eth0 has no global IPv6"
    with pytest.raises(StartError, match=expected):
        host_facts(options(), iface, IPv4Address("0.0.0.0"), IPV6_ONLY)
