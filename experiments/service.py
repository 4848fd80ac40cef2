"""Experiment use cases: create, edit, move through the lifecycle, start a new phase.

Lifecycle: draft → pilot → rollout → completed, and draft | pilot | rollout → stopped.

While an experiment runs (pilot, rollout) everything that decides *which arm* a subscriber
hashes into is frozen — seed, hash and bucket versions, arm weights and the arms themselves,
namespace range, holdout share — and so is *who* is in it (target, primary metric). Changing the
split means starting a new phase, which re-seeds assignment; subscribers already exposed keep
their persisted arm. Coverage may only go up: see :func:`update_experiment`.

Every function takes a session and never commits; each change writes its audit row in the same
transaction.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from experiments import schemas
from experiments.assignment import ExperimentSpec
from experiments.models import ENDED_STATUSES, RUNNING_STATUSES, Experiment, ExperimentArm, ExperimentPhase
from infra.audit import record_audit
from infra.db import matched_rows, utcnow
from infra.errors import BadRequest, Conflict, NotFound, pydantic_details
from offers.catalogue import check_condition
from offers.config_service import entity_json
from offers.models import Budget, Offer

ALLOWED_TRANSITIONS: dict[str, tuple[str, ...]] = {
    "draft": ("pilot", "stopped"),
    "pilot": ("rollout", "stopped"),
    "rollout": ("completed", "stopped"),
    "completed": (),
    "stopped": (),
}
# Editing these while running would move subscribers between arms: a new phase is the way.
PHASE_FIELDS = ("arms", "hash_seed", "hash_version", "bucket_version")
# Editing these while running would change who is in the test or what it measures.
POPULATION_FIELDS = ("target", "namespace", "namespace_start", "namespace_end", "holdout_share", "primary_metric")
EDITABLE_WHEN_ENDED = ("name", "hypothesis")
READ_ONLY_FIELDS = {
    "status": "move an experiment with POST /api/v1/experiments/<key>/transition",
    "phase": "start a new phase with POST /api/v1/experiments/<key>/phases",
    "started_at": "set when the pilot starts",
    "ended_at": "set when the experiment completes or stops",
    "winner_arm_key": "set by promotion (POST /api/v1/experiments/<key>/promotion)",
    "tier_winners": "set by promotion (POST /api/v1/experiments/<key>/promotion)",
    "promoted_at": "set by promotion",
    "spending_paused": "set by the ROI alarm; resume with POST /api/v1/experiments/<key>/resume-spending",
}
PHASES_HINT = (
    "to change weights of a running experiment, start a new phase "
    "(POST /api/v1/experiments/{key}/phases), which re-seeds assignment; "
    "existing assignments of the old phase stay as they are"
)


# --- reading and presenting --------------------------------------------------------------


def get_experiment(session: Session, key: str, *, for_update: bool = False) -> Experiment:
    """The experiment ``key`` (404 if none). ``for_update`` locks its row (PostgreSQL) so two
    concurrent edits or transitions of one experiment are serialised."""
    query = select(Experiment).where(Experiment.key == key)
    if for_update:
        query = query.with_for_update()
    experiment = session.scalar(query)
    if experiment is None:
        raise NotFound(f"no experiment {key!r}", code="experiment_not_found")
    return experiment


def list_experiments(session: Session, *, status: str | None = None) -> list[Experiment]:
    query = select(Experiment).order_by(Experiment.key)
    if status is not None:
        query = query.where(Experiment.status == status)
    return list(session.scalars(query))


def arm_json(arm: ExperimentArm) -> dict[str, Any]:
    return {
        "key": arm.key,
        "offer_code": arm.offer_code,
        "weight": arm.weight,
        "is_control": arm.is_control,
        "position": arm.position,
    }


def phase_json(phase: ExperimentPhase) -> dict[str, Any]:
    return {
        "phase": phase.phase,
        "hash_seed": phase.hash_seed,
        "weights": phase.weights,
        "coverage": phase.coverage,
        "started_at": phase.started_at.isoformat(),
    }


def audit_experiment(
    session: Session,
    experiment: Experiment,
    action: str,
    *,
    actor: str,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> None:
    """The audit row of a change to ``experiment`` (entity ``experiment``, keyed by its key),
    in the change's transaction."""
    record_audit(
        session,
        actor=actor,
        action=action,
        entity_type="experiment",
        entity_key=experiment.key,
        before=before,
        after=after,
    )


def experiment_json(experiment: Experiment, *, with_phases: bool = False) -> dict[str, Any]:
    """Every column, the arms in order, the allowed next states (and the phase history)."""
    out = entity_json(experiment)
    out["arms"] = [arm_json(arm) for arm in experiment.arms]
    out["allowed_transitions"] = list(ALLOWED_TRANSITIONS[experiment.status])
    if with_phases:
        out["phases"] = [phase_json(phase) for phase in experiment.phases]
    return out


def experiment_spec(experiment: Experiment) -> ExperimentSpec:
    """The assignment snapshot of the experiment's current phase (arms in position order).

    Stored weights are relative; GrowthBook wants them to sum to 1 (else it silently falls back
    to equal weights), so they are normalised here.
    """
    arms = sorted(experiment.arms, key=lambda arm: arm.position)
    total = sum(arm.weight for arm in arms)
    weights = tuple(arm.weight / total for arm in arms) if total > 0 else None
    namespace = (
        (experiment.namespace, experiment.namespace_start, experiment.namespace_end) if experiment.namespace else None
    )
    return ExperimentSpec(
        key=experiment.key,
        arm_keys=tuple(arm.key for arm in arms),
        seed=experiment.hash_seed,
        hash_version=experiment.hash_version,
        coverage=experiment.coverage,
        weights=weights,
        namespace=namespace,
        holdout_share=experiment.holdout_share,
    )


# --- create and edit ---------------------------------------------------------------------


def create_experiment(session: Session, data: schemas.ExperimentIn, *, actor: str) -> Experiment:
    """Insert a draft experiment with its arms (409 if the key exists); audited."""
    if session.scalar(select(Experiment.id).where(Experiment.key == data.key)) is not None:
        raise Conflict(f"an experiment {data.key!r} exists; edit it with PATCH", code="experiment_exists")
    check_condition("target", data.target)
    _check_budget(session, data.budget_code)
    _check_arm_offers(session, data.arms)
    values = _values(data)
    arms = values.pop("arms")
    experiment = Experiment(**values, status="draft", phase=1)
    experiment.arms = [ExperimentArm(position=i, **arm) for i, arm in enumerate(arms)]
    session.add(experiment)
    session.flush()
    audit_experiment(session, experiment, "create", actor=actor, after=experiment_json(experiment))
    return experiment


def update_experiment(session: Session, key: str, patch: dict[str, Any], *, actor: str) -> Experiment:
    """Apply a partial edit; the merged experiment must still be valid. Audited before/after.

    ``arms``, when given, replaces the whole list (order = GrowthBook variation order).
    ``promotion_policy``, when given, is merged over the stored policy.

    A draft is freely editable. A running experiment (pilot, rollout) keeps its assignment
    frozen: arms, weights, seed, hash and bucket versions (409 ``experiment_running``, which
    points to new phases) and its target, namespace, holdout and primary metric (stop it and
    create a new experiment instead). Name, hypothesis, guardrails, promotion policy and budget
    stay editable.

    Coverage may be raised while running but never lowered. In GrowthBook's bucket ranges arm
    *i* owns ``[start_i, start_i + coverage × weight_i)`` with ``start_i`` independent of
    coverage, so raising coverage only widens each arm's range from its fixed start: nobody
    already exposed changes arm or falls out. Lowering it would shrink the ranges and strand
    exposed subscribers outside the experiment while their persisted arm says they are in it.

    A completed or stopped experiment keeps only its name and hypothesis editable.
    """
    experiment = get_experiment(session, key, for_update=True)
    _refuse_read_only(patch, experiment)
    current = _editable(experiment)
    merged = {**current, **patch}
    if isinstance(patch.get("promotion_policy"), dict):
        merged["promotion_policy"] = {**current["promotion_policy"], **patch["promotion_policy"]}
    if merged.get("hash_seed") is None:
        merged["hash_seed"] = experiment.key
    data = _validate(merged)
    new = _values(data)
    changed = [name for name in new if new[name] != current[name]]
    if not changed:
        return experiment
    _check_status_allows(experiment, current, new, changed)
    if "target" in changed:
        check_condition("target", data.target)
    if "budget_code" in changed:
        _check_budget(session, data.budget_code)
    if "arms" in changed:
        _check_arm_offers(session, data.arms)

    before = experiment_json(experiment)
    for name in changed:
        if name != "arms":
            setattr(experiment, name, new[name])
    if "arms" in changed:
        _replace_arms(session, experiment, new["arms"])
    session.flush()
    audit_experiment(session, experiment, "update", actor=actor, before=before, after=experiment_json(experiment))
    return experiment


def _editable(experiment: Experiment) -> dict[str, Any]:
    row = entity_json(experiment)
    out = {name: row[name] for name in schemas.ExperimentIn.model_fields if name != "arms"}
    out["arms"] = [
        {"key": a.key, "offer_code": a.offer_code, "weight": a.weight, "is_control": a.is_control}
        for a in experiment.arms
    ]
    return out


def _values(data: schemas.ExperimentIn) -> dict[str, Any]:
    values = data.model_dump()
    values["hash_seed"] = data.hash_seed or data.key
    return values


def _validate(payload: dict[str, Any]) -> schemas.ExperimentIn:
    try:
        return schemas.ExperimentIn.model_validate_json(json.dumps(payload), strict=True)
    except ValidationError as exc:
        raise BadRequest(
            "the experiment is not valid", code="validation_error", details=pydantic_details(exc)
        ) from None


def _refuse_read_only(patch: dict[str, Any], experiment: Experiment) -> None:
    if "key" in patch and patch["key"] != experiment.key:
        raise BadRequest(
            "key identifies the experiment and cannot change; create a new one instead",
            code="immutable_field",
            details=[{"path": "$.key", "message": "read-only"}],
        )
    read_only = [name for name in READ_ONLY_FIELDS if name in patch]
    if read_only:
        hints = "; ".join(f"{name}: {READ_ONLY_FIELDS[name]}".replace("<key>", experiment.key) for name in read_only)
        raise BadRequest(
            f"{', '.join(read_only)} cannot be edited with PATCH ({hints})",
            code="read_only_field",
            details=[{"path": f"$.{name}", "message": READ_ONLY_FIELDS[name]} for name in read_only],
        )


def _check_status_allows(
    experiment: Experiment, current: dict[str, Any], new: dict[str, Any], changed: list[str]
) -> None:
    status, key = experiment.status, experiment.key
    if status in ENDED_STATUSES:
        frozen = [name for name in changed if name not in EDITABLE_WHEN_ENDED]
        if frozen:
            raise Conflict(
                f"experiment {key!r} is {status}; only its name and hypothesis can change",
                code="experiment_ended",
                details=[{"path": f"$.{name}", "message": f"frozen once {status}"} for name in frozen],
            )
        return
    if status not in RUNNING_STATUSES:
        return
    details = []
    for name in changed:
        if name == "arms":
            message = _arms_change_message(current["arms"], new["arms"], key)
        elif name in PHASE_FIELDS:
            message = f"{name} decides which arm a subscriber hashes into; " + PHASES_HINT.format(key=key)
        elif name in POPULATION_FIELDS:
            message = (
                f"{name} decides who is in the experiment or what it measures; changing it "
                f"mid-test would mix populations: stop this experiment and create a new one"
            )
        else:
            continue
        details.append({"path": f"$.{name}", "message": message})
    if details:
        reasons = "; ".join(d["message"] for d in details)
        raise Conflict(
            f"experiment {key!r} is running ({status}): {reasons}", code="experiment_running", details=details
        )
    if "coverage" in changed and new["coverage"] < current["coverage"]:
        raise Conflict(
            f"experiment {key!r} is running ({status}): coverage can be raised but not lowered "
            f"(from {current['coverage']} to {new['coverage']}); lowering it would strand subscribers "
            f"already exposed outside the experiment while their recorded arm says they are in it. "
            f"Stop the experiment to end exposure instead",
            code="coverage_cannot_decrease",
            details=[{"path": "$.coverage", "message": f"must be ≥ {current['coverage']} while running"}],
        )


def _arms_change_message(old: list[dict[str, Any]], new: list[dict[str, Any]], key: str) -> str:
    def shape(arms: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        return [(a["key"], a["offer_code"], a["is_control"]) for a in arms]

    if shape(old) == shape(new):  # only weights differ
        return "arm weights cannot change in place; " + PHASES_HINT.format(key=key)
    return (
        "arms cannot be added, removed, reordered or given another offer while the experiment "
        "runs (stop it and create a new experiment); " + PHASES_HINT.format(key=key)
    )


def _replace_arms(session: Session, experiment: Experiment, arms: list[dict[str, Any]]) -> None:
    old = [(a.key, a.offer_code, a.is_control) for a in experiment.arms]
    if old == [(a["key"], a["offer_code"], a["is_control"]) for a in arms]:
        for arm, values in zip(experiment.arms, arms):
            arm.weight = values["weight"]
        return
    experiment.arms.clear()
    # The unit of work inserts before it deletes; flush the deletes first so the new arms can
    # reuse keys and positions under UNIQUE(experiment, key) and UNIQUE(experiment, position).
    session.flush()
    experiment.arms.extend(ExperimentArm(position=i, **arm) for i, arm in enumerate(arms))


# --- references --------------------------------------------------------------------------


def _check_budget(session: Session, budget_code: str | None) -> None:
    if budget_code is None:
        return
    active = session.scalar(select(Budget.active).where(Budget.code == budget_code))
    if active is None:
        raise BadRequest(
            f"no budget {budget_code!r}; create it first",
            code="unknown_reference",
            details=[{"path": "$.budget_code", "message": "unknown budget"}],
        )
    if not active:
        raise BadRequest(
            f"budget {budget_code!r} is inactive",
            code="inactive_reference",
            details=[{"path": "$.budget_code", "message": "inactive budget"}],
        )


def _check_arm_offers(session: Session, arms: Sequence[schemas.ArmIn | ExperimentArm]) -> None:
    codes = {arm.offer_code for arm in arms if arm.offer_code is not None}
    active = dict(session.execute(select(Offer.code, Offer.active).where(Offer.code.in_(codes))).all()) if codes else {}
    problems = []
    for index, arm in enumerate(arms):
        if arm.offer_code is None:
            continue
        if arm.offer_code not in active:
            problems.append({"path": f"$.arms[{index}].offer_code", "message": f"no offer {arm.offer_code!r}"})
        elif not active[arm.offer_code]:
            problems.append({"path": f"$.arms[{index}].offer_code", "message": f"offer {arm.offer_code!r} is inactive"})
    if problems:
        raise BadRequest(
            "an arm names an offer that does not exist or is inactive", code="unknown_reference", details=problems
        )


# --- lifecycle ---------------------------------------------------------------------------


def transition_experiment(
    session: Session, key: str, to: str, *, actor: str, reason: str = "", expected_status: str | None = None
) -> Experiment:
    """Move the experiment to ``to`` if the lifecycle allows it (409 ``invalid_transition``,
    naming the allowed next states, otherwise).

    Starting the pilot needs at least two arms, exactly one control, active offers, an active
    budget (if any) and a namespace range no other running experiment overlaps; it stamps
    ``started_at`` and records phase 1. Completing or stopping stamps ``ended_at``.
    The status change is a compare-and-set on the status read (``expected_status``, if
    given, must match too), so two concurrent transitions cannot both win.
    """
    experiment = get_experiment(session, key, for_update=True)
    current = experiment.status
    if expected_status is not None and current != expected_status:
        raise Conflict(
            f"experiment {key!r} is {current}, not {expected_status}; reload and retry", code="status_changed"
        )
    allowed = ALLOWED_TRANSITIONS[current]
    if to not in allowed:
        if allowed:
            message = f"experiment {key!r} is {current} and can move to {' or '.join(allowed)}, not {to}"
        else:
            message = f"experiment {key!r} is {current}, which is final: it cannot move to {to}"
        raise Conflict(
            message, code="invalid_transition", details={"status": current, "to": to, "allowed": list(allowed)}
        )
    if to == "pilot":
        _check_ready_to_start(session, experiment)

    now = utcnow()
    values: dict[str, Any] = {"status": to}
    if to == "pilot":
        values["started_at"] = now
    if to in ENDED_STATUSES:
        values["ended_at"] = now
    result = session.execute(
        update(Experiment).where(Experiment.id == experiment.id, Experiment.status == current).values(**values)
    )
    if matched_rows(result) != 1:
        raise Conflict(f"experiment {key!r} changed status meanwhile; reload and retry", code="status_changed")
    session.refresh(experiment)
    if to == "pilot":
        _record_phase(experiment, now)
    session.flush()
    after = {"status": to, **{k: v.isoformat() for k, v in values.items() if k != "status"}}
    if reason:
        after["reason"] = reason
    audit_experiment(session, experiment, "transition", actor=actor, before={"status": current}, after=after)
    return experiment


def _check_ready_to_start(session: Session, experiment: Experiment) -> None:
    arms = experiment.arms
    if len(arms) < 2:
        raise Conflict(
            f"experiment {experiment.key!r} has {len(arms)} arm(s); a pilot needs at least "
            f"two (a control and a treatment): add arms with PATCH",
            code="not_ready",
            details=[{"path": "$.arms", "message": "at least two arms"}],
        )
    if sum(arm.is_control for arm in arms) != 1:
        raise Conflict(
            f"experiment {experiment.key!r} has no control arm; mark one arm "
            f"is_control (an arm with no offer is the control by default)",
            code="not_ready",
            details=[{"path": "$.arms", "message": "exactly one control arm"}],
        )
    try:
        _check_arm_offers(session, arms)
        _check_budget(session, experiment.budget_code)
    except BadRequest as exc:
        raise Conflict(
            f"experiment {experiment.key!r} cannot start: {exc.message}", code="not_ready", details=exc.details
        ) from None
    if experiment.namespace:
        _check_namespace_free(session, experiment)


def _check_namespace_free(session: Session, experiment: Experiment) -> None:
    """Experiments in one namespace exclude each other only if their ranges do not overlap."""
    others = session.scalars(
        select(Experiment).where(
            Experiment.namespace == experiment.namespace,
            Experiment.id != experiment.id,
            Experiment.status.in_(RUNNING_STATUSES),
            Experiment.namespace_start < experiment.namespace_end,
            Experiment.namespace_end > experiment.namespace_start,
        )
    ).all()
    if others:
        names = ", ".join(f"{o.key!r} [{o.namespace_start}, {o.namespace_end})" for o in others)
        raise Conflict(
            f"namespace {experiment.namespace!r} range [{experiment.namespace_start}, "
            f"{experiment.namespace_end}) overlaps running experiment(s) {names}; "
            f"pick a disjoint range so no subscriber is in both",
            code="namespace_overlap",
            details=[{"path": "$.namespace_start", "message": f"overlaps {o.key}"} for o in others],
        )


def _record_phase(experiment: Experiment, started_at: datetime) -> ExperimentPhase:
    phase = ExperimentPhase(
        phase=experiment.phase,
        hash_seed=experiment.hash_seed,
        coverage=experiment.coverage,
        started_at=started_at,
        weights=[{"arm": a.key, "weight": a.weight} for a in experiment.arms],
    )
    experiment.phases.append(phase)  # through the relationship, so the loaded history stays current
    return phase


def start_phase(session: Session, key: str, data: schemas.PhaseIn, *, actor: str) -> Experiment:
    """Start a new phase of a running experiment: new weights and a new seed (default
    ``"<key>:p<phase>"``), so assignment is re-randomised for subscribers not yet exposed;
    existing assignments of the old phase stay as they are. Audited; writes the phase row."""
    experiment = get_experiment(session, key, for_update=True)
    if experiment.status not in RUNNING_STATUSES:
        hint = (
            "edit the arms' weights with PATCH while it is a draft" if experiment.status == "draft" else "it has ended"
        )
        raise Conflict(
            f"experiment {key!r} is {experiment.status}; only a running experiment "
            f"(pilot or rollout) starts new phases: {hint}",
            code="experiment_not_running",
        )
    arm_keys = [arm.key for arm in experiment.arms]
    if set(data.weights) != set(arm_keys):
        missing = [k for k in arm_keys if k not in data.weights]
        unknown = [k for k in data.weights if k not in arm_keys]
        problems = [{"path": f"$.weights.{k}", "message": "no such arm"} for k in unknown] + [
            {"path": "$.weights", "message": f"missing a weight for arm {k!r}"} for k in missing
        ]
        raise BadRequest(
            f"give a weight for every arm and only those: {', '.join(arm_keys)}",
            code="invalid_weights",
            details=problems,
        )
    new_phase = experiment.phase + 1
    seed = data.hash_seed or f"{key}:p{new_phase}"
    used = {experiment.hash_seed, *(p.hash_seed for p in experiment.phases)}
    if seed in used:
        raise Conflict(
            f"seed {seed!r} was already used by this experiment; a new phase needs a new "
            f"seed so that assignment is re-randomised",
            code="seed_reused",
            details=[{"path": "$.hash_seed", "message": "already used"}],
        )

    before = {
        "phase": experiment.phase,
        "hash_seed": experiment.hash_seed,
        "weights": [{"arm": a.key, "weight": a.weight} for a in experiment.arms],
    }
    result = session.execute(
        update(Experiment)
        .where(
            Experiment.id == experiment.id,
            Experiment.phase == experiment.phase,
            Experiment.status.in_(RUNNING_STATUSES),
        )
        .values(phase=new_phase, hash_seed=seed)
    )
    if matched_rows(result) != 1:
        raise Conflict(f"experiment {key!r} changed meanwhile; reload and retry", code="status_changed")
    session.refresh(experiment)
    for arm in experiment.arms:
        arm.weight = data.weights[arm.key]
    phase = _record_phase(experiment, utcnow())
    session.flush()
    after = {"phase": new_phase, "hash_seed": seed, "weights": phase.weights}
    if data.reason:
        after["reason"] = data.reason
    audit_experiment(session, experiment, "start_phase", actor=actor, before=before, after=after)
    return experiment
