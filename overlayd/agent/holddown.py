"""The hold-down of deleted peers: their entries stay for a moment, in case the lease returns.

A node whose lease key is deleted by hand re-creates it within milliseconds (its agent sees the
deletion on its watch), and an operator may put a key back just as fast. Removing the node's
entries at once and adding them again moments later drops the packets in between, so a deleted
peer's lease is *held*: its entries stay in the kernel (and in what a full pass wants) for
``HOLD_DOWN`` seconds. A lease that returns for the subnet with the same PublicIP and VTEP MAC
within that time is applied in place, with no kernel write; any other lease for it replaces the
held entries at once, as a changed lease always does. Pure: the caller passes the time in.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum

from overlayd.subnet.lease import Lease

# Seconds a deleted peer's entries stay. Its owner re-creates a deleted key in a few milliseconds,
# a few hundred on a loaded host or behind a slow etcd; a peer that is really gone costs only its
# entries lingering this long (a new node given its subnet replaces them at once).
HOLD_DOWN = 1.0


class HoldEnd(Enum):
    """How a hold ended."""

    RETURNED = "returned"  # the same lease came back: entries kept, nothing written
    REPLACED = "replaced"  # another lease for the subnet: its entries replace the held ones at once
    REMOVED = "removed"  # the hold-down ran out: the entries go


@dataclass(frozen=True)
class HeldPeer:
    """A deleted peer whose entries stay until ``due`` (monotonic seconds)."""

    key: str
    lease: Lease  # the deleted lease, whose entries are kept
    deleted_at: float
    due: float


def same_entries(held: Lease, new: Lease) -> bool:
    """Whether ``new`` needs exactly the entries ``held`` has: the same subnet and attributes
    (PublicIP, backend and its data, whatever the backend). Its revision and etcd lease may
    differ: a re-created key has new ones."""
    return held.subnet == new.subnet and held.ipv6_subnet == new.ipv6_subnet and held.attrs == new.attrs


class HoldDown:
    """The peers held after their lease was deleted, in the order they fall due."""

    def __init__(self, seconds: float = HOLD_DOWN) -> None:
        if not 0 <= seconds <= 1:
            raise ValueError(f"hold-down {seconds} s: use between 0 and 1 s")
        self.seconds = seconds
        self._held: dict[str, HeldPeer] = {}  # insertion order is due order (see hold)

    def __len__(self) -> int:
        return len(self._held)

    def __contains__(self, key: str) -> bool:
        return key in self._held

    def __iter__(self) -> Iterator[HeldPeer]:
        return iter(list(self._held.values()))

    def hold(self, key: str, lease: Lease, deleted_at: float) -> HeldPeer:
        """Keep ``lease``'s entries until ``deleted_at`` + the hold-down. Deletions come in
        order, so each is due no earlier than the one before (kept so if a clock stamp lags)."""
        self._held.pop(key, None)
        last = next(reversed(self._held.values()), None)
        due = deleted_at + self.seconds
        held = self._held[key] = HeldPeer(key, lease, deleted_at, max(due, last.due) if last else due)
        return held

    def take(self, key: str) -> HeldPeer | None:
        """End ``key``'s hold because a lease for it is back; None if it was not held."""
        return self._held.pop(key, None)

    def due(self, now: float) -> list[HeldPeer]:
        """End and return the holds that have run out by ``now``, oldest first."""
        done = []
        for held in self._held.values():
            if held.due > now:
                break
            done.append(held)
        for held in done:
            del self._held[held.key]
        return done

    def timeout(self, now: float) -> float | None:
        """Seconds until the next hold runs out (0 if one has); None while nothing is held."""
        first = next(iter(self._held.values()), None)
        return None if first is None else max(0.0, first.due - now)
