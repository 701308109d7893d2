"""What a running agent does when the network config in etcd changes: apply, restart, or hold.

A Network (or SubnetLen, SubnetMin, SubnetMax) change that no longer hands out subnets nodes
hold would renumber them: a running agent that followed it would drop its lease, take a random
new subnet and leave every running container with an address no route leads to. So while any
live lease (ours or a peer's) falls outside the stored config, the agent *holds*: it keeps the
config in force (lease, renewal, data path, firewall, subnet.env) and says so loudly, until the
config is put back (the hold clears, nothing moved) or every node outside has been renumbered
by an agent restart (the config then fits every lease and is applied). Pure: no I/O here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from ipaddress import IPv4Network, IPv6Network

from overlayd.subnet.config import NetworkConfig, SubnetPool
from overlayd.subnet.lease import Lease

NAMED_LEASES = 3  # leases named in a message; the count says how many more


class ConfigAction(Enum):
    """What the agent does with the stored config."""

    UNCHANGED = "unchanged"  # the stored config is the one in force
    APPLY = "apply"  # every live lease fits it: use it from now on
    RESTART = "restart"  # a backend change the data path cannot follow (a new VNI): a clean restart
    SWITCH = "switch"  # another backend: the old one's kernel state removed, the new one brought up
    HOLD = "hold"  # live leases fall outside it: keep the config in force, report


@dataclass(frozen=True)
class ConfigDecision:
    """The verdict on one re-read of the stored config, and what to say about it."""

    action: ConfigAction
    in_force: NetworkConfig
    stored: NetworkConfig
    own_subnet: IPv4Network | IPv6Network
    own_outside: bool  # the stored config does not hand out this node's subnet
    others_outside: tuple[Lease, ...]  # other nodes' live leases it does not hand out, by subnet
    announce: bool = False  # a new hold (or a hold on another stored config): log it once
    cleared: bool = False  # a hold ended with this verdict: log that once

    @property
    def outside_count(self) -> int:
        """How many live leases (this node's included) the stored config does not hand out."""
        return len(self.others_outside) + (1 if self.own_outside else 0)


def leases_outside(
    current: NetworkConfig | None, proposed: NetworkConfig, leases: Iterable[Lease]
) -> list[Lease]:
    """The leases ``current`` hands out (every lease when there is none) that ``proposed`` does
    not, by subnet. Leases already outside ``current`` are skipped by every agent, so a change
    does not harm them."""
    return sorted(
        (lease for lease in leases if renumbers(current, proposed, lease)),
        key=lambda lease: (lease.subnet, lease.own_subnet.network_address.packed),
    )


def renumbers(current: NetworkConfig | None, proposed: NetworkConfig, lease: Lease) -> bool:
    """Whether ``proposed`` no longer hands out ``lease``'s IPv4 subnet, or its IPv6 one while
    both configs are dual-stack (turning IPv6 on or off adds or drops a half: no renumbering)."""
    handed_out = current is None or current.contains_subnet(lease.subnet)
    if handed_out and not proposed.contains_subnet(lease.subnet):
        return True
    subnet6, old6, new6 = lease.ipv6_subnet, current.ipv6 if current else None, proposed.ipv6
    if subnet6 is None or new6 is None or (current is not None and old6 is None):
        return False
    return (old6 is None or old6.contains_subnet(subnet6)) and not new6.contains_subnet(subnet6)


def decide(
    in_force: NetworkConfig,
    stored: NetworkConfig,
    own: Lease,
    peers: Iterable[Lease],
    held: ConfigDecision | None = None,
) -> ConfigDecision:
    """Judge ``stored`` against the leases live under ``in_force``; ``held`` is the previous
    verdict while holding (None otherwise). ``peers`` may include ``own``."""
    if stored == in_force:
        return ConfigDecision(
            ConfigAction.UNCHANGED, in_force, stored, own.own_subnet, False, (), cleared=held is not None
        )
    others = [lease for lease in peers if lease.own_subnet != own.own_subnet]
    own_outside = renumbers(in_force, stored, own)
    others_outside = tuple(leases_outside(in_force, stored, others))
    if own_outside or others_outside:
        announce = held is None or held.stored != stored
        return ConfigDecision(
            ConfigAction.HOLD, in_force, stored, own.own_subnet, own_outside, others_outside,
            announce=announce,
        )
    action = ConfigAction.APPLY
    if (stored.ipv4 is None) != (in_force.ipv4 is None):
        # IPv4 turned on or off: the lease key changes form (``0.0.0.0-0&...``), so start anew.
        action = ConfigAction.RESTART
    elif stored.backend.type != in_force.backend.type:
        action = ConfigAction.SWITCH
    elif stored.backend.restart_key != in_force.backend.restart_key:
        action = ConfigAction.RESTART
    return ConfigDecision(action, in_force, stored, own.own_subnet, False, (), cleared=held is not None)


def describe(config: NetworkConfig, other: NetworkConfig) -> str:
    """``config``'s Network, with its SubnetLen where it differs from ``other``'s and SubnetMin and
    SubnetMax where they are not the Network's defaults: what tells the two configs apart."""
    if config.ipv4 is None and other.ipv4 is None and config.ipv6 is not None and other.ipv6 is not None:
        return " ".join(["IPv6-only", *_pool_parts(config.ipv6, other.ipv6, "IPv6")])
    if config.ipv4 is None or other.ipv4 is None:
        six = f" IPv6Network {config.ipv6.network}" if config.ipv6 is not None else ""
        return f"Network {config.ipv4.network}{six}" if config.ipv4 is not None else f"IPv6-only{six}"
    network, *rest = _pool_parts(config.ipv4, other.ipv4, "")
    if config.ipv6 is not None and other.ipv6 is not None and config.ipv6 != other.ipv6:
        network += f" IPv6Network {config.ipv6.network} IPv6SubnetLen {config.ipv6.subnet_len}"
    return " ".join([network, *rest])


def _pool_parts(pool: SubnetPool, other: SubnetPool, family: str) -> list[str]:
    """``pool``'s Network, its SubnetLen where it differs from ``other``'s, and SubnetMin and
    SubnetMax where they are not the Network's defaults, keys spelt with ``family`` (``IPv6``)."""
    parts = [f"{family}Network {pool.network}"]
    if pool.subnet_len != other.subnet_len:
        parts.append(f"{family}SubnetLen {pool.subnet_len}")
    if pool.subnet_min != pool.network.network_address + pool.subnet_size:
        parts.append(f"{family}SubnetMin {pool.subnet_min}")
    if pool.subnet_max != pool.network.broadcast_address + 1 - pool.subnet_size:
        parts.append(f"{family}SubnetMax {pool.subnet_max}")
    return parts


def name_leases(leases: Iterable[Lease], limit: int = NAMED_LEASES) -> str:
    """``198.18.7.0/24 (192.0.2.12), ... and 4 more``: a few leases and how many are left."""
    listed = list(leases)
    named = ", ".join(f"{lease.own_subnet} ({lease.public_address})" for lease in listed[:limit])
    more = len(listed) - limit
    return f"{named} and {more} more" if more > 0 else named


def hold_message(decision: ConfigDecision, where: str, restore: str) -> str:
    """The ERROR line of a new hold: both configs, this node's subnet, what falls outside, and
    the two fixes. ``restore`` is a command that puts the config in force back."""
    old = describe(decision.in_force, decision.stored)
    new = describe(decision.stored, decision.in_force)
    head = f"{where} changed from {old} to {new}"
    if decision.own_outside:
        others_outside = decision.others_outside
        others = (
            f" (nor {len(others_outside)} other live lease(s): {name_leases(others_outside)})"
            if others_outside
            else ""
        )
        return (
            f"{head}, which does not hand out this node's subnet {decision.own_subnet}{others}; "
            f"keeping {old} in force: lease, renewal and data path unchanged, so running containers "
            f"keep talking. This node needs a restart or the old config back: put it back ({restore}), "
            "or renumber this node by restarting its agent (systemctl restart overlayd; it takes a "
            "subnet of the new Network) and then re-create its containers"
        )
    others_outside = decision.others_outside
    return (
        f"{head}, which still hands out this node's subnet {decision.own_subnet} but not "
        f"{len(others_outside)} other node(s)' live lease(s): {name_leases(others_outside)}; "
        f"keeping {old} in force so their containers keep reaching this node's. Put the old config "
        f"back ({restore}), or renumber those nodes by restarting their agents (systemctl restart "
        "overlayd) and re-creating their containers; this node then takes the new config by itself"
    )


def hold_reason(decision: ConfigDecision) -> str:
    """The short form for /readyz and systemd's STATUS."""
    old = describe(decision.in_force, decision.stored)
    new = describe(decision.stored, decision.in_force)
    if decision.own_outside:
        whose = f"this node's subnet {decision.own_subnet}"
        if decision.others_outside:
            whose += f" and {len(decision.others_outside)} other lease(s)"
        fix = "put the old config back, or restart the agent to renumber this node"
    else:
        others_outside = decision.others_outside
        whose = f"{len(others_outside)} other node(s)' lease(s): {name_leases(others_outside)}"
        fix = "put the old config back, or restart those nodes' agents to renumber them"
    return f"config mismatch: etcd's {new} does not hand out {whose}; running {old} until fixed ({fix})"


def clear_message(decision: ConfigDecision, where: str) -> str:
    """The line that ends a hold."""
    if decision.action is ConfigAction.UNCHANGED:
        return (
            f"{where} is back to the config in force ({describe(decision.in_force, decision.in_force)}): "
            f"config mismatch cleared, this node keeps subnet {decision.own_subnet}, nothing moved"
        )
    return (
        f"{where}: every live lease now fits {describe(decision.stored, decision.in_force)}: "
        f"config mismatch cleared, taking it in force (this node keeps subnet {decision.own_subnet})"
    )
