"""Lease keys and values, byte for byte as flanneld writes and reads them."""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

import pytest

from overlayd.subnet.lease import (
    Lease,
    LeaseAttrs,
    LeaseError,
    decode_attrs,
    decode_lease,
    encode_attrs,
    key_to_subnets,
    lease_vni,
    subnet_to_key,
)

KEY = "198.18.46.0-24"
FLANNELD_VALUE = (
    '{"PublicIP":"192.0.2.11","PublicIPv6":null,"BackendType":"vxlan",'
    '"BackendData":{"VNI":1,"VtepMAC":"8a:da:7f:e8:8a:5f"}}'
)
ATTRS = LeaseAttrs(
    public_ip=IPv4Address("192.0.2.11"), backend_type="vxlan", vni=1, vtep_mac="8a:da:7f:e8:8a:5f"
)


# --- values ---------------------------------------------------------------------------------


def test_encode_is_byte_for_byte_what_flanneld_writes() -> None:
    assert encode_attrs(ATTRS) == FLANNELD_VALUE


def test_encode_keeps_the_vni_and_public_ipv6() -> None:
    attrs = LeaseAttrs(
        public_ip=IPv4Address("192.0.2.12"),
        backend_type="vxlan",
        vni=4096,
        vtep_mac="02:00:00:00:00:01",
        public_ipv6=IPv6Address("2001:db8::12"),
    )
    assert encode_attrs(attrs) == (
        '{"PublicIP":"192.0.2.12","PublicIPv6":"2001:db8::12","BackendType":"vxlan",'
        '"BackendData":{"VNI":4096,"VtepMAC":"02:00:00:00:00:01"}}'
    )


def test_decode_flanneld_value() -> None:
    assert decode_attrs(KEY, FLANNELD_VALUE) == ATTRS
    assert decode_attrs(KEY, FLANNELD_VALUE.encode()) == ATTRS


def test_round_trip_is_exact() -> None:
    assert encode_attrs(decode_attrs(KEY, FLANNELD_VALUE)) == FLANNELD_VALUE
    assert decode_attrs(KEY, encode_attrs(ATTRS)) == ATTRS


def test_decode_dual_stack_value_with_backend_v6_data() -> None:
    raw = (
        '{"PublicIP":"192.0.2.11","PublicIPv6":"2001:db8::11","BackendType":"vxlan",'
        '"BackendData":{"VNI":1,"VtepMAC":"8a:da:7f:e8:8a:5f"},'
        '"BackendV6Data":{"VNI":1,"VtepMAC":"8a:da:7f:e8:8a:60"}}'
    )
    attrs = decode_attrs(KEY, raw)
    assert attrs.public_ip == IPv4Address("192.0.2.11")
    assert attrs.public_ipv6 == IPv6Address("2001:db8::11")
    assert (attrs.backend_type, attrs.vni, attrs.vtep_mac) == ("vxlan", 1, "8a:da:7f:e8:8a:5f")


def test_decode_ignores_unknown_fields_and_key_order() -> None:
    raw = json.dumps(
        {
            "BackendData": {"VtepMAC": "8a:da:7f:e8:8a:5f", "VNI": 1, "Extra": 1},
            "BackendType": "vxlan",
            "PublicIP": "192.0.2.11",
            "Whatever": True,
        }
    )
    assert decode_attrs(KEY, raw) == ATTRS


def test_uppercase_mac_is_normalised() -> None:
    raw = FLANNELD_VALUE.replace("8a:da:7f:e8:8a:5f", "8A:DA:7F:E8:8A:5F")
    attrs = decode_attrs(KEY, raw)
    assert attrs.vtep_mac == "8a:da:7f:e8:8a:5f"
    assert encode_attrs(attrs) == FLANNELD_VALUE


@pytest.mark.parametrize(
    "raw",
    [
        '{"PublicIP":"192.0.2.11","BackendData":{"VNI":1,"VtepMAC":"8a:da:7f:e8:8a:5f"}}',
        '{"PublicIP":"192.0.2.11"}',  # a reservation written by hand
        '{"PublicIP":"192.0.2.11","BackendType":null,"BackendData":null}',
    ],
)
def test_missing_backend_type_is_no_backend_as_in_flanneld(raw: str) -> None:
    """flanneld programs only leases whose BackendType is vxlan; one without any still holds its
    subnet for its PublicIP."""
    attrs = decode_attrs(KEY, raw)
    assert (attrs.backend_type, attrs.public_ip, attrs.vni) == ("", IPv4Address("192.0.2.11"), None)


@pytest.mark.parametrize(
    "mac", ["8a:da:7f:e8:8a:5f", "8A:DA:7F:E8:8A:5F", "8a-da-7f-e8-8a-5f", "8ada.7fe8.8a5f"]
)
def test_vtep_mac_in_every_spelling_flanneld_reads(mac: str) -> None:
    """Go's net.ParseMAC, which flanneld decodes VtepMAC with, takes these for 6 bytes."""
    raw = f'{{"PublicIP":"192.0.2.11","BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{mac}"}}}}'
    assert decode_attrs(KEY, raw).vtep_mac == "8a:da:7f:e8:8a:5f"


def test_host_gw_lease_with_null_backend_data_reads_as_none() -> None:
    raw = '{"PublicIP":"192.0.2.13","PublicIPv6":null,"BackendType":"host-gw","BackendData":null}'
    attrs = decode_attrs(KEY, raw)
    assert attrs.backend_type == "host-gw"
    assert attrs.vni is None
    assert attrs.vtep_mac is None
    assert attrs.extra_backend_data == ""
    assert attrs.public_ip == IPv4Address("192.0.2.13")


@pytest.mark.parametrize(
    "raw",
    [
        # flanneld's host-gw lease: Go omits the empty BackendData.
        '{"PublicIP":"192.0.2.13","PublicIPv6":null,"BackendType":"host-gw"}',
        # flanneld's udp and alloc leases: no BackendType and no BackendData at all.
        '{"PublicIP":"192.0.2.13","PublicIPv6":null}',
        # flanneld's extension lease: BackendData is PreStartupCommand's output, a JSON string.
        '{"PublicIP":"192.0.2.13","PublicIPv6":null,"BackendType":"extension","BackendData":"a b\\n"}',
        '{"PublicIP":"192.0.2.13","PublicIPv6":null,"BackendType":"other","BackendData":[1,{"k":null}]}',
    ],
)
def test_leases_without_a_codec_round_trip_byte_for_byte(raw: str) -> None:
    assert encode_attrs(decode_attrs(KEY, raw)) == raw


def test_foreign_backend_data_is_kept_on_reencode() -> None:
    raw = (
        '{"PublicIP":"192.0.2.14","PublicIPv6":null,"BackendType":"ipip",'
        '"BackendData":{"PublicKey":"abc=","Port":51820}}'
    )
    attrs = decode_attrs(KEY, raw)
    assert attrs.backend_type == "ipip"
    assert json.loads(attrs.extra_backend_data) == {"PublicKey": "abc=", "Port": 51820}
    hash(attrs)  # nested backend data must not make leases unhashable
    assert encode_attrs(attrs) == raw


@pytest.mark.parametrize(
    ("raw", "fragments"),
    [
        ("not json", ["value is not JSON"]),
        ("", ["value is not JSON"]),
        (b"\xff\xfe", ["value is not JSON"]),
        ("[1, 2]", ["value is not a JSON object"]),
        ('"192.0.2.11"', ["value is not a JSON object"]),
        ("null", ["value is not a JSON object"]),
        ('{"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"8a:da:7f:e8:8a:5f"}}', ["PublicIP None"]),
        ('{"PublicIP":"","BackendData":{"VNI":1,"VtepMAC":"8a:da:7f:e8:8a:5f"}}', ["PublicIP ''"]),
        (
            '{"PublicIP":"192.0.2.300","BackendData":{"VNI":1,"VtepMAC":"8a:da:7f:e8:8a:5f"}}',
            ["PublicIP '192.0.2.300'"],
        ),
        (
            '{"PublicIP":"2001:db8::1","BackendData":{"VNI":1,"VtepMAC":"8a:da:7f:e8:8a:5f"}}',
            ["PublicIP '2001:db8::1'"],
        ),
        (
            '{"PublicIP":3221225995,"BackendData":{"VNI":1,"VtepMAC":"8a:da:7f:e8:8a:5f"}}',
            ["PublicIP 3221225995"],
        ),
        (
            '{"PublicIP":"192.0.2.11","PublicIPv6":"192.0.2.11","BackendData":{"VNI":1,"VtepMAC":"8a:da:7f:e8:8a:5f"}}',
            ["PublicIPv6 '192.0.2.11'"],
        ),
        (
            '{"PublicIP":"192.0.2.11","PublicIPv6":1,"BackendData":{"VNI":1,"VtepMAC":"8a:da:7f:e8:8a:5f"}}',
            ["PublicIPv6 1"],
        ),
        (
            '{"PublicIP":"192.0.2.11","BackendType":"vxlan","BackendData":[1]}',
            ["BackendData is not a JSON object"],
        ),
        ('{"PublicIP":"192.0.2.11","BackendType":"vxlan","BackendData":null}', ["integer VNI", "VtepMAC"]),
        (
            '{"PublicIP":"192.0.2.11","BackendType":"vxlan","BackendData":{"VtepMAC":"8a:da:7f:e8:8a:5f"}}',
            ["integer VNI"],
        ),
        (
            '{"PublicIP":"192.0.2.11","BackendType":"vxlan","BackendData":{"VNI":"1","VtepMAC":"8a:da:7f:e8:8a:5f"}}',
            ["integer VNI"],
        ),
        (
            '{"PublicIP":"192.0.2.11","BackendType":"vxlan","BackendData":{"VNI":true,"VtepMAC":"8a:da:7f:e8:8a:5f"}}',
            ["integer VNI"],
        ),
        ('{"PublicIP":"192.0.2.11","BackendType":"vxlan","BackendData":{"VNI":1}}', ["VtepMAC"]),
        (
            '{"PublicIP":"192.0.2.11","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"8a:da:7f:e8:8a"}}',
            ["VtepMAC"],
        ),
        (
            '{"PublicIP":"192.0.2.11","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"zz:da:7f:e8:8a:5f"}}',
            ["VtepMAC"],
        ),
        (
            '{"PublicIP":"192.0.2.11","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"8a:da:7f:e8:8a:5f\\n"}}',
            ["VtepMAC"],
        ),
    ],
)
def test_malformed_values_name_the_key(raw: str | bytes, fragments: list[str]) -> None:
    with pytest.raises(LeaseError) as info:
        decode_attrs(KEY, raw)
    message = str(info.value)
    assert message.startswith(f"lease {KEY}: ")
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert info.value.__cause__ is None


def test_lease_error_is_a_value_error() -> None:
    assert issubclass(LeaseError, ValueError)


# --- keys -----------------------------------------------------------------------------------


def test_key_round_trip() -> None:
    assert key_to_subnets(KEY) == (IPv4Network("198.18.46.0/24"), None)
    assert subnet_to_key(IPv4Network("198.18.46.0/24")) == KEY


def test_dual_stack_key_round_trip() -> None:
    key = "198.18.46.0-24&2001:db8:0:1::-64"
    subnet, ipv6 = key_to_subnets(key)
    assert subnet == IPv4Network("198.18.46.0/24")
    assert ipv6 == IPv6Network("2001:db8:0:1::/64")
    assert subnet_to_key(subnet, ipv6) == key


@pytest.mark.parametrize(
    "key",
    [
        "198.18.46.0",
        "abc-24",
        "198.18.46.0-33",
        "198.18.46.1-24",
        "198.18.46.0-",
        "-24",
        "198.18.46-24",
        "198.18.46.256-24",
        "198.18.46.0-24&2001:db8::",
        "198.18.46.0-24&2001:db8:0:1::-129",
        "198.18.46.0-24&xyz::-64",
        "198.18.46.0-24\n",
        "198.18.46.0/24",
        " 198.18.46.0-24",
        "",
    ],
)
def test_malformed_keys_raise_naming_the_key(key: str) -> None:
    with pytest.raises(LeaseError) as info:
        key_to_subnets(key)
    assert f"lease key {key!r}" in str(info.value)


def test_decode_lease_combines_key_value_and_etcd_fields() -> None:
    lease = decode_lease(KEY, FLANNELD_VALUE, etcd_lease_id=7587862072890368, mod_revision=42)
    assert lease.subnet == IPv4Network("198.18.46.0/24")
    assert lease.ipv6_subnet is None
    assert lease.attrs == ATTRS
    assert lease.etcd_lease_id == 7587862072890368
    assert lease.mod_revision == 42
    assert lease.key == KEY


def test_decode_lease_defaults_to_a_reservation() -> None:
    assert decode_lease(KEY, FLANNELD_VALUE).etcd_lease_id == 0


def test_mod_revision_does_not_affect_equality() -> None:
    assert decode_lease(KEY, FLANNELD_VALUE, mod_revision=1) == decode_lease(
        KEY, FLANNELD_VALUE, mod_revision=2
    )


def test_dual_stack_lease_key() -> None:
    lease = Lease(IPv4Network("198.18.46.0/24"), ATTRS, ipv6_subnet=IPv6Network("2001:db8:0:1::/64"))
    assert lease.key == "198.18.46.0-24&2001:db8:0:1::-64"
    assert decode_lease(lease.key, FLANNELD_VALUE).ipv6_subnet == IPv6Network("2001:db8:0:1::/64")


def test_decode_lease_with_bad_key_raises() -> None:
    with pytest.raises(LeaseError, match="lease key 'abc-24'"):
        decode_lease("abc-24", FLANNELD_VALUE)


@pytest.mark.parametrize(
    ("vni", "carried"), [(1, 1), (65535, 65535), (65536, 0), (70000, 4464), (2**24 - 1, 65535)]
)
def test_lease_vni_is_the_16_bits_flanneld_writes(vni: int, carried: int) -> None:
    assert lease_vni(vni) == carried
