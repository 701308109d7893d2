"""When the agent lets Python's cyclic garbage collector do a full pass.

A full collection walks every tracked object: at 1000 peers (leases, entries, the loaded
modules) that took 37-56 ms on a slow machine, and it starts at whichever allocation trips the
threshold, typically in the middle of a burst of peer events, which then wait it out (the churn
benchmark's worst latencies). Here full collections are left to the agent instead: after a new
peer listing is programmed, and on a timer pass with no peer event since the previous one (at
least every ``max_interval`` even under constant churn). Each collects and then freezes the
survivors (``gc.freeze``), so the next full pass walks only what was allocated since. Young
generations are collected automatically as before.

Frozen objects are still freed by reference counting when dropped; only cyclic garbage among
them would stay, so once every ``unfreeze_interval`` a settle unfreezes everything first.

After a settle, the C allocator is asked to give back its free pages (glibc's ``malloc_trim``):
what a cold start or a burst of events decoded and dropped would otherwise stay resident for
the life of the process.
"""

from __future__ import annotations

import ctypes
import gc
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

# Generation 2 is collected automatically only after this many generation-1 collections
# (CPython's default is 10): in practice never between two settles.
GEN2_THRESHOLD = 100_000


@contextmanager
def frozen_imports() -> Iterator[None]:
    """Import the agent with the collector off, then freeze what the imports built.

    Importing builds tens of thousands of objects that live as long as the process; the
    collections they set off (~20 ms of a start on a slow machine) found nothing, and once
    frozen no later collection walks them either.
    """
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


class HeapKeeper:
    def __init__(
        self,
        max_interval: float = 600.0,
        unfreeze_interval: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_interval = max_interval
        self.unfreeze_interval = unfreeze_interval
        self._clock = clock
        self._last_settle = self._last_unfreeze = clock()
        self._busy = False  # a peer event since the last timer pass

    def start(self) -> None:
        gen0, gen1, _gen2 = gc.get_threshold()
        gc.set_threshold(gen0, gen1, GEN2_THRESHOLD)

    def busy(self) -> None:
        """A peer event was applied: the next timer pass is not a quiet moment."""
        self._busy = True

    def on_timer(self) -> bool:
        """Settle if nothing happened since the last timer pass, or if it is overdue; True if so."""
        quiet, self._busy = not self._busy, False
        if quiet or self._clock() - self._last_settle >= self.max_interval:
            self.settle()
            return True
        return False

    def settle(self) -> None:
        """A full collection of what is not frozen (everything, once per ``unfreeze_interval``),
        then freeze the survivors."""
        now = self._clock()
        if now - self._last_unfreeze >= self.unfreeze_interval:
            gc.unfreeze()
            self._last_unfreeze = now
        gc.collect()
        gc.freeze()
        _trim_heap()
        self._last_settle = now


def _load_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library has none (musl, another OS)."""
    try:
        # By its soname: ``ctypes.util.find_library`` would start a process to look for it.
        return ctypes.CDLL("libc.so.6").malloc_trim  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


_malloc_trim: Callable[[int], int] | bool | None = False  # False: not looked up yet


def _trim_heap() -> None:
    global _malloc_trim
    if _malloc_trim is False:
        _malloc_trim = _load_trim()
    if _malloc_trim:
        _malloc_trim(0)  # type: ignore[operator]
