"""The demo catalogue: the brief's tiers, care actions, per-tier rules, contact caps, budgets,
demo users and channel keys, and a synthetic subscriber base — written as data.

``seed_demo`` writes everything through the project's audited services, so every row it
creates has its audit entry. It is idempotent: anything whose natural key already exists is
skipped, never overwritten, so running it again (or after an operator's edits) changes
nothing. Like every service it takes a session and does not commit; the caller does.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from infra.auth import create_api_key, create_user
from infra.auth_models import CHANNELS, ApiKey, User
from offers import catalogue
from offers.config_service import ConfigKind, create_config, validate_payload
from offers.models import Subscriber, Tier, TierScheme
from offers.money_rules import DEFAULT_MONEY_RULES
from offers.repository import load_tier_assigner
from offers.subscribers_service import upsert_profiles

DEMO_SUBSCRIBERS = 2_000
DEMO_RNG_SEED = 20_240_601
DEMO_ID_PREFIX = "demo-"
DEMO_TIMEZONE = "Asia/Shanghai"

DEMO_USERS = (
    ("admin@carepilot.demo", "admin", "Demo Admin"),
    ("marketing@carepilot.demo", "marketing", "Demo Marketing"),
    ("analyst@carepilot.demo", "analyst", "Demo Analyst"),
)

# --- care actions -----------------------------------------------------------------------------
# unit_cost is the operator's cost in EUR (revenue forgone for discounts, agent time for calls).
# prior_uplift is the absolute retention uplift assumed before any experiment has measured it.
# Eligibility uses GrowthBook's condition language. A missing attribute compares as 0 there,
# so "at most N" conditions on optional facts also say $exists.

NOT_CHURNED = {"status": {"$ne": "churned"}}  # every care action but win-back is for current customers
_ANY_CHANNEL = ["sms", "app", "call_centre", "retail"]


def _win_back(reason: str) -> dict[str, Any]:
    """Churned customers, or customers asking to leave, who gave ``reason``."""
    return {"churn_reason": reason, "$or": [{"status": "churned"}, {"intent": "cancel"}]}


OFFERS: tuple[dict[str, Any], ...] = (
    {
        "code": "DISCOUNT_PACKAGE",
        "name": "Limited-time discount package",
        "description": "20% off the monthly plan for 3 months, for subscribers showing churn risk.",
        "unit_cost": 9.00,
        "channels": _ANY_CHANNEL,
        "eligibility": {**NOT_CHURNED, "churn_score": {"$gte": 0.25}},
        "prior_uplift": 0.04,
        "value_horizon_months": 6,
    },
    {
        "code": "DATA_PACK_TARGETED",
        "name": "Targeted data pack",
        "description": "A 10 GB add-on sized to the subscriber's usage, valid 30 days.",
        "unit_cost": 2.50,
        "channels": ["sms", "app", "call_centre", "retail"],
        "eligibility": {**NOT_CHURNED, "data_gb_month": {"$gte": 8}},
        "prior_uplift": 0.02,
        "value_horizon_months": 6,
    },
    {
        "code": "NIGHT_DATA_PACK",
        "name": "Night-time data pack",
        "description": "Unlimited data 00:00–07:00 for a month. Trigger: heavy late-night data use.",
        "unit_cost": 1.20,
        "channels": ["sms", "app"],
        "eligibility": {**NOT_CHURNED, "night_data_share": {"$gte": 0.4}},
        "prior_uplift": 0.02,
        "value_horizon_months": 6,
    },
    {
        "code": "GIGABIT_UPGRADE",
        "name": "Gigabit broadband upgrade",
        "description": "Upgrade to 1000 Mbit/s at the current price for 12 months. "
        "Trigger: broadband tenure over 3 years.",
        "unit_cost": 15.00,
        "channels": ["app", "call_centre", "retail"],
        "eligibility": {**NOT_CHURNED, "has_broadband": True, "broadband_tenure_months": {"$gt": 36}},
        "prior_uplift": 0.05,
        "value_horizon_months": 24,
    },
    {
        "code": "SPEED_BOOST_COUPON",
        "name": "Service-upgrade coupon (free speed boost)",
        "description": "One month of the next speed tier free, for subscribers with service complaints "
        "or elevated churn risk.",
        "unit_cost": 4.00,
        "channels": _ANY_CHANNEL,
        "eligibility": {**NOT_CHURNED, "$or": [{"complaints_90d": {"$gte": 1}}, {"churn_score": {"$gte": 0.4}}]},
        "prior_uplift": 0.03,
        "value_horizon_months": 6,
    },
    {
        "code": "ACCOUNT_MANAGER",
        "name": "Dedicated account manager",
        "description": "A named account manager who owns the subscriber's requests for 12 months.",
        "unit_cost": 25.00,
        "channels": ["call_centre", "retail"],
        "eligibility": {**NOT_CHURNED, "ltv": {"$gte": 1500}},
        "prior_uplift": 0.06,
        "value_horizon_months": 12,
    },
    {
        "code": "BILL_CREDIT",
        "name": "Bill credit",
        "description": "A one-off credit on the next bill to make good a complaint.",
        "unit_cost": 10.00,
        "channels": ["call_centre", "retail"],
        "eligibility": {**NOT_CHURNED, "complaints_90d": {"$gte": 1}},
        "prior_uplift": 0.03,
        "value_horizon_months": 6,
    },
    {
        "code": "LOYALTY_POINTS",
        "name": "Loyalty points bonus",
        "description": "500 bonus loyalty points (worth about EUR 3) for subscribers of a year or more.",
        "unit_cost": 3.00,
        "channels": ["sms", "app", "retail"],
        "eligibility": {**NOT_CHURNED, "tenure_months": {"$gte": 12}},
        "prior_uplift": 0.01,
        "value_horizon_months": 12,
    },
    {
        "code": "CARE_SMS",
        "name": "Care SMS",
        "description": "A personal care message with self-help links; the first step at blue risk.",
        "unit_cost": 0.05,
        "channels": ["sms"],
        "eligibility": {**NOT_CHURNED, "churn_score": {"$gte": 0.2}},
        "prior_uplift": 0.01,
        "value_horizon_months": 3,
    },
    {
        "code": "AGENT_CALLBACK_48H",
        "name": "Agent call-back within 48 h (three-question call-back)",
        "description": "An agent calls back within 48 hours and asks the three questions of the "
        "call-back script; the follow-up at red risk or for an unresolved complaint.",
        "unit_cost": 6.00,
        "channels": ["call_centre"],
        "eligibility": {
            **NOT_CHURNED,
            "$or": [{"risk_level": "red"}, {"unresolved_complaints": {"$gte": 1}}, {"churn_score": {"$gte": 0.6}}],
        },
        "prior_uplift": 0.04,
        "value_horizon_months": 6,
    },
    {
        "code": "BIRTHDAY_PRIVILEGE",
        "name": "Birthday privilege",
        "description": "A birthday gift: 5 GB of data and a partner voucher. Trigger: birthday today.",
        "unit_cost": 2.00,
        "channels": ["sms", "app"],
        "eligibility": {**NOT_CHURNED, "is_birthday_today": True},
        "prior_uplift": 0.01,
        "value_horizon_months": 12,
    },
    {
        "code": "NEW_USER_GUIDE",
        "name": "New-user guide",
        "description": "A guided tour of the plan, the app and the first-month perks, within 72 hours of joining.",
        "unit_cost": 0.30,
        "channels": ["sms", "app"],
        "eligibility": {**NOT_CHURNED, "hours_since_join": {"$exists": True, "$lte": 72}},
        "prior_uplift": 0.02,
        "value_horizon_months": 12,
    },
    {
        "code": "RETURN_BENEFITS",
        "name": "Return benefits for churned customers",
        "description": "A welcome-back package (one month free, waived activation) offered to former "
        "customers six months or more after they left; the contact cap spaces repeats.",
        "unit_cost": 8.00,
        "channels": ["sms", "call_centre"],
        "eligibility": {"status": "churned", "churned_months_ago": {"$gte": 6}},
        "prior_uplift": 0.03,
        "value_horizon_months": 12,
    },
    {
        "code": "WINBACK_DISCOUNT",
        "name": "Win-back discount (price-sensitive)",
        "description": "25% off for 6 months for customers who left, or want to leave, over price.",
        "unit_cost": 10.00,
        "channels": ["sms", "call_centre", "retail"],
        "eligibility": _win_back("price"),
        "prior_uplift": 0.05,
        "value_horizon_months": 12,
    },
    {
        "code": "WINBACK_SPEED_BOOST",
        "name": "Win-back service-upgrade coupon (experience)",
        "description": "Three months of the next speed tier free plus a network check, for customers "
        "who left, or want to leave, over their experience.",
        "unit_cost": 6.00,
        "channels": ["sms", "call_centre", "retail"],
        "eligibility": _win_back("experience"),
        "prior_uplift": 0.04,
        "value_horizon_months": 12,
    },
    {
        "code": "WINBACK_NEW_BUNDLE",
        "name": "Win-back new bundle (needs changed)",
        "description": "A plan rebuilt around the customer's new needs (family, broadband, roaming), first month free.",
        "unit_cost": 7.00,
        "channels": ["call_centre", "retail"],
        "eligibility": _win_back("needs_changed"),
        "prior_uplift": 0.04,
        "value_horizon_months": 12,
    },
)

# --- tiers ------------------------------------------------------------------------------------
# First matching tier by rank wins. Value tiers: consumption (arpu, EUR/month), usage frequency
# (active_days_30d) and value contribution (ltv, EUR). The thresholds put the synthetic base at
# about the brief's 10 / 15 / 25 / 50 per cent.

TIER_SCHEMES: tuple[dict[str, Any], ...] = (
    {
        "code": "value_tiers",
        "name": "Value tiers",
        "is_primary": True,
        "description": "By consumption, usage frequency and value contribution; re-computed monthly. "
        "Drives the tier policies.",
    },
    {
        "code": "segments",
        "name": "ARPU / need / loyalty segments",
        "description": "By ARPU, need type (plain telecom vs digital services) and loyalty "
        "(tenure, complaints); at-risk first so a declining customer is never "
        "treated as strategic.",
    },
)


def _ranked(scheme_code: str, *tiers: dict[str, Any]) -> tuple[dict[str, Any], ...]:
    """The tiers of scheme ``scheme_code``, ranked 1, 2, … in the order given."""
    return tuple({**tier, "scheme_code": scheme_code, "rank": rank} for rank, tier in enumerate(tiers, 1))


TIERS: tuple[dict[str, Any], ...] = (
    *_ranked(
        "value_tiers",
        {
            "code": "vip",
            "name": "VIP",
            "description": "Top ~10%: high spend and high lifetime value.",
            "rule": {"arpu": {"$gte": 65}, "ltv": {"$gte": 2000}},
        },
        {
            "code": "value",
            "name": "Value",
            "description": "Next ~15%: high spend, used regularly.",
            "rule": {"arpu": {"$gte": 42}, "active_days_30d": {"$gte": 10}},
        },
        {
            "code": "growth",
            "name": "Growth",
            "description": "Next ~25%: mid spend, or heavy users with room to grow.",
            "rule": {"$or": [{"arpu": {"$gte": 28}}, {"active_days_30d": {"$gte": 25}}]},
        },
        {"code": "basic", "name": "Basic", "description": "Everyone else (~50%).", "rule": {}},
    ),
    *_ranked(
        "segments",
        {
            "code": "at_risk",
            "name": "At risk (warning)",
            "description": "Recent ARPU decline of 15% or more plus frequent complaints.",
            "rule": {"arpu_change_3m": {"$lte": -0.15}, "complaints_90d": {"$gte": 2}},
        },
        {
            "code": "strategic",
            "name": "Strategic",
            "description": "High ARPU, high digital need, loyal: two years or more and no complaints.",
            "rule": {
                "arpu": {"$gte": 50},
                "digital_spend_share": {"$gte": 0.3},
                "tenure_months": {"$gte": 24},
                "complaints_90d": 0,
            },
        },
        {
            "code": "potential",
            "name": "Potential",
            "description": "Mid ARPU, or a real appetite for digital services.",
            "rule": {"$or": [{"arpu": {"$gte": 32}}, {"digital_spend_share": {"$gte": 0.4}}]},
        },
        {"code": "mass", "name": "Mass", "description": "Low ARPU, basic telecom needs.", "rule": {}},
    ),
)

# --- tier policies: what a tier may receive and who may grant it ------------------------------
# Listed offers are allowed (with these settings over the defaults); every other offer gets an
# explicit "not allowed" row, so the rule is visible (and editable) in the admin UI.
# context_weight scales how much the contact's context counts for this tier, lever is the
# business's push for the action in arbitration.

TIER_POLICIES: dict[str, dict[str, dict[str, Any]]] = {
    "vip": {
        "ACCOUNT_MANAGER": {
            "granted_by": "account_manager",
            "max_cost": 30.00,
            "context_weight": 1.5,
            "lever": 1.5,
            "note": "VIP gets a dedicated account manager.",
        },
        "BILL_CREDIT": {
            "granted_by": "account_manager",
            "max_cost": 50.00,
            "context_weight": 1.3,
            "note": "The account manager may credit up to EUR 50.",
        },
        "AGENT_CALLBACK_48H": {"granted_by": "agent", "context_weight": 1.3},
        "GIGABIT_UPGRADE": {"lever": 1.3},
        "SPEED_BOOST_COUPON": {},
        "DATA_PACK_TARGETED": {},
        "NIGHT_DATA_PACK": {},
        "LOYALTY_POINTS": {"lever": 1.2},
        "BIRTHDAY_PRIVILEGE": {"lever": 1.2},
        "NEW_USER_GUIDE": {},
        "CARE_SMS": {},
        "DISCOUNT_PACKAGE": {"lever": 0.8, "note": "Service before price for VIPs."},
        "RETURN_BENEFITS": {},
        "WINBACK_DISCOUNT": {},
        "WINBACK_SPEED_BOOST": {},
        "WINBACK_NEW_BUNDLE": {},
    },
    "value": {
        "BILL_CREDIT": {
            "granted_by": "agent",
            "max_cost": 20.00,
            "context_weight": 1.2,
            "note": "Value-tier complaints: the agent may grant a direct bill credit up to EUR 20.",
        },
        "AGENT_CALLBACK_48H": {"granted_by": "agent", "context_weight": 1.2},
        "GIGABIT_UPGRADE": {"lever": 1.2},
        "SPEED_BOOST_COUPON": {},
        "DATA_PACK_TARGETED": {},
        "NIGHT_DATA_PACK": {},
        "LOYALTY_POINTS": {},
        "BIRTHDAY_PRIVILEGE": {},
        "NEW_USER_GUIDE": {},
        "CARE_SMS": {},
        "DISCOUNT_PACKAGE": {},
        "RETURN_BENEFITS": {},
        "WINBACK_DISCOUNT": {},
        "WINBACK_SPEED_BOOST": {},
        "WINBACK_NEW_BUNDLE": {},
    },
    "growth": {
        "DATA_PACK_TARGETED": {"lever": 1.2, "note": "Growth stage: value-added services first."},
        "NIGHT_DATA_PACK": {"lever": 1.2},
        "GIGABIT_UPGRADE": {},
        "SPEED_BOOST_COUPON": {},
        "AGENT_CALLBACK_48H": {"granted_by": "agent"},
        "LOYALTY_POINTS": {},
        "BIRTHDAY_PRIVILEGE": {},
        "NEW_USER_GUIDE": {},
        "CARE_SMS": {},
        "DISCOUNT_PACKAGE": {},
        "RETURN_BENEFITS": {},
        "WINBACK_DISCOUNT": {},
        "WINBACK_SPEED_BOOST": {},
        "WINBACK_NEW_BUNDLE": {},
    },
    # "Basic tier gets discount packages only" (the brief) limits the benefits a basic
    # subscriber may receive. The service touches every tier gets stay open: the blue-risk care
    # SMS and the 72-hour new-joiner guide. So does win-back, which follows the churn reason:
    # a churned subscriber spends nothing, so the value tiers put every one of them in basic.
    "basic": {
        "DISCOUNT_PACKAGE": {"note": "Basic tier gets discount packages only."},
        "CARE_SMS": {"note": "A service touch, not a benefit: every tier gets the blue-risk care SMS."},
        "NEW_USER_GUIDE": {"note": "A service touch, not a benefit: every new joiner gets the guide."},
        "WINBACK_DISCOUNT": {"note": "Win-back follows the churn reason (price)."},
        "WINBACK_SPEED_BOOST": {
            "note": "Win-back follows the churn reason (experience); churned "
            "subscribers spend nothing, so they all sit in basic."
        },
        "WINBACK_NEW_BUNDLE": {"note": "Win-back follows the churn reason (needs changed)."},
    },
}

# --- contact caps and quiet hours (no "message bombing") ---------------------------------------

# The playbooks' warning levels (decisioning.risk): blue → care SMS, red → agent follow-up
RISK_POLICIES: tuple[dict[str, Any], ...] = (
    {
        "code": "playbook",
        "name": "Playbook warning levels",
        "yellow_churn_score": 0.4,
        "red_churn_score": 0.7,
        "inactive_months": 3,
        "consecutive_downgrades": 3,
        "unresolved_complaints": 1,
        "complaint_surge_90d": 3,
        "note": "The churn score sets the starting level; each churn signal raises it one step.",
    },
)

CONTACT_POLICIES: tuple[dict[str, Any], ...] = (
    {
        "channel": "sms",
        "max_contacts": 4,
        "window_days": 30,
        "quiet_start": "21:00",
        "quiet_end": "08:00",
        "timezone": DEMO_TIMEZONE,
    },
    {
        "channel": "app",
        "max_contacts": 6,
        "window_days": 30,
        "quiet_start": "22:00",
        "quiet_end": "08:00",
        "timezone": DEMO_TIMEZONE,
    },
    {
        "channel": "call_centre",
        "max_contacts": 2,
        "window_days": 30,
        "quiet_start": "20:00",
        "quiet_end": "09:00",
        "timezone": DEMO_TIMEZONE,
    },
    # The customer is standing in the shop: no quiet hours, a looser cap.
    {"channel": "retail", "max_contacts": 10, "window_days": 30, "timezone": DEMO_TIMEZONE},
)

# --- budgets ----------------------------------------------------------------------------------

_DEFAULT_MONEY_RULES = {
    "roi_floor": DEFAULT_MONEY_RULES.roi_floor,
    "max_cost_share_of_ltv": DEFAULT_MONEY_RULES.max_cost_share_of_ltv,
}

BUDGETS: tuple[dict[str, Any], ...] = (
    {
        "code": "RETENTION_FUND",
        "name": "Retention fund (1.5% of monthly revenue)",
        "period": "month",
        "cap_share_of_revenue": 0.015,
        "scope_type": "programme",
        **_DEFAULT_MONEY_RULES,
    },
    {
        "code": "VIP_CARE",
        "name": "VIP care budget",
        "period": "month",
        "cap_amount": 600.00,
        "scope_type": "tier",
        "scope_value": "vip",
        **_DEFAULT_MONEY_RULES,
    },
)


def tier_policy_rows() -> Iterator[dict[str, Any]]:
    """Every (tier, offer) pair of the demo: allowed with its settings, or explicitly refused."""
    for tier, allowed in TIER_POLICIES.items():
        for offer in OFFERS:
            settings = allowed.get(offer["code"])
            if settings is None:
                yield {
                    "tier_code": tier,
                    "offer_code": offer["code"],
                    "allowed": False,
                    "note": f"Not offered to the {tier} tier.",
                }
            else:
                yield {"tier_code": tier, "offer_code": offer["code"], "allowed": True, **settings}


# --- the seed ---------------------------------------------------------------------------------


@dataclass
class SeedReport:
    """What one run created (0 everywhere on a re-run), and the channel keys it created,
    shown this once: only their hashes are stored."""

    users: int = 0
    offers: int = 0
    tier_schemes: int = 0
    tiers: int = 0
    tier_policies: int = 0
    contact_policies: int = 0
    risk_policies: int = 0
    budgets: int = 0
    subscribers: int = 0
    channel_keys: dict[str, str] = field(default_factory=dict)

    @property
    def created_anything(self) -> bool:
        return bool(self.channel_keys) or any(
            (
                self.users,
                self.offers,
                self.tier_schemes,
                self.tiers,
                self.tier_policies,
                self.contact_policies,
                self.risk_policies,
                self.budgets,
                self.subscribers,
            )
        )


def seed_demo(
    session: Session,
    *,
    password: str,
    actor: str = "seed",
    now: datetime | None = None,
    subscribers: int = DEMO_SUBSCRIBERS,
) -> SeedReport:
    """Create the demo catalogue, users, channel keys and ``subscribers`` synthetic profiles
    where they do not exist yet. Audited, idempotent, never commits.

    ``now`` anchors the time-relative facts of the synthetic base (join dates, a few birthdays
    today); it defaults to the current time.
    """
    now = now or datetime.now(UTC)
    report = SeedReport()
    # Users first: a password create_user refuses then fails the run before anything is written.
    report.users = _create_demo_users(session, password, actor)
    report.offers = _create_missing(session, catalogue.OFFERS, OFFERS, actor)
    report.tier_schemes = _create_missing(
        session, catalogue.TIER_SCHEMES, _respect_existing_primary(session, TIER_SCHEMES), actor
    )
    report.tiers = _create_missing(session, catalogue.TIERS, _ranked_after_existing(session, TIERS), actor)
    report.tier_policies = _create_missing(session, catalogue.TIER_POLICIES, tier_policy_rows(), actor)
    report.contact_policies = _create_missing(session, catalogue.CONTACT_POLICIES, CONTACT_POLICIES, actor)
    report.budgets = _create_missing(session, catalogue.BUDGETS, BUDGETS, actor)
    if session.scalar(select(catalogue.RISK_POLICIES.model.id).limit(1)) is None:  # never over an operator's
        report.risk_policies = _create_missing(session, catalogue.RISK_POLICIES, RISK_POLICIES, actor)
    report.channel_keys = _create_demo_channel_keys(session, actor)
    report.subscribers = _create_demo_subscribers(session, subscribers, now)
    return report


def _natural_key(kind: ConfigKind[Any]) -> tuple[str, ...]:
    return ("tier_code", "offer_code") if kind.key_field == "id" else (kind.key_field,)


def _create_missing(session: Session, kind: ConfigKind[Any], payloads: Iterable[dict[str, Any]], actor: str) -> int:
    """Create each payload whose natural key is not taken; return how many were created."""
    created = 0
    key = _natural_key(kind)
    for payload in payloads:
        query = select(kind.model.id).where(*(getattr(kind.model, k) == payload[k] for k in key))
        if session.scalar(query) is not None:
            continue
        create_config(session, kind, validate_payload(kind, payload), actor=actor)
        created += 1
    return created


def _respect_existing_primary(session: Session, schemes: tuple[dict[str, Any], ...]) -> list[dict[str, Any]]:
    """Never demote a primary scheme an operator chose: ours is primary only if no active one is."""
    has_primary = (
        session.scalar(select(TierScheme.id).where(TierScheme.is_primary.is_(True), TierScheme.active.is_(True)))
        is not None
    )
    return [{**s, "is_primary": s.get("is_primary", False) and not has_primary} for s in schemes]


def _ranked_after_existing(session: Session, tiers: tuple[dict[str, Any], ...]) -> list[dict[str, Any]]:
    """Our tiers, ranked after any tiers a scheme already has and in our order: a rank clash
    never fails the run, and our catch-alls stay behind our other tiers."""
    last_rank = dict(session.execute(select(Tier.scheme_code, func.max(Tier.rank)).group_by(Tier.scheme_code)).all())
    return [{**t, "rank": (last_rank.get(t["scheme_code"]) or 0) + t["rank"]} for t in tiers]


def _create_demo_users(session: Session, password: str, actor: str) -> int:
    created = 0
    for email, role, name in DEMO_USERS:
        if session.scalar(select(User.id).where(User.email == email)) is None:
            create_user(session, email=email, role=role, password=password, name=name, actor=actor)
            created += 1
    return created


def demo_key_name(channel: str) -> str:
    """The name the demo channel key of ``channel`` has (how a re-run recognises it)."""
    return f"demo {channel}"


def _create_demo_channel_keys(session: Session, actor: str) -> dict[str, str]:
    """One key per channel unless an active demo key exists (a revoked one is replaced)."""
    keys: dict[str, str] = {}
    for channel in CHANNELS:
        active = session.scalar(
            select(ApiKey.id).where(
                ApiKey.name == demo_key_name(channel),
                ApiKey.kind == "channel",
                ApiKey.channel == channel,
                ApiKey.revoked_at.is_(None),
            )
        )
        if active is None:
            _, keys[channel] = create_api_key(session, name=demo_key_name(channel), channel=channel, actor=actor)
    return keys


def _create_demo_subscribers(session: Session, count: int, now: datetime) -> int:
    existing = set(session.scalars(select(Subscriber.id).where(Subscriber.id.startswith(DEMO_ID_PREFIX))))
    rows = [(sid, attrs) for sid, attrs in demo_profiles(now, count) if sid not in existing]
    if not rows:
        return 0
    return upsert_profiles(session, rows, load_tier_assigner(session))


# --- the synthetic base -----------------------------------------------------------------------

_REGIONS = ("Shanghai", "Beijing", "Guangzhou", "Shenzhen", "Hangzhou", "Chengdu", "Wuhan", "Nanjing")
_REGION_WEIGHTS = (18, 16, 14, 13, 11, 10, 9, 9)  # largest cities first, as in the rollout path
_CHURN_REASONS = ("price", "experience", "needs_changed")
_DAYS_PER_MONTH = 30.44

# Hand-made profiles first, so every tier and every trigger has a named example to try in the
# admin UI's tier preview and the decision API. Time-relative facts are filled in by
# ``_showcase`` from ``now``.
SHOWCASE: tuple[tuple[str, dict[str, Any]], ...] = (
    (
        "vip-strategic",
        {
            "arpu": 128.0,
            "ltv": 5200.0,
            "active_days_30d": 29,
            "tenure_months": 64,
            "digital_spend_share": 0.55,
            "complaints_90d": 0,
            "churn_score": 0.08,
            "has_broadband": True,
            "broadband_tenure_months": 30,
            "data_gb_month": 42.0,
        },
    ),
    (
        "vip-at-risk",
        {
            "arpu": 110.0,
            "ltv": 3100.0,
            "active_days_30d": 24,
            "tenure_months": 48,
            "digital_spend_share": 0.5,
            "complaints_90d": 3,
            "unresolved_complaints": 1,
            "arpu_change_3m": -0.28,
            "downgrades_3m": 2,
            "churn_score": 0.71,
        },
    ),
    (
        "value-complainer",
        {
            "arpu": 52.0,
            "ltv": 1400.0,
            "active_days_30d": 21,
            "tenure_months": 30,
            "complaints_90d": 1,
            "unresolved_complaints": 1,
            "churn_score": 0.35,
        },
    ),
    (
        "growth-night-owl",
        {
            "arpu": 33.0,
            "ltv": 700.0,
            "active_days_30d": 27,
            "tenure_months": 14,
            "night_data_share": 0.62,
            "data_gb_month": 24.0,
            "churn_score": 0.22,
        },
    ),
    (
        "loyal-broadband",
        {
            "arpu": 47.0,
            "ltv": 1900.0,
            "active_days_30d": 18,
            "tenure_months": 70,
            "has_broadband": True,
            "broadband_tenure_months": 52,
            "churn_score": 0.18,
        },
    ),
    ("birthday-today", {"arpu": 36.0, "ltv": 900.0, "active_days_30d": 16, "tenure_months": 26, "churn_score": 0.12}),
    ("new-joiner", {"arpu": 25.0, "ltv": 350.0, "active_days_30d": 2, "tenure_months": 0, "churn_score": 0.3}),
    (
        "basic-price-risk",
        {"arpu": 14.0, "ltv": 210.0, "active_days_30d": 6, "tenure_months": 9, "churn_score": 0.45, "downgrades_3m": 1},
    ),
    (
        "churned-price",
        {"status": "churned", "churned_months_ago": 2, "churn_reason": "price", "last_arpu": 29.0, "tenure_months": 31},
    ),
    (
        "churned-experience",
        {
            "status": "churned",
            "churned_months_ago": 3,
            "churn_reason": "experience",
            "last_arpu": 41.0,
            "tenure_months": 22,
        },
    ),
    (
        "churned-needs-changed",
        {
            "status": "churned",
            "churned_months_ago": 1,
            "churn_reason": "needs_changed",
            "last_arpu": 33.0,
            "tenure_months": 40,
        },
    ),
    (
        "churned-long-ago",
        {"status": "churned", "churned_months_ago": 8, "churn_reason": "price", "last_arpu": 26.0, "tenure_months": 18},
    ),
)


def demo_profiles(
    now: datetime, count: int = DEMO_SUBSCRIBERS, seed: int = DEMO_RNG_SEED
) -> list[tuple[str, dict[str, Any]]]:
    """``count`` synthetic subscribers (ids ``demo-00001``…): the showcase profiles, then a
    seeded random base whose tier shares come out near the brief's."""
    rng = random.Random(seed)
    rows: list[tuple[str, dict[str, Any]]] = []
    for index in range(count):
        profile = _showcase(rng, SHOWCASE[index], now) if index < len(SHOWCASE) else _random_profile(rng, now)
        rows.append((f"{DEMO_ID_PREFIX}{index + 1:05d}", profile))
    return rows


def _showcase(rng: random.Random, example: tuple[str, Mapping[str, Any]], now: datetime) -> dict[str, Any]:
    name, facts = example
    profile = {
        "status": "active",
        "arpu": 0.0,
        "arpu_change_3m": 0.0,
        "complaints_90d": 0,
        "unresolved_complaints": 0,
        "downgrades_3m": 0,
        "inactive_months": 0,
        "night_data_share": 0.1,
        "data_gb_month": 6.0,
        "digital_spend_share": 0.1,
        "has_broadband": False,
        "churn_score": 0.1,
        "region": "Shanghai",
        "timezone": DEMO_TIMEZONE,
        "showcase": name,
        **facts,
    }
    tenure = profile["tenure_months"]
    if name == "new-joiner":
        profile["join_date"] = _iso(now - timedelta(hours=20))
    else:
        profile["join_date"] = _iso(now - timedelta(days=tenure * _DAYS_PER_MONTH + 10))
    born = _birthday(rng)
    if name == "birthday-today":  # born in a leap year, so even 29 February exists
        local_today = now.astimezone(ZoneInfo(DEMO_TIMEZONE)).date()
        born = date(1988, local_today.month, local_today.day)
    profile["birthday"] = born.isoformat()
    if profile["status"] == "churned":
        profile.update(arpu=0.0, ltv=round(profile["last_arpu"] * 12, 2), active_days_30d=0, churn_score=1.0)
    profile["lifecycle_stage"] = _lifecycle_stage(profile)
    return profile


def _random_profile(rng: random.Random, now: datetime) -> dict[str, Any]:
    """One subscriber. A latent value score drives spend, usage and digital appetite together,
    so the tiers' thresholds cut a realistic, correlated base."""
    value = rng.gauss(0.0, 1.0)
    new_joiner = rng.random() < 0.02
    tenure = 0 if new_joiner else min(180, int(rng.expovariate(1 / 34)))
    declining = rng.random() < 0.08
    arpu = round(min(400.0, 30.0 * math.exp(0.62 * value)), 2)
    inactive_months = 3 if rng.random() < 0.02 else (1 if rng.random() < 0.05 else 0)
    active_days = 0 if inactive_months == 3 else _clamp(round(15 + 6 * value + rng.gauss(0, 5)), 0, 30)
    complaints = rng.choice((0, 1, 2, 2, 3, 4)) if declining else rng.choices((0, 1, 2, 3), weights=(80, 14, 5, 1))[0]
    downgrades = rng.choice((0, 1, 1, 2, 3)) if declining else (1 if rng.random() < 0.04 else 0)
    arpu_change = (
        round(rng.uniform(-0.5, -0.15), 3) if declining else round(_clamp(rng.gauss(0.01, 0.05), -0.14, 0.3), 3)
    )
    risk = (
        -2.4
        + (1.6 if declining else 0.0)
        + 0.45 * complaints
        + 0.5 * downgrades
        + 0.7 * inactive_months
        - 0.015 * min(tenure, 60)
        - 0.2 * value
    )
    churn_score = round(1 / (1 + math.exp(-risk)), 3)
    # expected remaining lifetime grows with loyalty and shrinks with risk
    lifetime_months = 8 + 40 * (1 - churn_score) + 0.25 * min(tenure, 60)
    has_broadband = rng.random() < 0.45
    profile: dict[str, Any] = {
        "status": "active",
        "arpu": arpu,
        "arpu_change_3m": arpu_change,
        "ltv": round(arpu * lifetime_months * rng.uniform(0.8, 1.2), 2),
        "active_days_30d": active_days,
        "data_gb_month": 0.0
        if inactive_months == 3
        else round(min(300.0, rng.lognormvariate(math.log(7) + 0.5 * value, 0.7)), 1),
        "night_data_share": round(rng.uniform(0.4, 0.85) if rng.random() < 0.12 else rng.betavariate(2, 9), 3),
        "digital_spend_share": round(_clamp(rng.betavariate(2, 5) + 0.08 * value, 0.0, 1.0), 3),
        "tenure_months": tenure,
        "complaints_90d": complaints,
        "unresolved_complaints": 1 if complaints and rng.random() < 0.3 else 0,
        "downgrades_3m": downgrades,
        "inactive_months": inactive_months,
        "has_broadband": has_broadband,
        "churn_score": churn_score,
        "region": rng.choices(_REGIONS, weights=_REGION_WEIGHTS)[0],
        "timezone": DEMO_TIMEZONE,
        "birthday": _birthday(rng).isoformat(),
    }
    if has_broadband:
        profile["broadband_tenure_months"] = rng.randint(1, 96)
    joined_hours_ago = rng.uniform(1, 200) if new_joiner else (tenure * _DAYS_PER_MONTH + rng.uniform(0, 30)) * 24
    profile["join_date"] = _iso(now - timedelta(hours=joined_hours_ago))
    if rng.random() < 0.04:  # former customers the win-back and return offers are for
        profile.update(
            status="churned",
            churned_months_ago=rng.randint(1, 24),
            churn_reason=rng.choice(_CHURN_REASONS),
            last_arpu=arpu,
            arpu=0.0,
            arpu_change_3m=-1.0,
            active_days_30d=0,
            data_gb_month=0.0,
            churn_score=1.0,
            ltv=round(arpu * 12, 2),
        )
    profile["lifecycle_stage"] = _lifecycle_stage(profile)
    return profile


def _lifecycle_stage(profile: Mapping[str, Any]) -> str:
    if profile["status"] == "churned":
        return "churned"
    if profile["arpu_change_3m"] <= -0.1 or profile["downgrades_3m"] >= 2 or profile["inactive_months"]:
        return "decline"
    if profile["tenure_months"] < 3:
        return "onboarding"
    return "growth" if profile["tenure_months"] < 12 else "maturity"


def _birthday(rng: random.Random) -> date:
    return date(1950, 1, 1) + timedelta(days=rng.randint(0, (date(2006, 12, 31) - date(1950, 1, 1)).days))


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(microsecond=0).isoformat()


def _clamp(x: float, low: float, high: float) -> float:
    return max(low, min(high, x))
