"""host-gw in an IPv6-only network: each peer whose PublicIPv6 is off this host's segment is
named once, by its IPv6 subnet and PublicIPv6."""

import logging
from ipaddress import IPv6Address, IPv6Network

import pytest

from overlayd.backend.hostgw.peers import OffSegmentLog
from overlayd.subnet.lease import NO_IPV4_SUBNET, NO_PUBLIC_IP, Lease, LeaseAttrs


def v6_peer(n: int) -> Lease:
    attrs = LeaseAttrs(NO_PUBLIC_IP, "host-gw", public_ipv6=IPv6Address(f"2001:db8:9::{n}"))
    return Lease(NO_IPV4_SUBNET, attrs, ipv6_subnet=IPv6Network(f"2001:db8:1000:{n}::/64"))


def test_every_off_segment_ipv6_only_peer_is_named_once_by_its_ipv6_half(
    caplog: pytest.LogCaptureFixture,
) -> None:
    named = OffSegmentLog()
    with caplog.at_level(logging.WARNING, logger="overlayd.backend.hostgw.peers"):
        for n in (7, 8, 7):
            named.name(v6_peer(n), (), "u0")
    assert len(caplog.records) == 2
    assert "peer 2001:db8:1000:7::/64" in caplog.records[0].getMessage()
    assert "2001:db8:9::8" in caplog.records[1].getMessage()
    assert "PublicIP 0.0.0.0" not in caplog.text and "0.0.0.0/0" not in caplog.text
