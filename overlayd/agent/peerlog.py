"""How many peer changes get a log line of their own, and the summary of the rest.

One line per peer change is what an operator wants from a cluster where nodes come and go; a
lease flood (thousands of changes a second) would write thousands of lines a second. So the
first ``burst`` changes get their own line, then ``rate`` a second (a token bucket), and the
changes left out are counted and summed up in one line per ``interval``. Pure: the caller
passes the time in and writes the lines.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from enum import Enum

BURST = 10  # lines logged one by one at the start of a burst
RATE = 2.0  # lines a second after that
INTERVAL = 10.0  # seconds summed up by one summary line


class PeerChange(Enum):
    """What happened to a peer, as its log line and the summary say it."""

    ADDED = "added"
    CHANGED = "changed"
    REMOVED = "removed"
    RETURNED = "returned"  # a held peer's lease came back within its hold-down


@dataclass(frozen=True)
class Summary:
    """The changes not logged one by one over ``seconds``."""

    counts: dict[PeerChange, int]
    seconds: float

    def line(self) -> str:
        shown = ", ".join(f"{self.counts.get(kind, 0)} {kind.value}" for kind in PeerChange)
        total = sum(self.counts.values())
        return (
            f"{total} more peer changes in the last {self.seconds:.0f} s, not logged one by one: {shown}"
        )


class PeerLogBudget:
    """Decides which peer changes get their own line; counts the others for a summary."""

    def __init__(self, burst: int = BURST, rate: float = RATE, interval: float = INTERVAL) -> None:
        self.burst, self.rate, self.interval = burst, rate, interval
        self._tokens = float(burst)
        self._refilled_at: float | None = None
        self._left_out: Counter[PeerChange] = Counter()
        self._since: float | None = None  # when the first change left out of the summary happened

    def admit(self, change: PeerChange, now: float) -> bool:
        """True: log this change on a line of its own. False: it is counted for the summary."""
        if self._refilled_at is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._refilled_at) * self.rate)
        self._refilled_at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        if self._since is None:
            self._since = now
        self._left_out[change] += 1
        return False

    def summary(self, now: float) -> Summary | None:
        """The summary line's content once ``interval`` has passed since the first change left
        out; None before that, or if none was."""
        if self._since is None or now - self._since < self.interval:
            return None
        done = Summary(dict(self._left_out), now - self._since)
        self._left_out.clear()
        self._since = None
        return done

    def timeout(self, now: float) -> float | None:
        """Seconds until a summary is due; None while none is pending."""
        return None if self._since is None else max(0.0, self._since + self.interval - now)
