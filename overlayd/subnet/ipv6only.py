"""IPv6-only leases: flannel's key and value form, with every host's lease told apart by its
PublicIPv6.

flanneld v0.20.2 writes an IPv6-only lease as ``0.0.0.0-0&<subnet6>-<len>`` holding
``"PublicIP":"0.0.0.0"``, and recognises its own lease by PublicIP alone: every host of such a
network then takes the first host's subnet as its own. Here the PublicIP of such a lease is never
read as an owner; the PublicIPv6 is.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from ipaddress import IPv6Address, IPv6Network

from overlayd.subnet.allocate import RANDOM_POOL, OutOfSubnets, SubnetChoice, free_subnets
from overlayd.subnet.config import SubnetPool
from overlayd.subnet.lease import NO_IPV4_SUBNET, Lease, is_ipv6_only


def _fits(pool: SubnetPool, lease: Lease) -> bool:
    return is_ipv6_only(lease) and pool.contains_subnet(lease.ipv6_subnet)  # type: ignore[arg-type]


def own_ipv6_only_lease(pool: SubnetPool, leases: Iterable[Lease], public_ipv6: IPv6Address) -> Lease | None:
    """The IPv6-only lease of the pool that carries our PublicIPv6, if any (the lowest subnet if
    several do); a lease without a PublicIPv6 is nobody's, whatever its PublicIP says."""
    ours = [lease for lease in leases if lease.attrs.public_ipv6 == public_ipv6 and _fits(pool, lease)]
    return min(ours, key=lambda lease: lease.ipv6_subnet, default=None)  # type: ignore[arg-type, return-value]


def stale_own_ipv6_only_leases(
    pool: SubnetPool, leases: Iterable[Lease], public_ipv6: IPv6Address
) -> list[Lease]:
    """Leases carrying our PublicIPv6 (on an etcd lease) that the pool no longer hands out: a
    dual-stack one of ours from before IPv4 was switched off, or one outside a changed
    IPv6Network. They are deleted before a subnet is chosen, as stale own leases are in the other
    families."""
    return [
        lease for lease in leases
        if lease.attrs.public_ipv6 == public_ipv6 and lease.etcd_lease_id and not _fits(pool, lease)
    ]  # fmt: skip


def choose_ipv6_only_subnets(
    pool: SubnetPool,
    leases: Iterable[Lease],
    public_ipv6: IPv6Address,
    previous: IPv6Network | None = None,
    rng: random.Random | None = None,
) -> list[SubnetChoice]:
    """The options for our IPv6-only lease in the order to try them (the lease we hold, else the
    previous subnet when free, then free ones at random); raises OutOfSubnets when there are none.

    Every IPv6 subnet of any lease counts as taken, a dual-stack one's too."""
    lease_list = list(leases)
    mine = own_ipv6_only_lease(pool, lease_list, public_ipv6)
    if mine is not None:
        return [SubnetChoice(NO_IPV4_SUBNET, existing=mine, ipv6_subnet=mine.ipv6_subnet)]
    taken = [lease.ipv6_subnet for lease in lease_list if lease.ipv6_subnet is not None]
    free: list[IPv6Network] = free_subnets(pool, taken, RANDOM_POOL)  # type: ignore[arg-type, assignment]
    (rng or random.Random()).shuffle(free)
    if (
        previous is not None
        and pool.contains_subnet(previous)
        and not any(previous.overlaps(t) for t in taken)
    ):
        free = [previous, *(subnet for subnet in free if subnet != previous)]
    if not free:
        raise OutOfSubnets(
            f"out of subnets: IPv6Network {pool.network} has no free /{pool.subnet_len} between "
            f"IPv6SubnetMin {pool.subnet_min} and IPv6SubnetMax {pool.subnet_max} "
            f"({len(taken)} IPv6 leases held); remove stale leases or widen the IPv6Network"
        )
    return [SubnetChoice(NO_IPV4_SUBNET, ipv6_subnet=subnet) for subnet in free]
