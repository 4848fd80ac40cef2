"""Tabulated inverse-CDF sampling and the interval helper (experiments/stats/sampling.py)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special

from experiments.stats.sampling import (
    TABLE_CELLS,
    DrawScratch,
    beta_quantile_tables,
    ci95_rows,
    draw_rows,
    student_t_quantile_tables,
)

LEVELS = np.arange(TABLE_CELLS + 1) / TABLE_CELLS
BODY = (LEVELS >= 0.001) & (LEVELS <= 0.999)

# typical retention, small counts, all churned, parameters below 1, huge counts
BETA_CASES = [
    (1, 1),
    (31, 11),
    (4401, 601),
    (1, 1001),
    (1001, 1),
    (0.5, 0.5),
    (1.8, 0.2),
    (2, 30),
    (1e6, 3),
    (0.5, 100000.5),
    (5e8, 5e8),
]


def _beta_sd(alpha: float, beta: float) -> float:
    return float(np.sqrt(alpha * beta / ((alpha + beta) ** 2 * (alpha + beta + 1))))


def test_beta_tables_match_exact_quantiles():
    tables = beta_quantile_tables(np.array([a for a, _ in BETA_CASES]), np.array([b for _, b in BETA_CASES]))
    for (alpha, beta), table in zip(BETA_CASES, tables):
        exact = special.betaincinv(alpha, beta, LEVELS[BODY])
        error_in_sds = np.max(np.abs(table[BODY] - exact)) / _beta_sd(alpha, beta)
        # ~1e-4 sd for ordinary posteriors; the heavy-tailed extremes stay within 1e-2
        assert error_in_sds < (1e-2 if min(alpha, beta) < 2 or max(alpha, beta) > 5e4 else 1e-3), (alpha, beta)
        assert np.all(np.diff(table) >= 0) and table[0] >= 0 and table[-1] <= 1


@pytest.mark.parametrize("df", [1, 2, 5, 30, 1000, 1e7])
def test_student_t_tables_match_exact_quantiles(df):
    table = student_t_quantile_tables(np.array([df]))[0]
    exact = special.stdtrit(df, LEVELS[BODY])
    assert np.max(np.abs(table[BODY] - exact) / np.maximum(1.0, np.abs(exact))) < 1e-3
    assert np.all(np.diff(table) >= 0)


def test_draws_follow_the_posterior():
    alphas, betas = np.array([4401.0, 2.0]), np.array([601.0, 30.0])
    draws = 200_000
    generators = [np.random.default_rng(seed) for seed in (1, 2)]
    out = np.empty((2, draws), dtype=np.float32)
    sample = draw_rows(beta_quantile_tables(alphas, betas), generators, out, DrawScratch(2, draws))
    for row, alpha, beta in zip(sample, alphas, betas):
        sd = _beta_sd(alpha, beta)
        assert abs(row.mean(dtype=np.float64) - alpha / (alpha + beta)) < 4 * sd / np.sqrt(draws)
        for level in (0.025, 0.5, 0.975):
            # a quantile's Monte Carlo standard error is sqrt(q(1 − q)/n) / density ≲ 0.02 sd here
            assert abs(np.quantile(row, level) - special.betaincinv(alpha, beta, level)) < 0.03 * sd
    assert sample.min() >= 0 and sample.max() <= 1


def test_draws_are_reproducible_from_the_generators():
    tables = beta_quantile_tables(np.array([50.0]), np.array([10.0]))

    def once() -> np.ndarray:
        out = np.empty((1, 5000), dtype=np.float32)
        return draw_rows(tables, [np.random.default_rng(7)], out, DrawScratch(1, 5000)).copy()

    assert np.array_equal(once(), once())


@pytest.mark.parametrize("draws", [1000, 1001, 20_000, 20_001])
def test_ci95_rows_equals_numpy_quantile(draws):
    matrix = np.random.default_rng(draws).standard_normal((5, draws)).astype(np.float32)
    expected = np.quantile(matrix, [0.025, 0.975], axis=1)
    low, high = ci95_rows(matrix.copy())
    assert np.allclose(low, expected[0], atol=1e-6) and np.allclose(high, expected[1], atol=1e-6)
