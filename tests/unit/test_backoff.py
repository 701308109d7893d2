"""The one backoff of the agent's start-up retries and the peer watcher's re-listing."""

import random

import pytest

from overlayd.base.backoff import Backoff


def test_delays_double_up_to_the_cap_within_the_jitter() -> None:
    backoff = Backoff(0.5, 3.0, jitter=(0.8, 1.2), rng=random.Random(1))
    delays = [backoff.next() for _ in range(6)]
    for delay, base in zip(delays, (0.5, 1.0, 2.0, 3.0, 3.0, 3.0), strict=True):
        assert base * 0.8 <= delay <= base * 1.2


def test_reset_starts_again_from_the_shortest_delay() -> None:
    backoff = Backoff(0.2, 5.0, jitter=(0.5, 1.0), rng=random.Random(2))
    for _ in range(5):
        backoff.next()
    backoff.reset()
    assert 0.1 <= backoff.next() <= 0.2


def test_the_same_seed_gives_the_peer_watchers_former_delays() -> None:
    """``uniform(b / 2, b)`` then ``b = min(2 * b, max)``: what peers.py computed inline before."""
    backoff, rng, b = Backoff(0.05, 0.5, jitter=(0.5, 1.0), rng=random.Random(3)), random.Random(3), 0.05
    for _ in range(6):
        assert backoff.next() == pytest.approx(rng.uniform(b / 2, b))
        b = min(b * 2, 0.5)


@pytest.mark.parametrize(("start", "cap"), [(0.0, 1.0), (-1.0, 1.0), (2.0, 1.0)])
def test_a_start_that_would_spin_or_pass_the_cap_is_refused(start: float, cap: float) -> None:
    with pytest.raises(ValueError, match=f"backoff start {start}"):
        Backoff(start, cap)
