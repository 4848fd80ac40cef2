"""The experiment tables: experiments, their arms and the history of their phases (DESIGN §3).

An experiment's assignment-relevant settings (hash seed, hash and bucket versions, arm weights,
namespace range) are frozen while it runs; changing the split starts a new *phase* with a new
seed, and every phase is kept in ``experiment_phases`` so a readout can tell which split and
seed were live when a subscriber was first exposed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, get_args

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Computed,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from infra.db import Base, JsonType, UtcDateTime, utcnow
from offers.models import Timestamps

# Each vocabulary is stated once, as the Literal type the schemas use; its tuple is derived
Status = Literal["draft", "pilot", "rollout", "completed", "stopped"]
PrimaryMetric = Literal["retained_d30", "retained_d60", "retained_d90"]
Guardrail = Literal["complaints", "arpu"]
STATUSES: tuple[Status, ...] = get_args(Status)
RUNNING_STATUSES = ("pilot", "rollout")
ENDED_STATUSES = ("completed", "stopped")
PRIMARY_METRICS: tuple[PrimaryMetric, ...] = get_args(PrimaryMetric)
GUARDRAIL_METRICS: tuple[Guardrail, ...] = get_args(Guardrail)
PILOT_COVERAGE = 0.05  # the playbooks' ~5% pilot


def _in(column: str, values: tuple[Any, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Experiment(Timestamps, Base):
    """An A/B test of care actions against a no-action control, aimed at a target segment."""

    __tablename__ = "experiments"
    __table_args__ = (
        CheckConstraint(_in("status", STATUSES), name="status"),
        CheckConstraint(_in("primary_metric", PRIMARY_METRICS), name="primary_metric"),
        CheckConstraint("hash_version IN (1, 2)", name="hash_version"),
        CheckConstraint("bucket_version >= 1", name="bucket_version_positive"),
        CheckConstraint("phase >= 1", name="phase_positive"),
        CheckConstraint("coverage > 0 AND coverage <= 1", name="coverage_range"),
        CheckConstraint("holdout_share >= 0 AND holdout_share <= 0.5", name="holdout_share_range"),
        CheckConstraint("readout_interval_minutes >= 5", name="readout_interval_minutes_min"),
        CheckConstraint(
            "namespace_start >= 0 AND namespace_start < namespace_end AND namespace_end <= 1", name="namespace_range"
        ),
        Index("ix_experiments_status", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    hypothesis: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(20), default="draft")
    target: Mapped[dict[str, Any]] = mapped_column(JsonType)  # GrowthBook condition; {} = everyone
    namespace: Mapped[str | None] = mapped_column(String(64))
    namespace_start: Mapped[float] = mapped_column(default=0.0)
    namespace_end: Mapped[float] = mapped_column(default=1.0)
    coverage: Mapped[float] = mapped_column(default=PILOT_COVERAGE)
    holdout_share: Mapped[float] = mapped_column(default=0.0)
    hash_seed: Mapped[str] = mapped_column(String(200))
    hash_version: Mapped[int] = mapped_column(default=2)
    bucket_version: Mapped[int] = mapped_column(default=1)
    phase: Mapped[int] = mapped_column(default=1)
    primary_metric: Mapped[str] = mapped_column(String(20), default="retained_d30")
    guardrails: Mapped[list[str]] = mapped_column(JsonType)
    promotion_policy: Mapped[dict[str, Any]] = mapped_column(JsonType)
    budget_code: Mapped[str | None] = mapped_column(ForeignKey("budgets.code", onupdate="CASCADE"))
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # analysis: how often the workers read the experiment out while it runs
    readout_interval_minutes: Mapped[int] = mapped_column(default=60)
    # set by promotion (pilot → rollout): the arm new subscribers get, overall and per tier
    winner_arm_key: Mapped[str | None] = mapped_column(String(64))
    tier_winners: Mapped[dict[str, Any] | None] = mapped_column(JsonType)  # tier code -> arm key
    promoted_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # the ROI alarm stops paid actions of a rollout until a person resumes it
    spending_paused: Mapped[bool] = mapped_column(default=False)

    arms: Mapped[list[ExperimentArm]] = relationship(
        back_populates="experiment", order_by="ExperimentArm.position", cascade="all, delete-orphan", lazy="selectin"
    )
    phases: Mapped[list[ExperimentPhase]] = relationship(
        back_populates="experiment", order_by="ExperimentPhase.phase", cascade="all, delete-orphan"
    )


class ExperimentArm(Base):
    """One arm: an offer, or no action (``offer_code`` null). ``position`` is the arm's index in
    GrowthBook's variation list, so it decides which hash range the arm owns."""

    __tablename__ = "experiment_arms"
    __table_args__ = (
        UniqueConstraint("experiment_id", "key"),
        UniqueConstraint("experiment_id", "position"),
        CheckConstraint("weight > 0", name="weight_positive"),
        CheckConstraint("position >= 0", name="position_non_negative"),
        # At most one control per experiment, whatever writes the rows.
        Index(
            "uq_experiment_arms_one_control",
            "experiment_id",
            unique=True,
            sqlite_where=text("is_control"),
            postgresql_where=text("is_control"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(64))
    offer_code: Mapped[str | None] = mapped_column(ForeignKey("offers.code", onupdate="CASCADE"))
    weight: Mapped[float]
    is_control: Mapped[bool] = mapped_column(default=False)
    position: Mapped[int]

    experiment: Mapped[Experiment] = relationship(back_populates="arms")


class ExperimentPhase(Base):
    """The split and seed in force from ``started_at`` until the next phase starts."""

    __tablename__ = "experiment_phases"
    __table_args__ = (
        UniqueConstraint("experiment_id", "phase"),
        CheckConstraint("phase >= 1", name="phase_positive"),
        CheckConstraint("coverage > 0 AND coverage <= 1", name="coverage_range"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"))
    phase: Mapped[int]
    hash_seed: Mapped[str] = mapped_column(String(200))
    # [{"arm": key, "weight": w}, ...] in arm order: a list, because JSONB does not keep key order
    weights: Mapped[list[dict[str, Any]]] = mapped_column(JsonType)
    coverage: Mapped[float]
    started_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    experiment: Mapped[Experiment] = relationship(back_populates="phases")


# --- exposures and outcomes ------------------------------------------------------------------

OutcomeType = Literal["retained", "churned", "accepted", "declined", "delivered", "revenue", "complaint"]
OUTCOME_TYPES: tuple[OutcomeType, ...] = get_args(OutcomeType)
# These carry ``day_n``: the day after the first exposure of a status check or of the churn
DAY_N_OUTCOME_TYPES = ("retained", "churned")
# Part of an outcome's identity: the day of a retention check; -1 for the types that happen at
# most once per exposure (all the others)
DAY_KEY = "CASE WHEN type = 'retained' THEN day_n ELSE -1 END"
# 64-bit ids for the tables that grow with the subscriber base; SQLite only autoincrements INTEGER
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Exposure(Base):
    """A subscriber's first exposure to an experiment: the sticky assignment (table
    ``assignments``, DESIGN §3). Written once, by an insert-if-absent, and never changed: the
    arm recorded here wins over whatever the hash says later (coverage raised, new phase).

    ``arm_key`` is null exactly when the subscriber fell in the holdout, the measured
    "no care" baseline. ``tier`` is the subscriber's primary tier at first exposure, so a
    readout splits by the tier the subscriber was in when treated, not by today's.
    ``subscriber_id`` is not a foreign key: channels may expose subscribers whose profile
    has not been imported yet.
    """

    __tablename__ = "assignments"
    __table_args__ = (
        UniqueConstraint("experiment_id", "subscriber_id"),
        # The arm must be one of the experiment's arms (arms are frozen while it runs)
        ForeignKeyConstraint(
            ["experiment_id", "arm_key"],
            ["experiment_arms.experiment_id", "experiment_arms.key"],
            name="fk_assignments_arm_experiment_arms",
        ),
        CheckConstraint("(arm_key IS NULL) = in_holdout", name="arm_or_holdout"),
        CheckConstraint("phase >= 1", name="phase_positive"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"))
    subscriber_id: Mapped[str] = mapped_column(String(64))
    arm_key: Mapped[str | None] = mapped_column(String(64))
    in_holdout: Mapped[bool] = mapped_column(default=False)
    phase: Mapped[int]
    tier: Mapped[str | None] = mapped_column(String(64))
    channel: Mapped[str | None] = mapped_column(String(32))
    first_exposed_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Outcome(Base):
    """What happened after an exposure, reported by a channel or by billing.

    ``retained`` is a status check: "still a customer ``day_n`` days after the first
    exposure" (30, 60, 90…), one row per (assignment, day). Every other type is an event that
    happens once per exposure — ``churned`` (on day ``day_n``), ``delivered``, ``accepted``,
    ``declined``, ``complaint``, ``revenue`` (the revenue attributed to the exposure) — one
    row per (assignment, type). One unique key says both: (assignment, type, ``day_key``),
    where the generated ``day_key`` is the check's day for ``retained`` and -1 otherwise (a
    key on ``day_n`` itself would not do: SQL treats its nulls as distinct, and a churn must
    not count twice because two reports gave two days). Re-sending an outcome therefore
    updates its row instead of adding one; the report with the latest ``occurred_at`` wins
    (ties: the last received), so replaying an old file cannot undo a correction.

    ``decision_id`` is reserved for the decision ledger (a later change): outcomes reported
    by decision id will store it here. Until decisions exist it is always null.
    """

    __tablename__ = "outcomes"
    __table_args__ = (
        UniqueConstraint("assignment_id", "type", "day_key"),
        CheckConstraint(_in("type", OUTCOME_TYPES), name="type"),
        CheckConstraint(
            f"({_in('type', DAY_N_OUTCOME_TYPES)}) = (day_n IS NOT NULL)", name="day_n_for_retained_and_churned"
        ),
        CheckConstraint("day_n >= 0", name="day_n_non_negative"),
        CheckConstraint("type <> 'revenue' OR value IS NOT NULL", name="revenue_has_value"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    assignment_id: Mapped[int] = mapped_column(BigId, ForeignKey("assignments.id", ondelete="CASCADE"))
    decision_id: Mapped[str | None] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(16))
    value: Mapped[float | None]
    day_n: Mapped[int | None]
    day_key: Mapped[int] = mapped_column(Computed(DAY_KEY, persisted=True))
    occurred_at: Mapped[datetime] = mapped_column(UtcDateTime)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


# --- readouts, promotions and alerts --------------------------------------------------------

READOUT_METHODS = ("conjugate", "hierarchical")
ALERT_KINDS = ("roi_alarm",)


class Readout(Base):
    """One analysis of an experiment as of ``data_cutoff`` by one version of the models.

    Unique per (experiment, data cutoff, model version), so a readout job that runs twice —
    retried after a crash, or enqueued twice — stores one row: the second insert does nothing.
    ``inputs_hash`` is the SHA-256 of the sufficient statistics and settings the results were
    computed from, so two readouts with the same hash are the same analysis. ``results`` is the
    readout in the shape of the API (DESIGN §7), promotion verdict included.
    """

    __tablename__ = "readouts"
    __table_args__ = (
        UniqueConstraint("experiment_id", "data_cutoff", "model_version"),
        CheckConstraint(_in("method", READOUT_METHODS), name="method"),
        Index("ix_readouts_experiment_id_computed_at", "experiment_id", "computed_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"))
    data_cutoff: Mapped[datetime] = mapped_column(UtcDateTime)
    model_version: Mapped[str] = mapped_column(String(64))
    inputs_hash: Mapped[str] = mapped_column(String(64))
    method: Mapped[str] = mapped_column(String(20))
    status_at_readout: Mapped[str] = mapped_column(String(20))
    error_code: Mapped[str | None] = mapped_column(String(64))
    eligible: Mapped[bool] = mapped_column(default=False)
    results: Mapped[dict[str, Any]] = mapped_column(JsonType)
    computed_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class Promotion(Base):
    """A pilot promoted to rollout: which readout justified it, the winner (overall and per
    tier) and who did it (``auto`` by the analysis job, or a person approving). At most one
    per experiment and status change, whatever retries or races happen."""

    __tablename__ = "promotions"
    __table_args__ = (UniqueConstraint("experiment_id", "from_status", "to_status"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"))
    readout_id: Mapped[int] = mapped_column(ForeignKey("readouts.id"))
    from_status: Mapped[str] = mapped_column(String(20))
    to_status: Mapped[str] = mapped_column(String(20))
    winner_arm_key: Mapped[str] = mapped_column(String(64))
    tier_winners: Mapped[dict[str, Any]] = mapped_column(JsonType)
    mode: Mapped[str] = mapped_column(String(10))
    actor: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class Alert(Base):
    """Something a person must look at, raised by the analysis (the ROI alarm). One per
    experiment, kind and readout, so a rerun does not raise it twice."""

    __tablename__ = "alerts"
    __table_args__ = (
        UniqueConstraint("experiment_id", "kind", "readout_id"),
        CheckConstraint(_in("kind", ALERT_KINDS), name="kind"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"))
    readout_id: Mapped[int] = mapped_column(ForeignKey("readouts.id"))
    kind: Mapped[str] = mapped_column(String(20))
    message: Mapped[str] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(JsonType)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    resolved_by: Mapped[str | None] = mapped_column(String(200))
