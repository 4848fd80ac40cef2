"""Micro-benchmark: compiled eligibility conditions vs GrowthBook's own evaluator.

``measure_us_per_eval()`` builds a 30-offer telecom catalogue of eligibility conditions and
``n_profiles`` seeded synthetic subscriber profiles, compiles the conditions once, evaluates
every condition on every profile, and reports microseconds per single evaluation (best of 5
sweeps). When the ``growthbook`` package is importable, its ``evalCondition`` is timed on the
same data (best of 3 sweeps, as it is several times slower); otherwise that figure is None.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from typing import Any

from offers.conditions import compile_condition, validate_condition

PRODUCTS = ("broadband", "mobile", "tv", "bundle", "fibre")
STAGES = ("onboarding", "active", "at_risk", "winback", "churned")
REGIONS = ("north", "south", "east", "west", "capital", "islands")
PLANS = ("basic", "plus", "unlimited")

# 1-4 clauses each, the shapes retention teams write: thresholds, $in lists, nested $or.
CATALOGUE: list[dict[str, Any]] = [
    {"arpu": {"$gte": 40}, "product": "broadband"},
    {"tenure_months": {"$gt": 36}, "product": "broadband"},
    {"night_data_share": {"$gte": 0.4}},
    {"lifecycle_stage": {"$in": ["at_risk", "winback"]}, "churn_score": {"$gte": 0.6}},
    {"complaints_90d": {"$gte": 2}, "arpu": {"$gt": 25}},
    {"birthday_month": 11},
    {"region": {"$in": ["north", "islands"]}, "product": {"$in": ["mobile", "bundle"]}},
    {"$or": [{"churn_score": {"$gt": 0.7}}, {"complaints_90d": {"$gte": 3}}]},
    {"tenure_months": {"$lt": 6}, "lifecycle_stage": "onboarding"},
    {"arpu": {"$gte": 60, "$lt": 120}, "plan": "unlimited"},
    {"product": "tv", "night_data_share": {"$gt": 0.25}, "region": {"$nin": ["capital"]}},
    {"usage.roaming_days": {"$gte": 5}, "product": "mobile"},
    {"lifecycle_stage": "winback", "tenure_months": {"$gte": 12}},
    {"$or": [{"plan": "basic", "arpu": {"$lt": 20}}, {"usage.data_gb": {"$gt": 80}}], "complaints_90d": 0},
    {"churn_score": {"$gte": 0.5}, "arpu": {"$gte": 50}, "tenure_months": {"$gte": 24}},
    {"birthday_month": 3, "lifecycle_stage": {"$in": ["active", "at_risk"]}},
    {"region": "capital", "product": "fibre"},
    {"complaints_90d": {"$gt": 0}, "churn_score": {"$gt": 0.4}, "lifecycle_stage": {"$ne": "churned"}},
    {"usage.data_gb": {"$lt": 2}, "plan": {"$in": ["plus", "unlimited"]}},
    {"night_data_share": {"$lt": 0.1}, "product": "broadband", "arpu": {"$gt": 70}},
    {"$or": [{"region": "south"}, {"region": "east", "tenure_months": {"$gt": 48}}]},
    {"tenure_months": {"$gte": 60}},
    {"arpu": {"$lt": 15}, "lifecycle_stage": {"$in": ["active", "at_risk", "winback"]}},
    {"product": "bundle", "churn_score": {"$lt": 0.2}, "birthday_month": 7},
    {"$or": [{"usage.roaming_days": {"$gt": 10}}, {"night_data_share": {"$gt": 0.6}}], "plan": {"$ne": "basic"}},
    {"complaints_90d": {"$gte": 1, "$lte": 2}, "region": {"$in": ["west", "north"]}},
    {
        "lifecycle_stage": "at_risk",
        "product": {"$in": ["broadband", "fibre"]},
        "arpu": {"$gte": 35},
        "tenure_months": {"$gt": 18},
    },
    {"churn_score": {"$exists": True, "$gte": 0.85}},
    {"plan": "unlimited", "usage.data_gb": {"$gte": 150}},
    {"$or": [{"birthday_month": 12}, {"lifecycle_stage": "onboarding", "arpu": {"$gt": 45}}]},
]


def build_profiles(n_profiles: int, seed: int) -> list[dict[str, Any]]:
    """Varied synthetic subscribers; a few attributes are sometimes missing, as in real feeds."""
    rng = random.Random(seed)
    profiles = []
    for i in range(n_profiles):
        profile: dict[str, Any] = {
            "id": f"sub-{i:07d}",
            "arpu": round(rng.lognormvariate(3.6, 0.5), 2),
            "tenure_months": rng.randint(0, 120),
            "night_data_share": round(rng.betavariate(2, 5), 3),
            "product": rng.choice(PRODUCTS),
            "plan": rng.choice(PLANS),
            "lifecycle_stage": rng.choice(STAGES),
            "complaints_90d": min(int(rng.expovariate(1.2)), 9),
            "birthday_month": rng.randint(1, 12),
            "region": rng.choice(REGIONS),
            "usage": {"data_gb": round(rng.expovariate(1 / 30), 1), "roaming_days": rng.choice((0, 0, 0, 1, 3, 7, 14))},
        }
        if rng.random() < 0.9:  # the churn model has not scored everyone yet
            profile["churn_score"] = round(rng.random(), 3)
        if rng.random() < 0.05:
            del profile["birthday_month"]
        profiles.append(profile)
    return profiles


def _best_sweep(evaluators: list[Callable[[Any], bool]], profiles: list[dict], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for attrs in profiles:
            for evaluate in evaluators:
                evaluate(attrs)
        best = min(best, time.perf_counter() - start)
    return best


def _growthbook_eval_condition() -> Callable[..., bool] | None:
    """``evalCondition(attributes, condition)`` from the installed growthbook package, if any."""
    try:
        import growthbook  # noqa: F401  (optional: only for the comparison figure)
    except Exception:
        return None
    for module in ("growthbook.core", "growthbook.growthbook", "growthbook"):
        try:
            return __import__(module, fromlist=["evalCondition"]).evalCondition
        except (ImportError, AttributeError):
            continue
    return None


def _bound_to(eval_condition: Callable[..., bool], condition: dict[str, Any]) -> Callable[[Any], bool]:
    """``eval_condition(attrs, condition)`` as a one-argument evaluator, like a compiled condition."""
    return lambda attrs: eval_condition(attrs, condition)


def measure_us_per_eval(n_profiles: int = 10_000, seed: int = 7) -> dict[str, Any]:
    """Time one compiled condition evaluation (µs), and GrowthBook's on the same data if present."""
    for condition in CATALOGUE:
        validate_condition(condition)
    profiles = build_profiles(n_profiles, seed)
    compiled = [compile_condition(condition) for condition in CATALOGUE]
    evals = len(compiled) * len(profiles)
    result: dict[str, Any] = {
        "us_per_eval": round(_best_sweep(compiled, profiles, 5) / evals * 1e6, 4),
        "evals": evals,
        "offers": len(CATALOGUE),
        "profiles": n_profiles,
        "growthbook_us_per_eval": None,
    }
    eval_condition = _growthbook_eval_condition()
    if eval_condition is not None:
        gb = [_bound_to(eval_condition, condition) for condition in CATALOGUE]
        result["growthbook_us_per_eval"] = round(_best_sweep(gb, profiles, 3) / evals * 1e6, 4)
    return result


if __name__ == "__main__":
    print(json.dumps(measure_us_per_eval()))
