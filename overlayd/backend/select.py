"""The backends overlayd has, by the ``Type`` a network config names them with.

A new backend is a folder under ``overlayd/backend/`` whose class satisfies
``overlayd.backend.api.Backend``, added to ``BACKENDS`` here. ``REFUSED`` names flannel's other
backends with why overlayd does not run them and what to use instead, so a config naming one
fails with that sentence rather than a bare "invalid". Whoever parses a network config passes
``CONFIG_PARSERS``; ``install`` hands the backends' lease codecs down to ``overlayd.subnet``,
which decodes leases below this layer (for ``overlayd.etcd``) and cannot import them; the command
line calls it at start.
"""

from __future__ import annotations

import json

from overlayd.backend.alloc.backend import Alloc
from overlayd.backend.api import Backend, Ipv6Support
from overlayd.backend.extension.backend import Extension
from overlayd.backend.hostgw.backend import HostGw
from overlayd.backend.udp.backend import Udp
from overlayd.backend.vxlan.backend import Vxlan
from overlayd.backend.wireguard.backend import Wireguard
from overlayd.subnet.config import BackendParsers, ConfigError, NetworkConfig
from overlayd.subnet.lease import install_backend_data

BACKENDS: dict[str, type[Backend]] = {
    backend.type: backend for backend in (Vxlan, HostGw, Udp, Alloc, Extension, Wireguard)
}
# What a config without Backend.Type means: udp, exactly as in flanneld, so a flanneld cluster's
# config means the same data path to both.
DEFAULT_TYPE = Udp.type

_CLOUD = (
    "routes through the {cloud} API, which overlayd does not call; use Backend vxlan, or host-gw "
    "where the hosts share one L2 segment"
)
# flannel's backends that overlayd refuses, by Type: why, and what to use instead.
REFUSED: dict[str, str] = {
    "ipip": (
        "is not supported: overlayd has no ipip backend, and the kernels it is tested on have no ipip "
        "module (`ip link add type ipip` fails with \"Unknown device type\"); use Backend vxlan, or "
        "host-gw where the hosts share one L2 segment"
    ),
    "ipsec": (
        "needs strongSwan's charon, which overlayd does not drive; use Backend vxlan, and encrypt "
        "the underlay if the traffic must be"
    ),
    "aws-vpc": _CLOUD.format(cloud="AWS VPC route table"),
    "gce": _CLOUD.format(cloud="Google Compute Engine routes"),
    "ali-vpc": _CLOUD.format(cloud="Alibaba Cloud VPC"),
    "tencent-vpc": _CLOUD.format(cloud="Tencent Cloud VPC"),
}
CONFIG_PARSERS = BackendParsers(
    parsers={name: backend.parse_config for name, backend in BACKENDS.items()},
    default_type=DEFAULT_TYPE,
    refused=REFUSED,
    ipv6_only={name for name, b in BACKENDS.items() if b.ipv6_support is Ipv6Support.IPV6_ONLY},
)


def default_type_notice(where: str) -> str:
    """What the agent says once at start when ``where`` names no Backend.Type: which backend runs,
    and the one-line fix for those who meant VXLAN."""
    fix = json.dumps({"Backend": {"Type": Vxlan.type}})
    return (
        f"{where} names no Backend.Type: running the {DEFAULT_TYPE} backend, as flanneld does "
        f"(packets forwarded in user space, far slower than {Vxlan.type}); if you meant {Vxlan.type}, "
        f"add {fix[1:-1]} to the config"
    )


def ipv6_half_notice(config: NetworkConfig, where: str) -> str | None:
    """What the agent says once when ``config`` is dual-stack and its backend carries IPv4 alone
    (flanneld runs such a config the same way); None otherwise."""
    backend = BACKENDS.get(config.backend.type)
    dual_stack = config.ipv4 is not None and config.ipv6 is not None
    if not dual_stack or backend is None or backend.ipv6_support is not Ipv6Support.NONE:
        return None
    carriers = sorted(
        name for name, b in BACKENDS.items() if b.ipv6_support is not Ipv6Support.NONE and b.routes_traffic
    )
    return (
        f"{where} is dual-stack but Backend.Type {config.backend.type} carries IPv4 only (as flanneld's "
        f"does): containers get IPv6 addresses of {config.ipv6.network} that no other host reaches; "  # type: ignore[union-attr]
        f"use Backend {', '.join(carriers)} for IPv6, or remove EnableIPv6"
    )


def backend_for(backend_type: str, where: str = "network config") -> Backend:
    """A new instance of the backend ``backend_type``; ConfigError, as the config parser words
    it, for a type overlayd does not have."""
    backend = BACKENDS.get(backend_type.lower())
    if backend is None:
        raise ConfigError(f"{where}: Backend.Type {backend_type!r} {CONFIG_PARSERS.refusal(backend_type)}")
    return backend()


def install() -> None:
    """Hand the backends' lease codecs down to ``overlayd.subnet``."""
    for name, backend in BACKENDS.items():
        if backend.data_codec is not None:  # the others' BackendData is kept whole
            install_backend_data(name, backend.data_codec)
