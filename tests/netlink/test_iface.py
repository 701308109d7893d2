"""Choosing the external interface as flanneld does, in a namespace with two interfaces."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest
from nsutil import in_netns, run

from overlayd.cli import make_parser
from overlayd.iface import InterfaceError, select_interface
from overlayd.options import normalize_argv, resolve_options

pytestmark = pytest.mark.root


def chosen(*argv: str) -> tuple[str, IPv4Address, tuple[IPv4Network, ...]] | str:
    options = resolve_options(make_parser().parse_args(normalize_argv(["run", *argv])), {})
    try:
        found = select_interface(options)
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
    ],
)
def test_interface_choice(two_links: str, argv: tuple[str, ...], name: str, ip: str) -> None:
    found = in_netns(two_links, chosen, *argv)
    assert found[:2] == (name, IPv4Address(ip))


def test_segments_are_the_connected_prefixes(two_links: str) -> None:
    assert in_netns(two_links, chosen, "--iface=u1")[2] == (IPv4Network("192.0.2.0/25"),)


def test_no_match_names_the_pattern_and_the_fix(two_links: str) -> None:
    message = in_netns(two_links, chosen, "--iface-regex=^eth")
    assert "--iface-regex ^eth" in message and "use --iface" in message
