"""The conjugate readout: per-arm Beta-Binomial retention and Student-t ARPU posteriors, over
all tiers and within each tier, with the comparisons promotion decisions rest on.

Exact where a closed form exists — posterior means and intervals, P(arm beats control) for
retention and complaints — and Monte Carlo from fixed-seed draws otherwise: P(best),
expected loss, intervals of differences, incremental value and ROI. Draws come from a
generator per (seed, tier, arm key), so an arm's draws do not depend on the order of the
tiers or the arms, nor on which other arms exist; they are drawn through tabulated inverse
CDFs (``experiments.stats.sampling``) to fit 8 arms × 10 tiers in the 50 ms budget.

Degenerate data gives a result with an error code (see ``ConjugateReadout``), never an
exception.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import TypedDict

import numpy as np

from experiments.stats.beta import BetaPosterior, beta_posterior, prob_beta_greater
from experiments.stats.inputs import (
    ArmData,
    BetaPrior,
    ReadoutInputs,
    invalid_arm_reason,
    invalid_settings_reason,
)
from experiments.stats.results import ArmResult, ConjugateReadout, Interval, TierResult
from experiments.stats.revenue import MeanPosterior, revenue_mean_posterior
from experiments.stats.sampling import (
    DRAW_DTYPE,
    DrawScratch,
    beta_quantile_tables,
    ci95_rows,
    draw_rows,
    student_t_quantile_tables,
)
from experiments.stats.srm import SrmResult, sample_ratio_mismatch

TOTALS_TAG = "totals"
NO_TIER_TAG = "no-tier"
# complaints are rare events with no informative prior: a uniform prior per arm
COMPLAINT_PRIOR = BetaPrior(1.0, 1.0)


def tier_tag(tier: str | None) -> str:
    """The random-stream label of a tier (distinct from the totals' and from every other tier's)."""
    return NO_TIER_TAG if tier is None else f"tier:{tier}"


def arm_generator(seed: int, group_tag: str, arm_key: str) -> np.random.Generator:
    """The random stream of one arm within one group (the totals or a tier)."""
    digest = hashlib.blake2b(f"{group_tag}\x1f{arm_key}".encode(), digest_size=16).digest()
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, int.from_bytes(digest, "little")])))


def _group_problem(arms: tuple[ArmData, ...]) -> tuple[str, str] | None:
    """The error code and message that stop a group from being analysed, if any."""
    if not arms:
        return "no_arms", "there are no arms"
    for arm in arms:
        reason = invalid_arm_reason(arm)
        if reason is not None:
            return "invalid_counts", reason
    repeated = sorted(key for key, count in Counter(arm.key for arm in arms).items() if count > 1)
    if repeated:
        return "duplicate_arms", f"arm keys appear more than once: {', '.join(repeated)}"
    return None


def _control_index(arms: tuple[ArmData, ...]) -> tuple[int | None, str | None, str | None]:
    """The control's position; or None with the code and message of the warning that rules
    comparisons out (the arms are still reported)."""
    controls = [index for index, arm in enumerate(arms) if arm.is_control]
    if sum(arm.trials for arm in arms) == 0:
        # each posterior is the prior: reported, with the counts, but not compared
        return None, "no_data", "no arm has a subscriber whose retention is known yet"
    if len(arms) == 1:
        return None, "single_arm", "only one arm: nothing to compare"
    if not controls:
        return None, "no_control", "no arm is marked as the control: no uplift can be computed"
    if len(controls) > 1:
        keys = ", ".join(arms[index].key for index in controls)
        return None, "multiple_controls", f"more than one control arm ({keys}): no uplift can be computed"
    return controls[0], None, None


class _Buffers:
    """One readout's draw arrays, sized for its largest group and reused by every group."""

    def __init__(self, rows: int, draws: int) -> None:
        self.scratch = DrawScratch(rows, draws)
        self.retention = np.empty((rows, draws), dtype=DRAW_DTYPE)
        self.revenue = np.empty((rows, draws), dtype=DRAW_DTYPE)
        # retention uplift, incremental value and ARPU uplift of up to ``rows`` arms each
        self.differences = np.empty((3 * rows, draws), dtype=DRAW_DTYPE)


def _centred_revenue_draws(
    posteriors: list[MeanPosterior], reference: float, generators: list[np.random.Generator], buffers: _Buffers
) -> np.ndarray:
    """Draws of each mean revenue minus ``reference`` (one row per posterior)."""
    tables = student_t_quantile_tables(np.array([p.df for p in posteriors]))
    tables *= np.array([p.scale for p in posteriors])[:, None]
    tables += np.array([p.mean - reference for p in posteriors])[:, None]
    return draw_rows(tables, generators, buffers.revenue[: len(posteriors)], buffers.scratch)


def _p_best(draws: np.ndarray) -> np.ndarray:
    """The share of draws in which each row is the largest. (Comparing with the column maxima
    is ~5× faster than argmax over the short axis; an exact tie, which needs equal draws
    from two continuous posteriors, would be shared out by the normalisation.)"""
    is_best = draws == draws.max(axis=0)
    counts = is_best.sum(axis=1)
    shares: np.ndarray = counts / counts.sum()  # NumPy types these reductions as Any
    return shares


def _analyse_arms(
    arms: tuple[ArmData, ...], inputs: ReadoutInputs, group_tag: str, buffers: _Buffers
) -> tuple[tuple[ArmResult, ...], str | None, str | None]:
    """Results for one group of arms (the totals or one tier), with its error code if any."""
    problem = _group_problem(arms)
    if problem is not None:
        return (), problem[0], problem[1]
    control, error, message = _control_index(arms)
    generators = [arm_generator(inputs.seed, group_tag, arm.key) for arm in arms]

    retention_posteriors = [beta_posterior(inputs.prior, arm.retained, arm.trials) for arm in arms]
    # draws of each rate minus a common reference: every use below is a difference
    reference = float(np.mean([p.mean for p in retention_posteriors]))
    retention = draw_rows(
        beta_quantile_tables(
            np.array([p.alpha for p in retention_posteriors]), np.array([p.beta for p in retention_posteriors])
        )
        - reference,
        generators,
        buffers.retention[: len(arms)],
        buffers.scratch,
    )
    p_best = _p_best(retention)
    expected_loss = np.maximum(
        retention.max(axis=0).mean(dtype=np.float64) - retention.mean(axis=1, dtype=np.float64), 0.0
    )

    revenue_posteriors = [
        revenue_mean_posterior(arm.revenue_n, arm.revenue_sum, arm.revenue_sum_squares) for arm in arms
    ]
    comparisons = (
        _compare_with_control(
            arms, control, inputs, retention_posteriors, retention, revenue_posteriors, generators, buffers
        )
        if control is not None
        else {}
    )

    results = []
    for index, arm in enumerate(arms):
        posterior = retention_posteriors[index]
        revenue = revenue_posteriors[index]
        results.append(
            ArmResult(
                key=arm.key,
                is_control=bool(arm.is_control),
                exposed=int(arm.exposed),  # plain ints and floats even if NumPy scalars came in
                trials=int(arm.trials),
                retained=int(arm.retained),
                retention_mean=posterior.mean,
                retention_ci95=posterior.ci95(),
                p_best=float(p_best[index]),
                expected_loss=float(expected_loss[index]),
                arpu_mean=None if revenue is None else revenue.mean,
                arpu_ci95=None if revenue is None else revenue.ci95(),
                cost=float(arm.cost),
                cost_per_subscriber=arm.cost / arm.exposed if arm.exposed else None,
                complaint_rate=arm.complaints / arm.exposed if arm.exposed else None,
                **comparisons.get(index, _no_comparison(arm, control is not None, revenue)),
            )
        )
    return tuple(results), error, message


class _Comparison(TypedDict):
    """The fields of an ``ArmResult`` that compare the arm with the control."""

    uplift_vs_control: Interval | None
    p_beats_control: float | None
    arpu_uplift: Interval | None
    p_arpu_harm: float | None
    incremental_value: Interval | None
    roi_mean: float | None
    p_roi_above_floor: float | None
    p_roi_below_floor: float | None
    p_complaint_harm: float | None


def _no_comparison(arm: ArmData, has_control: bool, revenue: MeanPosterior | None) -> _Comparison:
    """The comparison fields of the control (compared with itself) or of any arm when there
    is no control to compare with."""
    is_reference = has_control and arm.is_control
    return {
        "uplift_vs_control": Interval.zero() if is_reference else None,
        "p_beats_control": None,
        "arpu_uplift": Interval.zero() if is_reference and revenue is not None else None,
        "p_arpu_harm": None,
        "incremental_value": Interval.zero() if is_reference else None,
        "roi_mean": None,
        "p_roi_above_floor": None,
        "p_roi_below_floor": None,
        "p_complaint_harm": None,
    }


def _compare_with_control(
    arms: tuple[ArmData, ...],
    control: int,
    inputs: ReadoutInputs,
    retention_posteriors: list[BetaPosterior],
    retention: np.ndarray,
    revenue_posteriors: list[MeanPosterior | None],
    generators: list[np.random.Generator],
    buffers: _Buffers,
) -> dict[int, _Comparison]:
    """Each non-control arm's comparison fields, keyed by arm position."""
    treated = [index for index in range(len(arms)) if index != control]
    control_revenue = revenue_posteriors[control]
    # the treated arms whose ARPU is compared: both they and the control have revenue figures
    treated_revenue = (
        {index: posterior for index in treated if (posterior := revenue_posteriors[index]) is not None}
        if control_revenue is not None
        else {}
    )
    with_revenue = list(treated_revenue)
    count = len(treated)
    # One scratch matrix for every difference whose interval is needed: retention uplift,
    # incremental value, ARPU uplift rows, in that order.
    differences = buffers.differences[: 2 * count + len(with_revenue)]
    uplift_draws, value_draws = differences[:count], differences[count : 2 * count]
    arpu_uplift_draws = differences[2 * count :]
    for row, index in enumerate(treated):
        np.subtract(retention[index], retention[control], out=uplift_draws[row])
    np.multiply(uplift_draws, inputs.value_per_retained, out=value_draws)
    arpu_rows: dict[int, int] = {}
    arpu_means: dict[int, float] = {}
    if with_revenue:
        assert control_revenue is not None  # treated_revenue is empty without it
        arpu_means = {index: posterior.mean - control_revenue.mean for index, posterior in treated_revenue.items()}
        # ARPU draws come after each arm's retention draws in its own stream
        order = [control, *with_revenue]
        arpu = _centred_revenue_draws(
            [control_revenue, *treated_revenue.values()],
            control_revenue.mean,
            [generators[index] for index in order],
            buffers,
        )
        np.subtract(arpu[1:], arpu[0], out=arpu_uplift_draws)
        arpu_rows = {index: row for row, index in enumerate(with_revenue)}
        for row, index in enumerate(with_revenue):
            value_draws[treated.index(index)] += arpu_uplift_draws[row]

    # probabilities first: the interval computation reorders the draws of each row
    p_arpu_harm = {
        index: float(np.count_nonzero(arpu_uplift_draws[row] < 0)) / inputs.draws for index, row in arpu_rows.items()
    }
    p_roi_above = {}
    for row, index in enumerate(treated):
        if arms[index].cost > 0 and arms[index].exposed > 0:
            cost_per_subscriber = arms[index].cost / arms[index].exposed
            above = np.count_nonzero(value_draws[row] >= inputs.roi_floor * cost_per_subscriber)
            p_roi_above[index] = int(above) / inputs.draws
    lows, highs = ci95_rows(differences)

    comparisons: dict[int, _Comparison] = {}
    for row, index in enumerate(treated):
        arm = arms[index]
        uplift_mean = retention_posteriors[index].mean - retention_posteriors[control].mean
        value_mean = inputs.value_per_retained * uplift_mean
        arpu_uplift = None
        if index in arpu_rows:
            arpu_row = 2 * count + arpu_rows[index]
            arpu_mean = arpu_means[index]
            value_mean += arpu_mean
            arpu_uplift = Interval(arpu_mean, float(lows[arpu_row]), float(highs[arpu_row]))
        roi_mean = p_roi_below = None
        if index in p_roi_above:
            roi_mean = value_mean / (arm.cost / arm.exposed)
            p_roi_below = 1.0 - p_roi_above[index]
        comparisons[index] = {
            "uplift_vs_control": Interval(uplift_mean, float(lows[row]), float(highs[row])),
            "p_beats_control": prob_beta_greater(retention_posteriors[control], retention_posteriors[index]),
            "arpu_uplift": arpu_uplift,
            "p_arpu_harm": p_arpu_harm.get(index),
            "incremental_value": Interval(value_mean, float(lows[count + row]), float(highs[count + row])),
            "roi_mean": roi_mean,
            "p_roi_above_floor": p_roi_above.get(index),
            "p_roi_below_floor": p_roi_below,
            "p_complaint_harm": prob_beta_greater(
                beta_posterior(COMPLAINT_PRIOR, arms[control].complaints, arms[control].exposed),
                beta_posterior(COMPLAINT_PRIOR, arm.complaints, arm.exposed),
            ),
        }
    return comparisons


def conjugate_readout(inputs: ReadoutInputs) -> ConjugateReadout:
    """The conjugate readout of an experiment over all tiers and per tier, with the SRM check.

    Deterministic: the same inputs give the same result, whatever the order of the tiers.
    """
    settings_problem = invalid_settings_reason(inputs)
    if settings_problem is not None:
        return ConjugateReadout(
            arms=(),
            tiers=(),
            srm=SrmResult(p_value=None, flag=False, error="invalid_inputs"),
            value_per_retained=inputs.value_per_retained,
            roi_floor=inputs.roi_floor,
            seed=inputs.seed,
            draws=inputs.draws,
            error="invalid_inputs",
            error_message=settings_problem,
        )
    largest_group = max([len(inputs.arms), *(len(tier.arms) for tier in inputs.tiers)])
    buffers = _Buffers(largest_group, inputs.draws)
    arms, error, message = _analyse_arms(inputs.arms, inputs, TOTALS_TAG, buffers)
    srm = (
        SrmResult(p_value=None, flag=False, error=error)
        if error in ("invalid_counts", "duplicate_arms")
        else sample_ratio_mismatch(inputs.arms)
    )
    tiers = []
    for tier in inputs.tiers:
        tier_arms, tier_error, tier_message = _analyse_arms(tier.arms, inputs, tier_tag(tier.tier), buffers)
        tiers.append(TierResult(tier=tier.tier, arms=tier_arms, error=tier_error, error_message=tier_message))
    return ConjugateReadout(
        arms=arms,
        tiers=tuple(tiers),
        srm=srm,
        value_per_retained=inputs.value_per_retained,
        roi_floor=inputs.roi_floor,
        seed=inputs.seed,
        draws=inputs.draws,
        error=error,
        error_message=message,
    )
