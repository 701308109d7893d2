"""Jittered exponential backoff, for retrying etcd and other transient failures.

Each delay is twice the last, up to a cap, times a random factor: agents that failed together
(an etcd restart) then do not retry in lockstep.
"""

from __future__ import annotations

import random


class Backoff:
    """Delays of ``start``, ``2 * start``, ... up to ``cap``, each times a factor drawn from ``jitter``."""

    def __init__(
        self,
        start: float = 0.5,
        cap: float = 30.0,
        jitter: tuple[float, float] = (0.8, 1.2),
        rng: random.Random | None = None,
    ) -> None:
        if not 0 < start <= cap:
            raise ValueError(f"backoff start {start} must be above 0 and at most the cap {cap}")
        self.start, self.cap, self.current = start, cap, start
        self.jitter = jitter
        self.rng = rng or random.Random()

    def next(self) -> float:
        """The delay before the next attempt; the one after it will be twice as long (up to the cap)."""
        low, high = self.jitter
        delay = self.current * self.rng.uniform(low, high)
        self.current = min(self.cap, self.current * 2)
        return delay

    def reset(self) -> None:
        """Start again from the shortest delay, after a success."""
        self.current = self.start
