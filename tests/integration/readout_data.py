"""Experiment data for readout tests: a running pilot with exposures and day-30 outcomes
written straight into the tables (the readout does not care how they got there)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from experiments.models import Experiment, Exposure, Outcome
from experiments.service import get_experiment
from offers.models import Subscriber

KEY = "care-credit"
OFFER = {"code": "BILL_CREDIT_5", "name": "€5 bill credit", "unit_cost": 5.0, "channels": ["sms"]}
LENIENT_POLICY = {
    "min_exposures_per_arm": 100,
    "min_runtime_days": 30,
    "min_p_best": 0.95,
    "max_expected_loss": 0.005,
    "mode": "auto",
}


def experiment_body(**overrides: Any) -> dict[str, Any]:
    body = {
        "key": KEY,
        "name": "Bill credit vs no care",
        "coverage": 0.5,
        "arms": [{"key": "control"}, {"key": "credit", "offer_code": OFFER["code"]}],
        "promotion_policy": dict(LENIENT_POLICY),
    }
    body.update(overrides)
    return body


def start_pilot(client, auth, db: Session, *, started_days_ago: float = 45, **overrides: Any) -> Experiment:
    """Create the offer and the experiment, start the pilot, and backdate its start."""
    r = client.post("/api/v1/offers", json=OFFER, headers=auth["marketing"])
    assert r.status_code == 201, r.json
    r = client.post("/api/v1/experiments", json=experiment_body(**overrides), headers=auth["marketing"])
    assert r.status_code == 201, r.json
    r = client.post(f"/api/v1/experiments/{KEY}/transition", json={"to": "pilot"}, headers=auth["marketing"])
    assert r.status_code == 200, r.json
    experiment = get_experiment(db, KEY)
    assert experiment.started_at is not None  # the transition to pilot started it
    started = experiment.started_at - timedelta(days=started_days_ago)
    db.execute(update(Experiment).where(Experiment.id == experiment.id).values(started_at=started))
    for phase in experiment.phases:
        phase.started_at = started
    db.flush()
    db.refresh(experiment)
    return experiment


@dataclass(frozen=True)
class Cell:
    arm: str
    tier: str
    n: int
    retention: float
    arpu: float = 30.0


def populate(
    db: Session,
    experiment: Experiment,
    cells: list[Cell],
    *,
    now: datetime,
    exposed_days_ago: int = 40,
    ltv: float = 400.0,
    seed: int = 7,
) -> None:
    """Expose ``n`` subscribers per cell ``exposed_days_ago`` days before ``now`` and report
    their day-30 status (retained with probability ``retention``, else churned) and revenue."""
    rng = random.Random(seed)
    exposed_at = now - timedelta(days=exposed_days_ago)
    exposures, subscribers, plan = [], [], []
    for c in cells:
        for i in range(c.n):
            sid = f"{c.arm}-{c.tier}-{i}"
            exposures.append(
                {
                    "experiment_id": experiment.id,
                    "subscriber_id": sid,
                    "arm_key": c.arm,
                    "in_holdout": False,
                    "phase": 1,
                    "tier": c.tier,
                    "channel": "sms",
                    "first_exposed_at": exposed_at,
                }
            )
            subscribers.append(
                {
                    "id": sid,
                    "attributes": {"ltv": ltv},
                    "tier": c.tier,
                    "tiers": {},
                    "ltv": ltv,
                    "arpu": c.arpu,
                    "updated_at": now,
                }
            )
            plan.append((sid, rng.random() < c.retention, max(0.0, rng.gauss(c.arpu, 5.0))))
    db.execute(insert(Subscriber), subscribers)
    db.execute(insert(Exposure), exposures)
    ids = dict(
        db.execute(select(Exposure.subscriber_id, Exposure.id).where(Exposure.experiment_id == experiment.id)).all()
    )
    outcomes = []
    for sid, retained, revenue in plan:
        kind = "retained" if retained else "churned"
        outcomes.append(
            {
                "assignment_id": ids[sid],
                "type": kind,
                "day_n": 30,
                "value": None,
                "occurred_at": exposed_at + timedelta(days=30),
                "received_at": now,
            }
        )
        outcomes.append(
            {
                "assignment_id": ids[sid],
                "type": "revenue",
                "day_n": None,
                "value": revenue,
                "occurred_at": exposed_at + timedelta(days=30),
                "received_at": now,
            }
        )
    db.execute(insert(Outcome), outcomes)
    db.flush()


def winning_cells(n: int = 1500) -> list[Cell]:
    """The credit arm clearly retains more in both tiers (worth far more than it costs)."""
    return [
        Cell("control", "basic", n, 0.80),
        Cell("credit", "basic", n, 0.90),
        Cell("control", "vip", n, 0.85),
        Cell("credit", "vip", n, 0.93),
    ]
