"""The catalogue's JSON admin API: CRUD for every kind, validation, conflicts and the audit trail."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from infra.audit import AuditEntry

OFFER = {
    "code": "NIGHT_PACK",
    "name": "Night data pack",
    "unit_cost": 2.5,
    "channels": ["sms", "app"],
    "eligibility": {"night_data_share": {"$gte": 0.4}},
    "prior_uplift": 0.02,
}


def _audit_rows(db, entity_type: str, key: str) -> list[AuditEntry]:
    return list(
        db.scalars(
            select(AuditEntry)
            .where(AuditEntry.entity_type == entity_type, AuditEntry.entity_key == key)
            .order_by(AuditEntry.id)
        )
    )


def _scheme_and_tier(client, auth):
    assert (
        client.post(
            "/api/v1/tier-schemes",
            json={"code": "value_tiers", "name": "Value", "is_primary": True},
            headers=auth["admin"],
        ).status_code
        == 201
    )
    r = client.post(
        "/api/v1/tiers",
        json={"code": "vip", "scheme_code": "value_tiers", "name": "VIP", "rank": 1, "rule": {"arpu": {"$gte": 150}}},
        headers=auth["admin"],
    )
    assert r.status_code == 201, r.json


def test_offer_lifecycle_is_audited(client, auth, db):
    r = client.post("/api/v1/offers", json=OFFER, headers=auth["marketing"])
    assert r.status_code == 201, r.json
    assert r.json["value_horizon_months"] == 12 and r.json["active"] is True

    r = client.patch("/api/v1/offers/NIGHT_PACK", json={"unit_cost": 3}, headers=auth["marketing"])
    assert r.status_code == 200 and r.json["unit_cost"] == 3.0 and r.json["channels"] == ["sms", "app"]

    r = client.delete("/api/v1/offers/NIGHT_PACK", headers=auth["marketing"])
    assert r.status_code == 200 and r.json["active"] is False
    assert client.get("/api/v1/offers", headers=auth["analyst"]).json["items"] == []
    listed = client.get("/api/v1/offers?include_inactive=true", headers=auth["analyst"]).json["items"]
    assert [o["code"] for o in listed] == ["NIGHT_PACK"]

    rows = _audit_rows(db, "offer", "NIGHT_PACK")
    assert [row.action for row in rows] == ["create", "update", "deactivate"]
    assert rows[0].actor == "user:marketing@example.test" and rows[0].before is None
    assert rows[1].before["unit_cost"] == 2.5 and rows[1].after["unit_cost"] == 3.0


def test_a_patch_that_changes_nothing_writes_no_audit_row(client, auth, db):
    client.post("/api/v1/offers", json=OFFER, headers=auth["marketing"])
    client.patch("/api/v1/offers/NIGHT_PACK", json={"unit_cost": 2.5}, headers=auth["marketing"])
    assert [r.action for r in _audit_rows(db, "offer", "NIGHT_PACK")] == ["create"]


def test_duplicate_code_is_409(client, auth):
    client.post("/api/v1/offers", json=OFFER, headers=auth["marketing"])
    r = client.post("/api/v1/offers", json=OFFER, headers=auth["marketing"])
    assert r.status_code == 409 and r.json["error"]["code"] == "offer_exists"


def test_invalid_condition_is_400_naming_the_json_path(client, auth, db):
    bad = {**OFFER, "eligibility": {"$or": [{"arpu": {"$gt": 10}}, {"tenure_months": {"$between": [1, 2]}}]}}
    r = client.post("/api/v1/offers", json=bad, headers=auth["marketing"])
    assert r.status_code == 400
    assert r.json["error"]["code"] == "invalid_condition"
    assert r.json["error"]["details"][0]["path"].startswith("$.eligibility.$or[1].tenure_months")
    assert db.scalar(select(func.count()).select_from(AuditEntry)) == 0


@pytest.mark.parametrize(
    "body, code, path",
    [
        ({**OFFER, "unit_cost": "2.5"}, "validation_error", "$.unit_cost"),
        ({**OFFER, "channels": ["fax"]}, "validation_error", "$.channels[0]"),
        ({**OFFER, "channels": []}, "validation_error", "$.channels"),
        ({**OFFER, "colour": "red"}, "validation_error", "$.colour"),
        ({**OFFER, "unit_cost": -1}, "validation_error", "$.unit_cost"),
        ({**OFFER, "code": "has space"}, "validation_error", "$.code"),
        ({k: v for k, v in OFFER.items() if k != "name"}, "validation_error", "$.name"),
    ],
)
def test_wrong_types_and_unknown_fields_are_400(client, auth, body, code, path):
    r = client.post("/api/v1/offers", json=body, headers=auth["marketing"])
    assert r.status_code == 400, r.json
    assert r.json["error"]["code"] == code
    assert path in [d["path"] for d in r.json["error"]["details"]]


@pytest.mark.parametrize(
    "data, content_type, status, code",
    [
        ('{"code": "X",', "application/json", 400, "invalid_json"),
        ("[1, 2]", "application/json", 400, "validation_error"),
        ("", "application/json", 400, "invalid_json"),
        ("code=X", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
    ],
)
def test_malformed_bodies_are_4xx(client, auth, data, content_type, status, code):
    r = client.post("/api/v1/offers", data=data, content_type=content_type, headers=auth["marketing"])
    assert r.status_code == status and r.json["error"]["code"] == code


def test_too_large_body_is_413(client, auth):
    huge = {**OFFER, "description": "x" * 2_000_000}
    r = client.post("/api/v1/offers", json=huge, headers=auth["marketing"])
    assert r.status_code == 413 and r.json["error"]["code"] == "payload_too_large"


def test_patch_is_validated_as_a_whole(client, auth):
    client.post(
        "/api/v1/budgets",
        json={"code": "fund", "name": "Retention fund", "cap_share_of_revenue": 0.015},
        headers=auth["marketing"],
    )
    r = client.patch("/api/v1/budgets/fund", json={"cap_amount": 1000}, headers=auth["marketing"])
    assert r.status_code == 400 and "exactly one" in r.json["error"]["details"][0]["message"]
    r = client.patch(
        "/api/v1/budgets/fund", json={"cap_amount": 1000, "cap_share_of_revenue": None}, headers=auth["marketing"]
    )
    assert r.status_code == 200 and r.json["effective_cap_amount"] == 1000.0
    r = client.patch("/api/v1/budgets/fund", json={"code": "other"}, headers=auth["marketing"])
    assert r.status_code == 400 and r.json["error"]["code"] == "immutable_field"


def test_unknown_entity_is_404(client, auth):
    r = client.get("/api/v1/offers/NOPE", headers=auth["analyst"])
    assert r.status_code == 404 and r.json["error"]["code"] == "offer_not_found"
    assert client.get("/api/v1/tier-policies/abc", headers=auth["analyst"]).status_code == 400
    huge = "9" * 30  # would overflow the driver: must be a 400, not a 500
    r = client.patch(f"/api/v1/tier-policies/{huge}", json={}, headers=auth["marketing"])
    assert r.status_code == 400 and r.json["error"]["code"] == "invalid_id"
    assert client.delete(f"/api/v1/api-keys/{huge}", headers=auth["admin"]).status_code == 400
    assert client.get(f"/api/v1/audit?before_id={huge}", headers=auth["admin"]).status_code == 400
    assert client.get("/api/v1/audit?limit=-1", headers=auth["admin"]).status_code == 400
    assert client.get("/api/v1/nothing-here", headers=auth["analyst"]).status_code == 404


def test_budget_defaults_and_effective_cap_from_revenue(client, auth, db):
    from offers.models import Subscriber

    db.add_all([Subscriber(id=f"s{i}", attributes={}, tiers={}, arpu=100.0) for i in range(10)])
    db.commit()
    r = client.post(
        "/api/v1/budgets",
        json={"code": "fund", "name": "Retention fund", "period": "quarter", "cap_share_of_revenue": 0.02},
        headers=auth["marketing"],
    )
    assert r.status_code == 201, r.json
    assert r.json["roi_floor"] == 1.5 and r.json["max_cost_share_of_ltv"] == 0.2
    assert r.json["effective_cap_amount"] == pytest.approx(0.02 * 1000 * 3)


@pytest.mark.parametrize(
    "body, message",
    [
        ({"code": "b", "name": "B", "cap_amount": 5, "scope_type": "tier"}, "needs scope_value"),
        ({"code": "b", "name": "B", "cap_amount": 5, "scope_value": "vip"}, "leave scope_value empty"),
        ({"code": "b", "name": "B"}, "exactly one"),
    ],
)
def test_budget_rules(client, auth, body, message):
    r = client.post("/api/v1/budgets", json=body, headers=auth["marketing"])
    assert r.status_code == 400 and message in r.json["error"]["details"][0]["message"]


def test_budget_scope_must_exist(client, auth):
    r = client.post(
        "/api/v1/budgets",
        json={"code": "b", "name": "B", "cap_amount": 5, "scope_type": "tier", "scope_value": "ghost"},
        headers=auth["marketing"],
    )
    assert r.status_code == 400 and r.json["error"]["code"] == "unknown_reference"


def test_tiers_need_a_scheme_and_a_free_rank(client, auth):
    r = client.post(
        "/api/v1/tiers", json={"code": "vip", "scheme_code": "nope", "name": "VIP", "rank": 1}, headers=auth["admin"]
    )
    assert r.status_code == 400 and r.json["error"]["code"] == "unknown_scheme"
    _scheme_and_tier(client, auth)
    r = client.post(
        "/api/v1/tiers",
        json={"code": "value", "scheme_code": "value_tiers", "name": "Value", "rank": 1},
        headers=auth["admin"],
    )
    assert r.status_code == 409 and r.json["error"]["code"] == "rank_taken"


def test_only_one_primary_scheme(client, auth, db):
    _scheme_and_tier(client, auth)
    r = client.post(
        "/api/v1/tier-schemes", json={"code": "segments", "name": "Segments", "is_primary": True}, headers=auth["admin"]
    )
    assert r.status_code == 201
    schemes = {
        s["code"]: s["is_primary"] for s in client.get("/api/v1/tier-schemes", headers=auth["analyst"]).json["items"]
    }
    assert schemes == {"segments": True, "value_tiers": False}
    assert [r.action for r in _audit_rows(db, "tier_scheme", "value_tiers")] == ["create", "update"]


def test_tier_policy_references_and_uniqueness(client, auth):
    _scheme_and_tier(client, auth)
    client.post("/api/v1/offers", json=OFFER, headers=auth["marketing"])
    policy = {"tier_code": "vip", "offer_code": "NIGHT_PACK", "max_cost": 10, "granted_by": "agent"}
    r = client.post("/api/v1/tier-policies", json=policy, headers=auth["marketing"])
    assert r.status_code == 201 and r.json["lever"] == 1.0
    policy_id = r.json["id"]
    assert client.post("/api/v1/tier-policies", json=policy, headers=auth["marketing"]).status_code == 409
    r = client.post(
        "/api/v1/tier-policies", json={**policy, "offer_code": "GHOST", "tier_code": "ghost"}, headers=auth["marketing"]
    )
    assert r.status_code == 400 and {d["path"] for d in r.json["error"]["details"]} == {"$.tier_code", "$.offer_code"}
    r = client.get("/api/v1/tier-policies?tier_code=vip", headers=auth["analyst"])
    assert [p["id"] for p in r.json["items"]] == [policy_id]
    assert client.get("/api/v1/tier-policies?colour=red", headers=auth["analyst"]).status_code == 400


def test_contact_policy_validation(client, auth):
    good = {
        "channel": "sms",
        "max_contacts": 4,
        "window_days": 30,
        "quiet_start": "21:00",
        "quiet_end": "08:00",
        "timezone": "Asia/Shanghai",
    }
    assert client.post("/api/v1/contact-policies", json=good, headers=auth["marketing"]).status_code == 201
    assert client.get("/api/v1/contact-policies/sms", headers=auth["analyst"]).json["max_contacts"] == 4
    for bad in (
        {**good, "channel": "app", "quiet_start": "25:00"},
        {**good, "channel": "app", "quiet_end": None},
        {**good, "channel": "app", "timezone": "Mars/Olympus"},
    ):
        r = client.post("/api/v1/contact-policies", json=bad, headers=auth["marketing"])
        assert r.status_code == 400, bad


def test_tier_preview_and_reorder(client, auth, db):
    _scheme_and_tier(client, auth)
    client.post(
        "/api/v1/tiers",
        json={"code": "basic", "scheme_code": "value_tiers", "name": "Basic", "rank": 2, "rule": {}},
        headers=auth["admin"],
    )
    r = client.post("/api/v1/tiers/preview", json={"attributes": {"arpu": 200}}, headers=auth["analyst"])
    assert r.json == {"tier": "vip", "by_scheme": {"value_tiers": "vip"}}
    r = client.post(
        "/api/v1/tier-schemes/value_tiers/order", json={"tiers": ["basic", "vip"]}, headers=auth["marketing"]
    )
    assert r.status_code == 200 and [t["code"] for t in r.json["items"]] == ["basic", "vip"]
    r = client.post("/api/v1/tiers/preview", json={"attributes": {"arpu": 200}}, headers=auth["analyst"])
    assert r.json["tier"] == "basic"
    r = client.post("/api/v1/tier-schemes/value_tiers/order", json={"tiers": ["basic"]}, headers=auth["marketing"])
    assert r.status_code == 400 and r.json["error"]["code"] == "invalid_order"
    r = client.post("/api/v1/tiers/preview", json={"attrs": {}}, headers=auth["analyst"])
    assert r.status_code == 400


@pytest.mark.parametrize(
    "data",
    [
        b'{"code": "X", "name": "x", "unit_cost": NaN, "channels": ["sms"]}',
        b'{"code": "X", "name": "x", "unit_cost": 1, "channels": ["sms"], "eligibility": {"a": Infinity}}',
        b'{"code": "X", "name": "nul\\u0000", "unit_cost": 1, "channels": ["sms"]}',
    ],
)
def test_values_the_database_cannot_store_are_400(client, auth, data):
    r = client.post("/api/v1/offers", data=data, content_type="application/json", headers=auth["marketing"])
    assert r.status_code == 400, r.json
    r = client.patch("/api/v1/offers/X", data=data, content_type="application/json", headers=auth["marketing"])
    assert r.status_code == 400, r.json


def test_nul_in_a_path_is_404(client, auth):
    assert client.get("/api/v1/offers/a%00b", headers=auth["analyst"]).status_code == 404
