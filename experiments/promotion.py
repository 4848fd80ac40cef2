"""Promotion (pilot → rollout), the ROI alarm and resuming spending: audited state changes.

Every change here is a compare-and-set on the experiment row, written with its promotion or
alert row and its audit row in the caller's transaction, so a retried or concurrent job can
change the state at most once. Like every service this takes a session and never commits.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from experiments.models import Alert, Experiment, ExperimentPhase, Promotion, Readout
from experiments.promotion_policy import promotion_policy_from_json
from experiments.promotion_rules import roi_alarm
from experiments.readouts import latest_readout
from experiments.service import audit_experiment, get_experiment
from infra.db import matched_rows, utcnow
from infra.errors import Conflict


def promote(session: Session, experiment: Experiment, readout: Readout, *, mode: str, actor: str) -> Promotion | None:
    """Roll the pilot's winner out if ``readout`` says it is eligible: status → rollout,
    coverage → 100% minus the kept holdout, the winner (overall and per tier) becomes the arm
    of every newly exposed subscriber (a new phase records it). Returns the promotion, or None
    when another process promoted first (nothing changes twice)."""
    verdict = readout.results["promotion"]
    if not verdict["eligible"] or not verdict["winner"]:
        raise Conflict(
            f"readout {readout.id} does not allow promotion: {', '.join(verdict['blocked_by']) or 'no winner'}",
            code="promotion_blocked",
            details=verdict["reasons"],
        )
    policy = promotion_policy_from_json(experiment.promotion_policy)
    now = utcnow()
    holdout_share = max(experiment.holdout_share, policy.rollout_holdout_share)
    new_phase = experiment.phase + 1
    changed = session.execute(
        update(Experiment)
        .where(Experiment.id == experiment.id, Experiment.status == "pilot")
        .values(
            status="rollout",
            coverage=1.0,
            holdout_share=holdout_share,
            phase=new_phase,
            winner_arm_key=verdict["winner"],
            tier_winners=verdict["tier_winners"],
            promoted_at=now,
        )
    )
    if matched_rows(changed) != 1:
        return None
    before = {
        "status": "pilot",
        "coverage": experiment.coverage,
        "holdout_share": experiment.holdout_share,
        "phase": experiment.phase,
    }
    session.refresh(experiment)
    # the rollout phase: everyone newly exposed gets the winner (weight 0 marks "not randomised")
    experiment.phases.append(
        ExperimentPhase(
            phase=new_phase,
            hash_seed=experiment.hash_seed,
            coverage=1.0,
            started_at=now,
            weights=[
                {"arm": arm.key, "weight": 1.0 if arm.key == verdict["winner"] else 0.0} for arm in experiment.arms
            ],
        )
    )
    promotion = Promotion(
        experiment_id=experiment.id,
        readout_id=readout.id,
        from_status="pilot",
        to_status="rollout",
        winner_arm_key=verdict["winner"],
        tier_winners=verdict["tier_winners"],
        mode=mode,
        actor=actor,
    )
    session.add(promotion)
    session.flush()
    audit_experiment(
        session,
        experiment,
        "promote",
        actor=actor,
        before=before,
        after={
            "status": "rollout",
            "coverage": 1.0,
            "holdout_share": holdout_share,
            "phase": new_phase,
            "winner_arm_key": verdict["winner"],
            "tier_winners": verdict["tier_winners"],
            "readout_id": readout.id,
            "mode": mode,
        },
    )
    return promotion


def approve_promotion(
    session: Session, experiment_key: str, *, actor: str, readout_id: int | None = None, reason: str = ""
) -> Promotion:
    """A person approves the promotion the latest readout allows (409 when it does not, when
    the experiment is not a pilot, or when ``readout_id`` is not the latest readout)."""
    experiment = get_experiment(session, experiment_key, for_update=True)
    if experiment.status != "pilot":
        raise Conflict(
            f"experiment {experiment_key!r} is {experiment.status}; only a pilot is promoted", code="not_in_pilot"
        )
    readout = latest_readout(session, experiment)
    if readout_id is not None and readout_id != readout.id:
        raise Conflict(
            f"readout {readout_id} is not the latest ({readout.id}); approve the latest "
            f"readout so the decision rests on the newest data",
            code="stale_readout",
        )
    if readout.status_at_readout != "pilot":
        raise Conflict(
            "the latest readout was not computed for the pilot; wait for the next readout", code="stale_readout"
        )
    promotion = promote(session, experiment, readout, mode="approve", actor=actor)
    if promotion is None:
        raise Conflict(f"experiment {experiment_key!r} was promoted meanwhile", code="status_changed")
    if reason:
        audit_experiment(
            session, experiment, "approve_promotion", actor=actor, after={"readout_id": readout.id, "reason": reason}
        )
    return promotion


def check_roi_alarm(session: Session, experiment: Experiment, readout: Readout) -> Alert | None:
    """In rollout: raise the ROI alarm when the readout says the rolled-out action(s) most
    likely earn less than the ROI floor — record an alert (once per readout) and pause
    spending (a compare-and-set, audited). Returns the new alert, if any."""
    if experiment.status != "rollout":
        return None
    policy = promotion_policy_from_json(experiment.promotion_policy)
    arms = [experiment.winner_arm_key, *(experiment.tier_winners or {}).values()]
    details = roi_alarm(policy, readout.results, [a for a in dict.fromkeys(arms) if a])
    if details is None:
        return None
    if (
        session.scalar(
            select(Alert.id).where(
                Alert.experiment_id == experiment.id, Alert.kind == "roi_alarm", Alert.readout_id == readout.id
            )
        )
        is not None
    ):
        return None
    message = (
        f"ROI alarm: P(ROI < {details['roi_floor']}) = {details['p_roi_below_floor']:.2f} for arm "
        f"{details['arm']!r} (threshold {details['threshold']}); spending paused"
    )
    alert = Alert(
        experiment_id=experiment.id, readout_id=readout.id, kind="roi_alarm", message=message, details=details
    )
    session.add(alert)
    paused = session.execute(
        update(Experiment)
        .where(Experiment.id == experiment.id, Experiment.spending_paused.is_(False))
        .values(spending_paused=True)
    )
    session.flush()
    if matched_rows(paused) == 1:
        audit_experiment(
            session,
            experiment,
            "pause_spending",
            actor="system:readout",
            before={"spending_paused": False},
            after={"spending_paused": True, "alert": message, "readout_id": readout.id},
        )
    session.refresh(experiment)
    return alert


def resume_spending(session: Session, experiment_key: str, *, actor: str, reason: str) -> Experiment:
    """A person resumes paid actions after the ROI alarm; open alerts are resolved. Audited."""
    experiment = get_experiment(session, experiment_key, for_update=True)
    if not experiment.spending_paused:
        raise Conflict(f"experiment {experiment_key!r} is not paused", code="not_paused")
    now = utcnow()
    experiment.spending_paused = False
    for alert in session.scalars(
        select(Alert).where(Alert.experiment_id == experiment.id, Alert.resolved_at.is_(None))
    ):
        alert.resolved_at, alert.resolved_by = now, actor
    session.flush()
    audit_experiment(
        session,
        experiment,
        "resume_spending",
        actor=actor,
        before={"spending_paused": True},
        after={"spending_paused": False, "reason": reason},
    )
    return experiment


def promotions_json(session: Session, experiment: Experiment) -> list[dict[str, Any]]:
    rows = session.scalars(select(Promotion).where(Promotion.experiment_id == experiment.id).order_by(Promotion.id))
    return [
        {
            "id": p.id,
            "readout_id": p.readout_id,
            "from": p.from_status,
            "to": p.to_status,
            "winner": p.winner_arm_key,
            "tier_winners": p.tier_winners,
            "mode": p.mode,
            "actor": p.actor,
            "created_at": p.created_at.isoformat(),
        }
        for p in rows
    ]


def alerts_json(session: Session, experiment: Experiment) -> list[dict[str, Any]]:
    rows = session.scalars(select(Alert).where(Alert.experiment_id == experiment.id).order_by(Alert.id.desc()))
    return [
        {
            "id": a.id,
            "kind": a.kind,
            "message": a.message,
            "details": a.details,
            "readout_id": a.readout_id,
            "created_at": a.created_at.isoformat(),
            "resolved_at": a.resolved_at.isoformat() if a.resolved_at else None,
            "resolved_by": a.resolved_by,
        }
        for a in rows
    ]
