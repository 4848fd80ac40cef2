"""Single decisions batched together (``decisioning.batcher``): each request keeps its own
answer and its own error, two tries of one request are never in one batch, and the money rules
hold as they do for one decision at a time (the 2 × 16-thread race runs through the batcher too:
``test_decision_concurrency``).

The batch is staged, not hoped for: the first request's batch waits at a gate until every other
request has queued behind it, so the others form exactly one batch. Real Redis, and a committed
database of the configured kind (threads share it, so not the per-test rolled-back one).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any

import pytest
from sqlalchemy import func, select

from decisioning import batcher as batcher_module
from decisioning.batcher import DecisionBatcher
from decisioning.ledger import BudgetLedger
from decisioning.models import Decision
from decisioning.schemas import DecisionIn
from decisioning.service import DecisionContext, RateLimited, decide_contacts
from decisioning.snapshot_cache import SnapshotCache
from infra.errors import Conflict
from infra.redis_conn import connect_redis, embedded_redis_url
from offers.models import BudgetCharge
from tests.integration.test_decision_concurrency import (
    BUDGET_CODE,
    COST,
    DEADLINE_MS,
    _last_minute_of_this_month,
    _seed,
    race_database,
)

__all__ = ["race_database"]  # the fixture, imported for pytest to find

WAIT_S = 20


@pytest.fixture()
def staged(settings, redis, race_database, monkeypatch):
    """(batcher, run): ``run(requests)`` sends a first request, holds its batch until every
    request of ``requests`` ((caller, body, rate limit) each) has queued, then lets them go as
    one batch; returns their answers or errors, in order, and the batch sizes seen."""
    _seed(race_database, 10)
    redis_url = settings.redis_url or embedded_redis_url(settings.instance_dir)
    client = connect_redis(dataclasses.replace(settings, redis_url=redis_url), hot_path=True)
    ctx = DecisionContext(race_database.sessionmaker, client, SnapshotCache(), deadline_ms=DEADLINE_MS)
    now = _last_minute_of_this_month()
    batcher = DecisionBatcher(ctx, clock=lambda: now)
    gate, sizes = threading.Event(), []
    decide_batch = batcher_module.decide_batch

    def gated(*args: Any, **kwargs: Any) -> Any:
        sizes.append(len(args[1]))
        if len(sizes) == 1:
            assert gate.wait(WAIT_S)
        return decide_batch(*args, **kwargs)

    monkeypatch.setattr(batcher_module, "decide_batch", gated)

    def run(requests: list[tuple[str, DecisionIn, int | None]]) -> tuple[list[Any], list[int]]:
        results: list[Any] = [None] * (len(requests) + 1)

        def send(slot: int, caller: str, body: DecisionIn, limit: int | None) -> None:
            try:
                results[slot] = batcher.decide(caller, body, rate_limit_per_s=limit)
            except Exception as exc:
                results[slot] = exc

        first = threading.Thread(
            target=send, args=(0, "key:first", DecisionIn(subscriber_id="s-9", channel="sms"), None)
        )
        first.start()
        _until(lambda: sizes == [1])
        threads = [threading.Thread(target=send, args=(i + 1, *request)) for i, request in enumerate(requests)]
        for thread in threads:
            thread.start()
        _until(lambda: len(batcher._queue) == len(requests))
        gate.set()
        for thread in [first, *threads]:
            thread.join(WAIT_S)
        assert not isinstance(results[0], Exception), results[0]
        return results[1:], sizes

    yield batcher, run, ctx, now
    client.close()


def _until(condition: Any) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, "the staged batch did not form"
        time.sleep(0.005)


def test_requests_batched_together_keep_their_own_answers_and_errors(staged, race_database, redis):
    batcher, run, ctx, now = staged
    # a request id "clash-1" already answered for another body, before the batch
    decide_contacts(ctx, "key:a", [DecisionIn(subscriber_id="s-0", channel="sms", request_id="clash-1")], now=now)
    requests = [
        ("key:a", DecisionIn(subscriber_id="s-1", channel="sms", request_id="a-1"), None),
        ("key:a", DecisionIn(subscriber_id="s-2", channel="sms", request_id="clash-1"), None),  # another body
        ("key:b", DecisionIn(subscriber_id="s-3", channel="sms", request_id="a-1"), None),  # same id, other caller
        ("key:busy", DecisionIn(subscriber_id="s-4", channel="sms", request_id="busy-1"), 1),
        ("key:busy", DecisionIn(subscriber_id="s-5", channel="sms", request_id="busy-2"), 1),  # 2 > 1 per second
    ]
    results, sizes = run(requests)
    assert sizes == [1, len(requests)]  # the staged requests were decided as one batch
    ok_a, clash, ok_b, busy_1, busy_2 = results
    assert ok_a["subscriber_id"] == "s-1" and ok_a["action"]["offer_code"] == "CREDIT_1"
    assert ok_b["subscriber_id"] == "s-3" and ok_b["decision_id"] != ok_a["decision_id"]
    assert isinstance(clash, Conflict) and clash.code == "idempotency_conflict"
    assert clash.details == [{"path": "$", "message": "request id 'clash-1' was used with another body"}]
    assert isinstance(busy_1, RateLimited) and isinstance(busy_2, RateLimited)
    with race_database.sessionmaker() as session:
        stored = set(session.execute(select(Decision.caller, Decision.request_id)).all())
        charged = session.scalar(select(func.coalesce(func.sum(BudgetCharge.amount), 0)))
    assert {key for key in stored if key[0] != "key:first"} == {
        ("key:a", "clash-1"),
        ("key:a", "a-1"),
        ("key:b", "a-1"),
    }
    assert len(stored) == 4  # and the staging request's own decision
    assert charged == 4 * COST
    assert BudgetLedger(redis).spent_total(BUDGET_CODE, f"{now:%Y-%m}") == charged
    assert batcher.decided == 1 + len(requests) and batcher.batches == 2


def test_two_tries_of_one_request_are_never_in_one_batch(staged, race_database, redis):
    _batcher, run, _, now = staged
    body = DecisionIn(subscriber_id="s-1", channel="sms", request_id="twice")
    results, sizes = run([("key:a", body, None), ("key:a", body, None)])
    first, second = results
    assert sizes == [1, 1, 1]  # the retry waited for the next batch, and replayed the stored answer
    assert first["decision_id"] == second["decision_id"] and [first["replayed"], second["replayed"]] == [False, True]
    with race_database.sessionmaker() as session:
        assert session.scalar(select(func.count()).select_from(Decision).where(Decision.request_id == "twice")) == 1
        charged = session.scalar(select(func.coalesce(func.sum(BudgetCharge.amount), 0)))
    assert BudgetLedger(redis).spent_total(BUDGET_CODE, f"{now:%Y-%m}") == charged == 2 * COST


def test_a_request_that_cannot_be_read_fails_alone_and_the_batcher_goes_on(staged, race_database, redis):
    """A body that cannot be hashed (here built past validation, which now refuses such a
    context) failed the whole batch before it was decided and left the batcher marked busy:
    every later request in the process waited for ever."""
    batcher, run, _ctx, _now = staged
    unreadable = DecisionIn.model_construct(
        subscriber_id="s-1", channel="sms", request_id="odd-1", context={"n": 2**64}
    )
    results, sizes = run(
        [
            ("key:a", unreadable, None),
            ("key:a", DecisionIn(subscriber_id="s-2", channel="sms", request_id="fine-1"), None),
        ]
    )
    odd, fine = results
    assert isinstance(odd, TypeError) and fine["subscriber_id"] == "s-2" and sizes == [1, 1]
    later: list[Any] = []
    thread = threading.Thread(
        target=lambda: later.append(
            batcher.decide("key:a", DecisionIn(subscriber_id="s-3", channel="sms", request_id="later-1"))
        )
    )
    thread.start()
    thread.join(WAIT_S)
    assert not thread.is_alive() and later[0]["subscriber_id"] == "s-3"
