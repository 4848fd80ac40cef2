"""The catalogue tables: offers, tier schemes and tiers, tier policies, contact policies,
risk-level policies, budgets and their charges, and subscribers (DESIGN §3)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from infra.db import Base, JsonType, Money, UtcDateTime, utcnow
from offers.money_rules import DEFAULT_MONEY_RULES


class Timestamps:
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)


class Offer(Timestamps, Base):
    """A care action: what it costs, who can deliver it, who is eligible, what it is worth."""

    __tablename__ = "offers"
    __table_args__ = (
        CheckConstraint("unit_cost >= 0", name="unit_cost_non_negative"),
        CheckConstraint("prior_uplift >= -1 AND prior_uplift <= 1", name="prior_uplift_range"),
        CheckConstraint("value_horizon_months >= 1", name="value_horizon_positive"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    unit_cost: Mapped[Decimal] = mapped_column(Money)
    currency: Mapped[str] = mapped_column(String(3), default="EUR")
    channels: Mapped[list[str]] = mapped_column(JsonType)
    eligibility: Mapped[dict[str, Any]] = mapped_column(JsonType)
    prior_uplift: Mapped[float] = mapped_column(default=0.0)
    value_horizon_months: Mapped[int] = mapped_column(default=12)
    active: Mapped[bool] = mapped_column(default=True)


class TierScheme(Timestamps, Base):
    """A way of segmenting the base (value tiers, ARPU/need/loyalty segments…).
    Exactly one active scheme is primary: its tier drives tier policies."""

    __tablename__ = "tier_schemes"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    is_primary: Mapped[bool] = mapped_column(default=False)
    active: Mapped[bool] = mapped_column(default=True)


class Tier(Timestamps, Base):
    """One tier of a scheme; a profile gets the first active tier, by rank, whose rule matches."""

    __tablename__ = "tiers"
    __table_args__ = (UniqueConstraint("scheme_code", "rank"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    scheme_code: Mapped[str] = mapped_column(ForeignKey("tier_schemes.code", onupdate="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    rank: Mapped[int]
    rule: Mapped[dict[str, Any]] = mapped_column(JsonType)
    active: Mapped[bool] = mapped_column(default=True)


class TierPolicy(Timestamps, Base):
    """What a tier may receive and who may grant it: (tier, offer) allowed, authority limit,
    context weight and business lever used by arbitration."""

    __tablename__ = "tier_policies"
    __table_args__ = (
        UniqueConstraint("tier_code", "offer_code"),
        CheckConstraint("max_cost IS NULL OR max_cost >= 0", name="max_cost_non_negative"),
        CheckConstraint("context_weight >= 0", name="context_weight_non_negative"),
        CheckConstraint("lever >= 0", name="lever_non_negative"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    tier_code: Mapped[str] = mapped_column(ForeignKey("tiers.code", onupdate="CASCADE"))
    offer_code: Mapped[str] = mapped_column(ForeignKey("offers.code", onupdate="CASCADE"))
    allowed: Mapped[bool] = mapped_column(default=True)
    max_cost: Mapped[Decimal | None] = mapped_column(Money)
    granted_by: Mapped[str] = mapped_column(String(32), default="automatic")
    context_weight: Mapped[float] = mapped_column(default=1.0)
    lever: Mapped[float] = mapped_column(default=1.0)
    note: Mapped[str] = mapped_column(Text, default="")
    active: Mapped[bool] = mapped_column(default=True)


class ContactPolicy(Timestamps, Base):
    """Contact-frequency cap and quiet hours for one channel (no "message bombing")."""

    __tablename__ = "contact_policies"
    __table_args__ = (
        CheckConstraint("max_contacts >= 0", name="max_contacts_non_negative"),
        CheckConstraint("window_days >= 1", name="window_days_positive"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    channel: Mapped[str] = mapped_column(String(20), unique=True)
    max_contacts: Mapped[int]
    window_days: Mapped[int]
    quiet_start: Mapped[str | None] = mapped_column(String(5))  # "HH:MM" local time
    quiet_end: Mapped[str | None] = mapped_column(String(5))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    active: Mapped[bool] = mapped_column(default=True)


class RiskLevelPolicy(Timestamps, Base):
    """The thresholds of the blue / yellow / red warning levels (``decisioning.risk``). The
    active one applies; with none active, the playbooks' defaults do."""

    __tablename__ = "risk_policies"
    __table_args__ = (
        CheckConstraint(
            "yellow_churn_score >= 0 AND yellow_churn_score <= red_churn_score AND red_churn_score <= 1",
            name="churn_scores_ordered",
        ),
        CheckConstraint(
            "inactive_months >= 1 AND consecutive_downgrades >= 1 AND unresolved_complaints >= 1 "
            "AND complaint_surge_90d >= 1",
            name="signal_thresholds_positive",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    yellow_churn_score: Mapped[float]
    red_churn_score: Mapped[float]
    inactive_months: Mapped[int]
    consecutive_downgrades: Mapped[int]
    unresolved_complaints: Mapped[int]
    complaint_surge_90d: Mapped[int]
    note: Mapped[str] = mapped_column(Text, default="")
    active: Mapped[bool] = mapped_column(default=True)


class Budget(Timestamps, Base):
    """A spending cap for a period over a scope, with the money rules that gate spending."""

    __tablename__ = "budgets"
    __table_args__ = (
        CheckConstraint("(cap_amount IS NULL) <> (cap_share_of_revenue IS NULL)", name="one_cap"),
        CheckConstraint("cap_amount IS NULL OR cap_amount >= 0", name="cap_amount_non_negative"),
        CheckConstraint(
            "cap_share_of_revenue IS NULL OR (cap_share_of_revenue > 0 AND cap_share_of_revenue <= 1)",
            name="cap_share_range",
        ),
        CheckConstraint("roi_floor >= 0", name="roi_floor_non_negative"),
        CheckConstraint("max_cost_share_of_ltv > 0 AND max_cost_share_of_ltv <= 1", name="ltv_share_range"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    period: Mapped[str] = mapped_column(String(10), default="month")
    cap_amount: Mapped[Decimal | None] = mapped_column(Money)
    cap_share_of_revenue: Mapped[float | None]
    currency: Mapped[str] = mapped_column(String(3), default="EUR")
    scope_type: Mapped[str] = mapped_column(String(20), default="programme")
    scope_value: Mapped[str | None] = mapped_column(String(64))
    roi_floor: Mapped[float] = mapped_column(default=DEFAULT_MONEY_RULES.roi_floor)
    max_cost_share_of_ltv: Mapped[float] = mapped_column(default=DEFAULT_MONEY_RULES.max_cost_share_of_ltv)
    active: Mapped[bool] = mapped_column(default=True)


class BudgetCharge(Base):
    """The cost of one decision charged to one budget in one period (``period_key`` "2026-11",
    "2026-Q4" or "2026"): what the Redis counters must add up to. The decision ledger
    (``decisioning``) writes these rows; a budget's spend is their sum."""

    __tablename__ = "budget_charges"
    __table_args__ = (Index("ix_budget_charges_budget_code_period_key", "budget_code", "period_key"),)

    decision_id: Mapped[str] = mapped_column(ForeignKey("decisions.id", ondelete="CASCADE"), primary_key=True)
    budget_code: Mapped[str] = mapped_column(String(64), primary_key=True)
    period_key: Mapped[str] = mapped_column(String(16))
    amount: Mapped[Decimal] = mapped_column(Money)


class Subscriber(Base):
    """A subscriber profile. ``arpu`` and ``ltv`` are copied out of the attributes so the
    database can sum revenue (budget caps as % of revenue) without parsing JSON."""

    __tablename__ = "subscribers"
    __table_args__ = (Index("ix_subscribers_tier", "tier"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    attributes: Mapped[dict[str, Any]] = mapped_column(JsonType)
    tier: Mapped[str | None] = mapped_column(String(64))
    tiers: Mapped[dict[str, Any]] = mapped_column(JsonType)  # scheme code -> tier code (or null)
    arpu: Mapped[float | None]
    ltv: Mapped[float | None]
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)
