"""Sufficient statistics per arm (and holdout) × tier, computed by the database: a small
example worked out by hand, the empty experiment, and the endpoint's roles."""

from __future__ import annotations

from datetime import timedelta

import pytest

from experiments.models import Exposure, Outcome
from experiments.service import get_experiment
from experiments.stats_sql import ArmStats, experiment_stats
from infra.db import utcnow
from tests.integration.care_sms_pilot import start_care_sms_pilot

KEY = "care-sms"
URL = f"/api/v1/experiments/{KEY}/stats"
EXPERIMENT = {
    "key": KEY,
    "name": "Care SMS vs no care",
    "coverage": 1.0,
    "holdout_share": 0.2,
    "arms": [{"key": "control"}, {"key": "care_sms", "offer_code": "CARE_SMS"}],
}
CUTOFF = utcnow().replace(microsecond=0)

# (subscriber, arm or None for the holdout, tier, days before the cutoff of the first exposure,
#  outcomes as (type, value, day_n))
EXAMPLE: list[tuple[str, str | None, str | None, int, list[tuple[str, float | None, int | None]]]] = [
    ("c1", "control", "vip", 40, [("retained", None, 30), ("revenue", 10.0, None), ("delivered", None, None)]),
    ("c2", "control", "vip", 40, [("churned", None, 12), ("revenue", 4.0, None), ("complaint", None, None)]),
    ("c3", "control", "basic", 35, [("retained", None, 30), ("retained", None, 60), ("revenue", 6.0, None)]),
    # not matured (exposed 10 days ago): its early churn is not a day-30 outcome yet
    ("c4", "control", "basic", 10, [("churned", None, 5), ("revenue", 3.0, None), ("accepted", None, None)]),
    # churned after day 30: retained at day 30, not churned by it
    (
        "t1",
        "care_sms",
        "vip",
        50,
        [
            ("retained", None, 30),
            ("churned", None, 45),
            ("revenue", 20.0, None),
            ("delivered", None, None),
            ("accepted", None, None),
        ],
    ),
    ("t2", "care_sms", "basic", 31, [("churned", None, 30), ("declined", None, None)]),
    # a check on day 31 is not the day-30 check; no tier at exposure
    ("t3", "care_sms", None, 45, [("retained", None, 31), ("complaint", 2.0, None)]),
    ("h1", None, "basic", 60, [("retained", None, 30), ("revenue", 8.0, None)]),
    ("h2", None, "basic", 60, [("churned", None, 2)]),
]

# Worked out by hand from EXAMPLE (exposed, matured, retained, churned, revenue_n, revenue_sum,
# revenue_sum_squares, complaints, delivered, accepted, declined)
TOTALS = {
    "control": (4, 3, 2, 1, 4, 23.0, 100 + 16 + 36 + 9.0, 1, 1, 1, 0),
    "care_sms": (3, 3, 1, 1, 1, 20.0, 400.0, 1, 1, 1, 1),
    None: (2, 2, 1, 1, 1, 8.0, 64.0, 0, 0, 0, 0),
}
ZERO = (0, 0, 0, 0, 0, 0.0, 0.0, 0, 0, 0, 0)
PER_TIER = {
    "basic": {
        "control": (2, 1, 1, 0, 2, 9.0, 45.0, 0, 0, 1, 0),
        "care_sms": (1, 1, 0, 1, 0, 0.0, 0.0, 0, 0, 0, 1),
        None: (2, 2, 1, 1, 1, 8.0, 64.0, 0, 0, 0, 0),
    },
    "vip": {
        "control": (2, 2, 1, 1, 2, 14.0, 116.0, 1, 1, 0, 0),
        "care_sms": (1, 1, 1, 0, 1, 20.0, 400.0, 0, 1, 1, 0),
        None: ZERO,
    },
    None: {"control": ZERO, "care_sms": (1, 1, 0, 0, 0, 0.0, 0.0, 1, 0, 0, 0), None: ZERO},
}
FIELDS = (
    "exposed",
    "matured",
    "retained",
    "churned",
    "revenue_n",
    "revenue_sum",
    "revenue_sum_squares",
    "complaints",
    "delivered",
    "accepted",
    "declined",
)


@pytest.fixture()
def experiment(client, auth, db):
    start_care_sms_pilot(client, auth, EXPERIMENT)
    return get_experiment(db, KEY)


@pytest.fixture()
def example(db, experiment):
    """EXAMPLE written straight into the tables (the statistics do not care how it got there)."""
    for sid, arm, tier, days_before, outcomes in EXAMPLE:
        exposure = Exposure(
            experiment_id=experiment.id,
            subscriber_id=sid,
            arm_key=arm,
            in_holdout=arm is None,
            phase=1,
            tier=tier,
            channel="sms",
            first_exposed_at=CUTOFF - timedelta(days=days_before),
        )
        db.add(exposure)
        db.flush()
        for type_, value, day_n in outcomes:
            db.add(
                Outcome(
                    assignment_id=exposure.id,
                    type=type_,
                    value=value,
                    day_n=day_n,
                    occurred_at=exposure.first_exposed_at + timedelta(days=day_n or 1),
                )
            )
    db.commit()
    return experiment


def counts(arm: dict) -> tuple:
    return tuple(arm[name] for name in FIELDS)


def test_the_statistics_match_the_example_worked_out_by_hand(db, example):
    stats = experiment_stats(db, example, data_cutoff=CUTOFF)
    assert (stats.experiment_key, stats.primary_metric, stats.day_n) == (KEY, "retained_d30", 30)
    assert stats.matured_before == CUTOFF - timedelta(days=30)
    assert [(a.arm_key, a.is_control, a.in_holdout) for a in stats.arms] == [
        ("control", True, False),
        ("care_sms", False, False),
        (None, False, True),
    ]
    assert {a.arm_key: tuple(getattr(a, f) for f in FIELDS) for a in stats.arms} == TOTALS
    assert [t.tier for t in stats.tiers] == ["basic", "vip", None]
    for tier in stats.tiers:
        assert {a.arm_key: tuple(getattr(a, f) for f in FIELDS) for a in tier.arms} == PER_TIER[tier.tier], tier.tier
    assert all(isinstance(a.exposed, int) and isinstance(a.revenue_sum, float) for a in stats.arms)


def test_the_stats_endpoint_serves_the_same_numbers(client, auth, db, example):
    r = client.get(URL, headers=auth["analyst"])
    assert r.status_code == 200, r.json
    body = r.json
    assert body["experiment"] == KEY and body["status"] == "pilot" and body["day_n"] == 30
    assert [(a["arm"], a["is_control"], a["in_holdout"]) for a in body["arms"]] == [
        ("control", True, False),
        ("care_sms", False, False),
        (None, False, True),
    ]
    assert {a["arm"]: counts(a) for a in body["arms"]} == TOTALS
    assert {t["tier"]: {a["arm"]: counts(a) for a in t["arms"]} for t in body["tiers"]} == PER_TIER


def test_a_longer_primary_metric_day_moves_the_window(client, auth, db, example):
    example.primary_metric = "retained_d60"
    db.commit()
    stats = experiment_stats(db, example, data_cutoff=CUTOFF)
    by_arm = {a.arm_key: a for a in stats.arms}
    # matured at day 60: only the holdout's two (exposed 60 days ago); c3's day-60 check is not theirs
    assert [(by_arm[k].matured, by_arm[k].retained, by_arm[k].churned) for k in ("control", "care_sms", None)] == [
        (0, 0, 0),
        (0, 0, 0),
        (2, 0, 1),
    ]


def test_an_experiment_without_exposures_has_zero_rows_for_every_arm(client, auth, db, experiment):
    stats = experiment_stats(db, experiment, data_cutoff=CUTOFF)
    assert stats.arms == (ArmStats("control", is_control=True), ArmStats("care_sms"), ArmStats(None, in_holdout=True))
    assert stats.tiers == ()


def test_the_stats_need_a_user(client, auth, db, example):
    assert client.get(URL).status_code == 401
    r = client.get(URL, headers=auth["sms"])
    assert r.status_code == 403 and r.json["error"]["code"] == "wrong_key_kind"
    for role in ("admin", "marketing", "analyst"):
        assert client.get(URL, headers=auth[role]).status_code == 200


def test_stats_of_an_unknown_experiment_or_with_a_query_are_4xx(client, auth, db, example):
    r = client.get("/api/v1/experiments/nope/stats", headers=auth["analyst"])
    assert r.status_code == 404 and r.json["error"]["code"] == "experiment_not_found"
    r = client.get(URL + "?tier=vip", headers=auth["analyst"])
    assert r.status_code == 400 and r.json["error"]["code"] == "invalid_query"
