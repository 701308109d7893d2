"""What the agent's loop is woken by: the typed events on its queue, and why a full pass runs.

Producers (the peer watch, the netlink monitor, signal handlers) only put these on the queue;
the loop's thread handles them in order (``Agent._handle``).
"""

from __future__ import annotations

import queue
from dataclasses import dataclass
from enum import Enum

from overlayd.backend.monitor import DeviceChange
from overlayd.etcd.peerwatch import PeerEvents, PeerSnapshot, PeerWatchDown


@dataclass(frozen=True)
class Wake:
    """Wakes the loop (on stop) without being an event to handle."""


@dataclass(frozen=True)
class Recheck:
    """SIGHUP: check the config, the lease and the kernel now instead of at the next timer pass.

    Operators and tools send HUP expecting a reload; left at its default it would end the agent
    with a status systemd counts as clean, so Restart=on-failure would not bring it back.
    """


AgentEvent = PeerSnapshot | PeerEvents | PeerWatchDown | DeviceChange | Recheck | Wake


class Trigger(Enum):
    """Why a full pass runs; the value is the ``trigger`` label of ``overlayd_reconciles_total``."""

    LEASE = "lease"  # our lease was (re-)acquired
    RESYNC = "resync"  # a peer listing replaced what we knew
    EVENT = "event"  # a peer change the fast path could not apply
    NETLINK = "netlink"  # someone else changed our device
    TIMER = "timer"  # the backstop every --reconcile-interval
    SIGHUP = "sighup"  # an operator asked for a re-check

    @property
    def repairs(self) -> bool:
        """Whether differences this pass finds are drift someone else caused (counted as
        repairs, logged as warnings); at start, after a lease change or a re-list, they are our
        own first programming."""
        return self in (Trigger.TIMER, Trigger.NETLINK, Trigger.SIGHUP)


def drain(events: queue.Queue[AgentEvent]) -> list[AgentEvent]:
    """Every event queued now, without waiting."""
    items: list[AgentEvent] = []
    while True:
        try:
            items.append(events.get_nowait())
        except queue.Empty:
            return items
