"""Acquiring and keeping this host's subnet lease.

flanneld exits when it loses the race for a subnet and when its lease vanishes; we do neither.
Acquisition lists the leases, ranks the options (``allocate.choose_subnets``: the lease that
already carries our PublicIP, then the earlier subnets: ``subnet.env``'s and those the state
directory remembers, then random free ones) and
tries them with guarded transactions; losing a race just moves on to the next option, and when
the listing has gone stale it lists again.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Network

from overlayd.etcd.api import SubnetRegistry
from overlayd.subnet.allocate import SubnetChoice, choose_subnets, stale_own_leases
from overlayd.subnet.config import NetworkConfig
from overlayd.subnet.ipv6only import choose_ipv6_only_subnets, stale_own_ipv6_only_leases
from overlayd.subnet.lease import Lease, LeaseAttrs, is_ipv6_only

log = logging.getLogger(__name__)

DEFAULT_TTL = 86400  # flanneld's lease TTL: one day
DEFAULT_RENEW_MARGIN = 3600.0  # flanneld renews one hour before expiry
# After this many lost races in one listing, the listing is stale: list again.
CHOICES_PER_LISTING = 3
MAX_LISTINGS = 20
RETRY_SLEEP = (0.02, 0.2)  # seconds, jittered, grows with each listing


class AcquireError(RuntimeError):
    """Every attempt lost a race for a subnet; the message says how often and on which Network."""


class LeaseManager:
    """Acquires and renews this host's lease in one overlay network."""

    def __init__(
        self,
        registry: SubnetRegistry,
        public_ip: IPv4Address,
        ttl: int = DEFAULT_TTL,
        renew_margin: float = DEFAULT_RENEW_MARGIN,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry
        self.public_ip = public_ip
        self.ttl = ttl
        self.renew_margin = renew_margin
        self.rng = rng or random.Random()
        self.clock = clock  # monotonic seconds; tests pass one they move
        # monotonic expiry per (key, etcd lease id) we were granted; math.inf for a reservation.
        self._expiry: dict[tuple[str, int], float] = {}
        self._listing: tuple[list[Lease], int] | None = None

    def take_listing(self) -> tuple[list[Lease], int] | None:
        """The listing (leases, revision) the last granted lease was chosen from, with that lease
        in it as granted; handed out once.

        The peer watcher starts from it instead of listing every lease again: at 1000 peers that
        second read and decode was a tenth of the cold start.
        """
        listing, self._listing = self._listing, None
        return listing

    def acquire(
        self,
        config: NetworkConfig,
        attrs: LeaseAttrs,
        previous: IPv4Network | Sequence[IPv4Network] | None,
        previous_ipv6: IPv6Network | None = None,
    ) -> Lease:
        """Hold a lease on a subnet of ``config`` carrying ``attrs``; keeps trying past lost races.

        ``previous``: the subnet(s) this host held before, newest first, taken back when free.

        Raises OutOfSubnets when every subnet is leased, AcquireError when contention never let
        up, RegistryError when etcd is unreachable.
        """
        for listing in range(1, MAX_LISTINGS + 1):
            leases, revision = self.registry.list_leases()
            leases = self._drop_stale(config, leases, attrs)
            choices = self._choices(config, attrs, leases, previous, previous_ipv6)
            for choice in choices[:CHOICES_PER_LISTING]:
                lease = self._try(choice, attrs)
                if lease is not None:
                    # The listing predates our write: it gets our lease as written, or a peer
                    # snapshot made from it would miss our key (and take the lease for lost).
                    # The watch from its revision still delivers everything written since.
                    ours = [known for known in leases if known.key != lease.key]
                    self._listing = ([*ours, lease], revision)
                    return lease
                log.info("lost the race for subnet %s; trying the next one", choice.label)
            lo, hi = RETRY_SLEEP
            time.sleep(self.rng.uniform(lo, hi) * listing)
        raise AcquireError(
            f"could not lease a subnet of {_network_label(config)}: lost every race in "
            f"{MAX_LISTINGS} listings; check for many agents starting at once with the same PublicIP"
        )

    def _choices(
        self,
        config: NetworkConfig,
        attrs: LeaseAttrs,
        leases: list[Lease],
        previous: IPv4Network | Sequence[IPv4Network] | None,
        previous_ipv6: IPv6Network | None,
    ) -> list[SubnetChoice]:
        if config.ipv6 is not None and config.ipv4 is None:
            # An IPv6-only lease is told apart by its PublicIPv6: every such lease's PublicIP is 0.0.0.0.
            assert attrs.public_ipv6 is not None, "an IPv6-only lease needs a PublicIPv6 (checked at start)"
            return choose_ipv6_only_subnets(config.ipv6, leases, attrs.public_ipv6, previous_ipv6, self.rng)
        return choose_subnets(config, leases, self.public_ip, previous, self.rng, previous_ipv6)

    def _drop_stale(self, config: NetworkConfig, leases: list[Lease], attrs: LeaseAttrs) -> list[Lease]:
        """Delete our leases that no longer fit ``config`` (as flanneld does); the rest of the
        listing. One rewritten since the listing is left to the next acquisition to judge."""
        deleted = set()
        if config.ipv4 is None:
            # Our leases of before (dual-stack ones included) carry our PublicIPv6; without one
            # (refused at start) nothing is ours: every IPv6-only lease has PublicIP 0.0.0.0.
            stale = stale_own_ipv6_only_leases(config.ipv6, leases, attrs.public_ipv6) if (  # type: ignore[arg-type]
                config.ipv6 is not None and attrs.public_ipv6 is not None) else []  # fmt: skip
        else:
            stale = stale_own_leases(config, leases, self.public_ip)
            if attrs.public_ipv6 is not None:
                # An IPv6-only lease of ours (PublicIP 0.0.0.0) from before IPv4 was turned on:
                # it would hold the IPv6 subnet we take back.
                stale += [lease for lease in leases if is_ipv6_only(lease) and lease.etcd_lease_id
                          and lease.attrs.public_ipv6 == attrs.public_ipv6]  # fmt: skip
        for lease in stale:
            if self.registry.delete_lease(lease):
                deleted.add(lease.key)
                attrs_of = lease.attrs
                by_v6 = config.ipv4 is None or is_ipv6_only(lease)  # matched by PublicIPv6
                ours = f"PublicIPv6 {attrs_of.public_ipv6}" if by_v6 else f"PublicIP {attrs_of.public_ip}"
                why = stale_reason(config, lease)
                log.warning("deleted lease %s, which carries our %s: %s", lease.key, ours, why)
        return [lease for lease in leases if lease.key not in deleted] if deleted else leases

    def _try(self, choice: SubnetChoice, attrs: LeaseAttrs) -> Lease | None:
        if choice.existing is not None:
            lease = self.registry.take_over(choice.existing, attrs, self.ttl)
        else:
            # The IPv6 half only when there is one: an IPv4-only network calls the registry as before.
            halves = {"ipv6_subnet": choice.ipv6_subnet} if choice.ipv6_subnet else {}
            lease = self.registry.create_lease(choice.subnet, attrs, self.ttl, **halves)
        if lease is not None:
            self._granted(lease)
        return lease

    def _granted(self, lease: Lease) -> None:
        """Remember when ``lease`` expires, to schedule its renewal without asking etcd."""
        expiry = self.clock() + self.ttl if lease.etcd_lease_id else math.inf
        self._expiry = {(lease.key, lease.etcd_lease_id): expiry}

    def renew_at(self, lease: Lease) -> float:
        """The ``clock()`` deadline to renew ``lease``: expiry minus the renew margin.

        At least half the remaining time from now, so a margin as long as the TTL does not turn
        into constant renewal. A reservation never expires: check it again after one TTL. A lease
        this manager did not grant is due now.
        """
        now = self.clock()
        expiry = self._expiry.get((lease.key, lease.etcd_lease_id))
        if expiry is None:
            return now
        if math.isinf(expiry):
            return now + self.ttl
        remaining = expiry - now
        return now + max(remaining - self.renew_margin, remaining / 2)

    def expired(self, lease: Lease) -> bool:
        """Whether ``lease``'s TTL, as granted by this manager, has run out by our clock.

        etcd then deletes our key and peers drop our routes, whether or not we can reach etcd.
        """
        return self.clock() >= self._expiry.get((lease.key, lease.etcd_lease_id), math.inf)

    def renew(self, lease: Lease) -> Lease | None:
        """Extend ``lease`` by one TTL; None if our key is gone (then ``acquire`` again)."""
        renewed = self.registry.renew(lease, self.ttl)
        if renewed is not None:
            self._granted(renewed)
        return renewed


def _network_label(config: NetworkConfig) -> str:
    if config.ipv4 is None and config.ipv6 is not None:
        return f"IPv6Network {config.ipv6.network}"
    return f"Network {config.network}"



def stale_reason(config: NetworkConfig, lease: Lease) -> str:
    """Why our ``lease`` no longer fits ``config``, for the line that says it was deleted."""
    if is_ipv6_only(lease) and config.ipv4 is not None:
        return "it is IPv6-only and the network has IPv4 now; this node takes a lease of both"
    if config.ipv4 is None and config.ipv6 is not None:
        if not is_ipv6_only(lease):
            return (
                f"it has IPv4 subnet {lease.subnet} and the network is IPv6-only (EnableIPv4 false); "
                f"this node takes an IPv6-only lease, its IPv6 subnet {lease.ipv6_subnet} again when free"
            )
        return (
            f"the network is IPv6-only (EnableIPv4 false) and IPv6Network {config.ipv6.network} does "
            f"not hand out its IPv6 subnet {lease.ipv6_subnet}; this node takes another"
        )
    if config.ipv6 is not None and lease.ipv6_subnet is None:
        return (
            "it has no IPv6 subnet and the config is dual-stack (EnableIPv6); "
            "this node takes a dual-stack lease, its IPv4 subnet again when free"
        )
    if lease.ipv6_subnet is not None and config.contains_subnet(lease.subnet):
        return f"its IPv6 subnet {lease.ipv6_subnet} is one the config does not ask for"
    # A renumbering: say so, since containers made before keep the old addresses.
    return (
        f"Network {config.network}, SubnetMin {config.subnet_min} and SubnetMax "
        f"{config.subnet_max} no longer hand it out; this node takes another subnet "
        "(an earlier one if the config hands it out), so re-create its containers "
        f"that have addresses of {lease.subnet}"
    )
