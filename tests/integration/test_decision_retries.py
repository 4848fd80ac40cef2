"""A retry that finds an earlier attempt's reservation but no decision row (the earlier attempt
chose another action, then died before storing it, or is still running): the stored row and the
Redis counters must still agree on what was charged, and nothing is charged twice."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from decisioning.ledger import BudgetLimit, ContactLimit, request_key_marker
from decisioning.models import Decision
from decisioning.schemas import DecisionIn
from decisioning.service import EARLIER_ATTEMPT_DEAD_AFTER_S, DecisionContext, decide_contacts
from decisioning.snapshot_cache import SnapshotCache
from infra.db import get_database
from offers.models import BudgetCharge
from tests.integration.paid_free_catalogue import BUDGET, PAID, add_paid_and_free_catalogue

CALLER = "key:retry-test"
NOW = datetime(2026, 11, 30, 23, 0, tzinfo=UTC)  # pacing allows nearly all the cap
PERIOD = "2026-11"


@pytest.fixture()
def ctx(app, db, redis):
    add_paid_and_free_catalogue(db, ["s-1"])
    context = DecisionContext(get_database(app).sessionmaker, redis, SnapshotCache())
    context.deadline_ms = 60_000  # a loaded machine must not turn the action into "no action"
    return context


def _earlier_attempt(ctx: DecisionContext, request_id: str, age_s: float) -> str:
    """What an attempt that chose the free action left behind when it died (or before it
    stored its row): a contact-only reservation under the request's key, made ``age_s`` ago."""
    key = f"{CALLER}|{request_id}"
    outcome = ctx.ledger.reserve(key, cost=0, budgets=[], contact=ContactLimit("s-1", "sms", 100, 7 * 86_400), now=NOW)
    assert outcome.ok and not outcome.replayed
    _age(ctx, key, age_s)
    return str(outcome.attempt)


def _age(ctx: DecisionContext, request_key: str, age_s: float) -> None:
    """Date a reservation ``age_s`` seconds back by the wall clock, as if made that long ago."""
    marker = json.loads(ctx.redis_client.get(request_key_marker(request_key)))
    marker["at_ms"] = int((time.time() - age_s) * 1000)
    ctx.redis_client.set(request_key_marker(request_key), json.dumps(marker), keepttl=True)


def _decide(ctx: DecisionContext, request_id: str) -> dict:
    [answer] = decide_contacts(
        ctx, CALLER, [DecisionIn(subscriber_id="s-1", channel="sms", request_id=request_id)], now=NOW
    )
    return answer


def _ledger_of_record(db) -> Decimal:
    return db.scalar(select(func.coalesce(func.sum(BudgetCharge.amount), 0)))


def test_a_retry_after_a_dead_attempt_that_chose_otherwise_charges_what_its_row_records(ctx, db):
    _earlier_attempt(ctx, "r-1", EARLIER_ATTEMPT_DEAD_AFTER_S + 60)
    answer = _decide(ctx, "r-1")
    assert answer["action"]["offer_code"] == PAID and answer["replayed"] is False
    row = db.get(Decision, answer["decision_id"])
    assert row.cost == Decimal("5.00")
    # before: the retry took over the dead attempt's contact-only reservation, so the row said 5.00
    # while no budget was charged at all
    assert _ledger_of_record(db) == Decimal("5.00") == ctx.ledger.spent_total(BUDGET, PERIOD)
    again = _decide(ctx, "r-1")  # and a further retry replays the row, charging nothing
    assert again["replayed"] is True and ctx.ledger.spent_total(BUDGET, PERIOD) == Decimal("5.00")


def test_a_retry_racing_an_attempt_still_running_takes_no_action_and_charges_nothing(ctx, db):
    earlier = _earlier_attempt(ctx, "r-2", 1)
    answer = _decide(ctx, "r-2")
    assert answer["action"] is None
    assert answer["reasons"][0]["offer_code"] == PAID and answer["reasons"][0]["code"] == "request_in_progress"
    assert _ledger_of_record(db) == 0 == ctx.ledger.spent_total(BUDGET, PERIOD)
    # the reservation stays with the earlier attempt, which can still release it when its own
    # write fails (a retry that took it over would have left it held for good)
    assert ctx.ledger.release(f"{CALLER}|r-2", attempt=earlier).released


def test_a_retry_that_chooses_what_the_earlier_attempt_reserved_uses_that_reservation(ctx, db):
    key = f"{CALLER}|r-3"
    ctx.ledger.reserve(
        key,
        cost=Decimal("5.00"),
        budgets=[BudgetLimit.from_amounts(BUDGET, PERIOD, 1000)],
        contact=None,
        now=NOW - timedelta(seconds=1),
    )
    answer = _decide(ctx, "r-3")
    assert answer["action"]["offer_code"] == PAID
    assert _ledger_of_record(db) == Decimal("5.00") == ctx.ledger.spent_total(BUDGET, PERIOD)  # charged once


def test_a_rebuild_forgets_reservations_whose_request_stored_no_row(ctx, db):
    from decisioning.jobs import reconcile_ledger

    # an attempt that reserved and died before its row: the rebuilt counters will not hold its
    # charge, so its retry must reserve again rather than replay it (and record an unheld charge)
    ctx.ledger.reserve(
        f"{CALLER}|r-4",
        cost=Decimal("5.00"),
        budgets=[BudgetLimit.from_amounts(BUDGET, PERIOD, 1000)],
        contact=None,
        now=NOW,
    )
    summary = reconcile_ledger(ctx.session_factory, ctx.redis_client, now=NOW, grace_s=0)
    assert summary["request_markers_forgotten"] == 1 and ctx.ledger.spent_total(BUDGET, PERIOD) == 0
    answer = _decide(ctx, "r-4")
    assert answer["action"]["offer_code"] == PAID
    assert _ledger_of_record(db) == Decimal("5.00") == ctx.ledger.spent_total(BUDGET, PERIOD)
