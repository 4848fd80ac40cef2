"""The experiment tables: experiments, their arms and the history of their phases (DESIGN §3).

An experiment's assignment-relevant settings (hash seed, hash and bucket versions, arm weights,
namespace range) are frozen while it runs; changing the split starts a new *phase* with a new
seed, and every phase is kept in ``experiment_phases`` so a readout can tell which split and
seed were live when a subscriber was first exposed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from infra.db import Base, JsonType, UtcDateTime, utcnow
from offers.models import Timestamps

STATUSES = ("draft", "pilot", "rollout", "completed", "stopped")
RUNNING_STATUSES = ("pilot", "rollout")
ENDED_STATUSES = ("completed", "stopped")
PRIMARY_METRICS = ("retained_d30", "retained_d60", "retained_d90")
GUARDRAIL_METRICS = ("complaints", "arpu")
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
        CheckConstraint("namespace_start >= 0 AND namespace_start < namespace_end AND namespace_end <= 1",
                        name="namespace_range"),
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

    arms: Mapped[list[ExperimentArm]] = relationship(
        back_populates="experiment", order_by="ExperimentArm.position", cascade="all, delete-orphan",
        lazy="selectin")
    phases: Mapped[list[ExperimentPhase]] = relationship(
        back_populates="experiment", order_by="ExperimentPhase.phase", cascade="all, delete-orphan")


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
        Index("uq_experiment_arms_one_control", "experiment_id", unique=True,
              sqlite_where=text("is_control"), postgresql_where=text("is_control")),
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
