"""``subnet.env``: the file the CNI plugin and other tools read to learn this host's subnet.

Written atomically (temp file in the same directory, fsync, rename) so a CNI ADD racing with the
agent never reads half a file. Read back at start to prefer the subnet we had before a restart.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from ipaddress import IPv4Interface, IPv4Network
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SubnetEnv:
    network: IPv4Network
    subnet: IPv4Network
    mtu: int
    ip_masq: bool

    def render(self) -> str:
        """The file's text, in flanneld's key order and format."""
        gateway = IPv4Interface((self.subnet.network_address + 1, self.subnet.prefixlen))
        return (
            f"FLANNEL_NETWORK={self.network}\n"
            f"FLANNEL_SUBNET={gateway}\n"
            f"FLANNEL_MTU={self.mtu}\n"
            f"FLANNEL_IPMASQ={'true' if self.ip_masq else 'false'}\n"
        )


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
