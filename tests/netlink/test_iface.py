"""Choosing the external interface as flanneld does, in a namespace with two interfaces."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest
from nsutil import in_netns, run

from overlayd.backend.iface import InterfaceError, select_interface
from overlayd.cli import make_parser
from overlayd.option_sources import normalize_argv
from overlayd.options import resolve_options

pytestmark = pytest.mark.root


def chosen(*argv: str) -> tuple[str, IPv4Address, tuple[IPv4Network, ...]] | str:
    options = resolve_options(make_parser().parse_args(normalize_argv(["run", *argv])), {})
    try:
        found = select_interface(options.interface_choice())
    except InterfaceError as exc:
        return str(exc)
    return found.name, found.ip, found.segments


@pytest.fixture
def two_links(netns: str) -> str:
    """u0 192.0.2.1/24 (the default route's), u1 192.0.2.77/25."""
    run("ip", "-n", netns, "addr", "add", "192.0.2.77/25", "dev", "u1")
    run("ip", "-n", netns, "route", "add", "default", "via", "192.0.2.9", "dev", "u0")
    return netns


@pytest.mark.parametrize(
    ("argv", "name", "ip"),
    [
        ((), "u0", "192.0.2.1"),  # the default route's interface
        (("--iface=u1",), "u1", "192.0.2.77"),
        (("--iface=192.0.2.77",), "u1", "192.0.2.77"),
        (("--iface-regex=0$",), "u0", "192.0.2.1"),  # unanchored, as Go's MatchString: 0$ matches u0
        (("--iface-regex=\\.77",), "u1", "192.0.2.77"),  # addresses are matched first
        (("--iface-regex=^u1$",), "u1", "192.0.2.77"),
        (("--iface-can-reach=192.0.2.78",), "u1", "192.0.2.77"),  # the /25 is the more specific route
        # Each selector is tried when the ones before found nothing, as flanneld does.
        (("--iface=eth9", "--iface=u1"), "u1", "192.0.2.77"),
        (("--iface=eth9", "--iface-regex=^u1$"), "u1", "192.0.2.77"),
        (("--iface=eth9", "--iface-can-reach=192.0.2.78"), "u1", "192.0.2.77"),
        (("--iface-regex=^eth", "--iface-can-reach=192.0.2.78"), "u1", "192.0.2.77"),
        # Alone, --public-ip picks the interface holding it; one that no interface holds (a NAT's)
        # leaves the default route's.
        (("--public-ip=192.0.2.77",), "u1", "192.0.2.77"),
        (("--public-ip=192.0.2.200",), "u0", "192.0.2.1"),
        (("--iface=u0", "--public-ip=192.0.2.77"), "u0", "192.0.2.1"),
    ],
)
def test_interface_choice(two_links: str, argv: tuple[str, ...], name: str, ip: str) -> None:
    found = in_netns(two_links, chosen, *argv)
    assert found[:2] == (name, IPv4Address(ip))


def test_segments_are_the_connected_prefixes(two_links: str) -> None:
    assert in_netns(two_links, chosen, "--iface=u1")[2] == (IPv4Network("192.0.2.0/25"),)


def test_no_match_names_the_pattern_and_the_fix(two_links: str) -> None:
    message = in_netns(two_links, chosen, "--iface-regex=^eth")
    assert message.startswith("--iface-regex ^eth: no interface") and "fix the pattern" in message


def test_every_selector_failing_names_them_all(two_links: str) -> None:
    message = in_netns(two_links, chosen, "--iface=eth9", "--iface=198.18.0.1", "--iface-regex=^eth")
    assert message.startswith("--iface eth9,198.18.0.1; --iface-regex ^eth: no interface"), message
