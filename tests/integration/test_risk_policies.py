"""Risk-level policies: marketing sets the thresholds of the blue / yellow / red warning levels,
every change is audited, one policy applies at a time, and the next decision uses it."""

from __future__ import annotations

from sqlalchemy import select

from infra.audit import AuditEntry

URL = "/api/v1/risk-policies"
STRICT = {
    "code": "strict",
    "name": "Strict warning levels",
    "yellow_churn_score": 0.3,
    "red_churn_score": 0.6,
    "unresolved_complaints": 2,
}


def test_marketing_sets_the_thresholds_and_each_change_is_audited(client, auth, db):
    created = client.post(URL, json=STRICT, headers=auth["marketing"])
    assert created.status_code == 201, created.json
    assert created.json["inactive_months"] == 3 and created.json["active"] is True  # the playbook's defaults
    assert client.get(f"{URL}/strict", headers=auth["analyst"]).json["yellow_churn_score"] == 0.3

    second = client.post(
        URL,
        json={**STRICT, "code": "lenient", "yellow_churn_score": 0.5, "red_churn_score": 0.8},
        headers=auth["marketing"],
    )
    assert second.status_code == 201, second.json
    listed = client.get(f"{URL}?include_inactive=true", headers=auth["analyst"]).json["items"]
    assert {row["code"]: row["active"] for row in listed} == {"lenient": True, "strict": False}  # one applies

    entries = db.scalars(
        select(AuditEntry).where(AuditEntry.entity_type == "risk_policy").order_by(AuditEntry.id)
    ).all()
    assert [(e.action, e.entity_key) for e in entries] == [
        ("create", "strict"),
        ("update", "strict"),
        ("create", "lenient"),
    ]
    assert entries[1].after == {"active": False}


def test_bad_thresholds_and_the_wrong_roles_are_refused(client, auth):
    crossed = client.post(
        URL, json={**STRICT, "yellow_churn_score": 0.8, "red_churn_score": 0.5}, headers=auth["marketing"]
    )
    assert crossed.status_code in (400, 422) and "yellow_churn_score must not be above red_churn_score" in str(
        crossed.json
    ), crossed.json
    for field, value in (("inactive_months", 0), ("red_churn_score", 1.5), ("complaint_surge_90d", "3")):
        bad = client.post(URL, json={**STRICT, field: value}, headers=auth["marketing"])
        assert bad.status_code in (400, 422) and field in str(bad.json), (field, bad.json)
    assert client.post(URL, json=STRICT, headers=auth["analyst"]).status_code == 403
    assert client.post(URL, json=STRICT, headers=auth["sms"]).status_code in (401, 403)
    client.post(URL, json=STRICT, headers=auth["marketing"])
    patched = client.patch(f"{URL}/strict", json={"red_churn_score": 0.2}, headers=auth["marketing"])
    assert patched.status_code in (400, 422), patched.json  # the merged policy must still hold


def test_the_next_decision_uses_the_active_policy_and_says_its_thresholds(client, auth):
    client.post(
        "/api/v1/offers",
        json={"code": "CARE_SMS", "name": "Care SMS", "unit_cost": 0.0, "channels": ["sms"], "prior_uplift": 0.001},
        headers=auth["admin"],
    )
    client.put(
        "/api/v1/subscribers/s-1",
        json={"attributes": {"arpu": 30.0, "churn_score": 0.35, "unresolved_complaints": 1}},
        headers=auth["sms"],
    )

    def decide() -> dict:
        response = client.post(
            "/api/v1/decisions", json={"subscriber_id": "s-1", "channel": "sms"}, headers=auth["sms"]
        )
        assert response.status_code == 200, response.json
        return response.json

    playbook = decide()  # no policy stored: the playbook's 0.4 / 0.7, one open complaint is a signal
    assert playbook["risk_level"] == "yellow"
    assert playbook["risk_reasons"] == [{"code": "unresolved_complaint", "message": "has an unresolved complaint"}]

    assert client.post(URL, json=STRICT, headers=auth["marketing"]).status_code == 201
    strict = decide()  # 0.35 is yellow from 0.3; one complaint is below the new threshold of 2
    assert strict["risk_level"] == "yellow"
    assert strict["risk_reasons"] == [
        {"code": "churn_score_yellow", "message": "churn score at or above the yellow threshold (0.3)"}
    ]

    assert client.delete(f"{URL}/strict", headers=auth["marketing"]).status_code == 200
    assert decide()["risk_reasons"] == playbook["risk_reasons"]  # none active: the playbook again
