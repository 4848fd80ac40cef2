"""The decision API end to end on real Redis and the database: answers, idempotency, experiments,
budgets, contact caps, config changes, roles, bulk, and bad input."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from decisioning.api import decision_context
from decisioning.ledger import BudgetLedger
from decisioning.models import Decision
from decisioning.schemas import DecisionIn
from decisioning.service import decide_contacts
from experiments.models import Exposure
from infra.db import utcnow
from offers.models import BudgetCharge, Subscriber

URL = "/api/v1/decisions"
CREDIT = {
    "code": "BILL_CREDIT_5",
    "name": "€5 bill credit",
    "unit_cost": 5.0,
    "channels": ["sms", "app"],
    "prior_uplift": 0.05,
}
SMS = {"code": "CARE_SMS", "name": "Care SMS", "unit_cost": 0.0, "channels": ["sms"], "prior_uplift": 0.001}
VIP_ONLY = {
    "code": "ACCOUNT_MANAGER",
    "name": "Dedicated manager",
    "unit_cost": 20.0,
    "channels": ["sms"],
    "prior_uplift": 0.2,
}


@pytest.fixture()
def catalogue(client, auth):
    """Two tiers, three offers (the manager for VIPs only), a roomy programme budget."""
    admin = auth["admin"]
    for path, body in [
        ("/api/v1/offers", CREDIT),
        ("/api/v1/offers", SMS),
        ("/api/v1/offers", VIP_ONLY),
        ("/api/v1/tier-schemes", {"code": "value", "name": "Value", "is_primary": True}),
        (
            "/api/v1/tiers",
            {"code": "vip", "scheme_code": "value", "name": "VIP", "rank": 1, "rule": {"arpu": {"$gte": 100}}},
        ),
        ("/api/v1/tiers", {"code": "basic", "scheme_code": "value", "name": "Basic", "rank": 2, "rule": {}}),
        ("/api/v1/tier-policies", {"tier_code": "basic", "offer_code": "ACCOUNT_MANAGER", "allowed": False}),
        ("/api/v1/budgets", {"code": "fund", "name": "Retention fund", "cap_amount": 100000.0}),
    ]:
        r = client.post(path, json=body, headers=admin)
        assert r.status_code == 201, (path, r.json)
    for sid, arpu in (("s-vip", 150.0), ("s-basic", 30.0)):
        r = client.put(
            f"/api/v1/subscribers/{sid}", json={"attributes": {"arpu": arpu, "ltv": 1000.0}}, headers=auth["sms"]
        )
        assert r.status_code in (200, 201), r.json


def test_a_decision_names_the_action_the_reasons_and_is_stored(client, auth, catalogue):
    r = client.post(URL, json={"subscriber_id": "s-vip", "channel": "sms", "request_id": "r-1"}, headers=auth["sms"])
    assert r.status_code == 200, r.json
    body = r.json
    assert body["tier"] == "vip" and body["risk_level"] in ("blue", "yellow", "red")
    assert body["action"]["offer_code"] == "ACCOUNT_MANAGER"  # the best score for a VIP
    codes = {reason["offer_code"]: reason["code"] for reason in body["reasons"]}
    assert codes["BILL_CREDIT_5"] == "lower_score"
    assert body["degraded"] is False and body["probability"] == 1.0 and len(body["decision_id"]) == 32

    basic = client.post(URL, json={"subscriber_id": "s-basic", "channel": "sms"}, headers=auth["sms"]).json
    assert {r["offer_code"]: r["code"] for r in basic["reasons"]}["ACCOUNT_MANAGER"] == "tier_not_allowed"

    stored = client.get(f"{URL}/{body['decision_id']}", headers=auth["analyst"])
    assert stored.status_code == 200 and stored.json["action"] == body["action"]
    assert stored.json["reasons"] == body["reasons"]
    assert client.get(f"{URL}/{body['decision_id']}", headers=auth["app"]).status_code == 404  # other channel


def test_a_retry_gets_the_stored_decision_and_is_not_charged_twice(app, client, auth, catalogue, db, redis):
    request = {"subscriber_id": "s-vip", "channel": "sms", "request_id": "r-7"}
    first = client.post(URL, json=request, headers=auth["sms"]).json
    again = client.post(URL, json=request, headers=auth["sms"]).json
    assert again["decision_id"] == first["decision_id"] and again["replayed"] is True
    assert db.scalar(select(func.count()).select_from(Decision)) == 1
    assert db.scalar(select(func.sum(BudgetCharge.amount))) == 20
    period = utcnow().strftime("%Y-%m")
    assert BudgetLedger(redis).spent_total("fund", period) == 20

    other = client.post(URL, json={**request, "context": {"intent": "cancel"}}, headers=auth["sms"])
    assert other.status_code == 409 and other.json["error"]["code"] == "idempotency_conflict"
    header = client.post(
        URL, json={"subscriber_id": "s-vip", "channel": "sms"}, headers={**auth["sms"], "Idempotency-Key": "k-1"}
    ).json
    header_again = client.post(
        URL, json={"subscriber_id": "s-vip", "channel": "sms"}, headers={**auth["sms"], "Idempotency-Key": "k-1"}
    ).json
    assert header_again["decision_id"] == header["decision_id"]
    mismatch = client.post(URL, json={**request, "request_id": "x"}, headers={**auth["sms"], "Idempotency-Key": "y"})
    assert mismatch.status_code == 400


def test_a_budget_never_overspends_and_says_why(app, client, auth, catalogue, db, redis):
    client.patch("/api/v1/budgets/fund", json={"cap_amount": 50.0}, headers=auth["marketing"])
    with app.app_context():
        ctx = decision_context()
        end_of_month = datetime(2026, 11, 30, 23, 0, tzinfo=UTC)  # pacing allows nearly all
        answers = [
            decide_contacts(
                ctx,
                "key:test",
                [DecisionIn(subscriber_id="s-vip", channel="sms", request_id=f"b-{i}")],
                now=end_of_month,
            )[0]
            for i in range(4)
        ]
    actions = [a["action"]["offer_code"] if a["action"] else None for a in answers]
    assert actions[:2] == ["ACCOUNT_MANAGER", "ACCOUNT_MANAGER"]  # 2 × 20 of 50
    assert "ACCOUNT_MANAGER" not in actions[2:]
    third = {r["offer_code"]: r["code"] for r in answers[2]["reasons"]}
    assert third["ACCOUNT_MANAGER"] == "budget_exhausted"
    assert BudgetLedger(redis).spent_total("fund", "2026-11") <= 50


def test_pacing_holds_back_spend_early_in_the_period(app, client, auth, catalogue):
    client.patch("/api/v1/budgets/fund", json={"cap_amount": 300.0}, headers=auth["marketing"])
    with app.app_context():
        early = datetime(2026, 11, 2, 0, 0, tzinfo=UTC)  # 1/30 of November: ~11 allowed
        [answer] = decide_contacts(
            decision_context(),
            "key:test",
            [DecisionIn(subscriber_id="s-vip", channel="sms", request_id="p-1")],
            now=early,
        )
    assert answer["action"]["offer_code"] == "BILL_CREDIT_5", answer["reasons"]
    assert {r["offer_code"]: r["code"] for r in answer["reasons"]}["ACCOUNT_MANAGER"] == "pacing"


def _start_credit_pilot(client, auth, key: str, name: str) -> None:
    """An experiment at full coverage, control against the €5 credit, moved to its pilot."""
    experiment = {
        "key": key,
        "name": name,
        "coverage": 1.0,
        "arms": [{"key": "control"}, {"key": "credit", "offer_code": "BILL_CREDIT_5"}],
    }
    assert client.post("/api/v1/experiments", json=experiment, headers=auth["marketing"]).status_code == 201
    r = client.post(f"/api/v1/experiments/{key}/transition", json={"to": "pilot"}, headers=auth["marketing"])
    assert r.status_code == 200, r.json


def test_an_experiment_decides_for_its_subscribers_and_records_the_exposure(client, auth, catalogue, db):
    _start_credit_pilot(client, auth, "credit-test", "Credit vs none")
    answers = [
        client.post(URL, json={"subscriber_id": f"e-{i}", "channel": "sms"}, headers=auth["sms"]).json
        for i in range(20)
    ]
    arms = {a["experiment"]["arm"] for a in answers}
    assert arms == {"control", "credit"}
    for a in answers:
        expected = "BILL_CREDIT_5" if a["experiment"]["arm"] == "credit" else None
        assert (a["action"] or {}).get("offer_code") == expected
        assert a["probability"] == pytest.approx(0.5)
    assert db.scalar(select(func.count()).select_from(Exposure)) == 20
    first = answers[0]
    again = client.post(URL, json={"subscriber_id": "e-0", "channel": "app"}, headers=auth["app"]).json
    assert again["experiment"]["arm"] == first["experiment"]["arm"]  # sticky across channels
    row = db.scalar(select(Decision).where(Decision.id == first["decision_id"]))
    assert row.assignment_id is not None and row.arm_key == first["experiment"]["arm"]


def test_a_bulk_call_of_first_exposures_links_every_decision_to_its_exposure(client, auth, catalogue, db):
    # an experiment at full coverage: every contact of the batch is its subscriber's first exposure
    _start_credit_pilot(client, auth, "credit-all", "Credit for all")
    contacts = [{"subscriber_id": f"first-{i}", "channel": "sms"} for i in range(300)]
    r = client.post(f"{URL}/bulk", json={"contacts": contacts}, headers=auth["sms"])
    assert r.status_code == 200, r.json
    assert all(a["experiment"]["key"] == "credit-all" for a in r.json["decisions"])
    linked = db.execute(
        select(Decision.subscriber_id, Decision.arm_key, Exposure.subscriber_id, Exposure.arm_key).join(
            Exposure, Exposure.id == Decision.assignment_id
        )
    ).all()
    assert len(linked) == 300
    assert all(d_sub == e_sub and d_arm == e_arm for d_sub, d_arm, e_sub, e_arm in linked)


def test_a_config_change_is_seen_by_the_next_decision(client, auth, catalogue):
    before = client.post(URL, json={"subscriber_id": "s-basic", "channel": "sms"}, headers=auth["sms"]).json
    assert before["action"]["offer_code"] == "BILL_CREDIT_5"
    assert client.delete("/api/v1/offers/BILL_CREDIT_5", headers=auth["marketing"]).status_code == 200
    after = client.post(URL, json={"subscriber_id": "s-basic", "channel": "sms"}, headers=auth["sms"]).json
    assert (after["action"] or {}).get("offer_code") != "BILL_CREDIT_5"


def test_a_config_change_redis_could_not_announce_is_seen_by_the_next_decision(
    app, client, auth, catalogue, monkeypatch
):
    """Redis down as the change commits: its version bump is lost, but the change moved the
    database's config generation in its own transaction, which the next decision reads with
    the profile — long before the snapshot's age limit — and records as its snapshot version."""
    import redis as redis_lib

    from infra import config_version

    with app.app_context():
        monkeypatch.setattr(decision_context().cache, "max_age_s", 3600.0)  # the age limit is not what rebuilds
    before = client.post(URL, json={"subscriber_id": "s-basic", "channel": "sms"}, headers=auth["sms"]).json
    assert before["action"]["offer_code"] == "BILL_CREDIT_5"

    def redis_down(client):
        raise redis_lib.ConnectionError("injected: Redis is down")

    monkeypatch.setattr(config_version, "bump", redis_down)
    assert client.delete("/api/v1/offers/BILL_CREDIT_5", headers=auth["marketing"]).status_code == 200
    after = client.post(URL, json={"subscriber_id": "s-basic", "channel": "sms"}, headers=auth["sms"]).json
    assert (after["action"] or {}).get("offer_code") != "BILL_CREDIT_5"
    versions = [
        client.get(f"{URL}/{d['decision_id']}", headers=auth["analyst"]).json["snapshot_version"]
        for d in (before, after)
    ]
    assert versions[1] == versions[0] + 1


def test_the_config_generation_moves_once_per_committed_change_and_not_on_rollback(db):
    from infra.audit import record_audit
    from infra.config_version import read_generation

    start = read_generation(db)
    assert start >= 1
    record_audit(db, actor="test", action="update", entity_type="offer", entity_key="A", after={})
    record_audit(db, actor="test", action="update", entity_type="offer", entity_key="B", after={})
    db.commit()
    assert read_generation(db) == start + 1  # one transaction, one move
    record_audit(db, actor="test", action="update", entity_type="offer", entity_key="C", after={})
    db.rollback()
    assert read_generation(db) == start + 1
    db.commit()  # nothing changed since the rollback: nothing moves
    assert read_generation(db) == start + 1


def test_a_change_inside_a_savepoint_moves_the_generation_and_tells_redis_after_the_commit(db, redis):
    """SQLAlchemy signals a savepoint's release like a commit: the change must still move the
    generation when the transaction commits, and Redis must hear of it only then."""
    from infra.audit import record_audit
    from infra.config_version import read_generation, read_version

    start, announced = read_generation(db), read_version(redis)
    with db.begin_nested():
        record_audit(db, actor="test", action="update", entity_type="offer", entity_key="A", after={})
    assert read_version(redis) == announced  # not committed yet
    savepoint = db.begin_nested()  # a later savepoint rolled back keeps the earlier change
    record_audit(db, actor="test", action="update", entity_type="offer", entity_key="B", after={})
    savepoint.rollback()
    db.commit()
    assert read_generation(db) == start + 1 and read_version(redis) != announced


def test_a_config_load_is_one_snapshot_of_the_database(app, settings, monkeypatch):
    """A change committing while the config loads (PostgreSQL, read committed by default) must
    not slip into the snapshot under the older generation it was labelled with."""
    from sqlalchemy import text
    from sqlalchemy.orm import sessionmaker

    from decisioning import snapshot_cache
    from infra.db import make_engine

    if settings.is_sqlite:
        pytest.skip("SQLite's reads in one transaction share a snapshot already")
    engine = make_engine(settings.database_url)
    load_risk_policy = snapshot_cache._risk_policy

    def a_change_commits_midway(session):
        with engine.begin() as other:
            other.execute(
                text(
                    "INSERT INTO risk_policies (code, name, yellow_churn_score, red_churn_score, inactive_months, "
                    "consecutive_downgrades, unresolved_complaints, complaint_surge_90d, note, active, created_at, "
                    "updated_at) VALUES ('midway', 'Midway', 0.1, 0.2, 1, 1, 1, 1, '', true, now(), now())"
                )
            )
            other.execute(text("UPDATE config_generation SET generation = generation + 1"))
        return load_risk_policy(session)

    monkeypatch.setattr(snapshot_cache, "_risk_policy", a_change_commits_midway)
    try:
        with sessionmaker(bind=engine)() as session:
            generation = snapshot_cache.read_generation(session)
        with sessionmaker(bind=engine)() as session:
            loaded = snapshot_cache.load_config(session, utcnow())
        assert loaded.snapshot.version == generation
        assert loaded.snapshot.risk_policy.yellow_churn_score != 0.1  # not the midway policy
    finally:
        with engine.begin() as other:
            other.execute(text("DELETE FROM risk_policies WHERE code = 'midway'"))
        engine.dispose()


def test_roles_channels_and_bad_input(client, auth, catalogue):
    body = {"subscriber_id": "s-vip", "channel": "sms"}
    assert client.post(URL, json=body).status_code == 401
    assert client.post(URL, json=body, headers=auth["analyst"]).status_code == 403
    wrong = client.post(URL, json=body, headers=auth["app"])
    assert wrong.status_code == 403 and wrong.json["error"]["code"] == "channel_forbidden"
    assert client.post(URL, json=body, headers=auth["marketing"]).status_code == 200
    for bad in (
        {"subscriber_id": "s-1"},
        {"subscriber_id": "s-1", "channel": "fax"},
        {**body, "extra": 1},
        {**body, "context": []},
        {**body, "request_id": ""},
    ):
        r = client.post(URL, json=bad, headers=auth["sms"])
        assert r.status_code == 400, (bad, r.json)
    assert client.post(URL, data="{", headers={**auth["sms"], "Content-Type": "application/json"}).status_code == 400
    assert client.get(f"{URL}/nope", headers=auth["analyst"]).status_code == 404
    assert client.get(f"{URL}/{'0' * 32}", headers=auth["analyst"]).status_code == 404


def test_bulk_answers_in_order_and_refuses_oversized_batches(client, auth, catalogue):
    contacts = [
        {"subscriber_id": sid, "channel": "sms", "request_id": f"bulk-{i}"}
        for i, sid in enumerate(["s-vip", "s-basic", "unknown-subscriber"])
    ]
    r = client.post(f"{URL}/bulk", json={"contacts": contacts}, headers=auth["sms"])
    assert r.status_code == 200, r.json
    assert [d["subscriber_id"] for d in r.json["decisions"]] == ["s-vip", "s-basic", "unknown-subscriber"]
    again = client.post(f"{URL}/bulk", json={"contacts": contacts}, headers=auth["sms"]).json
    assert [d["replayed"] for d in again["decisions"]] == [True, True, True]
    too_many = {"contacts": [{"subscriber_id": f"s{i}", "channel": "sms"} for i in range(10_001)]}
    assert client.post(f"{URL}/bulk", json=too_many, headers=auth["sms"]).status_code == 400
    repeated = {"contacts": [contacts[0], contacts[0]]}
    assert client.post(f"{URL}/bulk", json=repeated, headers=auth["sms"]).status_code == 409
    mixed = {"contacts": [contacts[0], {"subscriber_id": "s-1", "channel": "app"}]}
    assert client.post(f"{URL}/bulk", json=mixed, headers=auth["sms"]).status_code == 403


def test_a_large_batch_gets_actions_the_deadline_is_per_decision(app, client, auth, catalogue, db, redis, monkeypatch):
    """A batch takes longer than one decision's deadline in all; its contacts must still get
    their actions, charged exactly once each (the deadline scales with the batch)."""
    with app.app_context():
        monkeypatch.setattr(decision_context(), "deadline_ms", 2.0)  # 400 contacts take far longer
    db.add_all(
        [
            Subscriber(id=f"b-{i}", attributes={"arpu": 30.0, "ltv": 1000.0}, tier=None, tiers={}, ltv=1000.0)
            for i in range(400)
        ]
    )
    db.commit()
    contacts = [{"subscriber_id": f"b-{i}", "channel": "sms", "request_id": f"big-{i}"} for i in range(400)]
    r = client.post(f"{URL}/bulk", json={"contacts": contacts}, headers=auth["sms"])
    assert r.status_code == 200, r.json
    decisions = r.json["decisions"]
    assert all(d["action"] is not None and d["action"]["offer_code"] == "BILL_CREDIT_5" for d in decisions)
    assert not [x for d in decisions for x in d["reasons"] if x["code"] == "deadline"]
    assert db.scalar(select(func.sum(BudgetCharge.amount))) == 5 * 400
    assert BudgetLedger(redis).spent_total("fund", utcnow().strftime("%Y-%m")) == 5 * 400


def _stored_in_chunks_of_three(db, monkeypatch, count: int) -> list[dict]:
    """``count`` subscribers (w-0, w-1, …) stored, and bulk calls writing their decisions three
    at a time; returns one SMS contact for each, its request id its subscriber's id."""
    from decisioning import service

    db.add_all(
        [
            Subscriber(id=f"w-{i}", attributes={"arpu": 30.0, "ltv": 1000.0}, tier=None, tiers={}, ltv=1000.0)
            for i in range(count)
        ]
    )
    db.commit()
    monkeypatch.setattr(service, "WRITE_CHUNK", 3)
    return [{"subscriber_id": f"w-{i}", "channel": "sms", "request_id": f"w-{i}"} for i in range(count)]


def test_a_bulk_write_failing_midway_keeps_what_was_stored_and_refunds_the_rest(
    app, client, auth, catalogue, db, redis, monkeypatch
):
    """A bulk call stores its decisions chunk by chunk. If the database fails one chunk, that
    chunk's reservations are refunded, the chunks stored stay stored and charged, the caller
    gets a 503, and Redis still equals the ledger of record; the retry completes the batch."""
    from decisioning.store import SqlConnection, StoreUnavailable
    from decisioning.store_pg import PostgresConnection

    contacts = _stored_in_chunks_of_three(db, monkeypatch, 9)
    calls = []
    for connection_class in (SqlConnection, PostgresConnection):

        def failing_second_write(self, *args, _write=connection_class.write, **kwargs):
            calls.append(1)
            if len(calls) == 2:
                raise StoreUnavailable("injected: the database went away during the second chunk")
            return _write(self, *args, **kwargs)

        monkeypatch.setattr(connection_class, "write", failing_second_write)

    r = client.post(f"{URL}/bulk", json={"contacts": contacts}, headers=auth["sms"])
    assert r.status_code == 503 and r.json["error"]["code"] == "decisions_unavailable"
    stored = set(db.scalars(select(Decision.request_id)))
    assert {"w-0", "w-1", "w-2"} <= stored and not stored & {"w-3", "w-4", "w-5"}
    period = utcnow().strftime("%Y-%m")
    charged = db.scalar(select(func.coalesce(func.sum(BudgetCharge.amount), 0)))
    assert charged >= 15 and BudgetLedger(redis).spent_total("fund", period) == charged

    again = client.post(f"{URL}/bulk", json={"contacts": contacts}, headers=auth["sms"])
    assert again.status_code == 200, again.json
    assert [d["replayed"] for d in again.json["decisions"][:3]] == [True] * 3
    assert all(d["action"]["offer_code"] == "BILL_CREDIT_5" for d in again.json["decisions"])
    assert db.scalar(select(func.sum(BudgetCharge.amount))) == 45
    assert BudgetLedger(redis).spent_total("fund", period) == 45


def test_a_bulk_call_reserves_a_chunk_only_once_the_previous_write_is_done(
    app, settings, client, auth, catalogue, db, redis, monkeypatch
):
    """The reconcile counts on each reservation's row being written within RESERVATION_TO_ROW_S:
    a chunk's write must start as soon as the chunk is reserved, never queue behind the writes
    of chunks reserved before it (each may take up to the statement timeout). The next chunk is
    still decided while the previous one is written."""
    import time

    from decisioning import service
    from decisioning.store_pg import PostgresConnection

    if settings.is_sqlite:
        pytest.skip("SQLite writes each chunk before deciding the next")
    contacts = _stored_in_chunks_of_three(db, monkeypatch, 9)
    reserved: dict[str, float] = {}
    written: dict[str, float] = {}

    def reserve(ctx, snapshot, chunk, *args, _reserve=service._reserve, **kwargs):
        reserved[chunk[0].request_id] = time.monotonic()
        return _reserve(ctx, snapshot, chunk, *args, **kwargs)

    def slow_write(self, chunk, *args, _write=PostgresConnection.write, **kwargs):
        written[chunk[0].request_id] = time.monotonic()
        time.sleep(0.3)  # a slow database
        return _write(self, chunk, *args, **kwargs)

    monkeypatch.setattr(service, "_reserve", reserve)
    monkeypatch.setattr(PostgresConnection, "write", slow_write)
    with app.app_context():  # the slow writes must not run the call past its deadline
        monkeypatch.setattr(decision_context(), "deadline_ms", 10_000)
    r = client.post(f"{URL}/bulk", json={"contacts": contacts}, headers=auth["sms"])
    assert r.status_code == 200, r.json
    assert list(reserved) == ["w-0", "w-3", "w-6"]
    waits = {rid: round(written[rid] - reserved[rid], 3) for rid in reserved}
    assert all(wait < 0.15 for wait in waits.values()), waits  # no write waited behind another
    assert db.scalar(select(func.sum(BudgetCharge.amount))) == 45
    assert BudgetLedger(redis).spent_total("fund", utcnow().strftime("%Y-%m")) == 45


@pytest.mark.parametrize("database_says", [True, False])
def test_a_write_whose_answer_is_lost_keeps_the_charges_its_rows_record(
    app, client, auth, catalogue, db, redis, monkeypatch, database_says
):
    """The connection breaks after the database committed a chunk: the rows are there, so
    their reservations must stay (a refund would leave Redis below the ledger of record). If
    the database cannot say what it stored, the reservations stay and the ledger's ready mark
    is taken away, so the reconcile rebuilds the counters from the rows."""
    from decisioning.ledger import LEDGER_READY_KEY
    from decisioning.store import SqlConnection, StoreUnavailable
    from decisioning.store_pg import PostgresConnection

    contacts = _stored_in_chunks_of_three(db, monkeypatch, 6)
    calls = []
    for connection_class in (SqlConnection, PostgresConnection):

        def committed_then_lost(self, *args, _write=connection_class.write, **kwargs):
            stored = _write(self, *args, **kwargs)
            calls.append(1)
            if len(calls) == 2:
                raise StoreUnavailable("injected: the connection broke after the commit")
            return stored

        monkeypatch.setattr(connection_class, "write", committed_then_lost)
        if not database_says:

            def cannot_say(self, *args, **kwargs):
                raise StoreUnavailable("injected: the database is gone")

            monkeypatch.setattr(connection_class, "stored", cannot_say)

    r = client.post(f"{URL}/bulk", json={"contacts": contacts}, headers=auth["sms"])
    assert r.status_code == 503
    assert db.scalar(select(func.sum(BudgetCharge.amount))) == 30  # both chunks committed
    assert BudgetLedger(redis).spent_total("fund", utcnow().strftime("%Y-%m")) == 30  # nothing refunded
    assert (redis.get(LEDGER_READY_KEY) is not None) is database_says


@pytest.mark.parametrize(
    "unreachable",
    ["postgresql+psycopg://postgres@127.0.0.1:1/nowhere", "sqlite:////nonexistent-carepilot-dir/carepilot.db"],
)
def test_an_unreachable_decision_store_answers_503_and_keeps_no_charge(app, db, redis, catalogue, unreachable):
    """The snapshot is loaded, Redis answers, the database of record does not: the call fails
    with DecisionStoreUnavailable (a 503 the channel may retry), and whatever was reserved is
    released, so Redis holds no charge the ledger of record lacks."""
    from sqlalchemy.orm import sessionmaker

    from decisioning.service import DecisionContext, DecisionStoreUnavailable
    from decisioning.snapshot_cache import SnapshotCache
    from infra.config_version import CONFIG_EPOCH_KEY, CONFIG_VERSION_KEY, parse_version
    from infra.db import get_database, make_engine

    engine = make_engine(unreachable)
    ctx = DecisionContext(sessionmaker(bind=engine), redis, SnapshotCache())
    version = parse_version(redis, redis.mget(CONFIG_EPOCH_KEY, CONFIG_VERSION_KEY))
    ctx.cache.current(get_database(app).sessionmaker, version, utcnow())  # loaded while the database was up
    body = DecisionIn(subscriber_id="s-vip", channel="sms", request_id="down-1")
    with pytest.raises(DecisionStoreUnavailable):
        decide_contacts(ctx, "key:test", [body])
    assert BudgetLedger(redis).spent_total("fund", utcnow().strftime("%Y-%m")) == 0
    assert not redis.keys("cp:ledger:request:*")
    engine.dispose()


def test_a_decision_write_stuck_behind_a_lock_gives_up_and_releases_its_reservation(
    app, settings, db, redis, catalogue
):
    """The reconcile counts on a reservation's row being written within RESERVATION_TO_ROW_S or
    never. On PostgreSQL a write waiting on a lock (a migration's, say) is cancelled by the
    store's statement timeout: the call fails with a 503 and its reservation is released, and
    the retry, once the lock is gone, is charged once. The app's other connections (admin
    pages, migrations) carry no such timeout."""
    import threading
    import time

    import psycopg
    from sqlalchemy import text
    from sqlalchemy.orm import sessionmaker

    from decisioning.service import DecisionContext, DecisionStoreUnavailable
    from decisioning.snapshot_cache import SnapshotCache
    from decisioning.store_pg import PostgresStore
    from infra.config_version import CONFIG_EPOCH_KEY, CONFIG_VERSION_KEY, parse_version
    from infra.db import get_database, make_engine

    if settings.is_sqlite:
        pytest.skip("SQLite bounds the lock wait with its busy timeout; this is PostgreSQL's statement timeout")
    engine = make_engine(settings.database_url)
    ctx = DecisionContext(sessionmaker(bind=engine), redis, SnapshotCache())
    ctx.store = PostgresStore(ctx.session_factory, statement_timeout_s=0.5)
    version = parse_version(redis, redis.mget(CONFIG_EPOCH_KEY, CONFIG_VERSION_KEY))
    ctx.cache.current(get_database(app).sessionmaker, version, utcnow())  # the test's uncommitted catalogue
    # the profile comes in the request: the test's subscribers are not committed
    body = DecisionIn(
        subscriber_id="s-locked", channel="sms", request_id="locked-1", context={"arpu": 30.0, "ltv": 1000.0}
    )
    period = utcnow().strftime("%Y-%m")
    conninfo = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    locker = psycopg.connect(conninfo)
    unlock = threading.Timer(6.0, locker.rollback)  # the old code waited for this, then stored the row
    try:
        locker.execute("LOCK TABLE decisions IN SHARE MODE")  # reads go on, inserts wait
        unlock.start()
        started = time.monotonic()
        with pytest.raises(DecisionStoreUnavailable):
            decide_contacts(ctx, "key:test", [body])
        assert time.monotonic() - started < 5
        assert BudgetLedger(redis).spent_total("fund", period) == 0
        assert not redis.keys("cp:ledger:request:*")
        unlock.cancel()
        locker.rollback()

        retried = decide_contacts(ctx, "key:test", [body])[0]
        assert retried["action"]["offer_code"] == "BILL_CREDIT_5" and retried["replayed"] is False
        assert BudgetLedger(redis).spent_total("fund", period) == 5
        with ctx.store.connect() as store_db:
            assert store_db._execute("SHOW statement_timeout", {}) == [("500ms",)]
        assert db.scalar(text("SHOW statement_timeout")) == "0"
    finally:
        unlock.cancel()
        locker.close()
        with engine.begin() as conn:  # committed outside the test's transaction
            conn.execute(text("DELETE FROM decisions WHERE request_id = 'locked-1'"))
        engine.dispose()


def test_a_budget_that_has_spent_keeps_its_period(client, auth, catalogue):
    """Spend is counted per period: a month budget turned quarterly mid-month would start the
    quarter at zero and could spend its whole cap again. Once charged, the period is fixed."""
    r = client.post(URL, json={"subscriber_id": "s-basic", "channel": "sms"}, headers=auth["sms"])
    assert r.json["action"]["offer_code"] == "BILL_CREDIT_5"
    changed = client.patch("/api/v1/budgets/fund", json={"period": "quarter"}, headers=auth["admin"])
    assert changed.status_code == 409 and changed.json["error"]["code"] == "budget_period_locked"
    assert "monthly" in changed.json["error"]["message"]
    assert client.get("/api/v1/budgets/fund", headers=auth["admin"]).json["period"] == "month"
    assert client.patch("/api/v1/budgets/fund", json={"cap_amount": 50000.0}, headers=auth["admin"]).status_code == 200
    # a budget that has spent nothing may still change its period
    assert (
        client.post(
            "/api/v1/budgets", json={"code": "new", "name": "New", "cap_amount": 10.0}, headers=auth["admin"]
        ).status_code
        == 201
    )
    assert client.patch("/api/v1/budgets/new", json={"period": "year"}, headers=auth["admin"]).json["period"] == "year"


def test_a_config_load_never_passes_an_older_config_for_the_version_it_read(app, db, monkeypatch):
    """Thread A reads the cached config (version 1); thread B loads version 2 before A checks
    it. A must judge the config it read by the version that config was loaded for, not by the
    one B just stored, or it would decide a batch on version 1 believing it is version 2."""
    from decisioning.snapshot_cache import LoadedConfig, SnapshotCache
    from infra.db import get_database

    factory, now = get_database(app).sessionmaker, utcnow()
    cache = SnapshotCache()
    first = cache.current(factory, ("epoch", 1), now)
    stale = cache._stale
    interleaved: list[LoadedConfig | None] = []

    def with_a_load_in_between(state, version, generation, at):
        if not interleaved:
            interleaved.append(None)
            interleaved[0] = cache.current(factory, ("epoch", 2), at)  # thread B, meanwhile
        return stale(state, version, generation, at)

    monkeypatch.setattr(cache, "_stale", with_a_load_in_between)
    got = cache.current(factory, ("epoch", 2), now)
    assert got is not first and got is interleaved[0]


def test_a_change_after_redis_lost_its_latest_versions_is_still_a_new_version(redis):
    """Redis back from a lagging replica (or an older snapshot) keeps its epoch but not its
    latest counter: the next change must not land on a version a process already holds, or
    that process would keep its old snapshot."""
    from infra.config_version import CONFIG_VERSION_KEY, bump, read_version

    bump(redis)
    for _ in range(20):
        held = read_version(redis)  # what a process has loaded
        redis.set(CONFIG_VERSION_KEY, held[1] - 1)  # Redis comes back one change behind
        bump(redis)
        assert read_version(redis) != held


def test_the_rate_limit_answers_429(app, client, auth, catalogue):
    settings = app.config["CAREPILOT_SETTINGS"]
    app.config["CAREPILOT_SETTINGS"] = dataclasses.replace(settings, decision_rate_limit_per_s=3)
    try:
        codes = [
            client.post(URL, json={"subscriber_id": "s-vip", "channel": "sms"}, headers=auth["sms"]).status_code
            for _ in range(6)
        ]
    finally:
        app.config["CAREPILOT_SETTINGS"] = settings
    assert 429 in codes and codes[0] == 200
    limited = client.post(URL, json={"subscriber_id": "s-vip", "channel": "sms"}, headers=auth["sms"])
    if limited.status_code == 429:
        assert limited.headers["Retry-After"] == "1"


def test_outcomes_reported_by_decision_id_land_on_the_experiment_exposure(client, auth, catalogue, db):
    from experiments.models import Outcome

    _start_credit_pilot(client, auth, "credit-test", "Credit vs none")
    in_test = client.post(URL, json={"subscriber_id": "e-1", "channel": "sms"}, headers=auth["sms"]).json
    client.post("/api/v1/experiments/credit-test/transition", json={"to": "stopped"}, headers=auth["marketing"])
    outside = client.post(URL, json={"subscriber_id": "s-vip", "channel": "sms"}, headers=auth["sms"]).json
    assert in_test["experiment"] and outside["experiment"] is None

    occurred = utcnow().isoformat()
    r = client.post(
        "/api/v1/outcomes",
        json={"decision_id": in_test["decision_id"], "type": "accepted", "occurred_at": occurred},
        headers=auth["sms"],
    )
    assert r.status_code == 201, r.json
    assert (r.json["experiment"], r.json["subscriber_id"]) == ("credit-test", "e-1")
    exposure = db.scalar(select(Exposure).where(Exposure.subscriber_id == "e-1"))
    assert db.scalar(select(Outcome.assignment_id).where(Outcome.type == "accepted")) == exposure.id
    refused = client.post(
        "/api/v1/outcomes",
        json={"decision_id": outside["decision_id"], "type": "accepted", "occurred_at": occurred},
        headers=auth["sms"],
    )
    assert refused.status_code == 409 and refused.json["error"]["code"] == "decision_not_in_experiment"
    lines = "\n".join(
        [
            "decision_id,type,value,occurred_at",
            f"{in_test['decision_id']},revenue,12.5,{occurred}",
            f"{outside['decision_id']},revenue,3,{occurred}",
            f"{'f' * 32},revenue,3,{occurred}",
        ]
    )
    bulk = client.post("/api/v1/outcomes/bulk", data=lines, headers={**auth["sms"], "Content-Type": "text/csv"})
    assert bulk.status_code == 200, bulk.json
    assert bulk.json["accepted"] == 1 and [e["line"] for e in bulk.json["rejected"]] == [3, 4]


def test_reconcile_rebuilds_the_counters_from_the_ledger_after_redis_lost_them(app, client, auth, catalogue, redis):

    from decisioning.jobs import REBUILT_MARK, reconcile_ledger, reconcile_ledger_job
    from infra.db import get_database
    from infra.job_runtime import bind_job_database
    from infra.queues import get_queue, run_queued_jobs_here

    client.post(
        "/api/v1/contact-policies", json={"channel": "sms", "max_contacts": 5, "window_days": 7}, headers=auth["admin"]
    )
    # a loaded machine (CI) must not turn a decision into "no action" past the deadline: every
    # one of the three is an action, a charge and a contact
    with app.app_context():
        decision_context().deadline_ms = 60_000
    answers = [
        client.post(
            URL, json={"subscriber_id": "s-vip", "channel": "sms", "request_id": f"rc-{i}"}, headers=auth["sms"]
        ).json
        for i in range(3)
    ]
    assert all(a["action"] is not None for a in answers), answers
    period = utcnow().strftime("%Y-%m")
    ledger = BudgetLedger(redis)
    spent_before = ledger.spent_total("fund", period)
    assert spent_before > 0
    assert ledger.read_state("s-vip", {"sms": 7 * 86_400}, [("fund", period)], utcnow())[0]["sms"] == 3
    redis.flushdb()  # Redis restarted without its data
    assert ledger.spent_total("fund", period) == 0

    # paid actions are held back until the rebuild: an empty Redis must not let spend restart at zero
    held = client.post(
        URL, json={"subscriber_id": "s-vip", "channel": "sms", "request_id": "rc-held"}, headers=auth["sms"]
    ).json
    assert held["degraded"] is True and (held["action"] is None or held["action"]["cost"] == 0), held
    assert ledger.spent_total("fund", period) == 0

    get_queue(redis).enqueue(reconcile_ledger_job, grace_s=0)  # the cron's tick, without its wait
    bind_job_database(get_database(app))
    run_queued_jobs_here(redis)
    assert ledger.spent_total("fund", period) == spent_before and redis.exists(REBUILT_MARK)
    state = ledger.read_state("s-vip", {"sms": 7 * 86_400}, [("fund", period)], utcnow())
    assert state[0]["sms"] == 3 + (held["action"] is not None)  # a free action held meanwhile is a contact too
    # the mark is there: the next tick leaves the counters alone; a forced run rebuilds the same sums
    assert reconcile_ledger(get_database(app).sessionmaker, redis, grace_s=0)["budgets"] == 1
    assert ledger.spent_total("fund", period) == spent_before


def test_new_ids_are_distinct_128_bit_hex():
    from decisioning.service import new_ids

    ids = new_ids(10_000)
    assert len(set(ids)) == 10_000
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    assert new_ids(0) == []


@pytest.mark.parametrize(
    "context, message",
    [
        ({"ltv": 10**400}, "ltv: is far too large"),  # was a 500: the request hash could not encode it
        ({"n": 2**64}, "n: is an integer beyond 64 bits"),  # was a 500 that left the batcher stuck
        ({"has_broadband": "false"}, "has_broadband: must be true or false"),  # a string is not a boolean
        ({"churn_score": True}, "churn_score"),
        ({"tier": "vip"}, "tier cannot be stored as an attribute"),  # computed by the tier rules
        ({"hours_since_join": 1}, "computed at contact time"),
        ({"offers": {"nested": 1}}, "profiles are flat"),
    ],
)
def test_context_attributes_are_checked_like_a_stored_profile(client, auth, catalogue, context, message):
    response = client.post(
        URL, json={"subscriber_id": "s-vip", "channel": "sms", "context": context}, headers=auth["sms"]
    )
    assert response.status_code in (400, 422), response.json
    assert message in str(response.json), response.json
    bulk = client.post(
        f"{URL}/bulk",
        json={
            "contacts": [
                {"subscriber_id": "s-vip", "channel": "sms"},
                {"subscriber_id": "s-vip", "channel": "sms", "context": context},
            ]
        },
        headers=auth["sms"],
    )
    assert bulk.status_code in (400, 422) and "contacts" in str(bulk.json), bulk.json


def test_a_null_context_attribute_is_kept_as_unknown_now(client, auth, catalogue):
    response = client.post(
        URL, json={"subscriber_id": "s-vip", "channel": "sms", "context": {"ltv": None}}, headers=auth["sms"]
    )
    assert response.status_code == 200, response.json


def test_an_idempotency_key_covers_the_whole_bulk_call(client, auth, catalogue):
    bulk_url, headers = f"{URL}/bulk", {**auth["sms"], "Idempotency-Key": "batch-7"}
    two = [{"subscriber_id": "s-vip", "channel": "sms"}, {"subscriber_id": "s-basic", "channel": "sms"}]
    first = client.post(bulk_url, json={"contacts": two}, headers=headers)
    assert first.status_code == 200, first.json
    again = client.post(bulk_url, json={"contacts": two}, headers=headers).json["decisions"]
    assert [a["replayed"] for a in again] == [True, True]
    assert [a["decision_id"] for a in again] == [a["decision_id"] for a in first.json["decisions"]]
    # the key sent again with another batch (one more contact, or fewer) is a 409, and nothing is decided
    for contacts in ([*two, {"subscriber_id": "s-new", "channel": "sms"}], two[:1]):
        other = client.post(bulk_url, json={"contacts": contacts}, headers=headers)
        assert other.status_code == 409 and other.json["error"]["code"] == "idempotency_conflict", other.json
    # a one-contact bulk call and a single decision with the same key are different requests
    single = client.post(URL, json=two[0], headers=headers)
    assert single.status_code == 200 and single.json["replayed"] is False
    # contacts with request ids of their own would be keyed by them, not by the key: both is a 400
    keyed = [{**two[0], "request_id": "own-1"}, two[1]]
    both = client.post(bulk_url, json={"contacts": keyed}, headers={**auth["sms"], "Idempotency-Key": "batch-8"})
    assert both.status_code == 400 and both.json["error"]["code"] == "idempotency_mismatch", both.json
    assert both.json["error"]["details"] == [{"path": "$.contacts[0].request_id", "message": "drop it, or the header"}]


def test_an_idempotency_key_too_long_for_the_bulk_calls_request_ids_is_a_400(client, auth, catalogue):
    contacts = [{"subscriber_id": "s-vip", "channel": "sms"}] * 12
    key = "k" * 126  # "k…k#11" would be 129 characters, past the request id's 128
    response = client.post(f"{URL}/bulk", json={"contacts": contacts}, headers={**auth["sms"], "Idempotency-Key": key})
    assert response.status_code == 400 and response.json["error"]["code"] == "invalid_header", response.json
    assert "at most 125" in response.json["error"]["message"]
    fits = client.post(
        f"{URL}/bulk", json={"contacts": contacts}, headers={**auth["sms"], "Idempotency-Key": key[:125]}
    )
    assert fits.status_code == 200, fits.json


def test_a_call_refused_by_the_rate_limit_gives_its_count_back(app, client, auth, catalogue, redis):
    from decisioning.service import RateLimited, decide_contacts

    bodies = [DecisionIn(subscriber_id="s-vip", channel="sms") for _ in range(10)]
    with app.app_context():
        with pytest.raises(RateLimited):
            decide_contacts(decision_context(), "key:limited", bodies, rate_limit_per_s=5, bulk=True)
        # nothing was decided, so nothing counts against the key: a call that fits goes through
        assert all(int(redis.get(key)) == 0 for key in redis.keys("cp:rate:key:limited:*"))
        assert len(decide_contacts(decision_context(), "key:limited", bodies[:5], rate_limit_per_s=5)) == 5


def test_a_body_nested_past_the_parsers_depth_is_a_400_not_a_500(client, auth, catalogue):
    deep = "[" * 1100 + "]" * 1100
    body = '{"subscriber_id": "s-vip", "channel": "sms", "context": {"x": ' + deep + "}}"
    response = client.post(URL, data=body, content_type="application/json", headers=auth["sms"])
    assert response.status_code == 400 and response.json["error"]["code"] == "invalid_json", response.json
    assert client.post(URL, json={"subscriber_id": "s-vip", "channel": "sms"}, headers=auth["sms"]).status_code == 200


def test_two_idempotency_keys_in_one_request_are_a_400(client, auth, catalogue):
    headers = [*auth["sms"].items(), ("Idempotency-Key", "k-a"), ("Idempotency-Key", "k-b")]
    response = client.post(URL, json={"subscriber_id": "s-vip", "channel": "sms"}, headers=headers)
    assert response.status_code == 400 and response.json["error"]["code"] == "invalid_header", response.json
