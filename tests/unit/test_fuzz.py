"""Property tests: the network config and lease parsers fail only with their own errors.

Whatever etcd holds — written by flanneld, an operator or an attacker — the agent must get a
``ConfigError`` or ``LeaseError`` it can report, never an unexpected exception that kills a loop.
"""

from __future__ import annotations

import contextlib
import json
from ipaddress import IPv4Address

from hypothesis import given, settings
from hypothesis import strategies as st

from overlayd.backend.select import CONFIG_PARSERS
from overlayd.subnet.config import ConfigError, parse_network_config
from overlayd.subnet.lease import LeaseAttrs, LeaseError, decode_attrs, decode_lease, encode_attrs

FUZZ = settings(max_examples=200, deadline=None)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
CONFIG_KEYS = ["Network", "SubnetLen", "SubnetMin", "SubnetMax", "Backend", "network", "subnetlen"]
BACKEND_KEYS = ["Type", "VNI", "Port", "GBP", "Learning", "DirectRouting", "MTU"]
plausible_configs = st.fixed_dictionaries(
    {},
    optional={
        "Network": st.sampled_from(["198.18.0.0/16", "198.18.0.0/29", "198.18.3.4/24", "x"]) | json_values,
        "SubnetLen": st.integers(-2, 40) | json_values,
        "SubnetMin": st.sampled_from(["198.18.1.0", "198.18.0.7", "10.0.0.0"]) | json_values,
        "SubnetMax": st.sampled_from(["198.18.200.0", "198.18.0.0"]) | json_values,
        "Backend": st.dictionaries(st.sampled_from(BACKEND_KEYS), json_values, max_size=4) | json_values,
    },
)


@FUZZ
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_config_bytes_raise_only_config_error(raw: bytes) -> None:
    with contextlib.suppress(ConfigError):
        parse_network_config(raw, backends=CONFIG_PARSERS)


@FUZZ
@given(st.one_of(plausible_configs, st.dictionaries(st.sampled_from(CONFIG_KEYS), json_values, max_size=5)))
def test_config_objects_raise_only_config_error(value: dict[str, object]) -> None:
    try:
        config = parse_network_config(json.dumps(value), backends=CONFIG_PARSERS)
    except ConfigError:
        return
    assert config.subnet_min <= config.subnet_max
    assert config.network.prefixlen + 2 <= config.subnet_len <= 30


lease_values = st.fixed_dictionaries(
    {},
    optional={
        "PublicIP": st.sampled_from(["192.0.2.11", "192.0.2", "::1"]) | json_values,
        "PublicIPv6": st.sampled_from(["2001:db8::1", "2001:db8::zz"]) | json_values,
        "BackendType": st.sampled_from(["vxlan", "host-gw"]) | json_values,
        "BackendData": st.fixed_dictionaries(
            {}, optional={"VNI": st.integers(-1, 1 << 25) | json_values,
                          "VtepMAC": st.sampled_from(["8a:da:7f:e8:8a:5f", "8A:DA:7F:E8:8A:5F", "nope"])}
        ) | json_values,
    },
)  # fmt: skip


@FUZZ
@given(st.text(max_size=30), st.binary(max_size=300) | lease_values.map(lambda v: json.dumps(v).encode()))
def test_lease_decode_raises_only_lease_error(key: str, raw: bytes) -> None:
    try:
        decode_lease(key, raw)
    except LeaseError as exc:
        assert exc.reason in ("bad_key", "oversized", "not_json", "bad_public_ip", "bad_backend_data")


macs = st.lists(st.integers(0, 255), min_size=6, max_size=6).map(lambda o: ":".join(f"{x:02x}" for x in o))


@FUZZ
@given(st.integers(0, (1 << 32) - 1), st.integers(0, (1 << 24) - 1), macs)
def test_lease_encode_decode_round_trips(ip: int, vni: int, mac: str) -> None:
    attrs = LeaseAttrs(public_ip=IPv4Address(ip), backend_type="vxlan", vni=vni, vtep_mac=mac)
    assert decode_attrs("198.18.1.0-24", encode_attrs(attrs)) == attrs
