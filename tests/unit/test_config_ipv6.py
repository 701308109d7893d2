"""The IPv6 keys of the network config: flanneld's defaults and refusals, errors naming the value."""

from __future__ import annotations

import json
from ipaddress import IPv4Network, IPv6Address, IPv6Network

import pytest

from overlayd.backend.select import CONFIG_PARSERS
from overlayd.subnet.config import ConfigError, NoIPv4Pool, parse_network_config

WHERE = "network config at /coreos.com/network/config"


def parse(**keys: object):
    value = {"Network": "198.18.0.0/16", "EnableIPv6": True, **keys}
    return parse_network_config(json.dumps(value), where=WHERE, backends=CONFIG_PARSERS)


def error_of(**keys: object) -> str:
    with pytest.raises(ConfigError) as info:
        parse(**keys)
    return str(info.value)


def test_dual_stack_defaults_for_a_slash_48() -> None:
    config = parse(IPv6Network="2001:db8:1000::/48")
    assert config.ipv6 is not None
    assert config.ipv6.network == IPv6Network("2001:db8:1000::/48")
    assert config.ipv6.subnet_len == 64
    assert config.ipv6.subnet_min == IPv6Address("2001:db8:1000:1::")
    assert config.ipv6.subnet_max == IPv6Address("2001:db8:1000:ffff::")
    assert config.ipv6.subnet_count == 0xFFFF
    # The IPv4 half is as before, and both pools follow one set of rules.
    assert config.subnet_len == 24 and config.families == (config.ipv4, config.ipv6)


@pytest.mark.parametrize(
    ("network", "subnet_len", "subnet_min", "subnet_max"),
    [
        ("2001:db8:1000::/62", 64, "2001:db8:1000:1::", "2001:db8:1000:3::"),
        ("2001:db8:1000::/63", 65, "2001:db8:1000:0:8000::", "2001:db8:1000:1:8000::"),
        ("2001:db8::/124", 126, "2001:db8::4", "2001:db8::c"),
    ],
)
def test_default_ipv6_subnet_len_min_and_max(
    network: str, subnet_len: int, subnet_min: str, subnet_max: str
) -> None:
    pool = parse(IPv6Network=network).ipv6
    assert pool is not None
    assert (pool.subnet_len, str(pool.subnet_min), str(pool.subnet_max)) == (
        subnet_len, subnet_min, subnet_max
    )  # fmt: skip


def test_explicit_ipv6_keys_case_insensitive_and_zero_means_default() -> None:
    pool = parse(
        ipv6network="2001:db8:1000::3/48", IPV6SUBNETLEN=80,
        IPv6SubnetMin="2001:db8:1000:7::", IPv6SubnetMax="::",
    ).ipv6  # fmt: skip
    assert pool is not None
    assert pool.network == IPv6Network("2001:db8:1000::/48")  # host bits dropped, as flanneld does
    assert pool.subnet_len == 80
    assert pool.subnet_min == IPv6Address("2001:db8:1000:7::")
    assert pool.subnet_max == IPv6Address("2001:db8:1000:ffff:ffff::")
    assert pool.contains_subnet(IPv6Network("2001:db8:1000:7::/80"))
    assert not pool.contains_subnet(IPv6Network("2001:db8:1000:7::/64"))
    assert parse(IPv6Network="2001:db8:1000::/48", IPv6SubnetLen=0).ipv6.subnet_len == 64


def test_ipv6_keys_are_ignored_without_enable_ipv6() -> None:
    raw = '{"Network": "198.18.0.0/16", "IPv6Network": "not an address", "IPv6SubnetLen": 200}'
    assert parse_network_config(raw, backends=CONFIG_PARSERS).ipv6 is None


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ({}, ['IPv6Network is missing; set it to an IPv6 CIDR such as "2001:db8:1000::/48"']),
        ({"IPv6Network": ""}, ["IPv6Network is missing"]),
        ({"IPv6Network": 6}, ["IPv6Network 6 is invalid", "IPv6 CIDR string"]),
        ({"IPv6Network": "198.18.0.0/16"}, ["IPv6Network '198.18.0.0/16' is invalid", "use an IPv6 CIDR"]),
        (
            {"IPv6Network": "2001:db8::/125"},
            ["IPv6Network 2001:db8::/125 is too small (/125)", "/124 or larger"],
        ),
        (
            {"IPv6Network": "2001:db8:1000::/48", "IPv6SubnetLen": 127},
            ["IPv6SubnetLen 127 is larger than 126", "between 50 and 126 for IPv6Network 2001:db8:1000::/48"],
        ),
        (
            {"IPv6Network": "2001:db8:1000::/48", "IPv6SubnetLen": 49},
            ["IPv6SubnetLen 49 leaves IPv6Network 2001:db8:1000::/48 fewer than four subnets"],
        ),
        ({"IPv6Network": "2001:db8:1000::/48", "IPv6SubnetLen": "64"}, ["IPv6SubnetLen '64' is invalid"]),
        (
            {"IPv6Network": "2001:db8:1000::/48", "IPv6SubnetMin": "2001:db8:2000::"},
            ["IPv6SubnetMin '2001:db8:2000::' is invalid", "inside IPv6Network 2001:db8:1000::/48"],
        ),
        (
            {"IPv6Network": "2001:db8:1000::/48", "IPv6SubnetMax": "2001:db8:1000:5::1"},
            ["IPv6SubnetMax '2001:db8:1000:5::1' is invalid", "a /64 subnet, such as 2001:db8:1000:5::"],
        ),
        (
            {"IPv6Network": "2001:db8:1000::/48", "IPv6SubnetMin": "198.18.1.0"},
            ["IPv6SubnetMin '198.18.1.0' is invalid", "use an IPv6 address such as"],
        ),
        (
            {"IPv6Network": "2001:db8:1000::/48", "IPv6SubnetMin": "2001:db8:1000:9::",
             "IPv6SubnetMax": "2001:db8:1000:2::"},
            ["IPv6SubnetMin 2001:db8:1000:9:: is above IPv6SubnetMax 2001:db8:1000:2::"],
        ),
        ({"IPv6Network": "2001:db8:1000::/48", "EnableIPv6": "yes"}, ["EnableIPv6 'yes' is invalid"]),
    ],
)
def test_bad_ipv6_keys_are_named_with_a_fix(keys: dict[str, object], expected: list[str]) -> None:
    message = error_of(**keys)
    assert message.startswith(f"{WHERE}: ")
    for part in expected:
        assert part in message


def test_an_ipv4_network_in_ipv4_keys_is_still_checked_in_a_dual_stack_config() -> None:
    assert "SubnetLen 31 is larger than 30" in error_of(IPv6Network="2001:db8:1000::/48", SubnetLen=31)


def test_enable_ipv4_false_without_ipv6_leaves_no_addresses() -> None:
    raw = '{"Network": "198.18.0.0/16", "EnableIPv4": false}'
    with pytest.raises(ConfigError, match=r"EnableIPv4 false without EnableIPv6 true .* no addresses"):
        parse_network_config(raw, backends=CONFIG_PARSERS)


def test_an_ipv6_only_network_has_its_ipv6_pool_alone_and_ignores_the_ipv4_keys() -> None:
    raw = (
        '{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "2001:db8:1000::/48", '
        '"Network": "not even a network", "Backend": {"Type": "vxlan"}}'
    )
    config = parse_network_config(raw, backends=CONFIG_PARSERS)
    assert config.ipv4 is None and config.ipv6_only
    assert config.ipv6 is not None and config.primary is config.ipv6
    assert config.ipv6.network == IPv6Network("2001:db8:1000::/48") and config.ipv6.subnet_len == 64
    assert config.families == (config.ipv6,)
    # A caller that forgot the family fails loudly instead of using some IPv4 network.
    with pytest.raises(NoIPv4Pool):
        _ = config.network
    assert not config.contains_subnet(IPv4Network("198.18.1.0/24"))


def test_an_ipv6_only_network_is_validated_and_refused_for_a_backend_carrying_ipv4_only() -> None:
    bad = (
        '{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "2001:db8::/126", '
        '"Backend": {"Type": "vxlan"}}'
    )
    with pytest.raises(ConfigError, match="IPv6Network 2001:db8::/126 is too small"):
        parse_network_config(bad, backends=CONFIG_PARSERS)
    # No Backend: udp, as in flanneld, which carries IPv4 alone.
    for backend in ("", ', "Backend": {"Type": "udp"}', ', "Backend": {"Type": "extension"}'):
        raw = '{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "2001:db8::/48"' + backend + "}"
        expected = (
            r"Backend.Type '(udp|extension)' carries IPv4 only, and EnableIPv4 false makes the "
            r"network IPv6-only; use Backend alloc, host-gw, vxlan"
        )
        with pytest.raises(ConfigError, match=expected):
            parse_network_config(raw, backends=CONFIG_PARSERS)
