"""HeapKeeper: full collections at quiet moments, survivors frozen, everything unfrozen hourly."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from overlayd.agent.heap import GEN2_THRESHOLD, HeapKeeper, frozen_imports


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clean_gc() -> Iterator[None]:
    """Leave the test process's collector as it was."""
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_start_leaves_full_collections_to_the_agent(clean_gc: None) -> None:
    gen0, gen1, _ = gc.get_threshold()
    HeapKeeper().start()
    assert gc.get_threshold() == (gen0, gen1, GEN2_THRESHOLD)


def test_a_timer_pass_settles_only_when_no_event_came_since_the_last(clean_gc: None) -> None:
    clock = Clock()
    keeper = HeapKeeper(max_interval=600, clock=clock)
    assert keeper.on_timer() is True  # nothing happened yet: quiet
    keeper.busy()
    clock.now += 10
    assert keeper.on_timer() is False, "an event since the last pass: not now"
    clock.now += 10
    assert keeper.on_timer() is True, "quiet again"


def test_constant_events_still_settle_every_max_interval(clean_gc: None) -> None:
    clock = Clock()
    keeper = HeapKeeper(max_interval=600, clock=clock)
    keeper.settle()
    settled = []
    for _ in range(130):  # 130 timer passes 10 s apart, an event before each
        clock.now += 10
        keeper.busy()
        settled.append(keeper.on_timer())
    assert settled.count(True) == 2 and settled.index(True) == 59


class Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the collector can free it


def test_settle_freezes_survivors_and_unfreezes_everything_hourly(clean_gc: None) -> None:
    clock = Clock()
    keeper = HeapKeeper(unfreeze_interval=3600, clock=clock)
    node = Node()
    alive = weakref.ref(node)
    keeper.settle()
    assert gc.get_freeze_count() > 0
    del node
    clock.now += 600
    keeper.settle()
    assert alive() is not None, "frozen cyclic garbage lingers until the hourly unfreeze"
    clock.now += 3000
    keeper.settle()
    assert alive() is None
    assert gc.get_freeze_count() > 0, "and the survivors are frozen again"


def test_frozen_imports_collects_nothing_meanwhile_and_freezes_after(clean_gc: None) -> None:
    before = gc.get_freeze_count()
    with frozen_imports():
        assert not gc.isenabled()
        built = [[] for _ in range(100)]
    assert gc.isenabled()
    assert gc.get_freeze_count() >= before + len(built)


def test_a_settle_gives_freed_heap_pages_back_to_the_system(clean_gc: None) -> None:
    from overlayd.agent import heap

    if heap._load_trim() is None:
        pytest.skip("this C library has no malloc_trim")
    HeapKeeper().settle()  # ctypes loaded and the heap trimmed once before measuring
    # 40 MB of blocks malloc keeps in its heap, freed but for the last, which pins the heap's
    # top: without a trim their pages stay resident.
    garbage = [bytearray(2000) for _ in range(20_000)]
    del garbage[:-1]
    before = _rss_kb()
    HeapKeeper().settle()
    assert _rss_kb() < before - 20_000, "the freed pages stay resident"


def _rss_kb() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
