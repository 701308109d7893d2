"""Choosing this host's subnet: keep the one we hold, reuse an earlier one, else a random free one.

Pure: the caller lists the leases, we rank the options, and the caller tries them in order with a
create-if-absent transaction. Choosing at random among the first free subnets (as flanneld does)
keeps agents that start together from all racing for the same one.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from overlayd.subnet.config import NetworkConfig
from overlayd.subnet.lease import Lease

# flanneld picks among the first 100 free subnets; enough spread to avoid racing peers.
RANDOM_POOL = 100


class OutOfSubnets(RuntimeError):
    """Every subnet between SubnetMin and SubnetMax is leased."""


@dataclass(frozen=True)
class SubnetChoice:
    """One option for our subnet; ``existing`` is set when it is a lease we already hold."""

    subnet: IPv4Network
    existing: Lease | None = None


def own_lease(config: NetworkConfig, leases: Iterable[Lease], public_ip: IPv4Address) -> Lease | None:
    """The lease that carries our PublicIP and still fits the config, if any (the lowest subnet if
    several do). Filtered before ordering: sorting every lease by its network cost ~8 ms at 1000.

    A dual-stack lease (flanneld's, from when the config had EnableIPv6) does not fit: the config
    has no IPv6 now (overlayd refuses EnableIPv6), and flanneld too deletes an own lease whose
    IPv6 half the config does not ask for (``stale_own_leases``)."""
    ours = [
        lease for lease in leases
        if lease.attrs.public_ip == public_ip and config.contains_subnet(lease.subnet)
        and lease.ipv6_subnet is None
    ]  # fmt: skip
    return min(ours, key=lambda lease: lease.subnet, default=None)


def stale_own_leases(config: NetworkConfig, leases: Iterable[Lease], public_ip: IPv4Address) -> list[Lease]:
    """Leases carrying our PublicIP that the config no longer hands out, or dual-stack ones:
    flanneld deletes such a lease before choosing a subnet. Left alone it would keep peers
    routing a subnet we no longer serve to us, and hold that subnet, until its etcd lease expired
    (up to a day). A dual-stack one also shares our VTEP MAC: when it expired, flanneld peers
    would delete that MAC's FDB entry, the one our new lease's traffic needs. Deleted first, its
    IPv4 subnet is free for us again (``subnet.env`` still names it). Reservations (no etcd
    lease) are an operator's and stay."""
    return [
        lease for lease in leases
        if lease.attrs.public_ip == public_ip and lease.etcd_lease_id
        and (lease.ipv6_subnet is not None or not config.contains_subnet(lease.subnet))
    ]  # fmt: skip


def all_subnets(config: NetworkConfig) -> Iterator[IPv4Network]:
    """Every subnet the config hands out, SubnetMin to SubnetMax in order (lazily)."""
    size = config.subnet_size
    address = int(config.subnet_min)
    while address <= int(config.subnet_max):
        yield IPv4Network((address, config.subnet_len))
        address += size


def free_subnets(config: NetworkConfig, taken: Iterable[IPv4Network], limit: int) -> list[IPv4Network]:
    """Up to ``limit`` subnets in SubnetMin..SubnetMax that overlap no taken one, in order."""
    # Same-length leases (the usual case) are a set lookup; only odd-sized ones need overlap tests.
    taken_list = list(taken)
    same_len = {s for s in taken_list if s.prefixlen == config.subnet_len}
    odd = [s for s in taken_list if s.prefixlen != config.subnet_len]
    result: list[IPv4Network] = []
    if limit <= 0:
        return result
    for subnet in all_subnets(config):
        if subnet not in same_len and not any(subnet.overlaps(other) for other in odd):
            result.append(subnet)
            if len(result) >= limit:
                break
    return result


def _earlier(previous: IPv4Network | Sequence[IPv4Network] | None) -> list[IPv4Network]:
    """The earlier subnets to prefer, newest first, each once."""
    if previous is None:
        return []
    listed = [previous] if isinstance(previous, IPv4Network) else list(previous)
    return list(dict.fromkeys(listed))


def choose_subnets(
    config: NetworkConfig,
    leases: Iterable[Lease],
    public_ip: IPv4Address,
    previous: IPv4Network | Sequence[IPv4Network] | None = None,
    rng: random.Random | None = None,
) -> list[SubnetChoice]:
    """Options in the order to try them; raises OutOfSubnets when there are none.

    ``previous`` is the subnet (or subnets, newest first) this host held before: each one the
    config hands out and no lease overlaps comes before the random ones, so a node whose Network
    was changed and changed back takes its first subnet again."""
    lease_list = list(leases)
    mine = own_lease(config, lease_list, public_ip)
    if mine is not None:
        return [SubnetChoice(mine.subnet, existing=mine)]
    taken = [lease.subnet for lease in lease_list]
    earlier = [
        subnet for subnet in _earlier(previous)
        if config.contains_subnet(subnet) and not any(subnet.overlaps(other) for other in taken)
    ]  # fmt: skip
    choices = [SubnetChoice(subnet) for subnet in earlier]
    pool = [s for s in free_subnets(config, taken, RANDOM_POOL) if s not in earlier]
    (rng or random.Random()).shuffle(pool)
    choices.extend(SubnetChoice(subnet) for subnet in pool)
    if not choices:
        raise OutOfSubnets(
            f"out of subnets: Network {config.network} has no free /{config.subnet_len} between "
            f"SubnetMin {config.subnet_min} and SubnetMax {config.subnet_max} "
            f"({len(lease_list)} leases held); remove stale leases or widen the Network"
        )
    return choices
