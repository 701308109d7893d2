"""parse_network_config: flannel's defaults, case-insensitive keys, and operator-readable errors."""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv4Network

import pytest

from overlayd.backend.select import CONFIG_PARSERS
from overlayd.backend.udp.config import UdpConfig
from overlayd.backend.vxlan.config import VxlanConfig as BackendConfig
from overlayd.subnet.config import ConfigError, parse_network_config

WHERE = "network config at /coreos.com/network/config"


def parse(value: dict[str, object]):
    return parse_network_config(json.dumps(value), where=WHERE, backends=CONFIG_PARSERS)


def error_of(raw: str | bytes) -> str:
    with pytest.raises(ConfigError) as info:
        parse_network_config(raw, where=WHERE, backends=CONFIG_PARSERS)
    return str(info.value)


# --- defaults -------------------------------------------------------------------------------


def test_defaults_for_a_slash_16() -> None:
    config = parse({"Network": "198.18.0.0/16"})
    assert config.network == IPv4Network("198.18.0.0/16")
    assert config.subnet_len == 24
    assert config.subnet_min == IPv4Address("198.18.1.0")
    assert config.subnet_max == IPv4Address("198.18.255.0")
    assert config.subnet_size == 256
    assert config.backend == UdpConfig(type="udp", port=8285)  # no Backend: udp, as in flanneld


@pytest.mark.parametrize(
    ("network", "subnet_len", "subnet_min", "subnet_max"),
    [
        ("198.18.0.0/15", 24, "198.18.1.0", "198.19.255.0"),
        ("198.18.0.0/16", 24, "198.18.1.0", "198.18.255.0"),
        ("198.18.4.0/22", 24, "198.18.5.0", "198.18.7.0"),
        ("198.18.4.0/23", 25, "198.18.4.128", "198.18.5.128"),
        ("198.18.4.0/26", 28, "198.18.4.16", "198.18.4.48"),
        ("198.18.4.0/28", 30, "198.18.4.4", "198.18.4.12"),
    ],
)
def test_default_subnet_len_min_and_max(
    network: str, subnet_len: int, subnet_min: str, subnet_max: str
) -> None:
    config = parse({"Network": network})
    assert config.subnet_len == subnet_len
    assert config.subnet_min == IPv4Address(subnet_min)
    assert config.subnet_max == IPv4Address(subnet_max)


def test_subnet_len_zero_means_default() -> None:
    assert parse({"Network": "198.18.0.0/16", "SubnetLen": 0}).subnet_len == 24


def test_explicit_subnet_len_moves_the_default_bounds() -> None:
    config = parse({"Network": "198.18.0.0/16", "SubnetLen": 26})
    assert config.subnet_len == 26
    assert config.subnet_min == IPv4Address("198.18.0.64")
    assert config.subnet_max == IPv4Address("198.18.255.192")


def test_subnet_len_bounds_are_inclusive() -> None:
    assert parse({"Network": "198.18.0.0/16", "SubnetLen": 18}).subnet_len == 18
    assert parse({"Network": "198.18.0.0/16", "SubnetLen": 30}).subnet_len == 30


def test_explicit_subnet_min_and_max() -> None:
    config = parse({"Network": "198.18.0.0/16", "SubnetMin": "198.18.10.0", "SubnetMax": "198.18.20.0"})
    assert (config.subnet_min, config.subnet_max) == (IPv4Address("198.18.10.0"), IPv4Address("198.18.20.0"))


def test_subnet_min_equal_to_max_is_one_subnet() -> None:
    config = parse({"Network": "198.18.0.0/16", "SubnetMin": "198.18.7.0", "SubnetMax": "198.18.7.0"})
    assert config.contains_subnet(IPv4Network("198.18.7.0/24"))
    assert not config.contains_subnet(IPv4Network("198.18.8.0/24"))


def test_empty_subnet_min_means_default() -> None:
    assert parse({"Network": "198.18.0.0/16", "SubnetMin": ""}).subnet_min == IPv4Address("198.18.1.0")


def test_zero_subnet_bounds_mean_default_as_in_flanneld() -> None:
    config = parse({"Network": "198.18.0.0/16", "SubnetMin": "0.0.0.0", "SubnetMax": "0.0.0.0"})
    assert (config.subnet_min, config.subnet_max) == (IPv4Address("198.18.1.0"), IPv4Address("198.18.255.0"))


def test_contains_subnet_checks_length_and_range() -> None:
    config = parse({"Network": "198.18.0.0/16"})
    assert config.contains_subnet(IPv4Network("198.18.1.0/24"))
    assert config.contains_subnet(IPv4Network("198.18.255.0/24"))
    assert not config.contains_subnet(IPv4Network("198.18.0.0/24"))  # the first subnet is never used
    assert not config.contains_subnet(IPv4Network("198.18.2.0/23"))
    assert not config.contains_subnet(IPv4Network("198.19.1.0/24"))


def test_backend_values() -> None:
    config = parse(
        {
            "Network": "198.18.0.0/16",
            "Backend": {
                "Type": "vxlan",
                "VNI": 4096,
                "Port": 4789,
                "GBP": True,
                "Learning": True,
                "DirectRouting": True,
                "MTU": 1400,
            },
        }
    )
    assert config.backend == BackendConfig(
        type="vxlan", vni=4096, port=4789, gbp=True, learning=True, direct_routing=True, mtu=1400
    )


@pytest.mark.parametrize(
    ("backend", "interface_mtu", "device_mtu"),
    [
        ({}, 1500, 1450),
        ({}, 9000, 8950),
        ({"MTU": 1500}, 9000, 1450),  # the underlay path is smaller than the interface says
        ({"MTU": 1400}, 1500, 1350),
        ({"MTU": 626}, 1500, 576),
    ],
)
def test_backend_mtu_is_the_underlays_and_the_device_gets_50_less(
    backend: dict, interface_mtu: int, device_mtu: int
) -> None:
    """flanneld's meaning: Backend.MTU (default: the external interface's) less VXLAN's 50 bytes is
    the device's MTU and FLANNEL_MTU."""
    config = parse({"Network": "198.18.0.0/16", "Backend": {"Type": "vxlan", **backend}})
    assert config.backend.device_mtu(interface_mtu) == device_mtu


@pytest.mark.parametrize(
    ("backend", "expected"),
    [
        ({"Type": "vxlan", "Port": 0}, BackendConfig()),
        ({"Type": "vxlan", "MTU": 0}, BackendConfig()),
        ({"Type": "vxlan", "VNI": None, "Port": None, "GBP": None}, BackendConfig()),
        ({"Type": "vxlan", "VNI": 0}, BackendConfig(vni=0)),
        ({"Type": "vxlan", "VNI": 16777215}, BackendConfig(vni=16777215)),
        ({"Type": "vxlan", "Port": 65535}, BackendConfig(port=65535)),
        ({"Type": "vxlan"}, BackendConfig()),
    ],
)
def test_backend_defaults(backend: dict[str, object], expected: BackendConfig) -> None:
    assert parse({"Network": "198.18.0.0/16", "Backend": backend}).backend == expected


def test_missing_or_null_backend_or_type_means_udp_as_in_flanneld() -> None:
    for backend in ({}, {"Backend": None}, {"Backend": {}}, {"Backend": {"Port": 9000}}):
        config = parse({"Network": "198.18.0.0/16", **backend})
        assert isinstance(config.backend, UdpConfig) and not config.backend_type_given
    assert config.backend.port == 9000
    named = parse({"Network": "198.18.0.0/16", "Backend": {"type": "udp"}})
    assert named.backend == UdpConfig() and named.backend_type_given
    assert named == parse({"Network": "198.18.0.0/16"})  # the same config in force either way


def test_keys_are_case_insensitive() -> None:
    config = parse(
        {
            "network": "198.18.0.0/16",
            "SUBNETLEN": 26,
            "subnetmin": "198.18.1.0",
            "backend": {"type": "vxlan", "vni": 4, "PORT": 4789, "gbp": True},
        }
    )
    assert config.network == IPv4Network("198.18.0.0/16")
    assert config.subnet_len == 26
    assert config.subnet_min == IPv4Address("198.18.1.0")
    assert (config.backend.vni, config.backend.port, config.backend.gbp) == (4, 4789, True)


@pytest.mark.parametrize("backend_type", ["VXLAN", "VxLan"])
def test_backend_type_is_case_insensitive_as_in_flanneld(backend_type: str) -> None:
    assert parse({"Network": "198.18.0.0/16", "Backend": {"Type": backend_type}}).backend.type == "vxlan"


def test_unknown_keys_are_ignored() -> None:
    config = parse(
        {
            "Network": "198.18.0.0/16",
            "EnableIPv6": False,
            "IPv6Network": "2001:db8::/32",
            "Foo": [1],
            "Backend": {"Type": "vxlan", "MacPrefix": "0E-2A", "Bar": {}},
        }
    )
    assert config.subnet_len == 24
    assert config.backend == BackendConfig()


def test_host_bits_in_network_are_masked() -> None:
    config = parse({"Network": "198.18.3.4/16"})
    assert config.network == IPv4Network("198.18.0.0/16")
    assert config.subnet_min == IPv4Address("198.18.1.0")


def test_bytes_input_is_accepted() -> None:
    assert parse_network_config(b'{"Network": "198.18.0.0/16"}', backends=CONFIG_PARSERS).subnet_len == 24


def test_default_where_is_used_in_messages() -> None:
    with pytest.raises(ConfigError, match=r"^network config: "):
        parse_network_config("[]", backends=CONFIG_PARSERS)


# --- errors ---------------------------------------------------------------------------------


def test_style_guide_message_exactly() -> None:
    # STYLE.md shows "between 17 and 30", but the contract (FLANNEL-NOTES: SubnetLen >= prefix+2,
    # as flanneld enforces) makes the lower bound 18 for a /16.
    message = error_of('{"Network": "198.18.0.0/16", "SubnetLen": 31}')
    assert message == (
        "network config at /coreos.com/network/config: SubnetLen 31 is larger than 30; "
        "use a SubnetLen between 18 and 30 for Network 198.18.0.0/16"
    )


def test_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


@pytest.mark.parametrize(
    ("raw", "fragments"),
    [
        # not JSON / not an object
        ("{Network: 198.18.0.0/16}", ["not valid JSON", "fix the JSON"]),
        ("", ["not valid JSON", "fix the JSON"]),
        (b"\xff\xfe\x00", ["not valid JSON", "fix the JSON"]),
        ("[]", ["must be a JSON object", '"Network": "198.18.0.0/16"']),
        ('"198.18.0.0/16"', ["must be a JSON object", '"Network": "198.18.0.0/16"']),
        # Network
        ("{}", ["Network is missing", 'set it to an IPv4 CIDR such as "198.18.0.0/16"']),
        ('{"Network": ""}', ["Network is missing", "198.18.0.0/16"]),
        ('{"Network": null}', ["Network is missing", "198.18.0.0/16"]),
        ('{"Network": 16}', ["Network 16 is invalid", "use an IPv4 CIDR"]),
        ('{"Network": ["198.18.0.0/16"]}', ["Network ['198.18.0.0/16'] is invalid", "use an IPv4 CIDR"]),
        ('{"Network": "198.18.0/16x"}', ["Network '198.18.0/16x' is invalid", "use an IPv4 CIDR"]),
        ('{"Network": "2001:db8::/32"}', ["Network '2001:db8::/32' is invalid", "use an IPv4 CIDR"]),
        ('{"Network": "198.18.0.0/33"}', ["Network '198.18.0.0/33' is invalid", "use an IPv4 CIDR"]),
        (
            '{"Network": "198.18.0.0/29"}',
            ["Network 198.18.0.0/29 is too small (/29)", "use a Network of /28 or larger"],
        ),
        ('{"Network": "198.18.0.0/31"}', ["Network 198.18.0.0/31 is too small", "use a Network of /28"]),
        # SubnetLen
        (
            '{"Network": "198.18.0.0/16", "SubnetLen": 31}',
            ["SubnetLen 31 is larger than 30", "use a SubnetLen between 18 and 30 for Network 198.18.0.0/16"],
        ),
        (
            '{"Network": "198.18.0.0/16", "SubnetLen": 17}',
            [
                "SubnetLen 17 leaves Network 198.18.0.0/16 fewer than four subnets",
                "use a SubnetLen between 18 and 30",
            ],
        ),
        (
            '{"Network": "198.18.0.0/16", "SubnetLen": 8}',
            ["SubnetLen 8 ", "use a SubnetLen between 18 and 30"],
        ),
        ('{"Network": "198.18.0.0/16", "SubnetLen": -1}', ["SubnetLen -1 ", "use a SubnetLen between 18"]),
        ('{"Network": "198.18.0.0/28", "SubnetLen": 29}', ["SubnetLen 29 ", "between 30 and 30"]),
        (
            '{"Network": "198.18.0.0/16", "SubnetLen": "24"}',
            ["SubnetLen '24' is invalid", "use a SubnetLen between 18 and 30"],
        ),
        ('{"Network": "198.18.0.0/16", "SubnetLen": true}', ["SubnetLen True is invalid", "use a SubnetLen"]),
        (
            '{"Network": "198.18.0.0/16", "SubnetLen": false}',
            ["SubnetLen False is invalid", "use a SubnetLen"],
        ),
        ('{"Network": "198.18.0.0/16", "SubnetLen": 24.5}', ["SubnetLen 24.5 is invalid", "use a SubnetLen"]),
        ('{"Network": "198.18.0.0/16", "SubnetLen": 0.0}', ["SubnetLen 0.0 is invalid", "use a SubnetLen"]),
        # SubnetMin / SubnetMax
        (
            '{"Network": "198.18.0.0/16", "SubnetMin": "198.19.1.0"}',
            ["SubnetMin '198.19.1.0' is invalid", "use an address inside Network 198.18.0.0/16"],
        ),
        (
            '{"Network": "198.18.0.0/16", "SubnetMax": "192.0.2.0"}',
            ["SubnetMax '192.0.2.0' is invalid", "use an address inside Network 198.18.0.0/16"],
        ),
        (
            '{"Network": "198.18.0.0/16", "SubnetMin": "198.18.1.7"}',
            ["SubnetMin '198.18.1.7' is invalid", "must start a /24 subnet, such as 198.18.1.0"],
        ),
        (
            '{"Network": "198.18.0.0/16", "SubnetLen": 26, "SubnetMax": "198.18.9.100"}',
            ["SubnetMax '198.18.9.100' is invalid", "must start a /26 subnet, such as 198.18.9.64"],
        ),
        (
            '{"Network": "198.18.0.0/16", "SubnetMin": "not-an-ip"}',
            ["SubnetMin 'not-an-ip' is invalid", "use an IPv4 address such as 198.18.1.0"],
        ),
        (
            '{"Network": "198.18.0.0/16", "SubnetMin": "2001:db8::"}',
            ["SubnetMin '2001:db8::' is invalid", "use an IPv4 address"],
        ),
        ('{"Network": "198.18.0.0/16", "SubnetMax": 5}', ["SubnetMax 5 is invalid", "use an IPv4 address"]),
        (
            '{"Network": "198.18.0.0/16", "SubnetMin": "198.18.20.0", "SubnetMax": "198.18.10.0"}',
            ["SubnetMin 198.18.20.0 is above SubnetMax 198.18.10.0", "swap them or widen the range"],
        ),
        (
            '{"Network": "198.18.0.0/16", "SubnetMax": "198.18.0.0"}',
            ["SubnetMin 198.18.1.0 is above SubnetMax 198.18.0.0", "swap them"],
        ),
        # Backend
        (
            '{"Network": "198.18.0.0/16", "Backend": "vxlan"}',
            ["Backend 'vxlan' is not a JSON object", '{"Type": "udp"}'],
        ),
        (
            '{"Network": "198.18.0.0/16", "Backend": []}',
            ["Backend [] is not a JSON object", '"Type": "udp"'],
        ),
        (
            '{"Network": "198.18.0.0/16", "Backend": {"Type": "bogus"}}',
            ["Backend.Type 'bogus' is invalid", "overlayd supports vxlan, host-gw, udp"],
        ),
        (
            '{"Network": "198.18.0.0/16", "Backend": {"Type": "ipip"}}',
            ["Backend.Type 'ipip' is not supported", "no ipip module", "use Backend vxlan"],
        ),
        (
            '{"Network": "198.18.0.0/16", "Backend": {"Type": ""}}',
            ["Backend.Type '' is invalid", "supports vxlan"],
        ),
        (
            '{"Network": "198.18.0.0/16", "Backend": {"Type": 1}}',
            ["Backend.Type 1 is invalid", "supports vxlan"],
        ),
        (
            '{"Network": "198.18.0.0/16", "Backend": {"Type": "vxlan", "VNI": 16777216}}',
            ["Backend.VNI 16777216 is invalid", "use a whole number between 0 and 16777215"],
        ),
        (
            '{"Network": "198.18.0.0/16", "Backend": {"Type": "vxlan", "VNI": -1}}',
            ["Backend.VNI -1 is invalid", "use a whole number between 0 and 16777215"],
        ),
        (
            '{"Network": "198.18.0.0/16", "Backend": {"Type": "vxlan", "VNI": "1"}}',
            ["Backend.VNI '1' is invalid", "use a whole number between 0 and 16777215"],
        ),
        (
            '{"Network": "198.18.0.0/16", "Backend": {"Type": "vxlan", "VNI": true}}',
            ["Backend.VNI True is invalid", "use a whole"],
        ),
        (
            '{"Network": "198.18.0.0/16", "Backend": {"Type": "vxlan", "VNI": 1.5}}',
            ["Backend.VNI 1.5 is invalid", "use a whole"],
        ),
        (
            '{"Network": "198.18.0.0/16", "Backend": {"Port": 65536}}',
            ["Backend.Port 65536 is invalid", "use a whole number between 0 and 65535"],
        ),
        (
            '{"Network": "198.18.0.0/16", "Backend": {"Port": -1}}',
            ["Backend.Port -1 is invalid", "use a whole number between 0 and 65535"],
        ),
        (
            '{"Network": "198.18.0.0/16", "Backend": {"Port": "8472"}}',
            ["Backend.Port '8472' is invalid", "use"],
        ),
        (
            '{"Network": "198.18.0.0/16", "Backend": {"Type": "vxlan", "GBP": "true"}}',
            ["Backend.GBP 'true' is invalid", "use true or false"],
        ),
        (
            '{"Network": "198.18.0.0/16", "Backend": {"Type": "vxlan", "GBP": 1}}',
            ["Backend.GBP 1 is invalid", "use true or false"],
        ),
        (
            '{"Network": "198.18.0.0/16", "Backend": {"Type": "vxlan", "Learning": "no"}}',
            ["Backend.Learning 'no' is invalid", "use true or false"],
        ),
        (
            '{"Network": "198.18.0.0/16", "Backend": {"Type": "vxlan", "DirectRouting": 0}}',
            ["Backend.DirectRouting 0 is invalid", "use true or false"],
        ),
        (
            '{"Network": "198.18.0.0/16", "Backend": {"Type": "vxlan", "MTU": 600}}',
            ["Backend.MTU 600 is invalid", "use a whole number between 626 and 65535"],
        ),
        (
            '{"Network": "198.18.0.0/16", "Backend": {"Type": "vxlan", "MTU": "1450"}}',
            ["Backend.MTU '1450' is invalid", "use"],
        ),
        (
            '{"Network": "198.18.0.0/16", "Backend": {"Type": "vxlan", "MTU": false}}',
            ["Backend.MTU False is invalid", "use"],
        ),
    ],
)
def test_error_messages(raw: str | bytes, fragments: list[str]) -> None:
    message = error_of(raw)
    assert message.startswith(WHERE + ": ")
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert "Traceback" not in message


def test_not_json_error_has_no_chained_cause() -> None:
    with pytest.raises(ConfigError) as info:
        parse_network_config("{", where=WHERE, backends=CONFIG_PARSERS)
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


def test_an_ipv6_only_network_is_refused_naming_enable_ipv4() -> None:
    raw = '{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "2001:db8::/48"}'
    with pytest.raises(ConfigError, match=r"EnableIPv4 false .* not supported.*set it to true"):
        parse_network_config(raw, backends=CONFIG_PARSERS)


def test_a_dual_stack_network_is_refused_naming_enable_ipv6_and_why() -> None:
    raw = (
        '{"Network": "198.18.0.0/16", "EnableIPv6": true, "IPv6Network": "2001:db8::/48",'
        ' "Backend": {"Type": "vxlan"}}'
    )
    with pytest.raises(ConfigError) as info:
        parse_network_config(raw, where=WHERE, backends=CONFIG_PARSERS)
    message = str(info.value)
    assert message.startswith(f"{WHERE}: EnableIPv6 true")
    assert "dual-stack flanneld nodes crash" in message and "remove EnableIPv6" in message


def test_enable_ipv6_false_and_a_lone_ipv6_network_are_fine() -> None:
    """flanneld reads IPv6Network only with EnableIPv6."""
    for raw in (
        '{"Network": "198.18.0.0/16", "EnableIPv6": false}',
        '{"Network": "198.18.0.0/16", "IPv6Network": "2001:db8::/48"}',
    ):
        assert parse_network_config(raw, backends=CONFIG_PARSERS).network == IPv4Network("198.18.0.0/16")
