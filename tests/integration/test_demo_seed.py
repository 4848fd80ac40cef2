"""The demo seed: complete, audited, idempotent, respectful of operators' edits, and its
triggers expressed as eligibility conditions."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from infra.audit import AuditEntry
from infra.auth import revoke_api_key
from infra.auth_models import CHANNELS, ApiKey, User
from offers import catalogue
from offers.conditions import compile_condition
from offers.config_service import create_config, update_config, validate_payload
from offers.demo_seed import (
    BUDGETS,
    CONTACT_POLICIES,
    DEMO_USERS,
    OFFERS,
    SHOWCASE,
    TIER_SCHEMES,
    TIERS,
    demo_key_name,
    seed_demo,
    tier_policy_rows,
)
from offers.derived_attributes import derive_contact_attributes
from offers.models import Budget, ContactPolicy, Offer, Subscriber, Tier, TierPolicy, TierScheme

# 02:30 UTC is 10:30 in Shanghai: the same calendar day in both zones
NOW = datetime(2025, 6, 15, 2, 30, tzinfo=UTC)
SMALL_BASE = 200  # the showcase profiles plus enough random ones to exercise the generator
TABLES = (Offer, TierScheme, Tier, TierPolicy, ContactPolicy, Budget, User, ApiKey, Subscriber)


def row_counts(db) -> dict[str, int]:
    return {model.__tablename__: db.scalar(select(func.count()).select_from(model)) for model in TABLES}


def audit_count(db) -> int:
    return db.scalar(select(func.count()).select_from(AuditEntry))


@pytest.fixture()
def seeded(db, password):
    report = seed_demo(db, password=password, now=NOW, subscribers=SMALL_BASE)
    db.commit()
    return report


def eligible(db, offer_code: str, stored_profile: dict, now: datetime = NOW) -> bool:
    """Is a profile eligible for a seeded offer at ``now``, as the decision engine sees it?"""
    offer = db.scalar(select(Offer).where(Offer.code == offer_code))
    return compile_condition(offer.eligibility)(derive_contact_attributes(stored_profile, now))


# --- what the first run creates ---------------------------------------------------------------


def test_first_run_creates_the_whole_demo(db, seeded):
    policies = list(tier_policy_rows())
    assert seeded.offers == len(OFFERS) >= 16
    assert seeded.tier_schemes == len(TIER_SCHEMES) == 2
    assert seeded.tiers == len(TIERS) == 8
    assert seeded.tier_policies == len(policies) == len(OFFERS) * 4
    assert seeded.contact_policies == len(CONTACT_POLICIES) == len(CHANNELS)
    assert seeded.budgets == len(BUDGETS)
    assert seeded.users == len(DEMO_USERS) == 3
    assert seeded.subscribers == SMALL_BASE
    assert sorted(seeded.channel_keys) == sorted(CHANNELS)
    assert all(raw.startswith("cpk_") for raw in seeded.channel_keys.values())
    assert len(set(seeded.channel_keys.values())) == len(CHANNELS)
    # no secret is stored in clear
    assert not db.scalars(select(ApiKey).where(ApiKey.key_hash.in_(seeded.channel_keys.values()))).all()


def test_seeding_twice_creates_nothing_the_second_time(db, password, seeded):
    counts, audits = row_counts(db), audit_count(db)
    again = seed_demo(db, password=password, now=NOW, subscribers=SMALL_BASE)
    db.flush()
    assert not again.created_anything, again
    assert again.channel_keys == {}
    assert row_counts(db) == counts
    assert audit_count(db) == audits
    # a third run on another day still changes nothing (the base is only added to, never rewritten)
    seed_demo(db, password=password, now=NOW + timedelta(days=40), subscribers=SMALL_BASE)
    db.flush()
    assert row_counts(db) == counts and audit_count(db) == audits


def test_no_duplicates(db, seeded):
    for model, key in (
        (Offer, "code"),
        (Tier, "code"),
        (TierScheme, "code"),
        (Budget, "code"),
        (ContactPolicy, "channel"),
        (User, "email"),
    ):
        values = db.scalars(select(getattr(model, key))).all()
        assert len(values) == len(set(values)), model.__tablename__
    pairs = db.execute(select(TierPolicy.tier_code, TierPolicy.offer_code)).all()
    assert len(pairs) == len(set(pairs))
    names = Counter(db.scalars(select(ApiKey.name).where(ApiKey.revoked_at.is_(None))))
    assert all(names[demo_key_name(c)] == 1 for c in CHANNELS)


def test_every_seeded_row_has_its_audit_entry(db, seeded):
    created = {
        (e.entity_type, e.entity_key)
        for e in db.scalars(select(AuditEntry).where(AuditEntry.action == "create", AuditEntry.actor == "seed"))
    }
    for kind in catalogue.CONFIG_KINDS:
        rows = db.scalars(select(kind.model)).all()
        assert rows, kind.entity_type
        for row in rows:
            assert (kind.entity_type, kind.key_of(row)) in created, (kind.entity_type, kind.key_of(row))
    for email, _, _ in DEMO_USERS:
        assert ("user", email) in created
    for key in db.scalars(select(ApiKey).where(ApiKey.name.like("demo %"))):
        assert ("api_key", str(key.id)) in created


def test_a_run_respects_an_operators_edits(db, password, seeded):
    update_config(db, catalogue.OFFERS, "CARE_SMS", {"unit_cost": 0.08, "name": "Care SMS v2"}, actor="user:ops")
    update_config(db, catalogue.TIERS, "vip", {"rule": {"arpu": {"$gte": 100}}}, actor="user:ops")
    update_config(db, catalogue.CONTACT_POLICIES, "sms", {"max_contacts": 2}, actor="user:ops")
    db.execute(select(Subscriber).where(Subscriber.id == "demo-00001")).scalar_one().attributes = {"arpu": 1.0}
    db.flush()
    audits = audit_count(db)
    assert not seed_demo(db, password=password, now=NOW, subscribers=SMALL_BASE).created_anything
    db.flush()
    db.expire_all()
    care_sms = db.scalar(select(Offer).where(Offer.code == "CARE_SMS"))
    assert (float(care_sms.unit_cost), care_sms.name) == (0.08, "Care SMS v2")
    assert db.scalar(select(Tier.rule).where(Tier.code == "vip")) == {"arpu": {"$gte": 100}}
    assert db.scalar(select(ContactPolicy.max_contacts).where(ContactPolicy.channel == "sms")) == 2
    assert db.get(Subscriber, "demo-00001").attributes == {"arpu": 1.0}
    assert audit_count(db) == audits


def test_a_missing_row_is_recreated_and_nothing_else(db, password, seeded):
    db.delete(db.scalar(select(TierPolicy).where(TierPolicy.tier_code == "basic", TierPolicy.offer_code == "CARE_SMS")))
    revoked = db.scalar(select(ApiKey).where(ApiKey.name == demo_key_name("sms")))
    revoke_api_key(db, revoked.id, actor="user:ops")
    db.flush()
    report = seed_demo(db, password=password, now=NOW, subscribers=SMALL_BASE)
    assert report.tier_policies == 1 and list(report.channel_keys) == ["sms"]
    assert (report.offers, report.tiers, report.users, report.subscribers) == (0, 0, 0, 0)


def seed_after_an_operators_tier(db, password: str, scheme: dict, tier: dict) -> None:
    """An operator creates a tier scheme and a tier in it; then the demo seed runs (no subscribers)."""
    create_config(db, catalogue.TIER_SCHEMES, validate_payload(catalogue.TIER_SCHEMES, scheme), actor="user:ops")
    create_config(db, catalogue.TIERS, validate_payload(catalogue.TIERS, tier), actor="user:ops")
    seed_demo(db, password=password, now=NOW, subscribers=0)
    db.flush()


def test_an_operators_primary_scheme_is_not_demoted(db, password):
    seed_after_an_operators_tier(
        db,
        password,
        {"code": "lifecycle", "name": "Lifecycle", "is_primary": True},
        {"code": "onboarding", "scheme_code": "lifecycle", "name": "Onboarding", "rank": 1, "rule": {}},
    )
    primary = db.scalars(select(TierScheme.code).where(TierScheme.is_primary.is_(True))).all()
    assert primary == ["lifecycle"]


def test_tiers_go_after_an_operators_tiers_in_an_existing_scheme(db, password):
    seed_after_an_operators_tier(
        db,
        password,
        {"code": "segments", "name": "Mine"},
        {"code": "students", "scheme_code": "segments", "name": "Students", "rank": 1, "rule": {"is_student": True}},
    )
    order = db.scalars(select(Tier.code).where(Tier.scheme_code == "segments").order_by(Tier.rank)).all()
    assert order == ["students", "at_risk", "strategic", "potential", "mass"]
    assert db.scalar(select(TierScheme.name).where(TierScheme.code == "segments")) == "Mine"


# --- the brief's rules, as data ---------------------------------------------------------------


def test_tier_policies_express_the_briefs_rules(db, seeded):
    def policy(tier: str, offer: str) -> TierPolicy:
        return db.scalar(select(TierPolicy).where(TierPolicy.tier_code == tier, TierPolicy.offer_code == offer))

    basic_allowed = db.scalars(
        select(TierPolicy.offer_code).where(TierPolicy.tier_code == "basic", TierPolicy.allowed.is_(True))
    ).all()
    # benefits: discount packages only; plus the service touches and the win-back by churn reason
    assert sorted(basic_allowed) == [
        "CARE_SMS",
        "DISCOUNT_PACKAGE",
        "NEW_USER_GUIDE",
        "WINBACK_DISCOUNT",
        "WINBACK_NEW_BUNDLE",
        "WINBACK_SPEED_BOOST",
    ]
    assert not policy("basic", "BILL_CREDIT").allowed and not policy("basic", "LOYALTY_POINTS").allowed
    credit = policy("value", "BILL_CREDIT")
    assert credit.allowed and credit.granted_by == "agent" and credit.max_cost is not None
    manager = policy("vip", "ACCOUNT_MANAGER")
    assert manager.allowed and manager.granted_by == "account_manager"
    assert not policy("value", "ACCOUNT_MANAGER").allowed and not policy("growth", "BILL_CREDIT").allowed


def test_contact_policies_and_budgets(db, client, auth, seeded):
    sms = db.scalar(select(ContactPolicy).where(ContactPolicy.channel == "sms"))
    assert (sms.max_contacts, sms.window_days, sms.quiet_start, sms.quiet_end, sms.timezone) == (
        4,
        30,
        "21:00",
        "08:00",
        "Asia/Shanghai",
    )
    budgets = {b["code"]: b for b in client.get("/api/v1/budgets", headers=auth["analyst"]).json["items"]}
    fund = budgets["RETENTION_FUND"]
    assert (fund["scope_type"], fund["cap_share_of_revenue"], fund["roi_floor"], fund["max_cost_share_of_ltv"]) == (
        "programme",
        0.015,
        1.5,
        0.20,
    )
    revenue = db.scalar(select(func.sum(Subscriber.arpu)))
    assert revenue > 0 and fund["effective_cap_amount"] == pytest.approx(0.015 * revenue, abs=0.01)
    assert (budgets["VIP_CARE"]["scope_type"], budgets["VIP_CARE"]["scope_value"]) == ("tier", "vip")
    assert budgets["VIP_CARE"]["cap_amount"] > 0


# --- triggers are eligibility -----------------------------------------------------------------


def test_heavy_late_night_data_use_triggers_the_night_pack(db, seeded):
    assert eligible(db, "NIGHT_DATA_PACK", {"night_data_share": 0.55})
    assert eligible(db, "NIGHT_DATA_PACK", {"night_data_share": 0.4})
    assert not eligible(db, "NIGHT_DATA_PACK", {"night_data_share": 0.1})
    assert not eligible(db, "NIGHT_DATA_PACK", {})


def test_broadband_tenure_over_three_years_triggers_the_gigabit_upgrade(db, seeded):
    assert eligible(db, "GIGABIT_UPGRADE", {"has_broadband": True, "broadband_tenure_months": 40})
    assert not eligible(db, "GIGABIT_UPGRADE", {"has_broadband": True, "broadband_tenure_months": 20})
    assert not eligible(db, "GIGABIT_UPGRADE", {"has_broadband": True, "broadband_tenure_months": 36})
    assert not eligible(db, "GIGABIT_UPGRADE", {"has_broadband": False, "broadband_tenure_months": 40})


def test_birthday_today_triggers_the_birthday_privilege(db, seeded):
    assert eligible(db, "BIRTHDAY_PRIVILEGE", {"birthday": "1990-06-15"})
    assert eligible(db, "BIRTHDAY_PRIVILEGE", {"birthday": "06-15"})
    assert not eligible(db, "BIRTHDAY_PRIVILEGE", {"birthday": "1990-06-16"})
    assert not eligible(db, "BIRTHDAY_PRIVILEGE", {"birthday": "not a date"})
    assert not eligible(db, "BIRTHDAY_PRIVILEGE", {})


def test_a_new_joiner_gets_the_guide_within_72_hours(db, seeded):
    def joined(hours_ago: float) -> dict:
        return {"join_date": (NOW - timedelta(hours=hours_ago)).isoformat()}

    assert eligible(db, "NEW_USER_GUIDE", joined(24))
    assert eligible(db, "NEW_USER_GUIDE", joined(72))
    assert not eligible(db, "NEW_USER_GUIDE", joined(100))
    assert not eligible(db, "NEW_USER_GUIDE", {})  # no join date is not "joined 0 hours ago"


def test_win_back_follows_the_churn_reason(db, seeded):
    win_backs = {
        "price": "WINBACK_DISCOUNT",
        "experience": "WINBACK_SPEED_BOOST",
        "needs_changed": "WINBACK_NEW_BUNDLE",
    }
    for reason, offer in win_backs.items():
        for who in ({"status": "churned", "churn_reason": reason}, {"intent": "cancel", "churn_reason": reason}):
            assert [o for o in win_backs.values() if eligible(db, o, who)] == [offer]
        assert not eligible(db, offer, {"status": "active", "churn_reason": reason})
    assert eligible(db, "RETURN_BENEFITS", {"status": "churned", "churned_months_ago": 8})
    assert not eligible(db, "RETURN_BENEFITS", {"status": "churned", "churned_months_ago": 2})
    assert not eligible(db, "RETURN_BENEFITS", {"status": "active"})
    assert not eligible(db, "CARE_SMS", {"status": "churned", "churn_score": 1.0})


def test_the_base_covers_every_tier_and_every_trigger(db, seeded):
    profiles = {s.id: s for s in db.scalars(select(Subscriber).where(Subscriber.id.like("demo-%")))}
    assert len(profiles) == SMALL_BASE
    assert {s.tier for s in profiles.values()} == {"vip", "value", "growth", "basic"}
    assert {s.tiers["segments"] for s in profiles.values()} == {"at_risk", "strategic", "potential", "mass"}
    offers = db.scalars(select(Offer)).all()
    for offer in offers:
        matches = compile_condition(offer.eligibility)
        assert any(matches(derive_contact_attributes(s.attributes, NOW)) for s in profiles.values()), offer.code
    showcase = {s.attributes.get("showcase"): s for s in profiles.values() if s.attributes.get("showcase")}
    assert set(showcase) == {name for name, _ in SHOWCASE}
    assert eligible(db, "BIRTHDAY_PRIVILEGE", showcase["birthday-today"].attributes)
    assert eligible(db, "NEW_USER_GUIDE", showcase["new-joiner"].attributes)
    assert not eligible(db, "NEW_USER_GUIDE", showcase["new-joiner"].attributes, NOW + timedelta(days=4))
    assert (showcase["vip-at-risk"].tier, showcase["vip-at-risk"].tiers["segments"]) == ("vip", "at_risk")


# --- demo users and channel keys work --------------------------------------------------------


@pytest.mark.parametrize(("email", "role"), [(email, role) for email, role, _ in DEMO_USERS])
def test_demo_users_can_log_in(client, seeded, password, email, role):
    r = client.post("/api/v1/auth/login", json={"email": email, "password": password})
    assert r.status_code == 200, r.json
    assert r.json["user"]["role"] == role
    assert client.get("/api/v1/me").json["role"] == role
    r = client.post("/api/v1/auth/login", json={"email": email, "password": "wrong password!"})
    assert r.status_code == 401


def test_demo_channel_keys_authenticate(client, seeded):
    for channel, raw in seeded.channel_keys.items():
        r = client.get("/api/v1/me", headers={"Authorization": f"Bearer {raw}"})
        assert r.status_code == 200, r.json
        assert (r.json["kind"], r.json["channel"]) == ("channel", channel)


def test_a_too_short_password_is_refused_before_anything_is_written(db):
    from infra.errors import BadRequest

    counts, audits = row_counts(db), audit_count(db)
    with pytest.raises(BadRequest) as refused:
        seed_demo(db, password="short", now=NOW, subscribers=0)
    assert refused.value.code == "weak_password"
    assert row_counts(db) == counts and audit_count(db) == audits
