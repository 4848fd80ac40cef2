"""The brief's segmentation examples, on the seeded demo tiers, through the tier preview API."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from offers.demo_seed import DEMO_ID_PREFIX, DEMO_SUBSCRIBERS, seed_demo
from offers.models import Subscriber

NOW = datetime(2025, 6, 15, 2, 30, tzinfo=UTC)

VIP = {
    "arpu": 120.0,
    "ltv": 4200.0,
    "active_days_30d": 28,
    "tenure_months": 60,
    "digital_spend_share": 0.5,
    "complaints_90d": 0,
    "arpu_change_3m": 0.02,
}
VALUE = {
    "arpu": 50.0,
    "ltv": 1200.0,
    "active_days_30d": 20,
    "tenure_months": 14,
    "digital_spend_share": 0.2,
    "complaints_90d": 1,
}
GROWTH = {"arpu": 30.0, "ltv": 600.0, "active_days_30d": 12, "tenure_months": 8}
HEAVY_USER = {"arpu": 19.0, "ltv": 300.0, "active_days_30d": 28, "tenure_months": 5}
BASIC = {"arpu": 15.0, "ltv": 200.0, "active_days_30d": 5, "tenure_months": 30}
# Spends like a VIP, but ARPU fell 25% in three months and they complained three times
DECLINING_HIGH_SPENDER = {**VIP, "arpu": 150.0, "arpu_change_3m": -0.25, "complaints_90d": 3}
STRATEGIC = {
    "arpu": 80.0,
    "ltv": 2500.0,
    "active_days_30d": 25,
    "tenure_months": 36,
    "digital_spend_share": 0.45,
    "complaints_90d": 0,
}
POTENTIAL = {"arpu": 38.0, "ltv": 900.0, "active_days_30d": 15, "tenure_months": 10, "digital_spend_share": 0.2}
DIGITAL_NATIVE = {"arpu": 22.0, "digital_spend_share": 0.6, "tenure_months": 4}  # low spend, digital need
MASS = {"arpu": 12.0, "digital_spend_share": 0.1, "tenure_months": 40}


@pytest.fixture()
def seeded(db, password):
    """The demo catalogue without the synthetic base (the preview needs only the tiers)."""
    report = seed_demo(db, password=password, now=NOW, subscribers=0)
    db.commit()
    return report


def preview(client, headers, attributes):
    response = client.post("/api/v1/tiers/preview", json={"attributes": attributes}, headers=headers)
    assert response.status_code == 200, response.json
    return response.json


def reorder(client, headers, scheme: str, tiers: list[str]) -> dict:
    """Put ``scheme``'s tiers in the order ``tiers``; returns the scheme's tiers as the API now lists them."""
    r = client.post(f"/api/v1/tier-schemes/{scheme}/order", json={"tiers": tiers}, headers=headers)
    assert r.status_code == 200, r.json
    return r.json


@pytest.mark.parametrize(
    ("profile", "tier", "segment"),
    [
        (VIP, "vip", "strategic"),
        (VALUE, "value", "potential"),
        (GROWTH, "growth", "mass"),
        (HEAVY_USER, "growth", "mass"),  # usage frequency alone lifts a low spender to growth
        (BASIC, "basic", "mass"),
        ({}, "basic", "mass"),  # the catch-alls take an empty profile
        (DECLINING_HIGH_SPENDER, "vip", "at_risk"),  # at-risk beats strategic/potential at any ARPU
        (STRATEGIC, "vip", "strategic"),
        ({**STRATEGIC, "complaints_90d": 1}, "vip", "potential"),  # a complainer is not "loyal"
        ({**STRATEGIC, "tenure_months": 12}, "vip", "potential"),  # nor is a one-year customer
        ({**STRATEGIC, "digital_spend_share": 0.1}, "vip", "potential"),  # plain telecom needs
        (POTENTIAL, "growth", "potential"),
        (DIGITAL_NATIVE, "basic", "potential"),
        (MASS, "basic", "mass"),
        # a decline without complaints, or complaints without a decline, is not yet "at risk"
        ({**DECLINING_HIGH_SPENDER, "complaints_90d": 1}, "vip", "potential"),
        ({**DECLINING_HIGH_SPENDER, "arpu_change_3m": -0.05}, "vip", "potential"),
    ],
)
def test_brief_segmentation_examples(client, auth, seeded, profile, tier, segment):
    result = preview(client, auth["analyst"], profile)
    assert result == {"tier": tier, "by_scheme": {"value_tiers": tier, "segments": segment}}


def test_value_tiers_is_the_primary_scheme(client, auth, seeded):
    schemes = {s["code"]: s for s in client.get("/api/v1/tier-schemes", headers=auth["analyst"]).json["items"]}
    assert schemes["value_tiers"]["is_primary"] is True
    assert schemes["segments"]["is_primary"] is False


def test_first_match_by_rank_and_reordering_changes_the_result(client, auth, seeded):
    # the declining high spender matches at_risk and potential; rank decides
    assert preview(client, auth["analyst"], DECLINING_HIGH_SPENDER)["by_scheme"]["segments"] == "at_risk"
    # the strategic profile matches strategic and potential
    assert preview(client, auth["analyst"], STRATEGIC)["by_scheme"]["segments"] == "strategic"

    reordered = reorder(client, auth["marketing"], "segments", ["potential", "strategic", "at_risk", "mass"])
    assert [t["code"] for t in reordered["items"]] == ["potential", "strategic", "at_risk", "mass"]

    assert preview(client, auth["analyst"], DECLINING_HIGH_SPENDER)["by_scheme"]["segments"] == "potential"
    assert preview(client, auth["analyst"], STRATEGIC)["by_scheme"]["segments"] == "potential"
    assert preview(client, auth["analyst"], MASS)["by_scheme"]["segments"] == "mass"

    # and in the primary scheme: basic (the catch-all) first takes everyone
    reorder(client, auth["marketing"], "value_tiers", ["basic", "vip", "value", "growth"])
    assert preview(client, auth["analyst"], VIP)["tier"] == "basic"


def test_an_inactive_tier_is_skipped(client, auth, seeded):
    assert client.delete("/api/v1/tiers/vip", headers=auth["marketing"]).status_code == 200
    assert preview(client, auth["analyst"], VIP)["tier"] == "value"  # next match by rank
    assert client.delete("/api/v1/tiers/strategic", headers=auth["marketing"]).status_code == 200
    assert preview(client, auth["analyst"], VIP)["by_scheme"]["segments"] == "potential"
    # reactivating restores it
    r = client.patch("/api/v1/tiers/vip", json={"active": True}, headers=auth["marketing"])
    assert r.status_code == 200, r.json
    assert preview(client, auth["analyst"], VIP)["tier"] == "vip"


def test_no_catch_all_means_no_tier(client, auth, seeded):
    assert client.delete("/api/v1/tiers/mass", headers=auth["marketing"]).status_code == 200
    result = preview(client, auth["analyst"], MASS)
    assert result == {"tier": "basic", "by_scheme": {"value_tiers": "basic", "segments": None}}
    assert preview(client, auth["analyst"], POTENTIAL)["by_scheme"]["segments"] == "potential"

    assert client.delete("/api/v1/tiers/basic", headers=auth["marketing"]).status_code == 200
    assert preview(client, auth["analyst"], MASS) == {
        "tier": None,
        "by_scheme": {"value_tiers": None, "segments": None},
    }
    assert preview(client, auth["analyst"], VIP)["tier"] == "vip"


def test_preview_refuses_a_malformed_body(client, auth, seeded):
    r = client.post("/api/v1/tiers/preview", json={"attributes": [1, 2]}, headers=auth["analyst"])
    assert r.status_code == 400 and "error" in r.json
    r = client.post("/api/v1/tiers/preview", json={"profile": VIP}, headers=auth["analyst"])
    assert r.status_code == 400 and "error" in r.json


# Per cent of the base per value tier, as the brief states it, and how far the seeded base may
# stray from it.
BRIEF_SHARES_PCT = {"basic": 50, "growth": 25, "value": 15, "vip": 10}
TOLERANCE_PCT = 3.0


def test_the_seeded_base_has_the_briefs_tier_shares(db, password):
    report = seed_demo(db, password=password, now=NOW)
    db.flush()
    assert report.subscribers == DEMO_SUBSCRIBERS
    rows = db.execute(select(Subscriber.tier, Subscriber.tiers).where(Subscriber.id.startswith(DEMO_ID_PREFIX))).all()
    assert len(rows) == DEMO_SUBSCRIBERS
    value_tiers = Counter(tier for tier, _ in rows)
    shares = {tier: 100.0 * n / len(rows) for tier, n in value_tiers.items()}
    assert set(shares) == set(BRIEF_SHARES_PCT), shares
    for tier, expected in BRIEF_SHARES_PCT.items():
        assert abs(shares[tier] - expected) <= TOLERANCE_PCT, shares
    # the stored primary tier is the value_tiers scheme's tier, and every segment is populated
    assert all(tiers["value_tiers"] == tier for tier, tiers in rows)
    segments = Counter(tiers["segments"] for _, tiers in rows)
    assert set(segments) == {"at_risk", "strategic", "potential", "mass"}, segments
    assert segments["at_risk"] >= 0.02 * len(rows) and segments["strategic"] >= 0.02 * len(rows)
