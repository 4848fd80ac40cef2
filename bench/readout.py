"""Benchmark for the readout statistics (issue 4): the conjugate readout and the hierarchical fit.

Prints one JSON object:
  conjugate_ms           median wall time of ``conjugate_readout`` over BENCH_RUNS runs, for
                         8 arms × 10 tiers (+ totals), every metric: retention, ARPU, incremental
                         value, ROI, complaints, SRM; 20,000 draws per arm (goal ≤ 50 ms)
  conjugate_ms_min       the fastest of those runs
  hierarchical_s         ``fit_hierarchical`` on 10 tiers × 4 arms, 1000 draws + 1000 tuning × 2
                         chains, in a warm process: one fit first builds and compiles the
                         model, then a fit on the next day's counts is timed (goal ≤ 20 s)
  hierarchical_first_s   that first fit, compilation included (pytensor caches compiled code
                         on disk, so only the very first run on a machine pays the C compile)
  sampler, hierarchical_ok, parameterisation, diagnostics {rhat_max, ess_bulk_min, divergences}
  peak_rss_mb            peak resident memory of the process

    .venv/bin/python bench/readout.py
Env: BENCH_RUNS (default 15).
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from experiments.promotion_policy import DEFAULT_PROMOTION_POLICY
from experiments.stats import (
    ArmData,
    ReadoutInputs,
    TierData,
    conjugate_readout,
    fit_hierarchical,
)

ARMS = 8
TIERS = 10
HIERARCHICAL_ARMS = 4
SUBSCRIBERS_PER_CELL = 5000
VALUE_PER_RETAINED = 300.0
ROI_FLOOR = DEFAULT_PROMOTION_POLICY.roi_floor  # what a readout under the default policy uses


def _cell(rng: np.random.Generator, key: str, tier: int, arm: int, subscribers: int) -> ArmData:
    """One (tier, arm) cell's sufficient statistics, as the SQL aggregation would return them."""
    exposed = int(rng.integers(subscribers - 100, subscribers + 100))
    trials = int(exposed * 0.9)  # day-N status known for 90%
    retention = 0.78 + 0.015 * tier + 0.004 * arm
    revenue_n = exposed // 2
    mean_revenue, sd_revenue = 30.0 + tier + 0.2 * arm, 15.0
    revenue_sum = float(rng.normal(revenue_n * mean_revenue, np.sqrt(revenue_n) * sd_revenue))
    revenue_sum_squares = revenue_n * (sd_revenue**2 + (revenue_sum / revenue_n) ** 2)
    return ArmData(
        key=key,
        is_control=arm == 0,
        weight=1.0,
        exposed=exposed,
        trials=trials,
        retained=int(rng.binomial(trials, retention)),
        revenue_n=revenue_n,
        revenue_sum=revenue_sum,
        revenue_sum_squares=revenue_sum_squares,
        cost=0.0 if arm == 0 else 2.5 * exposed,
        complaints=int(rng.binomial(exposed, 0.01)),
    )


def _totals(tiers: tuple[TierData, ...]) -> tuple[ArmData, ...]:
    totals = []
    for position, first in enumerate(tiers[0].arms):
        cells = [tier.arms[position] for tier in tiers]
        sums = {
            name: sum(getattr(cell, name) for cell in cells)
            for name in (
                "exposed",
                "trials",
                "retained",
                "revenue_n",
                "revenue_sum",
                "revenue_sum_squares",
                "cost",
                "complaints",
            )
        }
        totals.append(ArmData(key=first.key, is_control=first.is_control, weight=first.weight, **sums))
    return tuple(totals)


def experiment(arms: int, tiers: int, subscribers: int, seed: int) -> ReadoutInputs:
    """A synthetic experiment: retention rises with the tier and a little with the arm."""
    rng = np.random.default_rng(seed)
    keys = ["control", *(f"offer_{index}" for index in range(1, arms))]
    tier_data = tuple(
        TierData(f"tier_{t}", tuple(_cell(rng, key, t, a, subscribers) for a, key in enumerate(keys)))
        for t in range(tiers)
    )
    return ReadoutInputs(
        arms=_totals(tier_data), tiers=tier_data, value_per_retained=VALUE_PER_RETAINED, roi_floor=ROI_FLOOR
    )


def measure_conjugate(runs: int) -> dict:
    inputs = experiment(ARMS, TIERS, SUBSCRIBERS_PER_CELL, seed=1)
    result = conjugate_readout(inputs)  # first call: imports and caches warmed
    assert result.error is None and all(tier.error is None for tier in result.tiers)
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        conjugate_readout(inputs)
        timings.append(time.perf_counter() - started)
    return {
        "conjugate_ms": round(statistics.median(timings) * 1000, 2),
        "conjugate_ms_min": round(min(timings) * 1000, 2),
        "conjugate_draws": inputs.draws,
    }


def measure_hierarchical() -> dict:
    first_day = experiment(HIERARCHICAL_ARMS, TIERS, SUBSCRIBERS_PER_CELL, seed=2)
    next_day = experiment(HIERARCHICAL_ARMS, TIERS, SUBSCRIBERS_PER_CELL + 200, seed=3)
    started = time.perf_counter()
    fit_hierarchical(first_day.tiers, seed=20240601)
    first_seconds = time.perf_counter() - started
    started = time.perf_counter()
    fit = fit_hierarchical(next_day.tiers, seed=20240601)
    seconds = time.perf_counter() - started
    return {
        "hierarchical_s": round(seconds, 2),
        "hierarchical_first_s": round(first_seconds, 2),
        "sampler": fit.sampler,
        "hierarchical_ok": fit.ok,
        "hierarchical_reason": fit.reason,
        "parameterisation": fit.parameterisation,
        "diagnostics": None if fit.diagnostics is None else fit.diagnostics.as_json(),
    }


def main() -> None:
    result = measure_conjugate(int(os.environ.get("BENCH_RUNS", "15")))
    result.update(measure_hierarchical())
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)  # KiB on Linux
    print(json.dumps(result))


if __name__ == "__main__":
    main()
