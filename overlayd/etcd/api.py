"""What the agent asks of its subnet registry: the interface, its events and its errors.

Two implementations: ``registry.Registry`` on etcd (the only module that imports ``etcd3``) and
``memregistry.MemoryRegistry`` in memory, for tests of the lease and peer logic without etcd.
Both keep flannel's layout: ``<prefix>/config`` and one key per lease under ``<prefix>/subnets/``.

The contract, proven against both by tests/integration/test_registry_contract.py:
- every write gets a revision higher than every earlier one; a listing says the revision it saw;
- ``create_lease`` writes only an absent key; ``take_over`` only a key unchanged since it was
  listed; ``renew`` only a key that still holds our value; each returns None when its guard fails;
- a lease's key is deleted when its TTL runs out; a reservation (no etcd lease) never expires;
- a watch from revision R delivers every put and delete from R on, in order, on its own thread;
  its first failure goes to ``on_error`` and ends it (``WatchCompacted`` when R was compacted);
- when the store cannot be reached every call raises ``RegistryError`` with ``unreachable`` set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network
from typing import Literal, Protocol

from overlayd.subnet.lease import Lease, LeaseAttrs, LeaseError


class RegistryError(RuntimeError):
    """etcd unreachable or failing; the message names the endpoints and the operation.

    ``unreachable``: no endpoint answered. gRPC words that differently from one attempt to the
    next, so a caller that logs each distinct error once compares this flag, not the text.
    """

    def __init__(self, message: str, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable


class WatchCompacted(RegistryError):
    """A watch's start revision was compacted away: re-list and watch from the new revision."""


@dataclass(frozen=True)
class LeaseEvent:
    """One change under ``<prefix>/subnets/``, as seen by a watch."""

    kind: Literal["put", "delete"]
    key: str  # last path element, e.g. "198.18.46.0-24"
    lease: Lease | None  # None for a delete, or for a malformed value (logged)
    revision: int


Cancel = Callable[[], None]


def health_prefix(prefix: str) -> str:
    """Where nodes store their data path views for ``prefix``: beside it, not under it, so no
    flanneld (which lists ``<prefix>/subnets/``) and no watch of ``<prefix>/`` ever sees them."""
    return f"{prefix.rstrip('/')}-overlayd/health/"


class SubnetRegistry(Protocol):
    """Leases and config of one overlay network; thread-safe."""

    # Told about every undecodable lease value (key, revision, error); the agent logs each once.
    on_bad_lease: Callable[[str, int, LeaseError], None]

    def get_config(self) -> tuple[bytes | None, int]:
        """The raw value at ``<prefix>/config`` (None if missing) and the revision of the read."""
        ...

    def put_config(self, raw: bytes) -> int:
        """Store ``raw`` at ``<prefix>/config`` (it outlives every lease); the write's revision."""
        ...

    def watch_config(
        self, start_revision: int, on_change: Callable[[], None], on_error: Callable[[Exception], None]
    ) -> Cancel:
        """Call ``on_change`` on every change of the config key from ``start_revision`` on."""
        ...

    def list_leases(self) -> tuple[list[Lease], int]:
        """All decodable leases and the revision of the read."""
        ...

    def create_lease(
        self, subnet: IPv4Network, attrs: LeaseAttrs, ttl: int, ipv6_subnet: IPv6Network | None = None
    ) -> Lease | None:
        """Create the subnet's key if absent, bound to a new lease of ``ttl`` seconds; None if taken.
        ``ipv6_subnet``: its IPv6 half, in one dual-stack key."""
        ...

    def take_over(self, existing: Lease, attrs: LeaseAttrs, ttl: int) -> Lease | None:
        """Re-put ``existing``'s key with ``attrs`` on a fresh lease; None if it changed since listed."""
        ...

    def delete_lease(self, lease: Lease) -> bool:
        """Delete ``lease``'s key if nobody wrote it since it was listed."""
        ...

    def renew(self, lease: Lease, ttl: int) -> Lease | None:
        """Re-put our value on a fresh lease if the key still holds it; None if gone or not ours."""
        ...

    def lease_remaining(self, lease: Lease) -> float | None:
        """Seconds until our key expires (``math.inf`` for a reservation); None if it is gone."""
        ...

    def put_health(self, node: str, view: bytes, ttl: int) -> None:
        """Store ``node``'s view of the data path at ``<prefix>-overlayd/health/<node>``, bound to a
        new lease of ``ttl`` seconds (outside ``<prefix>/``, which flanneld lists)."""
        ...

    def list_health(self) -> dict[str, bytes]:
        """Every node's stored view of the data path, by node."""
        ...

    def watch_leases(
        self,
        start_revision: int,
        on_events: Callable[[list[LeaseEvent]], None],
        on_error: Callable[[Exception, bool], None],
    ) -> Cancel:
        """Deliver lease changes from ``start_revision`` on; ``on_error(error, compacted)`` ends it."""
        ...

    def close(self) -> None:
        """Cancel every watch and let go of the connection."""
        ...
