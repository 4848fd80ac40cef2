"""Benchmark for the decision issue: the pure next-best-action core (decisioning.core.decide).

Goal: core_us ≤ 50 µs per decision with 30 offers and 5 live experiments.

Builds a snapshot from the demo catalogue (16 offers, both tier schemes, tier policies, contact
caps, budgets) plus 14 more offers (30 in all), and 5 running experiments: pilots at 5–20%
coverage with holdouts and a namespace, one rollout with a promoted winner, targets from
"everyone" to "VIP only". Decides for the demo's synthetic base (varied profiles, some with a
cancel intent in the context) over every channel, with varied Redis state (contacts, spend,
recorded arms, the odd degraded request), timing each decision on its own.

Prints one JSON object:
  core_us       median µs per decision (p90_us, p99_us, mean_us beside it)
  offers        offers in the snapshot
  experiments   live experiments in the snapshot
  decisions     decisions timed
  decided_by    how many decisions an experiment made, arbitration chose an offer, or no action

    .venv/bin/python bench/decision_core.py
Env: BENCH_DECISIONS (default 40000).
"""

from __future__ import annotations

import json
import os
import random
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from decisioning.core import DecisionRequest, DecisionState, decide
from decisioning.snapshot import build_snapshot
from offers import demo_seed
from offers.demo_seed import NOT_CHURNED

NOW = datetime(2025, 3, 14, 6, 30, tzinfo=UTC)  # 14:30 in Shanghai, mid-month
CHANNELS = ("sms", "app", "call_centre", "retail")

EXTRA_OFFERS: tuple[dict[str, Any], ...] = (
    {
        "code": "ROAMING_PACK",
        "name": "Roaming pack",
        "unit_cost": 3.0,
        "channels": ["sms", "app"],
        "eligibility": {**NOT_CHURNED, "data_gb_month": {"$gte": 20}, "region": {"$in": ["Shanghai", "Beijing"]}},
        "prior_uplift": 0.015,
        "value_horizon_months": 6,
    },
    {
        "code": "FAMILY_BUNDLE",
        "name": "Family bundle",
        "unit_cost": 12.0,
        "channels": ["call_centre", "retail"],
        "eligibility": {**NOT_CHURNED, "arpu": {"$gte": 45}, "tenure_months": {"$gte": 24}},
        "prior_uplift": 0.03,
        "value_horizon_months": 18,
    },
    {
        "code": "VIDEO_VIP_MONTH",
        "name": "Video VIP month",
        "unit_cost": 2.0,
        "channels": ["app"],
        "eligibility": {**NOT_CHURNED, "digital_spend_share": {"$gte": 0.35}},
        "prior_uplift": 0.012,
        "value_horizon_months": 6,
    },
    {
        "code": "DEVICE_CHECKUP",
        "name": "Free device check-up",
        "unit_cost": 1.5,
        "channels": ["retail"],
        "eligibility": {**NOT_CHURNED, "complaints_90d": {"$gte": 1}},
        "prior_uplift": 0.01,
        "value_horizon_months": 6,
    },
    {
        "code": "CLOUD_STORAGE",
        "name": "100 GB cloud storage, 3 months",
        "unit_cost": 0.8,
        "channels": ["sms", "app"],
        "eligibility": {**NOT_CHURNED, "digital_spend_share": {"$gte": 0.2}, "tenure_months": {"$gte": 6}},
        "prior_uplift": 0.008,
        "value_horizon_months": 6,
    },
    {
        "code": "PLAN_RIGHTSIZE",
        "name": "Plan right-sizing call",
        "unit_cost": 3.5,
        "channels": ["call_centre"],
        "eligibility": {**NOT_CHURNED, "downgrades_3m": {"$gte": 1}},
        "prior_uplift": 0.025,
        "value_horizon_months": 12,
    },
    {
        "code": "REACTIVATION_NUDGE",
        "name": "Reactivation nudge",
        "unit_cost": 0.1,
        "channels": ["sms", "app"],
        "eligibility": {**NOT_CHURNED, "inactive_months": {"$gte": 1}},
        "prior_uplift": 0.01,
        "value_horizon_months": 3,
    },
    {
        "code": "TOP_UP_BONUS",
        "name": "Top-up bonus 10%",
        "unit_cost": 2.2,
        "channels": ["sms", "app", "retail"],
        "eligibility": {**NOT_CHURNED, "arpu": {"$lt": 28}, "active_days_30d": {"$gte": 10}},
        "prior_uplift": 0.012,
        "value_horizon_months": 6,
    },
    {
        "code": "FIBRE_MIGRATION",
        "name": "Fibre migration, no fee",
        "unit_cost": 20.0,
        "channels": ["call_centre", "retail"],
        "eligibility": {**NOT_CHURNED, "has_broadband": True, "broadband_tenure_months": {"$gte": 12}},
        "prior_uplift": 0.04,
        "value_horizon_months": 24,
    },
    {
        "code": "SENIOR_CARE_LINE",
        "name": "Priority care line",
        "unit_cost": 1.0,
        "channels": ["call_centre"],
        "eligibility": {**NOT_CHURNED, "tenure_months": {"$gte": 96}},
        "prior_uplift": 0.01,
        "value_horizon_months": 12,
    },
    {
        "code": "STUDENT_PACK",
        "name": "Student data pack",
        "unit_cost": 1.8,
        "channels": ["sms", "app"],
        "eligibility": {**NOT_CHURNED, "arpu": {"$lt": 20}, "data_gb_month": {"$gte": 10}},
        "prior_uplift": 0.015,
        "value_horizon_months": 6,
    },
    {
        "code": "COMPLAINT_APOLOGY",
        "name": "Apology SMS with credit",
        "unit_cost": 1.0,
        "channels": ["sms"],
        "eligibility": {**NOT_CHURNED, "unresolved_complaints": {"$gte": 1}},
        "prior_uplift": 0.02,
        "value_horizon_months": 6,
    },
    {
        "code": "RED_RISK_CALL",
        "name": "Red-risk agent follow-up",
        "unit_cost": 6.0,
        "channels": ["call_centre"],
        "eligibility": {**NOT_CHURNED, "risk_level": "red"},
        "prior_uplift": 0.05,
        "value_horizon_months": 6,
    },
    {
        "code": "PARTNER_VOUCHER",
        "name": "Partner voucher",
        "unit_cost": 2.5,
        "channels": ["app", "retail"],
        "eligibility": {**NOT_CHURNED, "lifecycle_stage": {"$in": ["growth", "maturity"]}, "arpu": {"$gte": 30}},
        "prior_uplift": 0.01,
        "value_horizon_months": 12,
    },
)


def _arms(*arms: tuple[str, str | None, float]) -> list[dict[str, Any]]:
    return [
        {"key": key, "offer_code": offer, "weight": weight, "position": i}
        for i, (key, offer, weight) in enumerate(arms)
    ]


EXPERIMENTS: tuple[dict[str, Any], ...] = (
    {
        "key": "winback-q4",
        "status": "pilot",
        "target": {"risk_level": {"$in": ["yellow", "red"]}},
        "arms": _arms(("control", None, 1), ("discount", "DISCOUNT_PACKAGE", 1), ("speed", "SPEED_BOOST_COUPON", 1)),
        "coverage": 0.05,
        "holdout_share": 0.05,
        "hash_seed": "winback-q4",
    },
    {
        "key": "care-sms-vs-none",
        "status": "pilot",
        "target": {"churn_score": {"$gte": 0.2}},
        "arms": _arms(("control", None, 1), ("care_sms", "CARE_SMS", 1)),
        "coverage": 0.05,
        "holdout_share": 0.0,
        "hash_seed": "care-sms-vs-none",
    },
    {
        "key": "night-pack",
        "status": "rollout",
        "target": {"night_data_share": {"$gte": 0.4}},
        "arms": _arms(("control", None, 1), ("night", "NIGHT_DATA_PACK", 1)),
        "coverage": 1.0,
        "holdout_share": 0.1,
        "hash_seed": "night-pack",
        "winner_arm_key": "night",
    },
    {
        "key": "vip-manager",
        "status": "pilot",
        "target": {"tier": "vip"},
        "arms": _arms(("control", None, 1), ("manager", "ACCOUNT_MANAGER", 1)),
        "coverage": 0.2,
        "holdout_share": 0.0,
        "hash_seed": "vip-manager",
        "namespace": "vip",
        "namespace_start": 0.0,
        "namespace_end": 0.5,
        "budget_code": "VIP_CARE",
    },
    {
        "key": "zz-loyalty-points",
        "status": "pilot",
        "target": {},
        "arms": _arms(("control", None, 1), ("points", "LOYALTY_POINTS", 1)),
        "coverage": 0.05,
        "holdout_share": 0.02,
        "hash_seed": "zz-loyalty-points",
    },
)


def build_bench_snapshot():
    """The benchmark's snapshot: the demo catalogue plus EXTRA_OFFERS and EXPERIMENTS."""
    return build_snapshot(
        version=1,
        offers=(*demo_seed.OFFERS, *EXTRA_OFFERS),
        tiers=demo_seed.TIERS,
        primary_scheme="value_tiers",
        tier_policies=list(demo_seed.tier_policy_rows()),
        contact_policies=demo_seed.CONTACT_POLICIES,
        budgets=demo_seed.BUDGETS,
        experiments=EXPERIMENTS,
        uplift_estimates={("vip", "ACCOUNT_MANAGER"): 0.07, (None, "CARE_SMS"): 0.012},
        now=NOW,
        period_revenue=2_000 * 40.0,
    )


def build_requests(count: int, seed: int = 7) -> list[tuple[DecisionRequest, DecisionState]]:
    """``count`` contacts over the demo base, every channel, varied Redis state."""
    rng = random.Random(seed)
    profiles = demo_seed.demo_profiles(NOW, 2_000)
    keys = [e["key"] for e in EXPERIMENTS]
    requests = []
    for _ in range(count):
        subscriber_id, profile = profiles[rng.randrange(len(profiles))]
        context = {"intent": "cancel"} if rng.random() < 0.15 else {}
        sticky = {}
        if rng.random() < 0.05:
            experiment = rng.choice(EXPERIMENTS)
            sticky[experiment["key"]] = (rng.choice(experiment["arms"])["key"], False)
        state = DecisionState(
            contacts_in_window={c: rng.choice((0, 0, 0, 1, 1, 2, 3, 5)) for c in CHANNELS},
            spent_by_budget={"RETENTION_FUND": rng.uniform(0, 600), "VIP_CARE": rng.uniform(0, 300)},
            degraded=rng.random() < 0.01,
            sticky_arms=sticky,
        )
        assert set(sticky) <= set(keys)
        requests.append((DecisionRequest(subscriber_id, rng.choice(CHANNELS), profile, context), state))
    return requests


def measure(decisions: int) -> dict[str, Any]:
    snapshot = build_bench_snapshot()
    requests = build_requests(decisions)
    for request, state in requests[:2_000]:  # warm caches (zones, lru) before timing
        decide(snapshot, request, state, NOW)
    timings_ns = []
    decided_by = {"experiment": 0, "arbitration": 0, "no_action": 0}
    clock = time.perf_counter_ns
    for request, state in requests:
        started = clock()
        result = decide(snapshot, request, state, NOW)
        timings_ns.append(clock() - started)
        if result.experiment is not None:
            decided_by["experiment"] += 1
        elif result.action is not None:
            decided_by["arbitration"] += 1
        else:
            decided_by["no_action"] += 1
    timings_ns.sort()
    return {
        "core_us": round(statistics.median(timings_ns) / 1000, 2),
        "p90_us": round(timings_ns[int(0.9 * len(timings_ns))] / 1000, 2),
        "p99_us": round(timings_ns[int(0.99 * len(timings_ns))] / 1000, 2),
        "mean_us": round(statistics.fmean(timings_ns) / 1000, 2),
        "offers": len(snapshot.offers),
        "experiments": len(snapshot.experiments),
        "decisions": len(timings_ns),
        "decided_by": decided_by,
    }


def main() -> None:
    print(json.dumps(measure(int(os.environ.get("BENCH_DECISIONS", "40000")))))


if __name__ == "__main__":
    main()
