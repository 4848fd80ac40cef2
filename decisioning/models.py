"""The decisions table: one row per answered contact, and with ``offers.models.BudgetCharge``
the ledger of record for spend.

Redis holds the live budget counters and contact windows for speed; these tables are what they
are rebuilt from after a Redis restart (``decisioning.jobs.reconcile_ledger_job``): the cost
of every decision that reserved money, with the budgets and period it was charged to.

Idempotency: UNIQUE(caller, request_id). A channel that retries a request gets the stored
answer (same body) or a 409 (another body, recognised by ``request_hash``), and the Redis
reservation is keyed by the same pair, so a retry never charges twice.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, BigInteger, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from infra.db import Base, Money, UtcDateTime, utcnow


class Decision(Base):
    """One decision: who, where, what was chosen (or nothing), why, and what it cost."""

    __tablename__ = "decisions"
    __table_args__ = (
        UniqueConstraint("caller", "request_id"),
        Index("ix_decisions_subscriber_id_created_at", "subscriber_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # 128 random bits as hex, shown to channels
    caller: Mapped[str] = mapped_column(String(64))  # "key:<api key id>" or "user:<id>"
    request_id: Mapped[str] = mapped_column(String(128))
    request_hash: Mapped[str] = mapped_column(String(64))  # SHA-256 of the canonical request body
    subscriber_id: Mapped[str] = mapped_column(String(64))
    channel: Mapped[str] = mapped_column(String(20))
    tier: Mapped[str | None] = mapped_column(String(64))
    risk_level: Mapped[str] = mapped_column(String(10))
    experiment_key: Mapped[str | None] = mapped_column(String(64))
    arm_key: Mapped[str | None] = mapped_column(String(64))
    in_holdout: Mapped[bool] = mapped_column(default=False)
    # the experiment exposure this decision made or met (outcomes reported by decision id use it)
    assignment_id: Mapped[int | None] = mapped_column(BigInteger)
    offer_code: Mapped[str | None] = mapped_column(String(64))
    cost: Mapped[Decimal] = mapped_column(Money, default=Decimal("0"))
    probability: Mapped[float]
    degraded: Mapped[bool] = mapped_column(default=False)
    snapshot_version: Mapped[int] = mapped_column(BigInteger, default=0)
    # the answer as sent, with reasons; read back only whole, so stored as json text (jsonb's
    # binary form cost most of a bulk write's database time: migration 0006)
    response: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
