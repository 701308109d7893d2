"""Dual-stack leases byte for byte as flanneld v0.20.2 writes them (its LeaseAttrs struct:
``PublicIPv6 *ip.IP6`` without omitempty, ``BackendV6Data`` with it), both ways."""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Address, IPv6Network

import pytest

from overlayd.backend import select
from overlayd.subnet.lease import LeaseError, decode_attrs, decode_lease, encode_attrs, subnet_to_key

select.install()

KEY = "198.18.46.0-24&2001:db8:0:2e::-64"
# flanneld's vxlan lease in a dual-stack network: the v6 data names the MAC of flannel-v6.1.
FLANNELD_DUAL = (
    '{"PublicIP":"192.0.2.11","PublicIPv6":"2001:db8::11","BackendType":"vxlan",'
    '"BackendData":{"VNI":1,"VtepMAC":"8a:da:7f:e8:8a:5f"},'
    '"BackendV6Data":{"VNI":1,"VtepMAC":"6e:2b:01:9c:44:d0"}}'
)


def test_a_dual_stack_key_parses_and_renders_as_flanneld_spells_it() -> None:
    lease = decode_lease(KEY, FLANNELD_DUAL)
    assert lease.subnet == IPv4Network("198.18.46.0/24")
    assert lease.ipv6_subnet == IPv6Network("2001:db8:0:2e::/64")
    assert lease.key == KEY == subnet_to_key(lease.subnet, lease.ipv6_subnet)


def test_a_dual_stack_value_round_trips_byte_for_byte() -> None:
    attrs = decode_attrs(KEY, FLANNELD_DUAL)
    assert attrs.public_ipv6 == IPv6Address("2001:db8::11")
    assert (attrs.vtep_mac, attrs.vtep_mac_v6) == ("8a:da:7f:e8:8a:5f", "6e:2b:01:9c:44:d0")
    assert encode_attrs(attrs) == FLANNELD_DUAL
    assert decode_attrs(KEY, encode_attrs(attrs)) == attrs


@pytest.mark.parametrize(
    "raw",
    [
        # A dual-stack host-gw lease: no BackendData at all (omitempty), PublicIPv6 set.
        '{"PublicIP":"192.0.2.12","PublicIPv6":"2001:db8::12","BackendType":"host-gw"}',
        # An IPv4-only vxlan lease: PublicIPv6 null, no BackendV6Data.
        '{"PublicIP":"192.0.2.13","PublicIPv6":null,"BackendType":"vxlan",'
        '"BackendData":{"VNI":1,"VtepMAC":"8a:da:7f:e8:8a:5f"}}',
        # A backend without a codec keeps its v6 data whole, whatever JSON it is.
        '{"PublicIP":"192.0.2.14","PublicIPv6":"2001:db8::14","BackendType":"other",'
        '"BackendData":{"a":1},"BackendV6Data":["x",{"b":null}]}',
    ],
)
def test_other_dual_stack_shapes_round_trip(raw: str) -> None:
    assert encode_attrs(decode_attrs(KEY, raw)) == raw


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            '{"PublicIP":"192.0.2.11","PublicIPv6":"2001:db8::11","BackendType":"vxlan",'
            '"BackendData":{"VNI":1,"VtepMAC":"8a:da:7f:e8:8a:5f"},"BackendV6Data":"x"}',
            "BackendV6Data is not a JSON object",
        ),
        (
            '{"PublicIP":"192.0.2.11","PublicIPv6":"2001:db8::11","BackendType":"vxlan",'
            '"BackendData":{"VNI":1,"VtepMAC":"8a:da:7f:e8:8a:5f"},"BackendV6Data":{"VNI":1}}',
            "vxlan BackendData needs an integer VNI and a VtepMAC",
        ),
        ('{"PublicIP":"192.0.2.11","PublicIPv6":"192.0.2.11"}', "PublicIPv6 '192.0.2.11' is invalid"),
    ],
)
def test_bad_v6_parts_are_rejected_naming_the_key(raw: str, expected: str) -> None:
    with pytest.raises(LeaseError) as info:
        decode_attrs(KEY, raw)
    assert str(info.value).startswith(f"lease {KEY}: ") and expected in str(info.value)
    assert info.value.reason in ("bad_backend_data", "bad_public_ip")
