"""The network config stored at ``<prefix>/config``: flannel's JSON, parsed, defaulted, validated.

Keys are case-insensitive, as Go's ``encoding/json`` matches them, and unknown keys are ignored,
so any config a flanneld cluster runs on is read the same way here. Every error names the key,
the bad value and a value that would work, because the reader is an operator fixing etcd by hand.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import Protocol


class ConfigError(ValueError):
    """An invalid network config; str() is a complete message for the operator."""


@dataclass(frozen=True)
class Family:
    """One address family's rules for a pool of subnets, as flanneld applies them to IPv4 (the
    ``Network`` keys) and to IPv6 (the ``IPv6Network`` keys): one parser serves both."""

    version: int  # 4 or 6
    key_prefix: str  # "" for Network, SubnetLen, ...; "IPv6" for IPv6Network, IPv6SubnetLen, ...
    bits: int
    max_subnet_len: int  # room for a gateway and a container: /30, /126
    default_subnet_len: int  # for a Network of ``default_len_up_to`` or larger
    default_len_up_to: int
    example_network: str
    example_subnet: str

    @property
    def smallest_network(self) -> int:
        """The longest prefix a Network may have: four subnets of ``max_subnet_len``."""
        return self.max_subnet_len - 2

    def network(self, text: str) -> IPv4Network | IPv6Network:
        """``text`` as a network of this family, host bits dropped; raises ValueError."""
        net = ip_network(text, strict=False)
        if net.version != self.version:
            raise ValueError(f"not an IPv{self.version} network")
        return net

    def address(self, text: str) -> IPv4Address | IPv6Address:
        """``text`` as an address of this family; raises ValueError."""
        addr = ip_address(text)
        if addr.version != self.version:
            raise ValueError(f"not an IPv{self.version} address")
        return addr


IPV4 = Family(4, "", 32, 30, 24, 22, "198.18.0.0/16", "198.18.1.0")
IPV6 = Family(6, "IPv6", 128, 126, 64, 62, "2001:db8:1000::/48", "2001:db8:1000:1::")


@dataclass(frozen=True)
class SubnetPool:
    """One family's Network and the subnets handed out of it (SubnetMin..SubnetMax, each a
    /subnet_len); the IPv4 pool of a config is its top-level fields, the IPv6 one ``ipv6``."""

    network: IPv4Network | IPv6Network
    subnet_len: int
    subnet_min: IPv4Address | IPv6Address
    subnet_max: IPv4Address | IPv6Address

    @property
    def subnet_size(self) -> int:
        return 1 << (self.network.max_prefixlen - self.subnet_len)

    @property
    def subnet_count(self) -> int:
        return (int(self.subnet_max) - int(self.subnet_min)) // self.subnet_size + 1

    def contains_subnet(self, subnet: IPv4Network | IPv6Network) -> bool:
        """True if subnet is one flannel would hand out from this pool."""
        return (
            subnet.version == self.network.version
            and subnet.prefixlen == self.subnet_len
            and self.subnet_min <= subnet.network_address <= self.subnet_max  # type: ignore[operator]
        )


class NoIPv4Pool(RuntimeError):
    """IPv4 fields asked of an IPv6-only network's config: a caller that forgot that family."""


@dataclass(frozen=True)
class NetworkConfig:
    # The IPv4 pool (Network, SubnetLen, SubnetMin, SubnetMax); None in an IPv6-only network
    # (EnableIPv4 false), whose leases carry an IPv6 subnet alone.
    ipv4: SubnetPool | None
    backend: BackendSettings
    # False when the config names no Backend.Type and the default backend runs (the agent says so).
    backend_type_given: bool = field(default=True, compare=False)
    # EnableIPv6: the IPv6 pool; every lease then carries an IPv6 subnet too (None: IPv4 only).
    ipv6: SubnetPool | None = None

    @property
    def ipv6_only(self) -> bool:
        return self.ipv4 is None

    @property
    def families(self) -> tuple[SubnetPool, ...]:
        """Each enabled family's pool, IPv4 first."""
        return tuple(pool for pool in (self.ipv4, self.ipv6) if pool is not None)

    @property
    def primary(self) -> SubnetPool:
        """The pool a lease is chosen from: IPv4's, or IPv6's in an IPv6-only network."""
        return self.families[0]

    def _v4(self) -> SubnetPool:
        if self.ipv4 is None:
            raise NoIPv4Pool("the IPv4 Network of an IPv6-only network (EnableIPv4 false) was asked for")
        return self.ipv4

    @property
    def network(self) -> IPv4Network:
        return self._v4().network  # type: ignore[return-value]

    @property
    def subnet_len(self) -> int:
        return self._v4().subnet_len

    @property
    def subnet_min(self) -> IPv4Address:
        return self._v4().subnet_min  # type: ignore[return-value]

    @property
    def subnet_max(self) -> IPv4Address:
        return self._v4().subnet_max  # type: ignore[return-value]

    @property
    def subnet_size(self) -> int:
        return self._v4().subnet_size

    @property
    def subnet_count(self) -> int:
        """How many subnets lie between SubnetMin and SubnetMax: the size of the lease pool."""
        return self._v4().subnet_count

    def contains_subnet(self, subnet: IPv4Network) -> bool:
        """True if subnet is one flannel would hand out under this config (IPv4)."""
        return self.ipv4 is not None and self.ipv4.contains_subnet(subnet)


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

    def get_address(self, key: str, family: Family = IPV4) -> IPv4Address | IPv6Address | None:
        raw = self.value.get(key.lower())
        if raw is None or raw == "":
            return None
        fix = f"use an IPv{family.version} address such as {family.example_subnet}"
        if not isinstance(raw, str):
            raise self.fail(key, raw, fix)
        try:
            return family.address(raw)
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

    # Optional: ``network_problem(ipv4: bool, ipv6: bool) -> str | None``, why the section cannot
    # run a network of those families (the config is refused with it), or None.


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
    # The types that run an IPv6-only network (EnableIPv4 false).
    ipv6_only: Collection[str] = ()

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


def _parse_network(fields: ConfigFields, family: Family) -> IPv4Network | IPv6Network:
    key = f"{family.key_prefix}Network"
    example = f'such as "{family.example_network}"'
    cidr = f"IPv{family.version} CIDR {example}"
    raw = fields.value.get(key.lower())
    if raw is not None and raw != "" and not isinstance(raw, str):
        raise fields.fail(key, raw, f"use an IPv{family.version} CIDR string {example}")
    if not isinstance(raw, str) or not raw:
        raise ConfigError(f"{fields.where}: {key} is missing; set it to an {cidr}")
    try:
        # Host bits are dropped, as flanneld does ("198.18.3.4/16" means 198.18.0.0/16).
        return family.network(raw)
    except ValueError:
        raise fields.fail(key, raw, f"use an {cidr}") from None


def _too_small(where: str, key: str, network: IPv4Network | IPv6Network, family: Family) -> ConfigError:
    return ConfigError(
        f"{where}: {key} {network} is too small (/{network.prefixlen}); use a {key} of "
        f"/{family.smallest_network} or larger, such as {family.example_network}"
    )


def _subnet_len(fields: ConfigFields, network: IPv4Network | IPv6Network, family: Family) -> int:
    key, net_key = f"{family.key_prefix}SubnetLen", f"{family.key_prefix}Network"
    lo, hi = network.prefixlen + 2, family.max_subnet_len
    if lo > hi:
        raise _too_small(fields.where, net_key, network, family)
    raw_len = fields.value.get(key.lower())
    if is_unset(raw_len):
        if network.prefixlen <= family.default_len_up_to:
            return family.default_subnet_len
        return network.prefixlen + 2
    fix = f"use a {key} between {lo} and {hi} for {net_key} {network}"
    if isinstance(raw_len, bool) or not isinstance(raw_len, int):
        raise fields.fail(key, raw_len, fix)
    if raw_len > hi:
        raise ConfigError(f"{fields.where}: {key} {raw_len} is larger than {hi}; {fix}")
    if raw_len < lo:
        raise ConfigError(
            f"{fields.where}: {key} {raw_len} leaves {net_key} {network} fewer than four subnets; {fix}"
        )
    return raw_len


def _bound(
    fields: ConfigFields,
    key: str,
    network: IPv4Network | IPv6Network,
    subnet_len: int,
    default: IPv4Address | IPv6Address,
    family: Family,
) -> IPv4Address | IPv6Address:
    value = fields.get_address(key, family)
    if value is None or int(value) == 0:  # flanneld reads 0.0.0.0 (and ::) as unset too
        return default
    if value not in network:
        raise fields.fail(key, str(value), f"use an address inside {family.key_prefix}Network {network}")
    aligned = ip_network(f"{value}/{subnet_len}", strict=False).network_address
    if aligned != value:
        raise fields.fail(key, str(value), f"it must start a /{subnet_len} subnet, such as {aligned}")
    return value


def parse_pool(fields: ConfigFields, family: Family) -> SubnetPool:
    """One family's Network, SubnetLen, SubnetMin and SubnetMax (``IPv6``-prefixed keys for
    IPv6), with flanneld's defaults; raises ConfigError naming the key and the bad value."""
    network = _parse_network(fields, family)
    subnet_len = _subnet_len(fields, network, family)
    size = 1 << (family.bits - subnet_len)
    first = network.network_address + size
    last = network.broadcast_address + 1 - size
    prefix = family.key_prefix
    subnet_min = _bound(fields, f"{prefix}SubnetMin", network, subnet_len, first, family)
    subnet_max = _bound(fields, f"{prefix}SubnetMax", network, subnet_len, last, family)
    if subnet_min > subnet_max:  # type: ignore[operator]
        raise ConfigError(
            f"{fields.where}: {prefix}SubnetMin {subnet_min} is above {prefix}SubnetMax "
            f"{subnet_max}; swap them or widen the range"
        )
    return SubnetPool(network, subnet_len, subnet_min, subnet_max)


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
    enable_ipv4 = fields.get_bool("EnableIPv4", default=True)
    # flanneld reads the IPv6 keys only with EnableIPv6, and ignores them otherwise.
    ipv6 = parse_pool(fields, IPV6) if fields.get_bool("EnableIPv6") else None
    if not enable_ipv4 and ipv6 is None:
        raise ConfigError(
            f"{where}: EnableIPv4 false without EnableIPv6 true leaves the network no "
            "addresses; set EnableIPv6 true with an IPv6Network such as "
            f'"{IPV6.example_network}", or remove EnableIPv4'
        )
    backend = backends.parse(where, fields.value.get("backend"))
    if not enable_ipv4 and backend.type not in backends.ipv6_only:
        raise ConfigError(
            f"{where}: Backend.Type {backend.type!r} carries IPv4 only, and EnableIPv4 false makes "
            f"the network IPv6-only; use Backend {', '.join(sorted(backends.ipv6_only))}, or set "
            "EnableIPv4 true with an IPv4 Network"
        )
    # A section may refuse a family layout it cannot run (``network_problem``, optional).
    network_problem = getattr(backend, "network_problem", None)
    if network_problem is not None and (problem := network_problem(enable_ipv4, ipv6 is not None)):
        raise ConfigError(f"{where}: {problem}")
    # flanneld ignores the IPv4 keys of an IPv6-only network; so do we.
    return NetworkConfig(
        ipv4=parse_pool(fields, IPV4) if enable_ipv4 else None,
        backend=backend,
        backend_type_given=_names_backend_type(fields.value.get("backend")),
        ipv6=ipv6,
    )


def _names_backend_type(raw: object) -> bool:
    return isinstance(raw, dict) and "type" in _lower_keys(raw)
