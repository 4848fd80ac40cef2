"""The cyclic garbage collector paused around bulk loops, which allocate millions of
short-lived objects that form no cycles."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class _CollectorPause:
    """Who has paused the cyclic collector: it resumes when the last of them is done, so one
    thread's bulk call ending never lets the collector walk another's objects mid-call."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.holders = 0
        self.resume = False  # whether the collector was enabled before the first holder


_COLLECTOR_PAUSE = _CollectorPause()


@contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for a bulk loop.

    Every row allocates a few dicts, which triggers a generation-0 collection every few
    hundred rows; rows form no reference cycles, so reference counting alone frees them and
    memory stays flat. Measured: ~17% more rows/s on the 1M-row benchmark. Threads may nest
    pauses (two bulk calls in one web process): the collector resumes when the last one ends,
    and only if it was enabled when the first began.
    """
    pause = _COLLECTOR_PAUSE
    with pause.lock:
        if pause.holders == 0:
            pause.resume = gc.isenabled()
            gc.disable()
        pause.holders += 1
    try:
        yield
    finally:
        with pause.lock:
            pause.holders -= 1
            if pause.holders == 0 and pause.resume:
                gc.enable()
