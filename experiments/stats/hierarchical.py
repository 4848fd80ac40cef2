"""Hierarchical retention model across tiers × arms (PyMC), gated by ArviZ diagnostics.

The model, on aggregated counts — one Binomial per (tier, arm) cell, never a row per
subscriber. With the reference arm (the control) in column 0:

    logit p[t, 0] = base[t]                                 base[t] ~ Normal(m, s)
    logit p[t, a] = base[t] + effect[a] + cell[t, a]        effect[a] ~ Normal(0, effect_sd)
    cell[t, a] ~ Normal(0, sigma)                           sigma ~ LogNormal(log median, log_sd)
    retained[t, a] ~ Binomial(trials[t, a], p[t, a])

where Normal(m, s) has the mean and variance of logit(X), X ~ the readout's Beta prior
(m = ψ(α) − ψ(β), s² = ψ′(α) + ψ′(β): Beta(1, 1) gives Normal(0, 1.81)), so the conjugate
and hierarchical readouts start from the same belief about a control's retention.

So each tier keeps its own control retention (tiers differ a lot and are well measured), and
what is pooled is the thing the readout is about: an arm's effect in one tier is shrunk
towards its effect over all tiers, by as much as the spread between tiers (sigma) allows.
This parameterisation rather than logit p = mu[a] + sigma_tier z[t] + sigma_cell z[t, a]:
without a shared tier term there is no intercept to trade between mu and z_tier, and the
uplift vs control, which promotion reads, is a parameter rather than a difference of two.

Sigma's prior is zero-avoiding (LogNormal, median 0.1 on the logit scale, 95% within
0.03–0.33): tier effects that differ by exactly nothing are not a realistic hypothesis, and a
prior with mass at zero gives the sampler a funnel it cannot cross (measured: ESS of sigma
~100, divergences, with HalfNormal(0.5)). An arm's effect within a tier is sampled centred,
effect[a] + cell[t, a] ~ Normal(effect[a], sigma), when the data pin each cell down more
tightly than the tiers differ, and non-centred, effect[a] + sigma z[t, a] with
z ~ Normal(0, 1), otherwise: each form samples well exactly where the other does not.
``_choose_parameterisation`` picks one from a moment estimate of sigma; if that fit fails
the diagnostics, the other form is fitted.

Sampler: PyMC's NUTS (nutpie, numpyro and blackjax are not installed), chains in parallel
processes. The model is built once per process for each shape and parameterisation, with the
counts and the base prior in ``pm.Data`` containers, so later fits only swap data; pytensor's
on-disk compile cache makes even a new process's compilation fast after the first.

Publication gate (ArviZ, over every sampled variable and the cell retention rates):
r̂ < 1.01, bulk ESS ≥ 400, no divergences. ``ok`` False with a ``reason`` otherwise, and then
no estimates are returned, so nothing unconverged can be published. PyMC and ArviZ are
imported on first use, so importing this module (and the conjugate code) stays fast.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import special

from experiments.stats.inputs import BetaPrior, TierData, invalid_arm_reason
from experiments.stats.results import Interval
from experiments.stats.rounding import json_number, json_pair

if TYPE_CHECKING:  # imported on first use at run time (see the module docstring)
    import pymc as pm  # untyped: pm.Model is Any to a type checker
    import xarray as xr
    from arviz import InferenceData

RHAT_MAX = 1.01
ESS_BULK_MIN = 400
SAMPLER = "pymc"
PARAMETERISATIONS = ("centred", "non_centred")
RETRY_TARGET_ACCEPT = 0.97


@dataclass(frozen=True)
class HierarchicalPrior:
    """Priors of the pooled parts, on the logit scale (see the module docstring)."""

    effect_sd: float = 1.0  # an arm's pooled effect: odds ratio ×/÷ 2.7 at 1 sd
    heterogeneity_median: float = 0.1  # sigma: how much an arm's effect differs by tier
    heterogeneity_log_sd: float = 0.6


@dataclass(frozen=True)
class Diagnostics:
    """Worst convergence figures over the checked variables."""

    rhat_max: float
    ess_bulk_min: float
    divergences: int

    def as_json(self) -> dict[str, Any]:
        return {
            "rhat_max": json_number(self.rhat_max),
            "ess_bulk_min": json_number(self.ess_bulk_min),
            "divergences": self.divergences,
        }


@dataclass(frozen=True)
class HierarchicalArm:
    """One arm's posterior within one tier."""

    key: str
    is_control: bool
    retention_mean: float
    retention_ci95: tuple[float, float]
    p_best: float  # within the tier
    uplift_vs_control: Interval | None  # retention difference; None without one control
    p_beats_control: float | None

    def as_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "is_control": self.is_control,
            "retention_mean": json_number(self.retention_mean),
            "retention_ci95": json_pair(self.retention_ci95),
            "p_best": json_number(self.p_best),
            "uplift_vs_control": None if self.uplift_vs_control is None else self.uplift_vs_control.as_json(),
            "p_beats_control": json_number(self.p_beats_control),
        }


@dataclass(frozen=True)
class HierarchicalTier:
    tier: str | None
    arms: tuple[HierarchicalArm, ...]

    def as_json(self) -> dict[str, Any]:
        return {"tier": self.tier, "arms": [arm.as_json() for arm in self.arms]}


@dataclass(frozen=True)
class HierarchicalResult:
    """A fit, publishable only when ``ok``. ``reason_code`` is one of ``invalid_inputs``,
    ``fewer_than_two_tiers``, ``fewer_than_two_arms``, ``inconsistent_arms``,
    ``duplicate_arms``, ``invalid_counts``, ``no_data``, ``sampler_error``,
    ``diagnostics_failed``; ``reason`` says it in words."""

    ok: bool
    reason_code: str | None
    reason: str | None
    sampler: str
    parameterisation: str | None
    diagnostics: Diagnostics | None
    tiers: tuple[HierarchicalTier, ...]
    seed: int
    draws: int
    tune: int
    chains: int

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "reason_code": self.reason_code,
            "reason": self.reason,
            "sampler": self.sampler,
            "parameterisation": self.parameterisation,
            "diagnostics": None if self.diagnostics is None else self.diagnostics.as_json(),
            "tiers": [tier.as_json() for tier in self.tiers],
            "seed": self.seed,
            "draws": self.draws,
            "tune": self.tune,
            "chains": self.chains,
        }


@dataclass(frozen=True)
class _CellCounts:
    """Counts as (tier, arm) matrices, the reference arm in column 0."""

    tiers: tuple[str | None, ...]
    arm_keys: tuple[str, ...]  # in model column order
    control_keys: frozenset[str]
    trials: np.ndarray
    retained: np.ndarray


def _cell_counts(tiers: tuple[TierData, ...]) -> _CellCounts | tuple[str, str]:
    """The counts, or (reason code, reason) when they cannot be modelled."""
    if len(tiers) < 2:
        return "fewer_than_two_tiers", f"{len(tiers)} tier(s): partial pooling needs at least two"
    first_keys = [arm.key for arm in tiers[0].arms]
    if len(set(first_keys)) != len(first_keys):
        return "duplicate_arms", "an arm key appears more than once in a tier"
    if len(first_keys) < 2:
        return "fewer_than_two_arms", f"{len(first_keys)} arm(s): nothing to compare"
    rows = []
    for tier in tiers:
        by_key = {arm.key: arm for arm in tier.arms}
        if len(by_key) != len(tier.arms):
            return "duplicate_arms", f"tier {tier.tier!r}: an arm key appears more than once"
        if set(by_key) != set(first_keys):
            return "inconsistent_arms", f"tier {tier.tier!r} has arms {sorted(by_key)}, expected {sorted(first_keys)}"
        for arm in tier.arms:
            problem = invalid_arm_reason(arm)
            if problem is not None:
                return "invalid_counts", f"tier {tier.tier!r}: {problem}"
        rows.append(by_key)
    control_keys = frozenset(key for key in first_keys if any(row[key].is_control for row in rows))
    reference = next(iter(control_keys)) if len(control_keys) == 1 else first_keys[0]
    order = (reference, *(key for key in first_keys if key != reference))
    trials = np.array([[row[key].trials for key in order] for row in rows], dtype=np.int64)
    retained = np.array([[row[key].retained for key in order] for row in rows], dtype=np.int64)
    if trials.sum() == 0:
        return "no_data", "no subscriber's retention is known yet"
    return _CellCounts(
        tiers=tuple(tier.tier for tier in tiers),
        arm_keys=order,
        control_keys=control_keys,
        trials=trials,
        retained=retained,
    )


def _choose_parameterisation(trials: np.ndarray, retained: np.ndarray) -> str:
    """ "centred" when cells are measured more precisely than tiers differ, else "non_centred".

    Moment estimate: each treated cell's logit difference from its tier's control varies
    around the arm's mean difference by sigma² plus sampling noise, so the spread beyond the
    sampling variance estimates sigma². Centred needs sigma² above twice a cell's sampling
    variance: the estimate is itself noisy, and where the two are close the non-centred form
    samples better (measured on 10 × 4 grids). Rates are smoothed by ½ so empty or pure cells
    stay finite.
    """
    rates = (retained + 0.5) / (trials + 1.0)
    logits = np.log(rates / (1 - rates))
    sampling_variance = 1.0 / ((trials + 1.0) * rates * (1 - rates))
    differences = logits[:, 1:] - logits[:, :1]
    difference_variance = sampling_variance[:, 1:] + sampling_variance[:, :1]
    spread = np.var(differences, axis=0, ddof=1).mean()
    sigma_squared = max(spread - difference_variance.mean(), 0.0)
    return "centred" if sigma_squared > 2 * np.median(sampling_variance[:, 1:]) else "non_centred"


_MODELS: dict[tuple[int, int, str, HierarchicalPrior], pm.Model] = {}


def _model(shape: tuple[int, int], parameterisation: str, pooling: HierarchicalPrior) -> pm.Model:
    """The model for this shape, built once per process; counts and base prior are ``pm.Data``."""
    key = (*shape, parameterisation, pooling)
    if key not in _MODELS:
        import pymc as pm

        tiers, arms = shape
        with pm.Model() as model:
            trials = pm.Data("trials", np.zeros(shape, dtype=np.int64))
            retained = pm.Data("retained", np.zeros(shape, dtype=np.int64))
            base_mean = pm.Data("base_prior_mean", 0.0)
            base_sd = pm.Data("base_prior_sd", 1.0)
            base = pm.Normal("base", base_mean, base_sd, shape=tiers)
            effect = pm.Normal("effect", 0.0, pooling.effect_sd, shape=arms - 1)
            sigma = pm.LogNormal("sigma", math.log(pooling.heterogeneity_median), pooling.heterogeneity_log_sd)
            # an arm's effect within each tier: effect[a] + cell[t, a] of the docstring
            if parameterisation == "centred":
                tier_effect = pm.Normal("tier_effect", effect[None, :], sigma, shape=(tiers, arms - 1))
            else:
                tier_effect = effect[None, :] + sigma * pm.Normal("z", 0.0, 1.0, shape=(tiers, arms - 1))
            logit_p = pm.math.concatenate([base[:, None], base[:, None] + tier_effect], axis=1)
            retention = pm.Deterministic("retention", pm.math.invlogit(logit_p))
            pm.Binomial("retained_obs", n=trials, p=retention, observed=retained)
        _MODELS[key] = model
    return _MODELS[key]


def _diagnostics(idata: InferenceData) -> Diagnostics:
    import arviz as az

    # arviz leaves these two unannotated; each gives one value per variable, as a Dataset
    rhat: Callable[[InferenceData], xr.Dataset] = az.rhat
    ess_of: Callable[..., xr.Dataset] = az.ess

    def every_value(dataset: xr.Dataset) -> np.ndarray:
        return np.concatenate([np.ravel(dataset[name].values) for name in dataset.data_vars])

    rhats = every_value(rhat(idata))
    ess = every_value(ess_of(idata, method="bulk"))
    # a NaN (e.g. a variable stuck at one value) cannot vouch for convergence
    rhat_max = math.inf if np.isnan(rhats).any() else float(rhats.max())
    ess_min = 0.0 if np.isnan(ess).any() else float(ess.min())
    return Diagnostics(
        rhat_max=rhat_max, ess_bulk_min=ess_min, divergences=int(idata["sample_stats"]["diverging"].values.sum())
    )


def _diagnostics_failure(diagnostics: Diagnostics) -> str | None:
    problems = []
    if not diagnostics.rhat_max < RHAT_MAX:
        problems.append(f"rhat {diagnostics.rhat_max:.3f} ≥ {RHAT_MAX}")
    if not diagnostics.ess_bulk_min >= ESS_BULK_MIN:
        problems.append(f"bulk ESS {diagnostics.ess_bulk_min:.0f} < {ESS_BULK_MIN}")
    if diagnostics.divergences:
        problems.append(f"{diagnostics.divergences} divergent transitions")
    return "; ".join(problems) or None


def _summaries(counts: _CellCounts, draws: np.ndarray, order: list[str]) -> tuple[HierarchicalTier, ...]:
    """Per-tier summaries from retention draws (samples × tiers × model columns), arms in
    ``order`` (the caller's)."""
    has_control = len(counts.control_keys) == 1
    column = {key: index for index, key in enumerate(counts.arm_keys)}
    samples = draws.shape[0]
    tiers = []
    for t, tier in enumerate(counts.tiers):
        tier_draws = draws[:, t, :]
        p_best = np.bincount(tier_draws.argmax(axis=1), minlength=tier_draws.shape[1]) / samples
        arms = []
        for key in order:
            a = column[key]
            low, high = np.quantile(tier_draws[:, a], [0.025, 0.975])
            uplift = p_beats = None
            if has_control:
                difference = tier_draws[:, a] - tier_draws[:, 0]
                if a == 0:
                    uplift = Interval.zero()
                else:
                    d_low, d_high = np.quantile(difference, [0.025, 0.975])
                    uplift = Interval(float(difference.mean()), float(d_low), float(d_high))
                    p_beats = float(np.mean(difference > 0))
            arms.append(
                HierarchicalArm(
                    key=key,
                    is_control=key in counts.control_keys,
                    retention_mean=float(tier_draws[:, a].mean()),
                    retention_ci95=(float(low), float(high)),
                    p_best=float(p_best[a]),
                    uplift_vs_control=uplift,
                    p_beats_control=p_beats,
                )
            )
        tiers.append(HierarchicalTier(tier=tier, arms=tuple(arms)))
    return tuple(tiers)


def logit_normal_prior(prior: BetaPrior) -> tuple[float, float]:
    """Mean and standard deviation of logit(X) for X ~ Beta(alpha, beta)."""
    mean = special.digamma(prior.alpha) - special.digamma(prior.beta)
    variance = special.polygamma(1, prior.alpha) + special.polygamma(1, prior.beta)
    return float(mean), float(np.sqrt(variance))


def _sample(
    counts: _CellCounts,
    parameterisation: str,
    prior: BetaPrior,
    pooling: HierarchicalPrior,
    *,
    seed: int,
    draws: int,
    tune: int,
    chains: int,
    cores: int,
    target_accept: float,
) -> InferenceData:
    import pymc as pm

    model = _model(counts.trials.shape, parameterisation, pooling)
    base_mean, base_sd = logit_normal_prior(prior)
    with model, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sampler chatter; the diagnostics decide
        pm.set_data(
            {
                "trials": counts.trials,
                "retained": counts.retained,
                "base_prior_mean": base_mean,
                "base_prior_sd": base_sd,
            }
        )
        idata: InferenceData = pm.sample(  # PyMC is untyped
            draws=draws,
            tune=tune,
            chains=chains,
            cores=cores,
            random_seed=seed,
            target_accept=target_accept,
            progressbar=False,
            quiet=True,
            compute_convergence_checks=False,
        )
        return idata


def fit_hierarchical(
    tiers: tuple[TierData, ...],
    *,
    seed: int,
    draws: int = 1000,
    tune: int = 1000,
    chains: int = 2,
    prior: BetaPrior = BetaPrior(),
    pooling: HierarchicalPrior = HierarchicalPrior(),
    target_accept: float = 0.9,
    cores: int | None = None,
) -> HierarchicalResult:
    """Fit the hierarchical model to per-tier arm counts and summarise it per tier.

    ``prior`` is the readout's Beta prior of a retention rate (each tier's control starts
    from it); ``pooling`` holds the priors of the pooled effects.

    The parameterisation ``_choose_parameterisation`` prefers is tried first; if its fit
    fails the diagnostics, the other one is tried with ``target_accept`` raised to 0.97 (the
    moment estimate is noisy when cells are small, and then the other form is often the one
    that works). Deterministic for a
    given ``seed``. ``cores`` defaults to one process per chain, up to the CPUs available.
    Never raises for bad data or a failing sampler: the result says why.
    """

    def failure(
        code: str, reason: str, parameterisation: str | None = None, diagnostics: Diagnostics | None = None
    ) -> HierarchicalResult:
        return HierarchicalResult(
            ok=False,
            reason_code=code,
            reason=reason,
            sampler=SAMPLER,
            parameterisation=parameterisation,
            diagnostics=diagnostics,
            tiers=(),
            seed=seed,
            draws=draws,
            tune=tune,
            chains=chains,
        )

    if not (
        isinstance(prior, BetaPrior)
        and math.isfinite(prior.alpha)
        and math.isfinite(prior.beta)
        and prior.alpha > 0
        and prior.beta > 0
    ):
        return failure("invalid_inputs", f"prior must be a Beta prior with finite parameters > 0, got {prior!r}")
    counts = _cell_counts(tiers)
    if isinstance(counts, tuple):
        return failure(*counts)
    if cores is None:
        available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        cores = max(1, min(chains, available))
    preferred = _choose_parameterisation(counts.trials, counts.retained)
    other = next(p for p in PARAMETERISATIONS if p != preferred)
    problems = []
    # the second attempt also takes smaller steps, the usual cure for a stray divergence
    for parameterisation, acceptance in ((preferred, target_accept), (other, max(target_accept, RETRY_TARGET_ACCEPT))):
        try:
            idata = _sample(
                counts,
                parameterisation,
                prior,
                pooling,
                seed=seed,
                draws=draws,
                tune=tune,
                chains=chains,
                cores=cores,
                target_accept=acceptance,
            )
            diagnostics = _diagnostics(idata)
        except Exception as error:
            return failure("sampler_error", f"{type(error).__name__}: {error}"[:500], parameterisation)
        problem = _diagnostics_failure(diagnostics)
        if problem is None:
            # groups by key: InferenceData declares them only through its Mapping interface
            retention = idata["posterior"]["retention"].values  # chains × draws × tiers × arms
            retention = retention.reshape(-1, *retention.shape[2:])
            return HierarchicalResult(
                ok=True,
                reason_code=None,
                reason=None,
                sampler=SAMPLER,
                parameterisation=parameterisation,
                diagnostics=diagnostics,
                tiers=_summaries(counts, retention, [arm.key for arm in tiers[0].arms]),
                seed=seed,
                draws=draws,
                tune=tune,
                chains=chains,
            )
        problems.append(f"{parameterisation}: {problem}")
    return failure("diagnostics_failed", " | ".join(problems), parameterisation, diagnostics)


def tier_winners(result: HierarchicalResult, min_p_best: float = 0.95) -> dict[str | None, str]:
    """Tier → key of its best arm, for the tiers whose best arm has P(best) ≥ ``min_p_best``
    (in tier order; tiers without so clear a winner are left out). Empty for a fit that did
    not pass the diagnostics."""
    if not result.ok:
        return {}
    winners = {}
    for tier in result.tiers:
        best = max(tier.arms, key=lambda arm: arm.p_best)
        if best.p_best >= min_p_best:
            winners[tier.tier] = best.key
    return winners
