"""When the timer's full reconcile pass runs, and which passes dump every entry.

The pass is due every ``interval``. Its dump of every entry costs 20-40 ms at 1000 peers on a
slow machine, and peer events arriving meanwhile queue behind it; so a due pass waits for a
pause of ``pause`` seconds without peer events, but never more than one ``interval``: under
constant churn it still runs at least every two intervals. Any other full pass (an event's
fallback, a re-list, a netlink change) does its job and discharges it. Pure: the caller passes
the time in.
"""

from __future__ import annotations

EVENT_PAUSE = 0.1  # seconds without a peer event that let a due pass run
# While the netlink monitor runs, a timer pass dumps every entry only every this many passes. The
# monitor reports drift at once (a socket overflow as well), and at 1000 peers the dump (~20 ms on
# a slow machine) was most of the idle cost. What no message reports, such as routes the kernel
# flushes silently, is still found within a minute at the default interval.
TIMER_DUMP_EVERY = 6


class PassTimer:
    def __init__(self, interval: float, now: float, pause: float = EVENT_PAUSE) -> None:
        self.interval = interval
        self.pause = pause
        self.next_tick = now + interval
        self.owed_since: float | None = None  # when the pass fell due, while it waits
        self._last_event = float("-inf")

    def timeout(self, now: float) -> float:
        """How long the loop may block waiting for events."""
        timeout = max(0.0, self.next_tick - now)
        if self.owed_since is not None:
            timeout = min(timeout, self.pause)
        return timeout

    def ticked(self, now: float) -> bool:
        """True once per interval: time for the lease and config checks (never held back)."""
        if now < self.next_tick:
            return False
        if self.owed_since is None:
            self.owed_since = now
        self.next_tick = now + self.interval
        return True

    def run_pass(self, now: float, peer_events: bool, other_pass: bool) -> bool:
        """Whether the owed pass runs now; ``other_pass``: a full pass runs anyway (and covers it)."""
        if peer_events:
            self._last_event = now
        if self.owed_since is None:
            return False
        if other_pass or now - self._last_event >= self.pause or now - self.owed_since >= self.interval:
            self.owed_since = None
            return True
        return False


class EntryDumps:
    """Which full passes dump and repair every entry: all of them, except timer passes while the
    netlink monitor runs, of which every ``every``-th does. Any other pass resets the count."""

    def __init__(self, every: int = TIMER_DUMP_EVERY) -> None:
        self.every = every
        self.undumped = 0  # timer passes since the entries were last dumped

    def due(self, timer: bool, monitored: bool) -> bool:
        if timer and monitored:
            self.undumped += 1
            if self.undumped < self.every:
                return False
        self.undumped = 0
        return True
