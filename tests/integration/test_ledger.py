"""The Redis budget ledger against a real server: idempotent, all-or-nothing reservations,
pacing, contact windows, release, rebuild, a multi-process race and an unreachable server."""

from __future__ import annotations

import multiprocessing
import socket
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TypedDict

import pytest
import redis as redis_lib
from redis.backoff import NoBackoff
from redis.retry import Retry

from decisioning.core import DecisionState
from decisioning.ledger import (
    LEDGER_READY_KEY,
    NOT_READY,
    RESERVATIONS_PER_CALL,
    BudgetLedger,
    BudgetLimit,
    Charge,
    ContactLimit,
    LedgerUnavailable,
    Release,
    ReserveRequest,
    budget_key,
    contacts_key,
    limit_to_cents,
    period_key_for,
    request_key_marker,
    to_cents,
)
from decisioning.snapshot import BudgetRule, ContactRule

NOW = datetime(2026, 11, 15, 12, 0, tzinfo=UTC)
PERIOD = "2026-11"
WEEK_S = 7 * 24 * 3600


@pytest.fixture()
def ledger(redis):
    return BudgetLedger(redis)


def cap(code: str, amount: str, allowed: str | None = None) -> BudgetLimit:
    return BudgetLimit.from_amounts(code, PERIOD, Decimal(amount), None if allowed is None else Decimal(allowed))


def counter(redis, code: str) -> int | None:
    raw = redis.get(budget_key(code, PERIOD))
    return None if raw is None else int(raw)


# --- money and keys -------------------------------------------------------------------------------


def test_money_is_integer_cents_rounded_half_up_and_limits_rounded_down():
    assert to_cents(0.285) == 29  # Decimal(0.285) is 0.28499…: the float's repr is used
    assert to_cents(Decimal("2.675")) == 268
    assert to_cents("0.1") + to_cents(0.2) == to_cents(0.3) == 30
    assert to_cents(0.004) == 0 and to_cents(0.005) == 1
    assert limit_to_cents(Decimal("1234.565")) == 123456
    assert limit_to_cents(299.99999999997) == 30000  # float noise is not a lost cent
    for bad in (float("nan"), float("inf"), "abc", True):
        with pytest.raises(ValueError):
            to_cents(bad)


def test_budget_limit_from_rule_uses_the_cores_pacing_and_period_keys():
    start, end = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)
    rule = BudgetRule("Q4", "programme", None, 3000.0, period_start=start, period_end=end, pacing_slack=0.1)
    limit = BudgetLimit.from_rule(rule, NOW)  # 14.5 of 30 days elapsed
    assert limit == BudgetLimit("Q4", "2026-11", 300000, limit_to_cents(rule.paced_allowance(NOW)))
    assert limit.allowed_now_cents == 159500  # 3000 × 14.5/30 × 1.1
    quarter = BudgetRule(
        "Q", "programme", None, 1.0, period_start=datetime(2026, 10, 1), period_end=datetime(2027, 1, 1)
    )
    year = BudgetRule("Y", "programme", None, 1.0, period_start=datetime(2026, 1, 1), period_end=datetime(2027, 1, 1))
    other = BudgetRule(
        "O", "programme", None, 1.0, period_start=datetime(2026, 11, 5), period_end=datetime(2026, 12, 20)
    )
    assert [period_key_for(r) for r in (quarter, year, other)] == ["2026-Q4", "2026", "2026-11-05"]
    assert period_key_for(BudgetRule("N", "programme", None, 1.0)) == "all"
    assert ContactLimit.from_rule(ContactRule("sms", 3, 7), "s-1") == ContactLimit("s-1", "sms", 3, WEEK_S)


def test_key_parts_are_escaped_so_different_pairs_never_share_a_key():
    assert budget_key("a:b", "c") != budget_key("a", "b:c")
    assert contacts_key("s:1", "sms").startswith("cp:ledger:contacts:")


# --- reserve ----------------------------------------------------------------------------------------


def test_reserve_charges_once_and_a_replay_returns_the_stored_result(ledger, redis):
    contact = ContactLimit("s-1", "sms", 5, WEEK_S)
    first = ledger.reserve("r-1", cost=Decimal("3.50"), budgets=[cap("PROG", "100")], contact=contact, now=NOW)
    assert first.ok and not first.replayed and first.reason is None
    assert first.charged == (Charge("PROG", PERIOD, 350),) and first.contact_recorded
    assert counter(redis, "PROG") == 350
    assert 0 < redis.pttl(request_key_marker("r-1")) <= 7 * 24 * 3600 * 1000

    # a retry, even one that claims another cost, is the first answer again and charges nothing
    again = ledger.reserve(
        "r-1", cost=Decimal("9.99"), budgets=[cap("PROG", "100")], contact=contact, now=NOW + timedelta(seconds=5)
    )
    assert again.replayed and again.ok
    assert (again.cost_cents, again.charged, again.contact_recorded) == (350, first.charged, True)
    assert counter(redis, "PROG") == 350
    assert redis.zcard(contacts_key("s-1", "sms")) == 1
    assert ledger.spent_total("PROG", PERIOD) == Decimal("3.50")


def test_all_or_nothing_when_the_second_budget_is_exhausted(ledger, redis):
    ledger.rebuild({("CHAN", PERIOD): Decimal("9.50")}, {})
    budgets = [cap("PROG", "100"), cap("CHAN", "10")]
    contact = ContactLimit("s-1", "sms", 5, WEEK_S)
    refused = ledger.reserve("r-1", cost=1, budgets=budgets, contact=contact, now=NOW)
    assert not refused.ok and refused.reason == "budget_exhausted"
    assert (refused.budget_code, refused.spent_cents, refused.limit_cents) == ("CHAN", 950, 1000)
    assert refused.charged == () and not refused.contact_recorded
    assert counter(redis, "PROG") is None and counter(redis, "CHAN") == 950
    assert redis.zcard(contacts_key("s-1", "sms")) == 0
    assert redis.exists(request_key_marker("r-1")) == 0  # a refusal is not remembered...

    # ...so the same request succeeds once there is room, and then charges both budgets
    accepted = ledger.reserve("r-1", cost="0.50", budgets=budgets, contact=contact, now=NOW)
    assert accepted.ok and not accepted.replayed
    assert (counter(redis, "PROG"), counter(redis, "CHAN")) == (50, 1000)


def test_pacing_blocks_spend_ahead_of_the_allowance_but_under_the_cap(ledger, redis):
    ledger.rebuild({("PROG", PERIOD): Decimal("99.50")}, {})
    paced = [cap("PROG", "1000", allowed="100")]
    refused = ledger.reserve("r-1", cost=1, budgets=paced, contact=None, now=NOW)
    assert refused.reason == "pacing" and not refused.ok
    assert (refused.budget_code, refused.spent_cents, refused.limit_cents) == ("PROG", 9950, 10000)
    assert counter(redis, "PROG") == 9950

    assert ledger.reserve("r-2", cost="0.50", budgets=paced, contact=None, now=NOW).ok  # exactly to the pace
    assert counter(redis, "PROG") == 10000
    # an allowance above the cap is the cap: exhausted, not pacing
    over = ledger.reserve("r-3", cost="0.01", budgets=[cap("PROG", "100", allowed="500")], contact=None, now=NOW)
    assert over.reason == "budget_exhausted"


def test_the_budget_with_least_room_is_reported_and_caps_come_before_pacing(ledger):
    ledger.rebuild({("A", PERIOD): 5, ("B", PERIOD): 8}, {})
    budgets = [cap("A", "100", allowed="6"), cap("B", "9")]  # A is ahead of pace, B is out of money
    refused = ledger.reserve("r-1", cost=2, budgets=budgets, contact=None, now=NOW)
    assert (refused.reason, refused.budget_code) == ("budget_exhausted", "B")
    budgets = [cap("A", "100", allowed="6"), cap("B", "100", allowed="9.50")]
    refused = ledger.reserve("r-1", cost=2, budgets=budgets, contact=None, now=NOW)
    assert (refused.reason, refused.budget_code) == ("pacing", "A")


def test_contact_cap_within_the_window_counts_free_actions_too(ledger, redis):
    sms = ContactLimit("s-1", "sms", 2, WEEK_S)
    assert ledger.reserve("r-1", cost=0, budgets=[cap("PROG", "0")], contact=sms, now=NOW).ok  # free: no budget check
    assert ledger.reserve("r-2", cost=1, budgets=[cap("PROG", "10")], contact=sms, now=NOW + timedelta(hours=1)).ok
    refused = ledger.reserve("r-3", cost=0, budgets=[], contact=sms, now=NOW + timedelta(hours=2))
    assert (refused.reason, refused.contacts_in_window, refused.max_contacts) == ("contact_cap", 2, 2)
    assert counter(redis, "PROG") == 100
    # another channel and another subscriber have their own windows
    assert ledger.reserve("r-4", cost=0, budgets=[], contact=ContactLimit("s-1", "app", 2, WEEK_S), now=NOW).ok
    assert ledger.reserve("r-5", cost=0, budgets=[], contact=ContactLimit("s-2", "sms", 2, WEEK_S), now=NOW).ok
    # a contact-cap refusal charges no budget
    refused = ledger.reserve("r-6", cost=1, budgets=[cap("PROG", "10")], contact=sms, now=NOW)
    assert refused.reason == "contact_cap" and counter(redis, "PROG") == 100


def test_a_contact_outside_the_window_does_not_count(ledger, redis):
    sms = ContactLimit("s-1", "sms", 1, WEEK_S)
    assert ledger.reserve("old", cost=0, budgets=[], contact=sms, now=NOW - timedelta(days=7)).ok
    # exactly one window ago is outside: the window is (now - 7 days, now]
    assert ledger.reserve("new", cost=0, budgets=[], contact=sms, now=NOW).ok
    assert ledger.reserve("third", cost=0, budgets=[], contact=sms, now=NOW).reason == "contact_cap"
    reading = ledger.read_state("s-1", {"sms": WEEK_S}, [], NOW)
    assert reading.contacts_in_window == {"sms": 1}
    assert redis.zcard(contacts_key("s-1", "sms")) == 2  # kept: inside the 90-day retention


def test_contacts_older_than_window_and_retention_are_trimmed_and_the_key_expires(redis):
    ledger = BudgetLedger(redis, contact_retention_s=24 * 3600)
    sms = ContactLimit("s-1", "sms", 5, 3600)
    assert ledger.reserve("ancient", cost=0, budgets=[], contact=sms, now=NOW - timedelta(days=3)).ok
    assert ledger.reserve("recent", cost=0, budgets=[], contact=sms, now=NOW).ok
    key = contacts_key("s-1", "sms")
    assert [m.decode() for m in redis.zrange(key, 0, -1)] == ["recent"]
    assert 0 < redis.pttl(key) <= 24 * 3600 * 1000


def test_read_state_feeds_the_decision_core_in_one_round_trip(ledger):
    sms = ContactLimit("s-1", "sms", 5, WEEK_S)
    ledger.reserve("r-1", cost="1.10", budgets=[cap("PROG", "100"), cap("SMS", "50")], contact=sms, now=NOW)
    ledger.reserve("r-2", cost="2.20", budgets=[cap("PROG", "100")], contact=sms, now=NOW)
    contacts, spent = ledger.read_state(
        "s-1", {"sms": WEEK_S, "app": WEEK_S}, [("PROG", PERIOD), ("SMS", PERIOD), ("NONE", PERIOD)], NOW
    )
    assert contacts == {"sms": 2, "app": 0}
    assert spent == {"PROG": 3.3, "SMS": 1.1, "NONE": 0.0}
    state = DecisionState(contacts_in_window=contacts, spent_by_budget=spent)
    assert state.spent_by_budget["PROG"] == 3.3
    # the next period is another counter
    assert ledger.read_state("s-1", {}, [("PROG", "2026-12")], NOW).spent_by_budget == {"PROG": 0.0}


def test_bad_arguments_are_refused_before_touching_redis(ledger):
    with pytest.raises(ValueError):
        ledger.reserve("r-1", cost=-1, budgets=[], contact=None, now=NOW)
    with pytest.raises(ValueError):
        ledger.reserve("r-1", cost=1, budgets=[cap("A", "5"), cap("A", "5")], contact=None, now=NOW)
    with pytest.raises(ValueError):
        ledger.reserve("", cost=1, budgets=[], contact=None, now=NOW)
    with pytest.raises(ValueError):
        BudgetLimit("A", PERIOD, 10.5)  # type: ignore[arg-type]  # deliberately wrong: the refusal is under test
    with pytest.raises(ValueError):
        ContactLimit("s-1", "sms", 1, 0)


def test_a_flushed_script_cache_is_reloaded_transparently(ledger, redis):
    assert ledger.reserve("r-1", cost=1, budgets=[cap("PROG", "10")], contact=None, now=NOW).ok
    redis.script_flush()  # what a Redis restart does to the script cache
    assert ledger.reserve("r-2", cost=1, budgets=[cap("PROG", "10")], contact=None, now=NOW).ok
    assert redis.script_exists(ledger._reserve_script.sha) == [True]
    redis.script_flush()
    assert ledger.release("r-2").released
    assert counter(redis, "PROG") == 100
    redis.script_flush()  # a batch: every call answered NOSCRIPT runs once, after the reload
    batch = ledger.reserve_many([ReserveRequest(f"b-{i}", 1, (cap("PROG", "10"),), None) for i in range(3)], NOW)
    assert [r.ok for r in batch] == [True] * 3 and counter(redis, "PROG") == 400


def test_a_batch_across_several_script_calls_is_decided_in_order_as_separate_calls_would_be(ledger, redis):
    # 2.5 script calls' worth: each reservation sees every earlier one, across call boundaries
    count = RESERVATIONS_PER_CALL * 5 // 2
    ledger.reserve("seen-before", cost=1, budgets=[cap("PROG", "10")], contact=None, now=NOW)
    sms = ContactLimit("s-capped", "sms", 1, WEEK_S)
    requests = [ReserveRequest("seen-before", 1, (cap("PROG", "10"),), None)]  # a replay
    requests += [ReserveRequest(f"b-{i}", "0.01", (cap("PROG", "10"), cap("CHAN", "1")), None) for i in range(count)]
    requests += [ReserveRequest("cap-1", 0, (), sms), ReserveRequest("cap-2", 0, (), sms)]
    results = ledger.reserve_many(requests, NOW)

    assert results[0].replayed and results[0].ok
    # CHAN affords 100 cents: the first 100 one-cent reservations, then every one is refused by it
    assert [r.ok for r in results[1 : count + 1]] == [True] * 100 + [False] * (count - 100)
    assert {(r.reason, r.budget_code, r.spent_cents) for r in results[101 : count + 1]} == {
        ("budget_exhausted", "CHAN", 100)
    }
    assert [r.ok for r in results[-2:]] == [True, False] and results[-1].reason == "contact_cap"
    assert (counter(redis, "PROG"), counter(redis, "CHAN")) == (200, 100)
    assert redis.exists(request_key_marker("b-99"), request_key_marker("b-100")) == 1  # refusals leave none


# --- release -------------------------------------------------------------------------------------------


def test_release_refunds_exactly_once(ledger, redis):
    budgets = [cap("PROG", "100"), cap("SMS", "10")]
    sms = ContactLimit("s-1", "sms", 1, WEEK_S)
    assert ledger.reserve(
        "keep", cost="2.00", budgets=budgets, contact=ContactLimit("s-2", "sms", 1, WEEK_S), now=NOW
    ).ok
    assert ledger.reserve("undo", cost="3.25", budgets=budgets, contact=sms, now=NOW).ok
    assert (counter(redis, "PROG"), counter(redis, "SMS")) == (525, 525)

    released = ledger.release("undo")
    assert released.released and released.contact_removed
    assert released.refunded == (Charge("PROG", PERIOD, 325), Charge("SMS", PERIOD, 325))
    assert (counter(redis, "PROG"), counter(redis, "SMS")) == (200, 200)
    assert redis.zcard(contacts_key("s-1", "sms")) == 0
    assert redis.exists(request_key_marker("undo")) == 0

    assert not ledger.release("undo").released  # idempotent
    assert not ledger.release("never-reserved").released
    assert (counter(redis, "PROG"), counter(redis, "SMS")) == (200, 200)

    # released means forgotten: the same request key is a new reservation, the contact counts again
    again = ledger.reserve("undo", cost="3.25", budgets=budgets, contact=sms, now=NOW)
    assert again.ok and not again.replayed and counter(redis, "PROG") == 525


def test_a_retry_that_replayed_the_reservation_holds_it_so_the_first_attempt_cannot_release_it(ledger, redis):
    """Attempt A reserves; its retry B replays A's reservation and stores the decision row with
    its charge; then A's own write fails. A's release must not refund what B's row records."""
    request = ReserveRequest("r-1", Decimal("5.00"), (cap("PROG", "100"),), ContactLimit("s-1", "sms", 5, WEEK_S))
    [first] = ledger.reserve_many([request], NOW)
    [retry] = ledger.reserve_many([request], NOW + timedelta(seconds=1))
    assert first.ok and not first.replayed and retry.replayed and retry.adopted and retry.attempt != first.attempt
    assert ledger.release("r-1", attempt=first.attempt) == Release(False)
    assert counter(redis, "PROG") == 500 and redis.zcard(contacts_key("s-1", "sms")) == 1
    # the marker (handed to the retry) still replays the same charge, and the retry may release it
    [again] = ledger.reserve_many([request], NOW + timedelta(seconds=2))
    assert again.replayed and again.charged == first.charged and again.cost_cents == 500
    assert ledger.release("r-1", attempt=again.attempt).released
    assert counter(redis, "PROG") == 0 and redis.zcard(contacts_key("s-1", "sms")) == 0
    # a free, uncapped-budget reservation's marker survives the hand-over too
    free = ReserveRequest("r-free", 0, (), ContactLimit("s-2", "sms", 5, WEEK_S))
    ledger.reserve_many([free], NOW)
    [free_retry] = ledger.reserve_many([free], NOW)
    assert free_retry.replayed and free_retry.charged == () and ledger.release("r-free").released


def test_a_replay_that_would_charge_otherwise_leaves_the_reservation_with_its_maker(ledger, redis):
    [first] = ledger.reserve_many([ReserveRequest("r-1", Decimal("4.00"), (cap("PROG", "100"),), None)], NOW)
    [other] = ledger.reserve_many([ReserveRequest("r-1", Decimal("5.00"), (cap("PROG", "100"),), None)], NOW)
    assert other.replayed and not other.adopted and other.attempt == first.attempt
    assert ledger.release("r-1", attempt=first.attempt).released and counter(redis, "PROG") == 0


def test_a_replay_for_another_subscriber_leaves_the_reservation_with_its_maker(ledger, redis):
    """Two tries of one request id with other bodies race (a client reusing ids): the same cost
    for another subscriber must not take the first one's reservation over, or the contact
    window would count the subscriber the stored row does not name."""
    budgets = (cap("PROG", "100"),)
    [first] = ledger.reserve_many(
        [ReserveRequest("r-1", Decimal("5.00"), budgets, ContactLimit("s-1", "sms", 5, WEEK_S))], NOW
    )
    [other] = ledger.reserve_many(
        [ReserveRequest("r-1", Decimal("5.00"), budgets, ContactLimit("s-2", "sms", 5, WEEK_S))], NOW
    )
    assert other.replayed and not other.adopted and other.attempt == first.attempt
    [same] = ledger.reserve_many(
        [ReserveRequest("r-1", Decimal("5.00"), budgets, ContactLimit("s-1", "sms", 5, WEEK_S))], NOW
    )
    assert same.replayed and same.adopted  # the same contact is the same charge: taken over


def test_while_the_ledger_is_rebuilt_a_paid_replay_is_refused_too(ledger, redis):
    request = ReserveRequest("r-1", Decimal("4.00"), (cap("PROG", "100"),), None)
    ledger.reserve_many([request], NOW)
    ledger.begin_rebuild(lease_s=60)  # the rows are being summed: a replayed charge could be missed
    [replay] = ledger.reserve_many([request], NOW)
    assert replay.reason == NOT_READY and not replay.ok


def test_release_refunds_nothing_for_a_marker_that_changed_after_it_was_read(ledger, redis):
    assert ledger.reserve("r-1", cost=2, budgets=[cap("PROG", "100")], contact=None, now=NOW).ok
    stale = redis.get(request_key_marker("r-1"))
    ledger.release("r-1")
    assert ledger.reserve("r-1", cost=5, budgets=[cap("PROG", "100")], contact=None, now=NOW).ok
    # the compare-and-delete guard: a release acting on the old marker must not touch the new one
    keys = [request_key_marker("r-1"), budget_key("PROG", PERIOD)]
    assert ledger._release_script(keys=keys, args=[stale, 1, "", 200]) == -1
    assert counter(redis, "PROG") == 500
    assert ledger.release("r-1").refunded == (Charge("PROG", PERIOD, 500),)
    assert counter(redis, "PROG") == 0


def test_concurrent_releases_refund_once(ledger, redis):
    assert ledger.reserve("r-1", cost=7, budgets=[cap("PROG", "100")], contact=None, now=NOW).ok
    results: list[bool] = []
    threads = [threading.Thread(target=lambda: results.append(ledger.release("r-1").released)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 7 + [True]
    assert counter(redis, "PROG") == 0


# --- concurrency ------------------------------------------------------------------------------------------

RACE_REQUESTS = 5_000
RACE_PROCESSES = 2
RACE_THREADS = 16
RACE_CAP = "1000.00"


def _race_process(connection_class, connection_kwargs, keys, results):
    """One forked process: RACE_THREADS threads, each with its own client, reserving its share."""
    tallies: list[Counter] = []

    def run(thread_keys: list[str]) -> None:
        client = redis_lib.Redis(
            connection_pool=redis_lib.ConnectionPool(connection_class=connection_class, **connection_kwargs)
        )
        ledger = BudgetLedger(client)
        tally: Counter = Counter()
        for key in thread_keys:
            outcome = ledger.reserve(key, cost="1.00", budgets=[cap("RACE", RACE_CAP)], contact=None, now=NOW)
            tally[outcome.reason or ("replayed" if outcome.replayed else "ok")] += 1
        client.close()
        tallies.append(tally)

    threads = [threading.Thread(target=run, args=(keys[i::RACE_THREADS],)) for i in range(RACE_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results.put(dict(sum(tallies, Counter())))


def test_processes_and_threads_racing_never_overspend(ledger, redis):
    pool = redis.connection_pool
    keys = [f"race-{i}" for i in range(RACE_REQUESTS)]
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    started = time.perf_counter()
    processes = [
        context.Process(
            target=_race_process, args=(pool.connection_class, pool.connection_kwargs, keys[p::RACE_PROCESSES], results)
        )
        for p in range(RACE_PROCESSES)
    ]
    for process in processes:
        process.start()
    tallies = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=30)
        assert process.exitcode == 0
    elapsed_s = time.perf_counter() - started
    total = sum((Counter(t) for t in tallies), Counter())
    assert total == {"ok": 1_000, "budget_exhausted": 4_000}, total
    assert counter(redis, "RACE") == 100_000
    print(f"\n{RACE_REQUESTS} reservations by {RACE_PROCESSES}×{RACE_THREADS} workers in {elapsed_s:.2f}s")

    # every request again: the thousand winners are replays, the rest are still refused
    again: Counter = Counter()
    for key in keys:
        outcome = ledger.reserve(key, cost="1.00", budgets=[cap("RACE", RACE_CAP)], contact=None, now=NOW)
        again[outcome.reason or ("replayed" if outcome.replayed else "ok")] += 1
    assert again == {"replayed": 1_000, "budget_exhausted": 4_000}
    assert counter(redis, "RACE") == 100_000


def test_threads_racing_for_one_subscriber_respect_the_contact_cap(ledger, redis):
    sms = ContactLimit("s-1", "sms", 3, WEEK_S)
    outcomes: list[bool] = []

    def run(i: int) -> None:
        outcomes.append(ledger.reserve(f"c-{i}", cost=0, budgets=[], contact=sms, now=NOW).ok)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count(True) == 3
    assert redis.zcard(contacts_key("s-1", "sms")) == 3


# --- rebuild ----------------------------------------------------------------------------------------------


def test_rebuild_sets_counters_to_the_ledger_of_record_and_adds_contacts(ledger, redis):
    ledger.reserve(
        "r-live", cost=40, budgets=[cap("PROG", "1000")], contact=ContactLimit("s-1", "sms", 5, WEEK_S), now=NOW
    )
    ms = int(NOW.timestamp() * 1000)
    ledger.rebuild(
        {("PROG", PERIOD): Decimal("123.45"), ("SMS", PERIOD): 0.1 + 0.2, ("PROG", "2026-10"): 7},
        {("s-1", "sms"): [("r-old", ms - 3_600_000), ("r-live", ms)], ("s-2", "app"): []},
    )
    assert counter(redis, "PROG") == 12345  # set, not added to the live 40.00
    assert counter(redis, "SMS") == 30
    assert ledger.spent_total("PROG", "2026-10") == Decimal("7.00")
    assert ledger.read_state("s-1", {"sms": WEEK_S}, [], NOW).contacts_in_window == {"sms": 2}
    assert redis.ttl(contacts_key("s-1", "sms")) > 0
    assert redis.exists(contacts_key("s-2", "app")) == 0


def test_without_the_ready_mark_paid_reservations_and_replays_are_refused_and_free_ones_go_on(ledger, redis):
    paid = ledger.reserve("r-paid", cost=5, budgets=[cap("PROG", "100")], contact=None, now=NOW)
    redis.delete(LEDGER_READY_KEY)  # Redis restarted empty (or a rebuild began): spend unknown
    refused = ledger.reserve("r-late", cost=5, budgets=[cap("PROG", "100")], contact=None, now=NOW)
    assert (refused.ok, refused.reason, refused.charged) == (False, NOT_READY, ())
    free = ledger.reserve("r-free", cost=0, budgets=[], contact=ContactLimit("s-1", "sms", 5, WEEK_S), now=NOW)
    assert free.ok and free.contact_recorded
    replay = ledger.reserve("r-paid", cost=5, budgets=[cap("PROG", "100")], contact=None, now=NOW)
    assert replay.reason == NOT_READY and paid.ok  # a rebuild may be summing: no paid charge either way
    free_replay = ledger.reserve("r-free", cost=0, budgets=[], contact=ContactLimit("s-1", "sms", 5, WEEK_S), now=NOW)
    assert free_replay.ok and free_replay.replayed
    assert counter(redis, "PROG") == 500 and not redis.exists(request_key_marker("r-late"))
    # the same inside one batched script call: only the paid reservation is refused
    outcomes = ledger.reserve_many(
        [
            ReserveRequest("b-1", 0, (), ContactLimit("s-2", "sms", 5, WEEK_S)),
            ReserveRequest("b-2", 1, (cap("PROG", "100"),), None),
        ],
        NOW,
    )
    assert [o.reason for o in outcomes] == [None, NOT_READY]


def test_a_rebuild_takes_the_mark_away_and_sets_the_counters_only_while_it_holds_the_lease(ledger, redis):
    ledger.reserve("r-1", cost=5, budgets=[cap("PROG", "100")], contact=None, now=NOW)
    ledger.reserve("r-2", cost=7, budgets=[cap("OLD", "100")], contact=None, now=NOW)
    first = ledger.begin_rebuild(lease_s=60)
    assert not ledger.is_ready() and ledger.rebuilding()
    assert ledger.reserve("r-3", cost=1, budgets=[cap("PROG", "100")], contact=None, now=NOW).reason == NOT_READY

    second = ledger.begin_rebuild(lease_s=60)  # another reconcile started meanwhile
    assert ledger.rebuild({("PROG", PERIOD): 99}, {}, token=first, mark="first") is False
    assert counter(redis, "PROG") == 500 and not ledger.is_ready()  # the superseded one set nothing

    assert ledger.rebuild({("PROG", PERIOD): 5}, {}, token=second, mark="second") is True
    assert counter(redis, "PROG") == 500 and redis.get(LEDGER_READY_KEY) == b"second"
    assert counter(redis, "OLD") is None  # no charge in the ledger of record: back to zero
    assert not ledger.rebuilding()
    assert ledger.reserve("r-4", cost=1, budgets=[cap("PROG", "100")], contact=None, now=NOW).ok


def test_a_reserve_whose_answer_is_lost_is_undone(ledger, redis, monkeypatch):
    """The scripts ran but the reply never came back (a timeout): the caller answers without
    the reservations, so they are released; an earlier attempt's reservation is kept."""
    contact = ContactLimit("s-1", "sms", 5, WEEK_S)
    kept = ledger.reserve("r-earlier", cost=2, budgets=[cap("PROG", "100")], contact=None, now=NOW)
    real = BudgetLedger._evalsha_many

    def answer_lost(self, script, calls):
        replies = real(self, script, calls)
        if script is self._reserve_script:
            raise redis_lib.TimeoutError("Timeout reading from socket")
        return replies

    monkeypatch.setattr(BudgetLedger, "_evalsha_many", answer_lost)
    requests = [
        ReserveRequest("r-paid", 5, (cap("PROG", "100"), cap("SMS", "100")), contact),
        ReserveRequest("r-free", 0, (cap("PROG", "100"),), ContactLimit("s-2", "sms", 5, WEEK_S)),
        ReserveRequest("r-earlier", 2, (cap("PROG", "100"),), None),
    ]
    with pytest.raises(LedgerUnavailable):
        ledger.reserve_many(requests, NOW)
    monkeypatch.setattr(BudgetLedger, "_evalsha_many", real)
    assert counter(redis, "PROG") == 200 and counter(redis, "SMS") == 0  # only the earlier attempt's charge
    assert not redis.exists(request_key_marker("r-paid")) and not redis.exists(request_key_marker("r-free"))
    assert redis.zcard(contacts_key("s-1", "sms")) == 0 and redis.zcard(contacts_key("s-2", "sms")) == 0
    assert redis.exists(request_key_marker("r-earlier")) and kept.ok


# --- unavailable ------------------------------------------------------------------------------------------


class _ClientOptions(TypedDict):
    """The options both unreachable clients share: fail fast, never retry."""

    socket_connect_timeout: float
    socket_timeout: float
    retry: Retry


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("where", ["tcp", "unix"])
def test_an_unreachable_server_raises_ledger_unavailable(where, tmp_path):
    options: _ClientOptions = {"socket_connect_timeout": 0.2, "socket_timeout": 0.2, "retry": Retry(NoBackoff(), 0)}
    client = (
        redis_lib.Redis(host="127.0.0.1", port=_closed_port(), **options)
        if where == "tcp"
        else redis_lib.Redis(unix_socket_path=str(tmp_path / "missing.sock"), **options)
    )
    ledger = BudgetLedger(client)
    calls = [
        lambda: ledger.reserve("r-1", cost=1, budgets=[cap("PROG", "10")], contact=None, now=NOW),
        lambda: ledger.read_state("s-1", {"sms": WEEK_S}, [("PROG", PERIOD)], NOW),
        lambda: ledger.release("r-1"),
        lambda: ledger.rebuild({("PROG", PERIOD): 1}, {}),
        lambda: ledger.spent_total("PROG", PERIOD),
    ]
    started = time.perf_counter()
    for call in calls:
        with pytest.raises(LedgerUnavailable) as caught:
            call()
        assert isinstance(caught.value.__cause__, redis_lib.ConnectionError)
    assert time.perf_counter() - started < 5
