"""Beta posteriors and P(X_B > X_A): pinned against closed forms written out here."""

from __future__ import annotations

import math

import pytest
from scipy import integrate, special

from experiments.stats.beta import (
    BetaPosterior,
    beta_posterior,
    prob_beta_greater,
    prob_greater_by_quadrature,
)
from experiments.stats.inputs import BetaPrior


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def miller_closed_form(alpha_a: int, beta_a: int, alpha_b: int, beta_b: int) -> float:
    """Evan Miller's P(p_B > p_A): sum_{i=0}^{alpha_B - 1} B(alpha_A + i, beta_A + beta_B) /
    ((beta_B + i) B(1 + i, beta_B) B(alpha_A, beta_A)), term by term in plain Python."""
    return sum(
        math.exp(
            _log_beta(alpha_a + i, beta_a + beta_b)
            - math.log(beta_b + i)
            - _log_beta(1 + i, beta_b)
            - _log_beta(alpha_a, beta_a)
        )
        for i in range(alpha_b)
    )


# (alpha_A, beta_A, alpha_B, beta_B): small, lopsided, typical retention, and large counts
PAIRS = [
    (1, 1, 1, 1),
    (3, 7, 5, 5),
    (10, 20, 15, 18),
    (101, 901, 121, 881),
    (4401, 601, 4451, 551),
    (45001, 5001, 45101, 4901),
    (20001, 180001, 20501, 179501),
    (2, 2000, 30, 1972),
]


@pytest.mark.parametrize("pair", PAIRS)
def test_prob_beta_greater_matches_millers_closed_form(pair):
    alpha_a, beta_a, alpha_b, beta_b = pair
    expected = miller_closed_form(*pair)
    got = prob_beta_greater(BetaPosterior(alpha_a, beta_a), BetaPosterior(alpha_b, beta_b))
    assert got == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("pair", PAIRS)
def test_quadrature_matches_millers_closed_form(pair):
    # the path taken for non-integer priors, checked where the closed form exists
    alpha_a, beta_a, alpha_b, beta_b = pair
    got = prob_greater_by_quadrature(BetaPosterior(alpha_a, beta_a), BetaPosterior(alpha_b, beta_b))
    assert got == pytest.approx(miller_closed_form(*pair), abs=1e-6)


@pytest.mark.parametrize(
    "a, b",
    [
        (BetaPosterior(0.5, 0.5), BetaPosterior(1.5, 0.5)),  # densities unbounded at the ends
        (BetaPosterior(30.5, 10.5), BetaPosterior(33.5, 8.5)),
        (BetaPosterior(1.8, 0.2), BetaPosterior(901.8, 99.2)),  # a vague posterior against a sharp one
    ],
)
def test_non_integer_parameters_match_direct_integration(a, b):
    # P(B > A) = ∫ f_A(x) (1 − F_B(x)) dx, by scipy's adaptive quadrature
    def integrand(x: float) -> float:
        return math.exp(
            (a.alpha - 1) * math.log(x) + (a.beta - 1) * math.log1p(-x) - _log_beta(a.alpha, a.beta)
        ) * special.betaincc(b.alpha, b.beta, x)

    expected, _ = integrate.quad(integrand, 0, 1, points=[a.mean, b.mean], epsabs=1e-12, limit=500)
    assert prob_beta_greater(a, b) == pytest.approx(expected, abs=1e-6)


def test_pinned_closed_forms():
    uniform = BetaPosterior(1, 1)
    assert prob_beta_greater(uniform, uniform) == pytest.approx(0.5, abs=1e-12)
    # B ~ Beta(2, 1) has density 2x: P(B > A) = ∫ 2x · x dx = 2/3
    assert round(prob_beta_greater(uniform, BetaPosterior(2, 1)), 6) == 0.666667
    # A ~ Beta(2, 1), B ~ Beta(1, 2): P(B > A) = ∫ 2x (1 − x)² dx = 1/6
    assert round(prob_beta_greater(BetaPosterior(2, 1), BetaPosterior(1, 2)), 6) == 0.166667


@pytest.mark.parametrize("pair", [*PAIRS, (1, 1000001, 1000001, 1), (7, 3, 3, 7)])
def test_swapping_the_arms_gives_the_complement(pair):
    alpha_a, beta_a, alpha_b, beta_b = pair
    a, b = BetaPosterior(alpha_a, beta_a), BetaPosterior(alpha_b, beta_b)
    forward, backward = prob_beta_greater(a, b), prob_beta_greater(b, a)
    assert 0.0 <= forward <= 1.0 and 0.0 <= backward <= 1.0
    assert forward + backward == pytest.approx(1.0, abs=1e-9)


def test_extreme_posteriors_give_certainties_inside_the_unit_interval():
    all_churned, all_retained = BetaPosterior(1, 1_000_001), BetaPosterior(1_000_001, 1)
    assert prob_beta_greater(all_churned, all_retained) == pytest.approx(1.0, abs=1e-12)
    assert prob_beta_greater(all_retained, all_churned) == pytest.approx(0.0, abs=1e-12)


def test_conjugate_update_mean_and_interval_pinned():
    # 30 retained of 40 under Beta(1, 1): Beta(31, 11), mean 31/42
    posterior = beta_posterior(BetaPrior(), successes=30, trials=40)
    assert (posterior.alpha, posterior.beta) == (31, 11)
    assert round(posterior.mean, 6) == 0.738095
    # Beta(1, b) has the closed-form quantile 1 − (1 − u)^(1/b): 0 retained of 9 → Beta(1, 10)
    all_churned = beta_posterior(BetaPrior(), successes=0, trials=9)
    low, high = all_churned.ci95()
    assert low == pytest.approx(1 - 0.975**0.1, abs=1e-12)
    assert high == pytest.approx(1 - 0.025**0.1, abs=1e-12)
    assert (round(low, 6), round(high, 6)) == (0.002529, 0.308497)
    assert round(all_churned.mean, 6) == 0.090909
    # Beta(a, 1) has quantile u^(1/a): all 19 retained → Beta(20, 1)
    low, high = beta_posterior(BetaPrior(), successes=19, trials=19).ci95()
    assert (low, high) == (pytest.approx(0.025 ** (1 / 20), abs=1e-12), pytest.approx(0.975 ** (1 / 20), abs=1e-12))


def test_centred_prior_has_the_base_rate_as_mean():
    prior = BetaPrior.centred(base_rate=0.85, strength=20)
    assert (prior.alpha, prior.beta) == (pytest.approx(17.0), pytest.approx(3.0))
    assert beta_posterior(prior, 0, 0).mean == pytest.approx(0.85)
