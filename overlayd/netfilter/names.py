"""The names of one network's firewall objects on a host, derived from its etcd prefix.

Agents for several networks run side by side on one host (one per ``--etcd-prefix``, as
flanneld's docs have it). Each keeps its own nftables table and iptables forward chain, and
replaces them whole on every pass: a shared name would have each agent overwrite the other's
Network and allowlist in turn. So the names come from the network's etcd prefix, the one thing
that tells networks apart on a host; they stay the same across restarts, and ``overlayd
cleanup --etcd-prefix`` derives them without asking the agent.

The default prefix keeps the names of releases before this one (``ip overlayd``, ``OVERLAYD-FWD``),
so its upgrade changes nothing. Any other prefix gets a readable part plus a hash of the prefix
(two prefixes that read alike, ``/a.b`` and ``/a_b``, still differ): nftables names are
identifiers of at most 255 characters, iptables chain names at most 28.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

DEFAULT_PREFIX = "/coreos.com/network"
LEGACY_TABLE = "overlayd"  # every agent's table before names came from the prefix
LEGACY_CHAIN = "OVERLAYD-FWD"
CHAIN_MAX = 28  # xtables' name limit, without its NUL
_READABLE_MAX = 32  # characters of the prefix kept readable in the table name
_NOT_WORD = re.compile(r"[^a-z0-9]+")


@dataclass(frozen=True)
class NetfilterNames:
    """The nftables table (family ``ip``) and iptables chain that one network's agent owns."""

    table: str
    forward_chain: str

    @property
    def legacy(self) -> bool:
        """Whether these are the names every agent used before (the default prefix's)."""
        return self.table == LEGACY_TABLE


LEGACY = NetfilterNames(LEGACY_TABLE, LEGACY_CHAIN)


def names_for_prefix(prefix: str) -> NetfilterNames:
    """The names for the network under etcd ``prefix`` (a trailing ``/`` does not count)."""
    prefix = prefix.rstrip("/") or "/"
    if prefix == DEFAULT_PREFIX:
        return LEGACY
    digest = hashlib.sha256(prefix.encode()).hexdigest()[:8]
    readable = _NOT_WORD.sub("_", prefix.lower()).strip("_")[:_READABLE_MAX].rstrip("_")
    table = f"overlayd_{readable}_{digest}" if readable else f"overlayd_{digest}"
    return NetfilterNames(table, f"{LEGACY_CHAIN}-{digest}")
