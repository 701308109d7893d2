"""Choosing this host's subnet: keep the one we hold, reuse an earlier one, else a random free one.

Pure: the caller lists the leases, we rank the options, and the caller tries them in order with a
create-if-absent transaction. Choosing at random among the first free subnets (as flanneld does)
keeps agents that start together from all racing for the same one.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv4Network, IPv6Network

from overlayd.subnet.config import NetworkConfig, SubnetPool
from overlayd.subnet.lease import Lease, is_ipv6_only

# flanneld picks among the first 100 free subnets; enough spread to avoid racing peers.
RANDOM_POOL = 100


class OutOfSubnets(RuntimeError):
    """Every subnet between SubnetMin and SubnetMax is leased."""


@dataclass(frozen=True)
class SubnetChoice:
    """One option for our subnet; ``existing`` is set when it is a lease we already hold."""

    subnet: IPv4Network
    existing: Lease | None = None
    ipv6_subnet: IPv6Network | None = None  # its IPv6 half, in a dual-stack network

    @property
    def label(self) -> str:
        """The subnet(s) for a log line: ``198.18.46.0/24`` or ``198.18.46.0/24 & 2001:db8:0:2e::/64``."""
        return f"{self.subnet} & {self.ipv6_subnet}" if self.ipv6_subnet else str(self.subnet)


def fits_config(config: NetworkConfig, lease: Lease) -> bool:
    """Whether ``lease`` is one the config hands out: its IPv4 subnet, and an IPv6 subnet of the
    IPv6 pool exactly when the config has one (flanneld's two compatibility tests). In an
    IPv6-only network: an IPv6-only lease of the IPv6 pool."""
    if config.ipv4 is None:
        pool, subnet6 = config.ipv6, lease.ipv6_subnet
        return pool is not None and subnet6 is not None and is_ipv6_only(lease) and pool.contains_subnet(
            subnet6
        )
    if not config.contains_subnet(lease.subnet):
        return False
    if config.ipv6 is None or lease.ipv6_subnet is None:
        return config.ipv6 is None and lease.ipv6_subnet is None
    return config.ipv6.contains_subnet(lease.ipv6_subnet)


def own_lease(config: NetworkConfig, leases: Iterable[Lease], public_ip: IPv4Address) -> Lease | None:
    """The lease that carries our PublicIP and still fits the config, if any (the lowest subnet if
    several do). Filtered before ordering: sorting every lease by its network cost ~8 ms at 1000.

    A lease whose IPv6 half the config does not ask for (or which lacks the half it asks for)
    does not fit: flanneld too deletes such an own lease and takes a new one
    (``stale_own_leases``)."""
    ours = [
        lease for lease in leases
        if lease.attrs.public_ip == public_ip and fits_config(config, lease)
    ]  # fmt: skip
    return min(ours, key=lambda lease: lease.subnet, default=None)


def stale_own_leases(config: NetworkConfig, leases: Iterable[Lease], public_ip: IPv4Address) -> list[Lease]:
    """Leases carrying our PublicIP that the config no longer hands out, in either family (an
    IPv4-only one in a dual-stack network too): flanneld deletes such a lease before choosing a
    subnet. Left alone it would keep peers
    routing a subnet we no longer serve to us, and hold that subnet, until its etcd lease expired
    (up to a day). A dual-stack one also shares our VTEP MAC: when it expired, flanneld peers
    would delete that MAC's FDB entry, the one our new lease's traffic needs. Deleted first, its
    IPv4 subnet is free for us again (``subnet.env`` still names it). Reservations (no etcd
    lease) are an operator's and stay."""
    return [
        lease for lease in leases
        if lease.attrs.public_ip == public_ip and lease.etcd_lease_id and not fits_config(config, lease)
    ]  # fmt: skip


def all_subnets(config: NetworkConfig | SubnetPool) -> Iterator[IPv4Network]:
    """Every subnet the config (or one family's pool) hands out, SubnetMin to SubnetMax in order
    (lazily)."""
    size = config.subnet_size
    address = int(config.subnet_min)
    make = type(config.network)
    while address <= int(config.subnet_max):
        yield make((address, config.subnet_len))
        address += size


def free_subnets(
    config: NetworkConfig | SubnetPool, taken: Iterable[IPv4Network], limit: int
) -> list[IPv4Network]:
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
    previous_ipv6: IPv6Network | None = None,
) -> list[SubnetChoice]:
    """Options in the order to try them; raises OutOfSubnets when there are none.

    ``previous`` is the subnet (or subnets, newest first) this host held before: each one the
    config hands out and no lease overlaps comes before the random ones, so a node whose Network
    was changed and changed back takes its first subnet again. In a dual-stack network each
    option carries an IPv6 subnet too (``previous_ipv6`` first when free)."""
    lease_list = list(leases)
    mine = own_lease(config, lease_list, public_ip)
    if mine is not None:
        return [SubnetChoice(mine.subnet, existing=mine)]
    # An IPv6-only lease (``0.0.0.0-0``) holds no IPv4 space: counted, its 0.0.0.0/0 would leave
    # no subnet free, as flanneld then reports "out of subnets".
    taken = [lease.subnet for lease in lease_list if not is_ipv6_only(lease)]
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
    if config.ipv6 is not None:
        return _with_ipv6_halves(config.ipv6, choices, lease_list, previous_ipv6, rng or random.Random())
    return choices


def _with_ipv6_halves(
    pool: SubnetPool,
    choices: list[SubnetChoice],
    leases: list[Lease],
    previous: IPv6Network | None,
    rng: random.Random,
) -> list[SubnetChoice]:
    """``choices`` each paired with a free IPv6 subnet (the previous one first, else one at random
    from the first free ones), so that both halves are leased as one key."""
    # An IPv4-only lease has no IPv6 half to avoid: it is skipped, where flanneld crashes.
    taken = [lease.ipv6_subnet for lease in leases if lease.ipv6_subnet is not None]
    free = free_subnets(pool, taken, RANDOM_POOL + len(choices))  # type: ignore[arg-type]
    if not free:
        raise OutOfSubnets(
            f"out of subnets: IPv6Network {pool.network} has no free /{pool.subnet_len} between "
            f"IPv6SubnetMin {pool.subnet_min} and IPv6SubnetMax {pool.subnet_max} "
            f"({len(taken)} dual-stack leases held); remove stale leases or widen the IPv6Network"
        )
    rng.shuffle(free)
    if previous is not None and previous in free:
        free.remove(previous)  # type: ignore[arg-type]
        free.insert(0, previous)  # type: ignore[arg-type]
    # Paired in turn: two options that lose a race move on to other IPv6 subnets too.
    return [
        replace(choice, ipv6_subnet=free[i % len(free)])  # type: ignore[arg-type]
        for i, choice in enumerate(choices)
    ]
