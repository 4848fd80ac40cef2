"""Catalogue queries shared by services and jobs."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from offers.models import RiskLevelPolicy, Subscriber, Tier, TierScheme
from offers.tiering import TierAssigner, TierRule


def load_tier_assigner(session: Session) -> TierAssigner:
    """A TierAssigner over the active tiers of the active schemes."""
    rows = session.execute(
        select(Tier.scheme_code, Tier.code, Tier.rank, Tier.rule)
        .join(TierScheme, TierScheme.code == Tier.scheme_code)
        .where(Tier.active.is_(True), TierScheme.active.is_(True))
    ).all()
    primary = session.scalar(
        select(TierScheme.code).where(TierScheme.is_primary.is_(True), TierScheme.active.is_(True))
    )
    return TierAssigner((TierRule(*row) for row in rows), primary)


def base_revenue_per_month(session: Session) -> float:
    """Sum of subscribers' monthly ARPU: the base a share-of-revenue budget cap applies to."""
    return float(session.scalar(select(func.coalesce(func.sum(Subscriber.arpu), 0.0))) or 0.0)


def active_risk_policy(session: Session) -> RiskLevelPolicy | None:
    """The risk policy in force: the active one (the most recently changed, should two ever be
    active at once); None means the playbook's thresholds apply."""
    return session.scalar(
        select(RiskLevelPolicy)
        .where(RiskLevelPolicy.active.is_(True))
        .order_by(RiskLevelPolicy.updated_at.desc(), RiskLevelPolicy.id.desc())
        .limit(1)
    )
