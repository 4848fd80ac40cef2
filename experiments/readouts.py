"""Readouts: the Bayesian analysis of an experiment as of a data cutoff, stored once.

The flow of one readout (run by the ``readouts`` workers, or synchronously by the CLI):

1. sufficient statistics per arm × tier from the database (``stats_sql``, one GROUP BY);
2. the pure conjugate analysis (``experiments.stats``) and, when there are at least two tiers
   with data, the hierarchical PyMC model, whose diagnostics gate it;
3. the promotion verdict (``promotion_rules``) under the experiment's policy;
4. one row in ``readouts``, inserted if absent under UNIQUE(experiment, data cutoff, model
   version): a job that runs twice stores one readout;
5. in the same transaction, when the verdict allows it and the policy's mode is ``auto``, the
   pilot → rollout promotion (a compare-and-set), and in rollout the ROI alarm.

Which retention figures: a feed of explicit day-N checks (``retained`` outcomes) is read as
retained / (retained + churned); a feed of churn events only as (matured − churned) / matured
(see ``stats_sql``). Cost: until the decision ledger records what each action cost, an arm's
cost is its offer's unit cost per exposure (``cost_source`` says so in the results).
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from experiments.models import Experiment, Exposure, Readout
from experiments.promotion_policy import PromotionPolicy, promotion_policy_from_json
from experiments.promotion_rules import PromotionFacts, evaluate_promotion
from experiments.stats import ArmData, BetaPrior, ReadoutInputs, TierData, conjugate_readout, sample_ratio_mismatch
from experiments.stats_sql import ArmStats, ExperimentStats, experiment_stats
from infra.db import utcnow
from infra.errors import BadRequest, NotFound
from infra.sql_dialect import insert_ignoring_conflicts
from offers.models import Offer, Subscriber

# Bump when the analysis changes meaning: readouts of another version are kept beside the old.
MODEL_VERSION = "conjugate-1+hierarchical-1"
HOLDOUT_KEY = "holdout"

Progress = Callable[[str, float], None]


def _no_progress(stage: str, share: float) -> None:
    return None


def readout_cutoff(now: datetime, interval_minutes: int) -> datetime:
    """``now`` floored to the readout interval (UTC), so every scheduler and retry that runs
    within one interval asks for the same readout."""
    epoch = datetime(2000, 1, 1, tzinfo=UTC)
    step = timedelta(minutes=interval_minutes)
    return epoch + ((now - epoch) // step) * step


# --- inputs --------------------------------------------------------------------------------


def _srm_shares(session: Session, experiment: Experiment) -> dict[str, float]:
    """Each arm's expected share of the randomised exposures: the phases' weights averaged by
    how many subscribers each phase exposed. Phases that did not randomise (the rollout
    phase, which gives everyone the winner) are left out, as are their exposures."""
    counts = session.execute(
        select(Exposure.phase, func.count())
        .where(Exposure.experiment_id == experiment.id, Exposure.in_holdout.is_(False))
        .group_by(Exposure.phase)
    ).all()
    per_phase = dict(counts)
    shares: dict[str, float] = {arm.key: 0.0 for arm in experiment.arms}
    total = 0
    for phase in experiment.phases:
        weights = {w["arm"]: float(w["weight"]) for w in phase.weights}
        n = per_phase.get(phase.phase, 0)
        if n == 0 or min(weights.values(), default=0) <= 0:
            continue
        weight_sum = sum(weights.values())
        for key, weight in weights.items():
            shares[key] = shares.get(key, 0.0) + n * weight / weight_sum
        total += n
    if total == 0:  # nothing randomised yet: the configured weights
        weight_sum = sum(arm.weight for arm in experiment.arms)
        return {arm.key: arm.weight / weight_sum for arm in experiment.arms}
    return {key: value / total for key, value in shares.items()}


def _randomised_exposures(session: Session, experiment: Experiment) -> dict[str, int]:
    """Exposures per arm in the randomised phases (what SRM compares with the shares)."""
    rollout_phases = [
        p.phase for p in experiment.phases if min((float(w["weight"]) for w in p.weights), default=0) <= 0
    ]
    query = (
        select(Exposure.arm_key, func.count())
        .where(Exposure.experiment_id == experiment.id, Exposure.in_holdout.is_(False))
        .group_by(Exposure.arm_key)
    )
    if rollout_phases:
        query = query.where(Exposure.phase.not_in(rollout_phases))
    # outside the holdout every exposure has an arm (constraint arm_or_holdout): the keys are str
    return dict(cast("Sequence[tuple[str, int]]", session.execute(query).all()))


def mean_ltv_of_exposed(session: Session, experiment: Experiment) -> float | None:
    """The mean LTV of the experiment's exposed subscribers who have one."""
    value = session.scalar(
        select(func.avg(Subscriber.ltv))
        .join(Exposure, Exposure.subscriber_id == Subscriber.id)
        .where(Exposure.experiment_id == experiment.id, Subscriber.ltv.is_not(None))
    )
    return float(value) if value is not None else None


def _arm_data(stats: ArmStats, *, explicit_checks: bool, weight: float, unit_cost: float) -> ArmData:
    if explicit_checks:
        trials, retained = stats.retained + stats.churned, stats.retained
    else:
        trials, retained = stats.matured, max(stats.matured - stats.churned, 0)
    return ArmData(
        key=stats.arm_key or HOLDOUT_KEY,
        is_control=stats.is_control,
        weight=weight,
        exposed=stats.exposed,
        trials=trials,
        retained=retained,
        revenue_n=stats.revenue_n,
        revenue_sum=stats.revenue_sum,
        revenue_sum_squares=stats.revenue_sum_squares,
        cost=unit_cost * stats.exposed,
        complaints=stats.complaints,
    )


def build_inputs(
    session: Session,
    experiment: Experiment,
    stats: ExperimentStats,
    policy: PromotionPolicy,
    value_per_retained: float | None,
) -> ReadoutInputs:
    """The pure analysis' inputs: the arms (without the holdout), per tier too."""
    explicit = any(arm.retained for arm in stats.arms)
    shares = _srm_shares(session, experiment)
    offer_codes = {arm.key: arm.offer_code for arm in experiment.arms}
    costs = dict(
        session.execute(
            select(Offer.code, Offer.unit_cost).where(Offer.code.in_([c for c in offer_codes.values() if c]))
        ).all()
    )
    unit_cost = {key: float(costs.get(code, 0.0)) if code else 0.0 for key, code in offer_codes.items()}

    def arms_of(cells: tuple[ArmStats, ...]) -> tuple[ArmData, ...]:
        arms = []
        for cell in cells:
            if cell.in_holdout:
                continue
            assert cell.arm_key is not None  # only the holdout has no arm
            arms.append(
                _arm_data(
                    cell,
                    explicit_checks=explicit,
                    weight=shares.get(cell.arm_key, 0.0),
                    unit_cost=unit_cost.get(cell.arm_key, 0.0),
                )
            )
        return tuple(arms)

    prior = (
        BetaPrior.centred(policy.prior_base_rate, policy.prior_strength)
        if policy.prior_base_rate is not None
        else BetaPrior()
    )
    return ReadoutInputs(
        arms=arms_of(stats.arms),
        tiers=tuple(TierData(tier.tier, arms_of(tier.arms)) for tier in stats.tiers),
        value_per_retained=value_per_retained or 0.0,
        roi_floor=policy.roi_floor,
        prior=prior,
        seed=zlib.crc32(experiment.key.encode()),
    )


def inputs_hash(inputs: ReadoutInputs, policy: PromotionPolicy) -> str:
    """SHA-256 of everything the results depend on."""
    payload = {"model_version": MODEL_VERSION, "inputs": asdict(inputs), "policy": policy.model_dump()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


# --- the analysis --------------------------------------------------------------------------


def _hierarchical(inputs: ReadoutInputs, min_p_best: float) -> tuple[dict[str, Any], dict[str, str], bool]:
    """Fit the hierarchical model when there are at least two tiers with data; return its JSON,
    the per-tier winners it supports, and whether its diagnostics failed."""
    tiers = tuple(t for t in inputs.tiers if t.tier is not None and sum(a.trials for a in t.arms) > 0)
    if len(tiers) < 2 or len(inputs.arms) < 2:
        return (
            {"attempted": False, "ok": False, "reason": "needs at least two tiers with matured exposures"},
            {},
            False,
        )
    from experiments.stats.hierarchical import fit_hierarchical, tier_winners

    result = fit_hierarchical(tiers, seed=inputs.seed, prior=inputs.prior)
    out = {"attempted": True, **result.as_json()}
    if not result.ok:
        return out, {}, True
    winners = tier_winners(result, min_p_best)
    return out, {tier: arm for tier, arm in winners.items() if tier is not None}, False  # all fitted tiers have one


def compute_results(
    session: Session, experiment: Experiment, data_cutoff: datetime, *, progress: Progress = _no_progress
) -> tuple[dict[str, Any], str]:
    """The readout JSON (DESIGN §7 shape, promotion verdict included) and its inputs hash."""
    policy = promotion_policy_from_json(experiment.promotion_policy)
    progress("statistics", 0.1)
    stats = experiment_stats(session, experiment, data_cutoff=data_cutoff)
    value = policy.value_per_retained or mean_ltv_of_exposed(session, experiment)
    inputs = build_inputs(session, experiment, stats, policy, value)
    digest = inputs_hash(inputs, policy)
    progress("conjugate", 0.3)
    conjugate = conjugate_readout(inputs).as_json()
    if any(
        phase.phase > 1 and min((float(w["weight"]) for w in phase.weights), default=0) <= 0
        for phase in experiment.phases
    ):
        # after promotion everyone new gets the winner: the split is tested on the pilot's exposures
        randomised = _randomised_exposures(session, experiment)
        conjugate["srm"] = sample_ratio_mismatch(
            tuple(replace(arm, exposed=randomised.get(arm.key, 0)) for arm in inputs.arms)
        ).as_json()
    progress("hierarchical", 0.5)
    hierarchical, tier_winners, diagnostics_failed = _hierarchical(inputs, policy.min_p_best)
    progress("promotion", 0.9)

    holdout = next((arm for arm in stats.arms if arm.in_holdout), None)
    results: dict[str, Any] = {
        "experiment": experiment.key,
        "status": experiment.status,
        "data_cutoff": data_cutoff.isoformat(),
        "model_version": MODEL_VERSION,
        "inputs_hash": digest,
        "method": "hierarchical" if hierarchical.get("ok") else "conjugate",
        "primary_metric": experiment.primary_metric,
        "value_per_retained": value,
        "value_source": "policy" if policy.value_per_retained else ("mean_ltv" if value else None),
        "cost_source": "offer_unit_cost",
        **conjugate,
        "holdout": holdout.as_json() if holdout else None,
        "hierarchical": hierarchical,
    }
    runtime_days = (data_cutoff - experiment.started_at).total_seconds() / 86_400 if experiment.started_at else 0.0
    facts = PromotionFacts(
        status=experiment.status,
        runtime_days=runtime_days,
        value_per_retained=value,
        guardrails=tuple(experiment.guardrails),
        tier_winners=tier_winners,
        diagnostics_failed=diagnostics_failed,
    )
    results["promotion"] = evaluate_promotion(policy, results, facts).as_json()
    return results, digest


def store_readout(
    session: Session, experiment: Experiment, data_cutoff: datetime, results: dict[str, Any], digest: str
) -> tuple[Readout, bool]:
    """Insert the readout unless one exists for (experiment, cutoff, model version); return the
    stored row and whether this call inserted it."""
    now = utcnow()
    results = {**results, "computed_at": now.isoformat()}
    inserted = session.execute(
        insert_ignoring_conflicts(session, Readout, ["experiment_id", "data_cutoff", "model_version"])
        .values(
            experiment_id=experiment.id,
            data_cutoff=data_cutoff,
            model_version=MODEL_VERSION,
            inputs_hash=digest,
            method=results["method"],
            status_at_readout=experiment.status,
            error_code=results.get("error"),
            eligible=bool(results["promotion"]["eligible"]),
            results=results,
            computed_at=now,
        )
        .returning(Readout.id)
    ).scalar()
    row = session.scalar(
        select(Readout).where(
            Readout.experiment_id == experiment.id,
            Readout.data_cutoff == data_cutoff,
            Readout.model_version == MODEL_VERSION,
        )
    )
    assert row is not None
    return row, inserted is not None


# --- reading -------------------------------------------------------------------------------


def latest_readout(session: Session, experiment: Experiment, *, at: datetime | None = None) -> Readout:
    """The newest readout (or the newest with a data cutoff at or before ``at``); 404 if none."""
    query = select(Readout).where(Readout.experiment_id == experiment.id, Readout.model_version == MODEL_VERSION)
    if at is not None:
        query = query.where(Readout.data_cutoff <= at)
    row = session.scalar(query.order_by(Readout.data_cutoff.desc(), Readout.id.desc()).limit(1))
    if row is None:
        when = f" at or before {at.isoformat()}" if at else ""
        raise NotFound(
            f"experiment {experiment.key!r} has no readout{when} yet; readouts run every "
            f"{experiment.readout_interval_minutes} minutes while it runs, or start one with "
            f"POST /api/v1/experiments/{experiment.key}/readouts",
            code="no_readout",
        )
    return row


def readout_json(readout: Readout, experiment: Experiment) -> dict[str, Any]:
    """The stored readout with the experiment's live status and the row's identity."""
    return {
        **readout.results,
        "readout_id": readout.id,
        "status": experiment.status,
        "status_at_readout": readout.status_at_readout,
    }


def parse_at(raw: str | None) -> datetime | None:
    """The ``?at=`` query parameter: an ISO-8601 time with a UTC offset."""
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise BadRequest(
            f"at={raw!r} is not an ISO-8601 time (e.g. 2026-11-01T00:00:00Z)", code="invalid_query"
        ) from None
    if value.tzinfo is None:
        raise BadRequest(f"at={raw!r} has no UTC offset; add Z or +hh:mm", code="invalid_query")
    try:
        return value.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 has no UTC equivalent
        raise BadRequest(f"at={raw!r} is out of range", code="invalid_query") from None
