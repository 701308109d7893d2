"""The network config stored at ``<prefix>/config``: flannel's JSON, parsed, defaulted, validated.

Keys are case-insensitive, as Go's ``encoding/json`` matches them, and unknown keys are ignored,
so any config a flanneld cluster runs on is read the same way here. Every error names the key,
the bad value and a value that would work, because the reader is an operator fixing etcd by hand.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import Protocol


class ConfigError(ValueError):
    """An invalid network config; str() is a complete message for the operator."""


@dataclass(frozen=True)
class NetworkConfig:
    network: IPv4Network
    subnet_len: int
    subnet_min: IPv4Address
    subnet_max: IPv4Address
    backend: BackendSettings
    # False when the config names no Backend.Type and the default backend runs (the agent says so).
    backend_type_given: bool = field(default=True, compare=False)

    @property
    def subnet_size(self) -> int:
        return 1 << (32 - self.subnet_len)

    @property
    def subnet_count(self) -> int:
        """How many subnets lie between SubnetMin and SubnetMax: the size of the lease pool."""
        return (int(self.subnet_max) - int(self.subnet_min)) // self.subnet_size + 1

    def contains_subnet(self, subnet: IPv4Network) -> bool:
        """True if subnet is one flannel would hand out under this config."""
        return (
            subnet.prefixlen == self.subnet_len
            and self.subnet_min <= subnet.network_address <= self.subnet_max
        )


def is_unset(raw: object) -> bool:
    """True for an absent key or a literal 0 (flanneld's "use the default"); False and 0.0 are not."""
    return raw is None or (type(raw) is int and raw == 0)


def _lower_keys(value: Mapping[str, object]) -> dict[str, object]:
    return {str(k).lower(): v for k, v in value.items()}


class ConfigFields:
    """Typed reads from a case-insensitive JSON object, with errors naming the key."""

    def __init__(self, where: str, value: Mapping[str, object], parent: str = "") -> None:
        self.where = where
        self.value = _lower_keys(value)
        self.parent = parent

    def fail(self, key: str, raw: object, fix: str) -> ConfigError:
        return ConfigError(f"{self.where}: {self.parent}{key} {raw!r} is invalid; {fix}")

    def get_int(self, key: str, default: int, lo: int, hi: int) -> int:
        raw = self.value.get(key.lower())
        if raw is None:
            return default
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise self.fail(key, raw, f"use a whole number between {lo} and {hi}")
        if not lo <= raw <= hi:
            raise self.fail(key, raw, f"use a whole number between {lo} and {hi}")
        return raw

    def get_bool(self, key: str, default: bool = False) -> bool:
        raw = self.value.get(key.lower())
        if raw is None:
            return default
        if not isinstance(raw, bool):
            raise self.fail(key, raw, "use true or false")
        return raw

    def get_address(self, key: str) -> IPv4Address | None:
        raw = self.value.get(key.lower())
        if raw is None or raw == "":
            return None
        fix = "use an IPv4 address such as 198.18.1.0"
        if not isinstance(raw, str):
            raise self.fail(key, raw, fix)
        try:
            return IPv4Address(raw)
        except ValueError:
            raise self.fail(key, raw, fix) from None


class BackendSettings(Protocol):
    """A backend's parsed ``Backend`` section; only the backend that parsed it reads its fields."""

    @property
    def type(self) -> str: ...

    @property
    def restart_key(self) -> tuple[object, ...]:
        """What the running data path cannot follow in place: a change restarts the agent."""
        ...

    @property
    def summary(self) -> str:
        """The settings an operator checks first, for a log line (e.g. ``VNI 1 port 8472``)."""
        ...

    def restart_reason(self, previous: BackendSettings) -> str:
        """What changed from ``previous`` that makes the agent restart (``VNI 1 -> 2``)."""
        ...


# Parses a backend's section (read through ConfigFields, whose errors name the key); raises ConfigError.
BackendParser = Callable[[ConfigFields], BackendSettings]


@dataclass(frozen=True)
class BackendParsers:
    """The backends a config may name, by their lower-case type, and the one an absent Type means.

    The backends live above this layer (``overlayd.backend``); they hand their parsers down."""

    parsers: Mapping[str, BackendParser]
    default_type: str
    # Backends a config may name that are refused: type -> why, and what to use instead.
    refused: Mapping[str, str] = field(default_factory=dict)

    def refusal(self, backend_type: object) -> str:
        """Why ``backend_type`` cannot be used, as the end of a sentence naming it."""
        why = self.refused.get(backend_type.lower()) if isinstance(backend_type, str) else None
        if why is not None:
            return why
        return f"is invalid; overlayd supports {', '.join(self.parsers)}"

    def parse(self, where: str, raw: object) -> BackendSettings:
        """The ``Backend`` section ``raw`` parsed by the backend it names."""
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            example = json.dumps({"Type": self.default_type})
            raise ConfigError(f"{where}: Backend {raw!r} is not a JSON object; use one such as {example}")
        fields = ConfigFields(where, raw, parent="Backend.")
        backend_type = fields.value.get("type", self.default_type)
        if isinstance(backend_type, str):
            backend_type = backend_type.lower()  # flanneld lower-cases it too
        parser = self.parsers.get(backend_type) if isinstance(backend_type, str) else None
        if parser is None:
            raise ConfigError(f"{where}: Backend.Type {backend_type!r} {self.refusal(backend_type)}")
        return parser(fields)


def _parse_network(fields: ConfigFields) -> IPv4Network:
    raw = fields.value.get("network")
    if raw is not None and raw != "" and not isinstance(raw, str):
        raise fields.fail("Network", raw, 'use an IPv4 CIDR string such as "198.18.0.0/16"')
    if not isinstance(raw, str) or not raw:
        raise ConfigError(
            f'{fields.where}: Network is missing; set it to an IPv4 CIDR such as "198.18.0.0/16"'
        )
    try:
        # Host bits are dropped, as flanneld does ("198.18.3.4/16" means 198.18.0.0/16).
        return IPv4Network(raw, strict=False)
    except ValueError:
        raise fields.fail("Network", raw, 'use an IPv4 CIDR such as "198.18.0.0/16"') from None


def _default_subnet_len(where: str, network: IPv4Network) -> int:
    if network.prefixlen > 28:
        raise ConfigError(
            f"{where}: Network {network} is too small (/{network.prefixlen}); "
            "use a Network of /28 or larger, such as 198.18.0.0/16"
        )
    return 24 if network.prefixlen <= 22 else network.prefixlen + 2


def _bound(
    fields: ConfigFields, key: str, network: IPv4Network, subnet_len: int, default: IPv4Address
) -> IPv4Address:
    value = fields.get_address(key)
    if value is None or value == IPv4Address(0):  # flanneld reads 0.0.0.0 as unset too
        return default
    if value not in network:
        raise fields.fail(key, str(value), f"use an address inside Network {network}")
    aligned = IPv4Network(f"{value}/{subnet_len}", strict=False).network_address
    if aligned != value:
        raise fields.fail(
            key, str(value), f"it must start a /{subnet_len} subnet, such as {aligned}"
        )
    return value


def parse_network_config(
    raw: str | bytes, where: str = "network config", *, backends: BackendParsers
) -> NetworkConfig:
    """Parse and validate the JSON at ``<prefix>/config``; raises ConfigError for the operator.

    ``backends`` parse the ``Backend`` section (``overlayd.backend.select.CONFIG_PARSERS``)."""
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ConfigError(f"{where}: not valid JSON ({exc}); fix the JSON text") from None
    if not isinstance(value, dict):
        raise ConfigError(f'{where}: must be a JSON object such as {{"Network": "198.18.0.0/16"}}')
    fields = ConfigFields(where, value)
    if not fields.get_bool("EnableIPv4", default=True):
        raise ConfigError(
            f"{where}: EnableIPv4 false (an IPv6-only network) is not supported, overlayd serves "
            "IPv4 only; remove EnableIPv4 or set it to true, with an IPv4 Network"
        )
    # Refused rather than run IPv4-only: flanneld (v0.20-v0.28) with EnableIPv6 crashes choosing
    # a subnet while any lease key lacks an IPv6 part (nil IPv6 subnet in its overlap test), so
    # our IPv4-only lease would stop every new dual-stack flanneld node from starting.
    if fields.get_bool("EnableIPv6"):
        raise ConfigError(
            f"{where}: EnableIPv6 true (a dual-stack network) is not supported, overlayd serves "
            "IPv4 only, and its IPv4-only lease would make dual-stack flanneld nodes crash when "
            "they choose a subnet; remove EnableIPv6 (and IPv6Network) from the config, or keep "
            "this node on flanneld"
        )
    network = _parse_network(fields)
    lo, hi = network.prefixlen + 2, 30
    if lo > hi:
        raise ConfigError(
            f"{where}: Network {network} is too small (/{network.prefixlen}); "
            "use a Network of /28 or larger, such as 198.18.0.0/16"
        )
    raw_len = fields.value.get("subnetlen")
    if is_unset(raw_len):
        subnet_len = _default_subnet_len(where, network)
    else:
        fix = f"use a SubnetLen between {lo} and {hi} for Network {network}"
        if isinstance(raw_len, bool) or not isinstance(raw_len, int):
            raise fields.fail("SubnetLen", raw_len, fix)
        if raw_len > hi:
            raise ConfigError(f"{where}: SubnetLen {raw_len} is larger than {hi}; {fix}")
        if raw_len < lo:
            raise ConfigError(
                f"{where}: SubnetLen {raw_len} leaves Network {network} fewer than four "
                f"subnets; {fix}"
            )
        subnet_len = raw_len
    size = 1 << (32 - subnet_len)
    first = network.network_address + size
    last = network.broadcast_address + 1 - size
    subnet_min = _bound(fields, "SubnetMin", network, subnet_len, first)
    subnet_max = _bound(fields, "SubnetMax", network, subnet_len, last)
    if subnet_min > subnet_max:
        raise ConfigError(
            f"{where}: SubnetMin {subnet_min} is above SubnetMax {subnet_max}; "
            "swap them or widen the range"
        )
    return NetworkConfig(
        network=network,
        subnet_len=subnet_len,
        subnet_min=subnet_min,
        subnet_max=subnet_max,
        backend=backends.parse(where, fields.value.get("backend")),
        backend_type_given=_names_backend_type(fields.value.get("backend")),
    )


def _names_backend_type(raw: object) -> bool:
    return isinstance(raw, dict) and "type" in _lower_keys(raw)
