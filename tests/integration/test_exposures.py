"""Exposures: the first exposure is recorded and wins thereafter (coverage raised, new phase),
the holdout is recorded, subscribers outside the experiment are not, racing exposers store one
row; the HTTP endpoint's roles, channel rules and validation."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import delete, func, select
from sqlalchemy.orm import sessionmaker

from experiments.assignment import assign
from experiments.exposures import expose
from experiments.models import Experiment, ExperimentArm, Exposure
from experiments.service import experiment_spec, get_experiment
from infra.db import get_database, utcnow

KEY = "care-sms"
URL = f"/api/v1/experiments/{KEY}/exposures"
EXPERIMENT = {
    "key": KEY,
    "name": "Care SMS vs no care",
    "coverage": 1.0,
    "arms": [{"key": "control"}, {"key": "care_sms", "offer_code": "CARE_SMS"}],
}


@pytest.fixture()
def catalogue(client, auth):
    offer = {"code": "CARE_SMS", "name": "Care SMS", "unit_cost": 0.05, "channels": ["sms", "app"]}
    assert client.post("/api/v1/offers", json=offer, headers=auth["marketing"]).status_code == 201
    for path, body in (
        ("tier-schemes", {"code": "value", "name": "Value tiers", "is_primary": True}),
        ("tiers", {"code": "vip", "scheme_code": "value", "name": "VIP", "rank": 1, "rule": {"arpu": {"$gte": 90}}}),
        ("tiers", {"code": "basic", "scheme_code": "value", "name": "Basic", "rank": 2, "rule": {}}),
    ):
        r = client.post(f"/api/v1/{path}", json=body, headers=auth["marketing"])
        assert r.status_code == 201, r.json


def running(client, auth, **overrides):
    r = client.post("/api/v1/experiments", json={**EXPERIMENT, **overrides}, headers=auth["marketing"])
    assert r.status_code == 201, r.json
    r = client.post(f"/api/v1/experiments/{KEY}/transition", json={"to": "pilot"}, headers=auth["marketing"])
    assert r.status_code == 200, r.json


def post(client, headers, subscriber_id: str, **extra):
    return client.post(URL, json={"subscriber_id": subscriber_id, **extra}, headers=headers)


def rows(db, subscriber_id: str | None = None) -> list[Exposure]:
    db.expire_all()
    query = select(Exposure).order_by(Exposure.id)
    if subscriber_id is not None:
        query = query.where(Exposure.subscriber_id == subscriber_id)
    return list(db.scalars(query))


def ids_where(db, reason: str, n: int = 1, prefix: str = "s") -> list[str]:
    """The first ``n`` ids "s-0", "s-1", … that the experiment's current phase assigns with ``reason``."""
    db.expire_all()
    spec = experiment_spec(get_experiment(db, KEY))
    found = [sid for sid in (f"{prefix}-{i}" for i in range(5000)) if assign(spec, sid).reason == reason]
    assert len(found) >= n, f"fewer than {n} ids with reason {reason}"
    return found[:n]


# --- recording the first exposure ----------------------------------------------------------


def test_the_first_exposure_is_recorded_with_tier_and_channel_and_then_returned(client, auth, db, catalogue):
    running(client, auth)
    r = client.put("/api/v1/subscribers/s-vip", json={"attributes": {"arpu": 120}}, headers=auth["sms"])
    assert r.status_code == 201
    expected = assign(experiment_spec(get_experiment(db, KEY)), "s-vip").arm_key

    r = post(client, auth["sms"], "s-vip")
    assert r.status_code == 201, r.json
    assert r.json["arm"] == expected and r.json["in_experiment"] is True and r.json["new"] is True
    assert r.json["reason"] == "assigned" and r.json["tier"] == "vip" and r.json["channel"] == "sms"

    again = post(client, auth["app"], "s-vip")
    assert again.status_code == 200 and again.json["new"] is False
    assert again.json["arm"] == expected and again.json["channel"] == "sms"  # the first exposure's
    assert again.json["first_exposed_at"] == r.json["first_exposed_at"]
    [row] = rows(db)
    assert (row.subscriber_id, row.arm_key, row.in_holdout, row.tier, row.channel, row.phase) == (
        "s-vip",
        expected,
        False,
        "vip",
        "sms",
        1,
    )


def test_a_subscriber_without_a_profile_is_exposed_without_a_tier(client, auth, db, catalogue):
    running(client, auth)
    r = post(client, auth["marketing"], "no-profile", channel="retail")
    assert r.status_code == 201 and r.json["tier"] is None and r.json["channel"] == "retail"
    assert rows(db)[0].channel == "retail"


def test_the_first_exposure_wins_after_coverage_is_raised(client, auth, db, catalogue):
    running(client, auth, coverage=0.3)
    covered = ids_where(db, "assigned", 5)
    outside = ids_where(db, "not_covered", 3)
    first = {sid: post(client, auth["sms"], sid).json["arm"] for sid in covered}
    for sid in outside:
        r = post(client, auth["sms"], sid)
        assert r.status_code == 200 and r.json["in_experiment"] is False and r.json["reason"] == "not_covered"
    assert {row.subscriber_id for row in rows(db)} == set(covered)  # the uncovered are not recorded

    r = client.patch(f"/api/v1/experiments/{KEY}", json={"coverage": 1.0}, headers=auth["marketing"])
    assert r.status_code == 200, r.json
    for sid in covered:
        r = post(client, auth["sms"], sid)
        assert r.status_code == 200 and r.json["arm"] == first[sid] and r.json["new"] is False
    for sid in outside:  # newly covered: recorded now
        assert post(client, auth["sms"], sid).status_code == 201
    assert len(rows(db)) == len(covered) + len(outside)


def test_the_first_exposure_wins_after_a_new_phase(client, auth, db, catalogue):
    running(client, auth, coverage=0.6)
    candidates = ids_where(db, "assigned", 300)
    first = {sid: post(client, auth["sms"], sid).json["arm"] for sid in candidates}
    r = client.post(
        f"/api/v1/experiments/{KEY}/phases", json={"weights": {"control": 1, "care_sms": 9}}, headers=auth["marketing"]
    )
    assert r.status_code == 201, r.json

    db.expire_all()
    spec = experiment_spec(get_experiment(db, KEY))
    moved = [sid for sid in candidates if assign(spec, sid).arm_key not in (None, first[sid])]
    dropped = [sid for sid in candidates if assign(spec, sid).reason == "not_covered"]
    assert moved and dropped, "the new seed should move some subscribers and uncover others"
    for sid in moved + dropped:
        r = post(client, auth["sms"], sid)
        assert r.status_code == 200 and r.json["arm"] == first[sid] and r.json["phase"] == 1, sid
    newcomer = next(sid for sid in ids_where(db, "assigned", 400, prefix="n"))
    r = post(client, auth["sms"], newcomer)
    assert r.status_code == 201 and r.json["phase"] == 2 and r.json["arm"] == assign(spec, newcomer).arm_key


def test_the_holdout_is_recorded_as_the_no_care_baseline(client, auth, db, catalogue):
    running(client, auth, holdout_share=0.3)
    [held] = ids_where(db, "holdout")
    r = post(client, auth["sms"], held)
    assert r.status_code == 201, r.json
    assert r.json["arm"] is None and r.json["in_holdout"] is True and r.json["in_experiment"] is False
    assert r.json["reason"] == "holdout"
    [row] = rows(db, held)
    assert row.arm_key is None and row.in_holdout is True
    again = post(client, auth["sms"], held)
    assert again.status_code == 200 and again.json["in_holdout"] is True


def test_subscribers_outside_the_namespace_are_not_recorded(client, auth, db, catalogue):
    running(client, auth, namespace="care", namespace_start=0.0, namespace_end=0.5)
    [outside] = ids_where(db, "not_in_namespace")
    r = post(client, auth["sms"], outside)
    assert r.status_code == 200 and r.json["reason"] == "not_in_namespace" and rows(db) == []


def test_only_targeted_subscribers_are_exposed_and_they_stay(client, auth, db, catalogue):
    running(client, auth, target={"churn_score": {"$gte": 0.5}})
    for sid, score in (("t-low", 0.1), ("t-high", 0.9)):
        r = client.put(
            f"/api/v1/subscribers/{sid}", json={"attributes": {"churn_score": score, "arpu": 10}}, headers=auth["sms"]
        )
        assert r.status_code == 201
    r = post(client, auth["sms"], "t-low")
    assert r.status_code == 200 and r.json["reason"] == "not_targeted" and r.json["in_experiment"] is False
    assert post(client, auth["sms"], "no-profile").json["reason"] == "not_targeted"
    r = post(client, auth["sms"], "t-high")
    assert r.status_code == 201 and r.json["tier"] == "basic"
    # The profile changes after exposure: the subscriber stays in the experiment (intention to treat)
    client.put("/api/v1/subscribers/t-high", json={"attributes": {"churn_score": 0.0}}, headers=auth["sms"])
    again = post(client, auth["sms"], "t-high")
    assert again.status_code == 200 and again.json["arm"] == r.json["arm"]
    assert [row.subscriber_id for row in rows(db)] == ["t-high"]


def test_only_running_experiments_expose(client, auth, db, catalogue):
    r = client.post("/api/v1/experiments", json=EXPERIMENT, headers=auth["marketing"])
    assert r.status_code == 201
    r = post(client, auth["sms"], "s-1")
    assert r.status_code == 409 and r.json["error"]["code"] == "experiment_not_running"
    assert "draft" in r.json["error"]["message"]
    assert post(client, auth["sms"], "s-1").status_code == 409
    r = client.post("/api/v1/experiments/nope/exposures", json={"subscriber_id": "s-1"}, headers=auth["sms"])
    assert r.status_code == 404 and r.json["error"]["code"] == "experiment_not_found"
    assert rows(db) == []


# --- the endpoint: callers and bodies ------------------------------------------------------


def test_exposures_need_a_channel_key_or_a_writer(client, auth, db, catalogue):
    running(client, auth)
    assert client.post(URL, json={"subscriber_id": "s-1"}).status_code == 401
    r = post(client, auth["analyst"], "s-1")
    assert r.status_code == 403 and r.json["error"]["code"] == "role_forbidden"
    r = post(client, auth["sms"], "s-1", channel="app")
    assert r.status_code == 403 and r.json["error"]["code"] == "channel_mismatch"
    assert rows(db) == []
    assert post(client, auth["sms"], "s-1", channel="sms").status_code == 201
    assert post(client, auth["admin"], "s-2").status_code == 201


@pytest.mark.parametrize(
    "body, path",
    [
        ({"subscriber_id": 5}, "$.subscriber_id"),
        ({"subscriber_id": ""}, "$.subscriber_id"),
        ({"subscriber_id": "x" * 65}, "$.subscriber_id"),
        ({"subscriber_id": "s-1", "channel": "fax"}, "$.channel"),
        ({"subscriber_id": "s-1", "arm": "care_sms"}, "$.arm"),
        ({}, "$.subscriber_id"),
    ],
)
def test_bad_exposure_bodies_are_400(client, auth, db, catalogue, body, path):
    running(client, auth)
    r = client.post(URL, json=body, headers=auth["sms"])
    assert r.status_code == 400 and r.json["error"]["code"] == "validation_error", r.json
    assert path in [d["path"] for d in r.json["error"]["details"]]
    assert rows(db) == []


def test_malformed_exposure_json_is_400(client, auth, db, catalogue):
    running(client, auth)
    r = client.post(URL, data='{"subscriber_id": ', headers={**auth["sms"], "Content-Type": "application/json"})
    assert r.status_code == 400 and r.json["error"]["code"] == "invalid_json"


# --- racing exposers -----------------------------------------------------------------------


@pytest.fixture()
def factory(app):
    """Sessions on the app's engine that commit for real (the race needs separate connections;
    the ``db`` fixture's sessions share one connection that is rolled back)."""
    return sessionmaker(bind=get_database(app).engine, expire_on_commit=False)


@pytest.fixture()
def committed_experiment(factory):
    """A running experiment committed for real, removed afterwards with its exposures."""
    with factory() as session:
        experiment = Experiment(
            key="race",
            name="Race",
            status="pilot",
            target={},
            hash_seed="race",
            coverage=1.0,
            guardrails=[],
            promotion_policy={},
            phase=1,
            started_at=utcnow(),
        )
        experiment.arms = [
            ExperimentArm(key="control", weight=1, is_control=True, position=0),
            ExperimentArm(key="call_back", weight=1, is_control=False, position=1),
        ]
        session.add(experiment)
        session.commit()
        experiment_id = experiment.id
        assert [arm.key for arm in experiment.arms] == ["control", "call_back"]  # loaded before detaching
    yield experiment
    with factory() as session:
        session.execute(delete(Experiment).where(Experiment.id == experiment_id))
        session.commit()


def test_racing_first_exposures_store_one_row_and_agree(factory, committed_experiment):
    for round_no in range(8):
        subscriber_id = f"racer-{round_no}"
        barrier = threading.Barrier(2)
        results: list = []
        errors: list[BaseException] = []

        def exposer(channel: str, barrier=barrier, results=results, subscriber_id=subscriber_id, errors=errors) -> None:
            try:
                with factory() as session:
                    barrier.wait(timeout=10)
                    results.append(
                        expose(session, committed_experiment, subscriber_id, tier=None, channel=channel, now=utcnow())
                    )
                    session.commit()
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        threads = [threading.Thread(target=exposer, args=(channel,)) for channel in ("sms", "app")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert errors == []
        assert len(results) == 2
        assert sorted(r.new for r in results) == [False, True]  # exactly one recorded it
        assert results[0].arm_key == results[1].arm_key and results[0].exposure_id == results[1].exposure_id
        assert results[0].channel == results[1].channel  # the winner's channel, for both
        with factory() as session:
            count = session.scalar(
                select(func.count())
                .select_from(Exposure)
                .where(Exposure.experiment_id == committed_experiment.id, Exposure.subscriber_id == subscriber_id)
            )
        assert count == 1
