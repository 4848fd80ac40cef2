"""The hierarchical PyMC model: agreement with the conjugate answer on large samples, the
diagnostics gate, degenerate inputs, determinism, per-tier winners.

Fits use the default 1000 draws × 2 chains on a 3 × 3 grid (a few seconds each once the
model is compiled; the first compile in a fresh pytensor cache takes ~20 s).
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from experiments.stats import ArmData, BetaPrior, TierData, fit_hierarchical, hierarchical, tier_winners
from experiments.stats.hierarchical import (
    Diagnostics,
    HierarchicalArm,
    HierarchicalResult,
    HierarchicalTier,
    _cell_counts,
    _CellCounts,
    _choose_parameterisation,
    logit_normal_prior,
)
from infra.settings import PROJECT_ROOT

pytestmark = pytest.mark.heavy


def _tiers(
    trials: np.ndarray, retained: np.ndarray, names=("basic", "value", "vip"), keys=("control", "sms", "call")
) -> tuple[TierData, ...]:
    return tuple(
        TierData(
            name,
            tuple(
                ArmData(
                    key=key,
                    is_control=key == "control",
                    weight=1.0,
                    exposed=int(trials[t, a]),
                    trials=int(trials[t, a]),
                    retained=int(retained[t, a]),
                )
                for a, key in enumerate(keys)
            ),
        )
        for t, name in enumerate(names)
    )


def _large_experiment() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(42)
    trials = rng.integers(18_000, 22_000, size=(3, 3))
    rates = np.array([[0.80, 0.82, 0.81], [0.86, 0.87, 0.885], [0.93, 0.935, 0.94]])
    return trials, rng.binomial(trials, rates)


@pytest.fixture(scope="module")
def large_fit():
    trials, retained = _large_experiment()
    return fit_hierarchical(_tiers(trials, retained), seed=11)


def test_agrees_with_per_tier_conjugate_means_on_large_samples(large_fit):
    trials, retained = _large_experiment()
    assert large_fit.ok, large_fit.reason
    assert large_fit.diagnostics.rhat_max < 1.01 and large_fit.diagnostics.ess_bulk_min >= 400
    assert large_fit.diagnostics.divergences == 0 and large_fit.sampler == "pymc"
    conjugate_means = (retained + 1) / (trials + 2)
    for t, tier in enumerate(large_fit.tiers):
        assert [arm.key for arm in tier.arms] == ["control", "sms", "call"]
        for a, arm in enumerate(tier.arms):
            assert arm.retention_mean == pytest.approx(conjugate_means[t, a], abs=0.01)
            assert arm.retention_ci95[0] < arm.retention_mean < arm.retention_ci95[1]
            if arm.is_control:
                assert arm.uplift_vs_control.mean == 0.0 and arm.p_beats_control is None
            else:
                assert arm.uplift_vs_control.mean == pytest.approx(
                    conjugate_means[t, a] - conjugate_means[t, 0], abs=0.01
                )
                assert 0.0 <= arm.p_beats_control <= 1.0
        assert sum(arm.p_best for arm in tier.arms) == pytest.approx(1.0)


def test_same_seed_same_fit(large_fit):
    trials, retained = _large_experiment()
    assert fit_hierarchical(_tiers(trials, retained), seed=11) == large_fit


def test_tier_winners_from_a_fit(large_fit):
    # value: call leads by a point and a half on ~20,000 each, a certain winner; vip (call by
    # half a point) and basic (sms by 0.7 points) are likely but not 99% certain
    assert tier_winners(large_fit, min_p_best=0.99) == {"value": "call"}
    assert list(tier_winners(large_fit, min_p_best=0.9).items()) == [
        ("basic", "sms"),
        ("value", "call"),
        ("vip", "call"),
    ]
    assert tier_winners(large_fit, min_p_best=1.01) == {}


def test_too_few_draws_fail_the_diagnostics_gate():
    trials, retained = _large_experiment()
    result = fit_hierarchical(_tiers(trials, retained), seed=3, draws=60, tune=60)
    assert not result.ok and result.reason_code == "diagnostics_failed"
    assert result.reason is not None and result.diagnostics is not None
    assert "bulk ESS" in result.reason and result.diagnostics.ess_bulk_min < 400
    # both parameterisations were tried, and the reason reports each
    assert "centred:" in result.reason and "non_centred:" in result.reason
    assert result.tiers == () and tier_winners(result, 0.5) == {}
    assert result.as_json()["diagnostics"]["ess_bulk_min"] < 400


def test_a_failed_fit_is_retried_with_the_other_parameterisation(monkeypatch, large_fit):
    real_check = hierarchical._diagnostics_failure
    verdicts = iter(["rhat 1.050 ≥ 1.01"])  # the first fit is judged unconverged, later ones on merit
    monkeypatch.setattr(hierarchical, "_diagnostics_failure", lambda d: next(verdicts, None) or real_check(d))
    trials, retained = _large_experiment()
    retried = fit_hierarchical(_tiers(trials, retained), seed=11)
    assert retried.ok and retried.parameterisation != large_fit.parameterisation


def test_importing_the_package_leaves_pymc_unloaded():
    probe = "import sys, experiments.stats; print(sorted({'pymc', 'arviz', 'pytensor'} & set(sys.modules)))"
    output = subprocess.run(
        [sys.executable, "-c", probe], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert output.strip() == "[]"


def test_a_sampler_exception_becomes_a_reason():
    trials, retained = _large_experiment()
    result = fit_hierarchical(_tiers(trials, retained), seed=3, draws=0, tune=5)
    assert not result.ok and result.reason_code == "sampler_error" and result.reason


def test_degenerate_inputs_return_reason_codes_without_sampling():
    trials, retained = _large_experiment()
    tiers = _tiers(trials, retained)
    assert fit_hierarchical(tiers, seed=1, prior=BetaPrior(0, 1)).reason_code == "invalid_inputs"
    assert fit_hierarchical(tiers[:1], seed=1).reason_code == "fewer_than_two_tiers"
    one_arm = tuple(TierData(t.tier, t.arms[:1]) for t in tiers)
    assert fit_hierarchical(one_arm, seed=1).reason_code == "fewer_than_two_arms"
    mismatched = (tiers[0], TierData("value", tiers[1].arms[:2]), tiers[2])
    assert fit_hierarchical(mismatched, seed=1).reason_code == "inconsistent_arms"
    doubled = tuple(TierData(t.tier, (t.arms[0], t.arms[0])) for t in tiers)
    assert fit_hierarchical(doubled, seed=1).reason_code == "duplicate_arms"
    broken = (TierData("basic", (tiers[0].arms[0], ArmData("sms", False, 1.0, 5, 5, 6), tiers[0].arms[2])), *tiers[1:])
    assert fit_hierarchical(broken, seed=1).reason_code == "invalid_counts"
    empty = _tiers(np.zeros((3, 3), dtype=int), np.zeros((3, 3), dtype=int))
    result = fit_hierarchical(empty, seed=1)
    assert (result.ok, result.reason_code, result.tiers) == (False, "no_data", ())


def test_arm_order_may_differ_between_tiers():
    trials, retained = _large_experiment()
    tiers = _tiers(trials, retained)
    shuffled = (tiers[0], TierData(tiers[1].tier, tuple(reversed(tiers[1].arms))), tiers[2])
    shuffled_counts, counts = _cell_counts(shuffled), _cell_counts(tiers)
    assert isinstance(shuffled_counts, _CellCounts) and isinstance(counts, _CellCounts)
    assert np.array_equal(shuffled_counts.trials, counts.trials)


def test_parameterisation_follows_how_well_cells_are_measured():
    rng = np.random.default_rng(0)
    big = np.full((10, 4), 20_000)
    logits = 1.5 + rng.normal(0, 0.4, size=(10, 4))
    heterogeneous = rng.binomial(big, 1 / (1 + np.exp(-logits)))
    assert _choose_parameterisation(big, heterogeneous) == "centred"
    small = np.full((10, 4), 200)
    assert _choose_parameterisation(small, rng.binomial(small, 0.8)) == "non_centred"
    assert _choose_parameterisation(big, rng.binomial(big, 0.8)) == "non_centred"


def test_tier_winners_picks_the_clear_best_per_tier():
    def tier(name: str, p_bests: tuple[float, float]) -> HierarchicalTier:
        return HierarchicalTier(
            name,
            tuple(
                HierarchicalArm(key, key == "control", 0.8, (0.7, 0.9), p, None, None)
                for key, p in zip(("control", "sms"), p_bests)
            ),
        )

    result = HierarchicalResult(
        ok=True,
        reason_code=None,
        reason=None,
        sampler="pymc",
        parameterisation="centred",
        diagnostics=Diagnostics(1.0, 1000.0, 0),
        tiers=(tier("vip", (0.02, 0.98)), tier("basic", (0.6, 0.4)), tier("value", (0.97, 0.03))),
        seed=1,
        draws=1000,
        tune=1000,
        chains=2,
    )
    assert tier_winners(result, 0.95) == {"vip": "sms", "value": "control"}
    assert list(tier_winners(result, 0.5).items()) == [("vip", "sms"), ("basic", "control"), ("value", "control")]


def test_the_beta_prior_becomes_a_moment_matched_prior_on_the_logit_scale():
    # logit of a uniform variable is standard logistic: mean 0, variance π²/3
    mean, sd = logit_normal_prior(BetaPrior())
    assert mean == 0.0 and sd == pytest.approx(np.pi / np.sqrt(3))
    rates = np.random.default_rng(0).beta(17, 3, 400_000)
    logits = np.log(rates) - np.log1p(-rates)
    mean, sd = logit_normal_prior(BetaPrior.centred(0.85, 20))
    assert mean == pytest.approx(logits.mean(), abs=0.005) and sd == pytest.approx(logits.std(), abs=0.005)
