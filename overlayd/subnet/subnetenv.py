"""``subnet.env``: the file the CNI plugin and other tools read to learn this host's subnet.

Written atomically (temp file in the same directory, fsync, rename) so a CNI ADD racing with the
agent never reads half a file. Read back at start to prefer the subnet we had before a restart.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from ipaddress import IPv4Interface, IPv4Network, IPv6Interface, IPv6Network, ip_interface
from pathlib import Path

from overlayd.subnet.config import NetworkConfig
from overlayd.subnet.lease import Lease, serves_ipv6

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SubnetEnv:
    network: IPv4Network | None  # None: an IPv6-only network, whose file has no IPv4 lines
    subnet: IPv4Network | None
    mtu: int
    ip_masq: bool
    ipv6_network: IPv6Network | None = None  # a dual-stack or IPv6-only network's IPv6 half
    ipv6_subnet: IPv6Network | None = None

    @classmethod
    def of(cls, config: NetworkConfig, lease: Lease, mtu: int, ip_masq: bool) -> SubnetEnv:
        """The file for ``lease`` under ``config``: each family both have."""
        v6 = serves_ipv6(config, lease)
        v4 = config.ipv4 is not None
        return cls(
            config.ipv4.network if v4 else None, lease.subnet if v4 else None, mtu, ip_masq,  # type: ignore[union-attr, arg-type]
            config.ipv6.network if v6 else None, lease.ipv6_subnet if v6 else None,  # type: ignore[union-attr]
        )  # fmt: skip

    @property
    def own_subnet(self) -> IPv4Network | IPv6Network | None:
        """The subnet to name in a log line: the IPv4 one, else the IPv6 one."""
        return self.subnet or self.ipv6_subnet

    def render(self) -> str:
        """The file's text, in flanneld's key order and format: each family's network and first
        address (the bridge's), IPv4 then IPv6, then the MTU and IPMASQ."""
        lines = []
        if self.network is not None and self.subnet is not None:
            lines += [f"FLANNEL_NETWORK={self.network}", f"FLANNEL_SUBNET={_gateway(self.subnet)}"]
        if self.ipv6_network is not None and self.ipv6_subnet is not None:
            lines.append(f"FLANNEL_IPV6_NETWORK={self.ipv6_network}")
            lines.append(f"FLANNEL_IPV6_SUBNET={_gateway(self.ipv6_subnet)}")
        lines += [f"FLANNEL_MTU={self.mtu}", f"FLANNEL_IPMASQ={'true' if self.ip_masq else 'false'}"]
        return "".join(f"{line}\n" for line in lines)


def _gateway(subnet: IPv4Network | IPv6Network) -> IPv4Interface | IPv6Interface:
    return ip_interface((subnet.network_address + 1, subnet.prefixlen))  # type: ignore[return-value]


def parse_keys(text: str) -> dict[str, str]:
    """KEY=VALUE lines; blanks and comments skipped."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        values[key.strip()] = value.strip()
    return values


def previous_subnet(path: Path) -> IPv4Network | None:
    """FLANNEL_SUBNET from an existing file as a network, or None if absent or unreadable."""
    try:
        raw = parse_keys(path.read_text()).get("FLANNEL_SUBNET")
    except OSError:
        return None
    if not raw:
        return None
    try:
        return IPv4Interface(raw).network
    except ValueError:
        log.warning("ignoring FLANNEL_SUBNET %r in %s: not an IPv4 CIDR", raw, path)
        return None


def previous_ipv6_subnet(path: Path) -> IPv6Network | None:
    """FLANNEL_IPV6_SUBNET from an existing file as a network, or None if absent or unreadable."""
    try:
        raw = parse_keys(path.read_text()).get("FLANNEL_IPV6_SUBNET")
    except OSError:
        return None
    try:
        return IPv6Interface(raw).network if raw else None
    except ValueError:
        log.warning("ignoring FLANNEL_IPV6_SUBNET %r in %s: not an IPv6 CIDR", raw, path)
        return None
