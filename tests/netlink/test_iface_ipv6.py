"""The external interface's IPv6 address, for a dual-stack network: found as flanneld finds it."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, IPv6Network

import pytest
from nsutil import in_netns, run

from overlayd.backend.iface import InterfaceError, select_interface
from overlayd.cli import make_parser
from overlayd.option_sources import normalize_argv
from overlayd.options import resolve_options

pytestmark = pytest.mark.root


def chosen(*argv: str) -> tuple[str, IPv4Address, IPv6Address | None, tuple[IPv6Network, ...]] | str:
    options = resolve_options(make_parser().parse_args(normalize_argv(["run", *argv])), {})
    try:
        found = select_interface(options.interface_choice())
    except InterfaceError as exc:
        return str(exc)
    return found.name, found.ip, found.ipv6, found.ipv6_segments


@pytest.fixture
def dual_links(netns: str) -> str:
    """u0 192.0.2.1/24 + 2001:db8::1/64 and 2001:db8::2/64 (the default route's), u1 192.0.2.77/25
    + 2001:db8:77::7/64; every interface also has its link-local address, never chosen. The kernel
    lists IPv6 addresses newest first (as ``ip -6 addr`` shows them, and flanneld reads them)."""
    for dev, address in (("u0", "2001:db8::1/64"), ("u0", "2001:db8::2/64"), ("u1", "2001:db8:77::7/64")):
        run("ip", "-n", netns, "-6", "addr", "add", address, "dev", dev, "nodad")
    run("ip", "-n", netns, "addr", "add", "192.0.2.77/25", "dev", "u1")
    run("ip", "-n", netns, "route", "add", "default", "via", "192.0.2.9", "dev", "u0")
    return netns


@pytest.mark.parametrize(
    ("argv", "name", "ipv6"),
    [
        ((), "u0", "2001:db8::2"),  # the first global address of the default route's interface
        (("--iface=u1",), "u1", "2001:db8:77::7"),
        (("--iface=2001:db8::2",), "u0", "2001:db8::2"),  # --iface given as an IPv6 address
        (("--iface-regex=:77::",), "u1", "2001:db8:77::7"),  # IPv6 addresses are matched too
        (("--iface-regex=^u0$",), "u0", "2001:db8::2"),
        (("--iface-regex=192\\.0\\.2\\.1$|::1$",), "u0", "2001:db8::1"),  # the pattern's IPv6 match
        (("--iface-can-reach=2001:db8:77::9",), "u1", "2001:db8:77::7"),
        (("--public-ipv6=2001:db8::1",), "u0", "2001:db8::1"),  # held: sent from
        (("--public-ipv6=2001:db8:ff::1",), "u0", "2001:db8::2"),  # a NAT's: published only
    ],
)
def test_ipv6_address_choice(dual_links: str, argv: tuple[str, ...], name: str, ipv6: str) -> None:
    found = in_netns(dual_links, chosen, *argv)
    assert (found[0], found[2]) == (name, IPv6Address(ipv6))


def test_ipv6_segments_are_the_connected_prefixes(dual_links: str) -> None:
    assert in_netns(dual_links, chosen, "--iface=u1")[3] == (IPv6Network("2001:db8:77::/64"),)


def test_an_interface_without_global_ipv6_has_none(netns: str) -> None:
    found = in_netns(netns, chosen, "--iface=u0")
    assert found[:3] == ("u0", IPv4Address("192.0.2.1"), None)


def test_an_ipv6_can_reach_without_a_route_names_it(dual_links: str) -> None:
    message = in_netns(dual_links, chosen, "--iface-can-reach=2001:db8:99::1")
    assert message.startswith("--iface-can-reach 2001:db8:99::1: no interface"), message


@pytest.fixture
def v6_only_links(netns: str) -> str:
    """u0 loses its IPv4 address: 2001:db8::5/64 alone, with the IPv6 default route; u1 has none."""
    run("ip", "-n", netns, "addr", "flush", "dev", "u0")
    run("ip", "-n", netns, "-6", "addr", "add", "2001:db8::5/64", "dev", "u0", "nodad")
    run("ip", "-n", netns, "-6", "route", "add", "default", "via", "2001:db8::9", "dev", "u0")
    return netns


V6_ONLY_SELECTORS = [
    (), ("--iface=u0",), ("--iface=2001:db8::5",), ("--iface-regex=^u0$",),
    ("--iface-can-reach=2001:db8::77",), ("--public-ipv6=2001:db8::5",),
]  # fmt: skip


@pytest.mark.parametrize("argv", V6_ONLY_SELECTORS)
def test_an_interface_with_ipv6_alone_serves_an_ipv6_only_network(
    v6_only_links: str, argv: tuple[str, ...]
) -> None:
    # No IPv4 address and no IPv4 default route: the IPv6 default route's interface, IPv4 None
    # (the agent refuses it for a network with IPv4, naming the interface).
    assert in_netns(v6_only_links, chosen, *argv)[:3] == ("u0", None, IPv6Address("2001:db8::5"))


def test_no_address_of_either_family_is_refused_naming_the_selector(v6_only_links: str) -> None:
    refused = in_netns(v6_only_links, chosen, "--iface=u1")
    assert "--iface u1: no interface with a global address matches" in refused
