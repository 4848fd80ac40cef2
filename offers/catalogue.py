"""The catalogue's config kinds and the database-aware rules each one must satisfy."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from infra.audit import record_audit
from infra.errors import BadRequest, Conflict
from infra.http import StrictModel
from offers import schemas
from offers.conditions import ConditionError, validate_condition
from offers.config_service import ConfigKind, RuleFn
from offers.models import Budget, BudgetCharge, ContactPolicy, Offer, RiskLevelPolicy, Tier, TierPolicy, TierScheme


def check_condition(field_name: str, condition: Any) -> None:
    """Refuse a condition GrowthBook's language cannot express: 400 naming its JSON path."""
    try:
        validate_condition(condition)
    except ConditionError as exc:
        path = f"$.{field_name}{exc.path[1:]}"
        raise BadRequest(
            f"{field_name} is not a valid condition: {exc.message} (at {path})",
            code="invalid_condition",
            details=[{"path": path, "message": exc.message}],
        ) from None


def condition_rule(field_name: str) -> RuleFn[StrictModel]:
    """A config rule that checks the condition held in ``field_name``."""

    def rule(session: Session, data: Any, entity: Any, actor: str) -> None:
        check_condition(field_name, getattr(data, field_name))

    return rule


def _exists(session: Session, model: Any, column: str, value: Any) -> bool:
    return session.scalar(select(model.id).where(getattr(model, column) == value)) is not None


def _scheme_exists(session: Session, data: schemas.TierIn, entity: Any, actor: str) -> None:
    if not _exists(session, TierScheme, "code", data.scheme_code):
        raise BadRequest(
            f"no tier scheme {data.scheme_code!r}; create it first",
            code="unknown_scheme",
            details=[{"path": "$.scheme_code", "message": "unknown tier scheme"}],
        )


def _rank_free(session: Session, data: schemas.TierIn, entity: Any, actor: str) -> None:
    holder = session.scalar(select(Tier).where(Tier.scheme_code == data.scheme_code, Tier.rank == data.rank))
    if holder is not None and holder is not entity:
        raise Conflict(
            f"rank {data.rank} in scheme {data.scheme_code!r} is held by tier {holder.code!r}; "
            f"pick another rank or reorder the scheme",
            code="rank_taken",
        )


def _exclusive_flag_rule(model: Any, flag: str, entity_type: str) -> RuleFn[StrictModel]:
    """A config rule for a flag at most one row has (the primary tier scheme, the active risk
    policy): saving a row with it set clears it on every other row of ``model``, audited."""

    def rule(session: Session, data: Any, entity: Any, actor: str) -> None:
        if not getattr(data, flag):
            return
        others = session.scalars(select(model).where(getattr(model, flag).is_(True), model.code != data.code))
        for other in others:
            setattr(other, flag, False)
            record_audit(
                session,
                actor=actor,
                action="update",
                entity_type=entity_type,
                entity_key=other.code,
                before={flag: True},
                after={flag: False},
            )

    return rule


def _policy_targets_exist(session: Session, data: schemas.TierPolicyIn, entity: Any, actor: str) -> None:
    problems = []
    if not _exists(session, Tier, "code", data.tier_code):
        problems.append({"path": "$.tier_code", "message": f"no tier {data.tier_code!r}"})
    if not _exists(session, Offer, "code", data.offer_code):
        problems.append({"path": "$.offer_code", "message": f"no offer {data.offer_code!r}"})
    if problems:
        raise BadRequest(
            "the policy names a tier or offer that does not exist", code="unknown_reference", details=problems
        )
    holder = session.scalar(
        select(TierPolicy).where(TierPolicy.tier_code == data.tier_code, TierPolicy.offer_code == data.offer_code)
    )
    if holder is not None and holder is not entity:
        raise Conflict(
            f"tier {data.tier_code!r} already has a policy for offer {data.offer_code!r} "
            f"(id {holder.id}); update that one",
            code="tier_policy_exists",
        )


def _budget_scope_exists(session: Session, data: schemas.BudgetIn, entity: Any, actor: str) -> None:
    if data.scope_type == "tier" and not _exists(session, Tier, "code", data.scope_value):
        raise BadRequest(
            f"no tier {data.scope_value!r}",
            code="unknown_reference",
            details=[{"path": "$.scope_value", "message": "unknown tier"}],
        )
    if data.scope_type == "channel" and data.scope_value not in ("sms", "app", "call_centre", "retail"):
        raise BadRequest(
            f"no channel {data.scope_value!r}",
            code="unknown_reference",
            details=[{"path": "$.scope_value", "message": "use sms, app, call_centre or retail"}],
        )


def _budget_period_kept(session: Session, data: schemas.BudgetIn, entity: Any, actor: str) -> None:
    """A budget that has spent keeps its period: spend is counted per period ("2026-11",
    "2026-Q4"), so a month budget turned quarterly would start the quarter at zero and spend
    its new cap again on top of what the month already spent."""
    if entity is None or data.period == entity.period:
        return
    if session.scalar(select(BudgetCharge.decision_id).where(BudgetCharge.budget_code == entity.code).limit(1)):
        raise Conflict(
            f"budget {entity.code!r} has spent under its {entity.period}ly period, which cannot change "
            f"now; create a budget with the new period (and deactivate this one)",
            code="budget_period_locked",
            details=[{"path": "$.period", "message": "cannot change"}],
        )


OFFERS = ConfigKind(
    "offer", "offers", Offer, schemas.OfferIn, "code", order_by=("code",), rules=(condition_rule("eligibility"),)
)
TIER_SCHEMES = ConfigKind(
    "tier_scheme",
    "tier-schemes",
    TierScheme,
    schemas.TierSchemeIn,
    "code",
    order_by=("code",),
    rules=(_exclusive_flag_rule(TierScheme, "is_primary", "tier_scheme"),),
)
TIERS = ConfigKind(
    "tier",
    "tiers",
    Tier,
    schemas.TierIn,
    "code",
    order_by=("scheme_code", "rank"),
    filters=("scheme_code",),
    rules=(_scheme_exists, _rank_free, condition_rule("rule")),
)
TIER_POLICIES = ConfigKind(
    "tier_policy",
    "tier-policies",
    TierPolicy,
    schemas.TierPolicyIn,
    "id",
    order_by=("tier_code", "offer_code"),
    filters=("tier_code", "offer_code"),
    rules=(_policy_targets_exist,),
)
CONTACT_POLICIES = ConfigKind(
    "contact_policy", "contact-policies", ContactPolicy, schemas.ContactPolicyIn, "channel", order_by=("channel",)
)
BUDGETS = ConfigKind(
    "budget",
    "budgets",
    Budget,
    schemas.BudgetIn,
    "code",
    order_by=("code",),
    filters=("scope_type", "scope_value"),
    rules=(_budget_scope_exists, _budget_period_kept),
)
RISK_POLICIES = ConfigKind(
    "risk_policy",
    "risk-policies",
    RiskLevelPolicy,
    schemas.RiskPolicyIn,
    "code",
    order_by=("code",),
    rules=(_exclusive_flag_rule(RiskLevelPolicy, "active", "risk_policy"),),
)

CONFIG_KINDS = (OFFERS, TIER_SCHEMES, TIERS, TIER_POLICIES, CONTACT_POLICIES, BUDGETS, RISK_POLICIES)


def reorder_scheme(session: Session, scheme_code: str, tier_codes: list[str], *, actor: str) -> list[Tier]:
    """Give the scheme's tiers ranks 1..n in the order given (every tier of the scheme, once)."""
    tiers = {t.code: t for t in session.scalars(select(Tier).where(Tier.scheme_code == scheme_code))}
    if not tiers:
        raise BadRequest(f"scheme {scheme_code!r} has no tiers", code="unknown_scheme")
    if sorted(tier_codes) != sorted(tiers):
        raise BadRequest(
            "list every tier of the scheme exactly once",
            code="invalid_order",
            details=[{"path": "$.tiers", "message": f"expected {sorted(tiers)}"}],
        )
    before = {code: t.rank for code, t in tiers.items()}
    # Two passes keep UNIQUE(scheme, rank) satisfied at every statement.
    session.execute(update(Tier).where(Tier.scheme_code == scheme_code).values(rank=-Tier.rank))
    for rank, code in enumerate(tier_codes, start=1):
        session.execute(update(Tier).where(Tier.code == code).values(rank=rank))
    session.expire_all()
    after = {code: rank for rank, code in enumerate(tier_codes, start=1)}
    record_audit(
        session,
        actor=actor,
        action="reorder",
        entity_type="tier_scheme",
        entity_key=scheme_code,
        before=before,
        after=after,
    )
    return sorted(tiers.values(), key=lambda t: after[t.code])
