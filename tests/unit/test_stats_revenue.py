"""ARPU posterior from (n, sum, sum of squares), pinned against hand computation."""

from __future__ import annotations

import math

import pytest

from experiments.stats.revenue import revenue_mean_posterior


def test_posterior_of_the_mean_against_hand_computed_values():
    # revenues 10, 12, 14, 20: mean 14, s² = (100 + 144 + 196 + 400 − 4·14²)/3 = 56/3,
    # standard error sqrt(56/3 / 4) = 2.160247, t(3) 97.5% point 3.182446 → ±6.874867
    posterior = revenue_mean_posterior(n=4, total=56.0, total_squares=840.0)
    assert posterior is not None
    assert posterior.mean == 14.0 and posterior.df == 3
    assert round(posterior.scale, 6) == 2.160247
    low, high = posterior.ci95()
    assert (round(low, 4), round(high, 4)) == (7.1251, 20.8749)


def test_large_samples_approach_the_normal_interval():
    # 10,000 subscribers with mean 30 and sd 12: ± 1.96 · 0.12 (t with 9,999 df ≈ normal)
    n, mean, sd = 10_000, 30.0, 12.0
    posterior = revenue_mean_posterior(n, n * mean, (n - 1) * sd**2 + n * mean**2)
    assert posterior is not None
    low, high = posterior.ci95()
    assert posterior.scale == pytest.approx(0.12)
    assert (low, high) == (pytest.approx(30 - 1.9602 * 0.12, abs=1e-4), pytest.approx(30 + 1.9602 * 0.12, abs=1e-4))


def test_undefined_below_two_figures():
    assert revenue_mean_posterior(0, 0.0, 0.0) is None
    assert revenue_mean_posterior(1, 12.0, 144.0) is None


def test_identical_revenues_give_a_point_posterior_not_a_negative_variance():
    # 3 × 0.1 squared sums to 0.030000000000000006 in floating point, 3 × 0.1 to 0.30000000000000004
    posterior = revenue_mean_posterior(3, 0.1 + 0.1 + 0.1, 0.01 + 0.01 + 0.01)
    assert posterior is not None
    assert posterior.scale == 0.0 or posterior.scale < 1e-8
    low, high = posterior.ci95()
    assert math.isfinite(low) and math.isfinite(high) and high - low < 1e-7
