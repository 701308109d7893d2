"""Log a failure that repeats on every retry once when it starts and once when it ends.

While etcd is down, the lease check, the config re-read and the peer watch each fail on every
attempt; a line per attempt buries the one line that matters (what failed, and since when) and
fills disks during a long outage. Each retrying caller keeps one ``Outage`` and reports every
attempt's outcome to it.
"""

from __future__ import annotations

import logging
import time


class Outage:
    """The state of one retried operation: failing (since when) or fine."""

    def __init__(self, logger: logging.Logger, what: str, level: int = logging.WARNING) -> None:
        self.logger, self.what, self.level = logger, what, level
        self.since: float | None = None  # time.monotonic() of the first failure, None while fine
        self.failures = 0
        self.kind = ""  # the type of the last logged error: a different kind of failure is news

    def failed(self, error: object, hint: str = "") -> None:
        """Record a failed attempt; only the first of a run, or of a new kind of error, is logged."""
        self.failures += 1
        if self.since is None or type(error).__name__ != self.kind:
            self.since = self.since or time.monotonic()
            self.kind = type(error).__name__
            self.logger.log(self.level, "%s: %s%s", self.what, error, hint)

    def succeeded(self) -> None:
        """Record a successful attempt; ends (and logs the end of) a run of failures."""
        if self.since is not None:
            self.logger.info(
                "%s: working again after %.1f s (%d failed attempts)",
                self.what, time.monotonic() - self.since, self.failures,
            )  # fmt: skip
        self.since, self.failures, self.kind = None, 0, ""
