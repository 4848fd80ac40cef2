"""Exposures: the sticky first assignment of a subscriber to an experiment (table ``assignments``).

The first time a running experiment is shown to a subscriber, the arm computed by the pure
GrowthBook-compatible assignment (``experiments.assignment.assign``) is written down, and from
then on the written arm wins — also after coverage is raised or a new phase re-seeds the hash.
Churn shows 30–90 days after the contact, so a subscriber must stay in one arm for weeks and
get the same arm from every channel.

Who is recorded: subscribers assigned to an arm, and subscribers in the holdout (``arm_key``
null, ``in_holdout`` true), because the holdout is the measured "no care" baseline. Subscribers
outside the experiment (not covered, outside its namespace range) are not recorded.

Race safety: the first exposure is an ``INSERT … ON CONFLICT (experiment_id, subscriber_id)
DO NOTHING`` followed by a read of the row, so two channels exposing one subscriber at once
store one row and both answer with it (PostgreSQL waits on the unique index; SQLite
serialises writers). The insert comes first so that, on SQLite, a transaction that starts
with it takes the write lock before it takes a read snapshot.

Like every service this takes a session and never commits.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from experiments.assignment import assign
from experiments.models import RUNNING_STATUSES, Experiment, Exposure
from experiments.service import experiment_spec
from infra.errors import Conflict
from infra.sql_dialect import dialect_insert
from offers.conditions import compile_condition

RECORDED_REASONS = ("assigned", "holdout")


@dataclass(frozen=True)
class ExposureResult:
    """Where a subscriber stands in an experiment after an exposure.

    ``reason``: ``assigned`` or ``holdout`` for a recorded exposure (``new`` says whether this
    call recorded it), else why the subscriber is not in the experiment (``not_covered``,
    ``not_in_namespace``, ``not_targeted``, …) and nothing was written.
    """

    experiment_key: str
    subscriber_id: str
    arm_key: str | None
    in_experiment: bool
    in_holdout: bool
    reason: str
    new: bool = False
    exposure_id: int | None = None
    phase: int | None = None
    tier: str | None = None
    channel: str | None = None
    first_exposed_at: datetime | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "experiment": self.experiment_key,
            "subscriber_id": self.subscriber_id,
            "arm": self.arm_key,
            "in_experiment": self.in_experiment,
            "in_holdout": self.in_holdout,
            "reason": self.reason,
            "new": self.new,
            "phase": self.phase,
            "tier": self.tier,
            "channel": self.channel,
            "first_exposed_at": self.first_exposed_at.isoformat() if self.first_exposed_at else None,
        }


def find_exposure(session: Session, experiment_id: int, subscriber_id: str) -> Exposure | None:
    """The subscriber's recorded first exposure to the experiment, if any."""
    return session.scalar(
        select(Exposure).where(Exposure.experiment_id == experiment_id, Exposure.subscriber_id == subscriber_id)
    )


def _result(experiment: Experiment, row: Exposure, *, new: bool) -> ExposureResult:
    return ExposureResult(
        experiment.key,
        row.subscriber_id,
        row.arm_key,
        in_experiment=not row.in_holdout,
        in_holdout=row.in_holdout,
        reason="holdout" if row.in_holdout else "assigned",
        new=new,
        exposure_id=row.id,
        phase=row.phase,
        tier=row.tier,
        channel=row.channel,
        first_exposed_at=row.first_exposed_at,
    )


def expose(
    session: Session,
    experiment: Experiment,
    subscriber_id: str,
    *,
    tier: str | None,
    channel: str | None,
    now: datetime,
) -> ExposureResult:
    """Expose ``subscriber_id`` to the running ``experiment``: record the first exposure
    (arm, phase, ``tier`` and ``channel`` as of ``now``) or return the one already recorded.

    In rollout (after promotion) a subscriber not yet exposed gets the winning arm — the
    per-tier winner for their tier where the readout named one — unless they fall in the kept
    holdout; earlier exposures keep their arms.

    Targeting is the caller's job (the decision engine matches the target against the
    profile merged with the request's context). Raises Conflict (409
    ``experiment_not_running``) unless the experiment is in pilot or rollout.
    """
    if experiment.status not in RUNNING_STATUSES:
        raise Conflict(
            f"experiment {experiment.key!r} is {experiment.status}; subscribers are exposed "
            f"only while it runs (pilot or rollout)",
            code="experiment_not_running",
        )
    assignment = assign(experiment_spec(experiment), subscriber_id)
    if assignment.reason in RECORDED_REASONS:
        arm_key = assignment.arm_key
        if experiment.status == "rollout" and experiment.winner_arm_key and not assignment.in_holdout:
            # promoted: the winner (for the subscriber's tier, where it has its own) for everyone new
            arm_key = (experiment.tier_winners or {}).get(tier or "") or experiment.winner_arm_key
        inserted = session.execute(
            dialect_insert(session, Exposure)
            .values(
                experiment_id=experiment.id,
                subscriber_id=subscriber_id,
                arm_key=arm_key,
                in_holdout=assignment.in_holdout,
                phase=experiment.phase,
                tier=tier,
                channel=channel,
                first_exposed_at=now,
            )
            .on_conflict_do_nothing(index_elements=["experiment_id", "subscriber_id"])
            .returning(Exposure.id)
        ).scalar()
        row = find_exposure(session, experiment.id, subscriber_id)
        if row is None:  # pragma: no cover - the insert or the conflicting row put it there
            raise RuntimeError("the exposure row vanished between insert and read")
        return _result(experiment, row, new=inserted is not None)
    row = find_exposure(session, experiment.id, subscriber_id)
    if row is not None:  # exposed earlier under another phase's hash: the recorded arm wins
        return _result(experiment, row, new=False)
    return ExposureResult(
        experiment.key, subscriber_id, None, in_experiment=False, in_holdout=False, reason=assignment.reason
    )


def expose_if_targeted(
    session: Session,
    experiment: Experiment,
    subscriber_id: str,
    *,
    attributes: Mapping[str, Any],
    tier: str | None,
    channel: str | None,
    now: datetime,
) -> ExposureResult:
    """Like :func:`expose`, for callers that bring a profile rather than a decision: a
    subscriber not yet exposed is exposed only if ``attributes`` match the experiment's
    target (else reason ``not_targeted``, nothing recorded). Once exposed, a subscriber stays
    in the experiment even if their attributes stop matching (intention to treat)."""
    if experiment.status in RUNNING_STATUSES and experiment.target:
        row = find_exposure(session, experiment.id, subscriber_id)
        if row is not None:
            return _result(experiment, row, new=False)
        if not compile_condition(experiment.target)(dict(attributes)):
            return ExposureResult(
                experiment.key, subscriber_id, None, in_experiment=False, in_holdout=False, reason="not_targeted"
            )
    return expose(session, experiment, subscriber_id, tier=tier, channel=channel, now=now)
