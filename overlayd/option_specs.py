"""The agent's option table: each option's flag, help and value parser, and the flanneld-only options."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path


class OptionsError(ValueError):
    """A bad option value; the message names the option, where it came from, and the fix."""


def parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "t", "true", "yes", "on"):
        return True
    if value in ("0", "f", "false", "no", "off"):
        return False
    raise ValueError(f"{raw!r} is not true or false")


def _parse_endpoints(raw: str) -> tuple[str, ...]:
    endpoints = tuple(e.strip() for e in raw.split(",") if e.strip())
    for number, endpoint in enumerate(endpoints, 1):
        if "@" in endpoint:  # not echoed: it may hold a password
            raise ValueError(
                f"endpoint {number} carries user:password@; "
                "give them with --etcd-username and --etcd-password instead"
            )
        if not re.match(r"^(https?://)?[^/]+(:\d+)?/?$", endpoint):
            raise ValueError(f"{endpoint!r} is not a URL such as http://192.0.2.1:2379")
    if not endpoints:
        raise ValueError("no endpoint given")
    return endpoints


def _readable_file(raw: str) -> str:
    """A TLS file checked at start-up, so a typo fails now rather than at the first etcd call."""
    try:
        with open(raw, "rb"):
            pass
    except OSError as exc:
        raise ValueError(f"cannot read {raw!r} ({exc.strerror}); give a readable PEM file") from None
    return raw


def _renew_margin(raw: str) -> int:
    minutes = int(raw)
    if not 1 <= minutes <= 1439:
        raise ValueError(f"{minutes} minutes is outside 1..1439")
    return minutes


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError(f"{value} is not positive")
    return value


def _port(raw: str) -> int:
    value = int(raw)
    if not 0 <= value <= 65535:
        raise ValueError(f"{value} is not a port number (0..65535)")
    return value


def _optional_ipv4(raw: str) -> IPv4Address | None:
    """An IPv4 address; empty is unset, as flanneld reads ``--public-ip=`` (an unset variable)."""
    return IPv4Address(raw) if raw else None


def _optional_ipv6(raw: str) -> IPv6Address | None:
    """An IPv6 address; empty is unset, like ``--public-ip=``."""
    return IPv6Address(raw) if raw else None


def _optional_ip(raw: str) -> IPv4Address | IPv6Address | None:
    """An IPv4 or IPv6 address; empty is unset."""
    return ip_address(raw) if raw else None


def _healthz_ip(raw: str) -> str:
    ip_address(raw or "0.0.0.0")  # a host name would fail only at bind time, restarting the unit
    return raw


def _listen_address(raw: str) -> tuple[str, int] | None:
    """``HOST:PORT`` (``[V6]:PORT`` for IPv6) to listen on; empty or ``off`` disables."""
    if raw.lower() in ("", "off"):
        return None
    host, _, port = raw.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    try:
        ip_address(host)
        if not port.isdigit():
            raise ValueError(port)
        return host, _port(port)
    except ValueError:
        raise ValueError(f"{raw!r} is not IP:PORT such as 127.0.0.1:9464, or off") from None


def _positive_float(raw: str) -> float:
    value = float(raw)
    if value <= 0:
        raise ValueError(f"{value} is not positive")
    return value


def _probe_rate(raw: str) -> float:
    value = float(raw)
    if not 0 <= value <= 1000:
        raise ValueError(f"{value} is not between 0 (probing off) and 1000 probes a second")
    return value


def _log_level(raw: str) -> str:
    level = raw.lower()
    if level not in ("debug", "info", "warning", "error"):
        raise ValueError(f"{raw!r} is not one of debug, info, warning, error")
    return level


def _log_format(raw: str) -> str:
    fmt = raw.lower()
    if fmt not in ("text", "json"):
        raise ValueError(f"{raw!r} is not text or json")
    return fmt


def _verbosity(raw: str) -> int:
    value = int(raw)
    if not 0 <= value <= 2:
        raise ValueError(f"{value} is outside 0..2 (-v or -vv)")
    return value


@dataclass(frozen=True)
class _Spec:
    """How one option is parsed from text; ``repeat`` options collect a list, ``count`` ones count -v.
    A ``repeat`` option with ``split`` also takes a comma-separated list from the environment."""

    convert: Callable[[str], object]
    help: str
    repeat: bool = False
    split: bool = False
    flag: bool = False
    count: bool = False
    short: str | None = None


SPECS: dict[str, _Spec] = {
    "etcd_endpoints": _Spec(_parse_endpoints, "comma-separated etcd URLs"),
    "etcd_prefix": _Spec(str, "etcd prefix of the network config and leases"),
    "etcd_cafile": _Spec(_readable_file, "CA certificate to verify etcd's TLS certificate"),
    "etcd_certfile": _Spec(_readable_file, "client TLS certificate for etcd"),
    "etcd_keyfile": _Spec(_readable_file, "client TLS key for etcd"),
    "etcd_username": _Spec(str, "etcd user name"),
    "etcd_password": _Spec(str, "etcd password"),
    "iface": _Spec(str, "interface name or IP to use for the overlay (repeatable)", repeat=True, split=True),
    # Not split: a comma belongs to a regex ("{1,2}"), and flanneld reads the variable whole.
    "iface_regex": _Spec(str, "regex matching interface names or IPs (repeatable)", repeat=True),
    "iface_can_reach": _Spec(_optional_ip, "pick the interface that routes to this IPv4 or IPv6 address"),
    "public_ip": _Spec(_optional_ipv4, "IPv4 address peers send VXLAN traffic to"),
    "public_ipv6": _Spec(_optional_ipv6, "IPv6 address peers send IPv6 overlay traffic to (dual-stack)"),
    "subnet_file": _Spec(Path, "where to write subnet.env"),
    "subnet_lease_renew_margin": _Spec(
        _renew_margin, "renew the lease this many minutes before expiry, but not before half its time is up"
    ),
    "subnet_lease_ttl": _Spec(_positive_int, "TTL in seconds of the etcd lease bound to our subnet key"),
    "ip_masq": _Spec(parse_bool, "masquerade traffic leaving the overlay", flag=True),
    "ip_masq_fully_random_disable": _Spec(
        parse_bool, "masquerade without fully-random source ports (flanneld v0.28)", flag=True
    ),
    "ip_blackhole_route": _Spec(
        parse_bool, "drop traffic to this host's subnet that no container route takes (a blackhole "
        "route; flanneld v0.28)", flag=True,
    ),
    "iptables_forward_rules": _Spec(parse_bool, "accept forwarded overlay traffic", flag=True),
    "vxlan_ingress_allowlist": _Spec(
        parse_bool, "drop VXLAN packets from addresses that hold no peer lease", flag=True
    ),
    "healthz_ip": _Spec(_healthz_ip, "IP address of the /healthz, /readyz and /metrics server"),
    "healthz_port": _Spec(_port, "port of the /healthz, /readyz and /metrics server (0: off)"),
    "metrics_address": _Spec(
        _listen_address, "IP:PORT serving /metrics, /healthz and /readyz (default 127.0.0.1:9464; off: none)"
    ),
    "state_dir": _Spec(Path, "directory for state the agent keeps across restarts; one agent per directory"),
    "reconcile_interval": _Spec(_positive_float, "seconds between full reconcile passes"),
    "probe_rate": _Spec(
        _probe_rate, "data path probes a second to peers through the overlay, all peers together (0: off)"
    ),
    "log_level": _Spec(_log_level, "debug, info, warning or error"),
    "log_format": _Spec(_log_format, "text, or json: one object per line with ts, level, logger, msg"),
    "verbose": _Spec(
        _verbosity, "-v: debug logs from overlayd; -vv: also from libraries (etcd client, gRPC)",
        count=True, short="-v",
    ),
}


_ONLY_KUBE = "it only applies with --kube-subnet-mgr; overlayd takes subnets from etcd"
# flanneld options that have no effect here, accepted so that a flanneld unit file starts
# unchanged, and logged with the reason. --kube-subnet-mgr is one of them only when false.
FLANNELD_IGNORED: dict[str, str] = {
    "iptables-resync": "the nftables table is checked on every reconcile pass",
    "kube-subnet-mgr": "overlayd takes subnets from etcd",
    "kube-api-url": _ONLY_KUBE,
    "kubeconfig-file": _ONLY_KUBE,
    "kube-annotation-prefix": _ONLY_KUBE,
    "net-config-path": _ONLY_KUBE,
    "set-node-network-unavailable": _ONLY_KUBE,
    "use-multi-cluster-cidr": _ONLY_KUBE,
    "persistent-mac": "the VTEP MAC is always kept, in --state-dir",
    "vmodule": "a klog setting; use -v or --log-level",
    "log_backtrace_at": "a klog setting; use -v or --log-level",
}
def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")
