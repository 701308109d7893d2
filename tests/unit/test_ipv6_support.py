"""Which backends carry IPv6: a config that asks more of one is refused (IPv6-only) or run with
one warning naming the backends that carry it (dual-stack, as flanneld runs it)."""

from __future__ import annotations

import json

import pytest

from overlayd.backend.api import Ipv6Support
from overlayd.backend.select import BACKENDS, CONFIG_PARSERS, ipv6_half_notice
from overlayd.subnet.config import parse_network_config

DUAL = {"Network": "198.18.0.0/16", "EnableIPv6": True, "IPv6Network": "2001:db8:1000::/48"}


IPV4_ONLY_BACKENDS = [name for name, b in BACKENDS.items() if b.ipv6_support is Ipv6Support.NONE]


def config(backend: str) -> object:
    return parse_network_config(json.dumps({**DUAL, "Backend": {"Type": backend}}), backends=CONFIG_PARSERS)


@pytest.mark.parametrize("backend", IPV4_ONLY_BACKENDS)
def test_a_dual_stack_network_on_an_ipv4_only_backend_runs_with_a_warning_naming_a_fix(backend: str) -> None:
    notice = ipv6_half_notice(config(backend), "etcd /coreos.com/network/config")  # type: ignore[arg-type]
    assert notice is not None
    assert f"is dual-stack but Backend.Type {backend} carries IPv4 only" in notice
    assert "2001:db8:1000::/48 that no other host reaches; use Backend host-gw, vxlan" in notice


@pytest.mark.parametrize("backend", ["vxlan", "host-gw", "alloc"])
def test_no_warning_where_the_backend_carries_ipv6_or_the_network_has_no_ipv6_half(backend: str) -> None:
    assert ipv6_half_notice(config(backend), "x") is None  # type: ignore[arg-type]
    v4 = '{"Network": "198.18.0.0/16", "Backend": {"Type": "udp"}}'
    assert ipv6_half_notice(parse_network_config(v4, backends=CONFIG_PARSERS), "x") is None
