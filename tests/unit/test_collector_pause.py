"""The cyclic collector's pause around bulk loops, as threads of one web process nest it."""

from __future__ import annotations

import gc
import threading

import pytest

from infra.bulk_import import cyclic_gc_paused


@pytest.fixture(autouse=True)
def collector_enabled():
    was_enabled = gc.isenabled()
    gc.enable()
    yield
    if not was_enabled:
        gc.disable()


def test_the_collector_resumes_only_when_the_last_of_two_overlapping_threads_is_done():
    first_inside, first_may_leave, second_may_leave = threading.Event(), threading.Event(), threading.Event()
    seen: dict[str, bool] = {}

    def first() -> None:
        with cyclic_gc_paused():
            first_inside.set()
            first_may_leave.wait(5)
        seen["after the first left"] = gc.isenabled()
        second_may_leave.set()

    def second() -> None:
        first_inside.wait(5)
        with cyclic_gc_paused():
            first_may_leave.set()
            second_may_leave.wait(5)
            seen["inside the second, after the first left"] = gc.isenabled()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert seen == {"after the first left": False, "inside the second, after the first left": False}
    assert gc.isenabled()


def test_a_collector_disabled_before_the_pause_stays_disabled_and_an_error_still_resumes_it():
    gc.disable()
    with cyclic_gc_paused():
        assert not gc.isenabled()
    assert not gc.isenabled()

    gc.enable()
    with pytest.raises(RuntimeError), cyclic_gc_paused():
        raise RuntimeError("a bulk loop failed")
    assert gc.isenabled()
