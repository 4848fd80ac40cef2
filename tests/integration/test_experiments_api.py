"""The experiments JSON API: create with arms, lifecycle transitions, frozen assignment while
running, new phases, coverage rules, roles, validation and the audit trail."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from experiments.assignment import assign
from experiments.models import STATUSES, ExperimentPhase
from experiments.service import ALLOWED_TRANSITIONS, experiment_spec, get_experiment
from infra.audit import AuditEntry

KEY = "winback-q4"
URL = f"/api/v1/experiments/{KEY}"
OFFERS = [
    {"code": "NIGHT_PACK", "name": "Night data pack", "unit_cost": 2.5, "channels": ["sms", "app"]},
    {"code": "BILL_CREDIT", "name": "Bill credit", "unit_cost": 10, "channels": ["call_centre"]},
]
# The lifecycle as the issue states it, written out independently of the code.
ALLOWED = {
    "draft": ("pilot", "stopped"),
    "pilot": ("rollout", "stopped"),
    "rollout": ("completed", "stopped"),
    "completed": (),
    "stopped": (),
}
BUDGET = {"code": "care-q4", "name": "Care fund Q4", "cap_amount": 50000}
EXPERIMENT = {
    "key": KEY,
    "name": "Win-back Q4",
    "hypothesis": "A night pack keeps heavy night users",
    "target": {"churn_score": {"$gte": 0.5}, "night_data_share": {"$gte": 0.4}},
    "budget_code": "care-q4",
    "arms": [{"key": "control"}, {"key": "night_pack", "offer_code": "NIGHT_PACK"}],
}


@pytest.fixture()
def catalogue(client, auth):
    """The offers and budget the experiments refer to, created through the API."""
    for offer in OFFERS:
        r = client.post("/api/v1/offers", json=offer, headers=auth["marketing"])
        assert r.status_code == 201, r.json
    r = client.post("/api/v1/budgets", json=BUDGET, headers=auth["marketing"])
    assert r.status_code == 201, r.json


def _create(client, auth, **overrides):
    r = client.post("/api/v1/experiments", json={**EXPERIMENT, **overrides}, headers=auth["marketing"])
    assert r.status_code == 201, r.json
    return r.json


def _move(client, auth, to: str, key: str = KEY):
    return client.post(f"/api/v1/experiments/{key}/transition", json={"to": to}, headers=auth["marketing"])


def _running(client, auth, status: str = "pilot", **overrides):
    _create(client, auth, **overrides)
    path = {
        "draft": [],
        "pilot": ["pilot"],
        "rollout": ["pilot", "rollout"],
        "completed": ["pilot", "rollout", "completed"],
        "stopped": ["stopped"],
    }[status]
    for to in path:
        r = _move(client, auth, to)
        assert r.status_code == 200, r.json


def _audit(db, key: str = KEY) -> list[AuditEntry]:
    return list(
        db.scalars(
            select(AuditEntry)
            .where(AuditEntry.entity_type == "experiment", AuditEntry.entity_key == key)
            .order_by(AuditEntry.id)
        )
    )


def _audit_count(db) -> int:
    return db.scalar(select(func.count()).select_from(AuditEntry).where(AuditEntry.entity_type == "experiment"))


# --- create and read ---------------------------------------------------------------------


def test_create_with_arms_fills_the_pilot_defaults_and_is_audited(client, auth, db, catalogue):
    body = _create(client, auth)
    assert body["status"] == "draft" and body["phase"] == 1
    assert body["coverage"] == 0.05 and body["holdout_share"] == 0.0
    assert body["hash_seed"] == KEY and body["hash_version"] == 2 and body["bucket_version"] == 1
    assert body["primary_metric"] == "retained_d30" and body["guardrails"] == ["complaints", "arpu"]
    assert body["promotion_policy"]["min_p_best"] == 0.95
    assert body["promotion_policy"]["min_p_roi_above_floor"] == 0.9
    assert body["promotion_policy"]["mode"] == "approve"
    assert body["started_at"] is None and body["phases"] == []
    assert body["allowed_transitions"] == ["pilot", "stopped"]
    assert body["arms"] == [
        {"key": "control", "offer_code": None, "weight": 1.0, "is_control": True, "position": 0},
        {"key": "night_pack", "offer_code": "NIGHT_PACK", "weight": 1.0, "is_control": False, "position": 1},
    ]
    [row] = _audit(db)
    assert row.action == "create" and row.actor == "user:marketing@example.test"
    assert row.before is None and [a["key"] for a in row.after["arms"]] == ["control", "night_pack"]

    assert client.get(URL, headers=auth["analyst"]).json == body
    listed = client.get("/api/v1/experiments", headers=auth["analyst"]).json["items"]
    assert [e["key"] for e in listed] == [KEY]


def test_list_filters_by_status(client, auth, catalogue):
    _running(client, auth, "pilot")
    _create(client, auth, key="other")
    pilots = client.get("/api/v1/experiments?status=pilot", headers=auth["analyst"]).json["items"]
    assert [e["key"] for e in pilots] == [KEY]
    r = client.get("/api/v1/experiments?status=paused", headers=auth["analyst"])
    assert r.status_code == 400 and r.json["error"]["code"] == "invalid_query"
    r = client.get("/api/v1/experiments?colour=red", headers=auth["analyst"])
    assert r.status_code == 400 and "colour" in r.json["error"]["message"]


def test_experiment_spec_matches_the_stored_phase(client, auth, db, catalogue):
    _create(
        client,
        auth,
        namespace="winback",
        namespace_start=0.0,
        namespace_end=0.5,
        coverage=0.5,
        holdout_share=0.1,
        arms=[{"key": "control", "weight": 3}, {"key": "night_pack", "offer_code": "NIGHT_PACK", "weight": 1}],
    )
    spec = experiment_spec(get_experiment(db, KEY))
    assert spec.key == KEY and spec.arm_keys == ("control", "night_pack")
    assert spec.seed == KEY and spec.hash_version == 2 and spec.coverage == 0.5
    assert spec.weights == (0.75, 0.25)  # relative weights, normalised as GrowthBook needs
    assert spec.namespace == ("winback", 0.0, 0.5) and spec.holdout_share == 0.1
    assigned = [assign(spec, f"s-{i}") for i in range(2000)]
    assert {a.reason for a in assigned} >= {"assigned", "not_in_namespace", "holdout", "not_covered"}


def test_unknown_experiment_is_404(client, auth):
    r = client.get("/api/v1/experiments/nope", headers=auth["analyst"])
    assert r.status_code == 404 and r.json["error"]["code"] == "experiment_not_found"


def test_duplicate_key_is_409(client, auth, db, catalogue):
    _create(client, auth)
    r = client.post("/api/v1/experiments", json=EXPERIMENT, headers=auth["marketing"])
    assert r.status_code == 409 and r.json["error"]["code"] == "experiment_exists"
    assert len(_audit(db)) == 1


# --- validation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, path",
    [
        ({"coverage": "0.05"}, "$.coverage"),
        ({"coverage": 0}, "$.coverage"),
        ({"coverage": 1.5}, "$.coverage"),
        ({"holdout_share": 0.9}, "$.holdout_share"),
        ({"hash_version": 3}, "$.hash_version"),
        ({"bucket_version": 0}, "$.bucket_version"),
        ({"primary_metric": "retained_d7"}, "$.primary_metric"),
        ({"guardrails": ["nps"]}, "$.guardrails[0]"),
        ({"guardrails": ["arpu", "arpu"]}, "$.guardrails"),
        ({"promotion_policy": {"min_p_best": 1.5}}, "$.promotion_policy.min_p_best"),
        ({"promotion_policy": {"mode": "yolo"}}, "$.promotion_policy.mode"),
        ({"promotion_policy": {"colour": "red"}}, "$.promotion_policy.colour"),
        ({"colour": "red"}, "$.colour"),
        ({"key": "has space"}, "$.key"),
        ({"name": 7}, "$.name"),
        ({"target": ["not", "an", "object"]}, "$.target"),
        ({"arms": [{"key": "control", "weight": 0}]}, "$.arms[0].weight"),
        ({"arms": [{"key": "control", "weight": "1"}]}, "$.arms[0].weight"),
        ({"arms": [{"key": "control", "colour": "red"}]}, "$.arms[0].colour"),
        ({"arms": [{"key": "a"}, {"key": "a", "offer_code": "NIGHT_PACK"}]}, "$.arms"),
        ({"arms": [{"key": "a"}, {"key": "b"}]}, "$.arms"),  # two no-offer arms: two controls
        ({"namespace": "ns", "namespace_start": 0.6, "namespace_end": 0.4}, "$"),
    ],
)
def test_wrong_types_unknown_fields_and_bad_values_are_400(client, auth, db, catalogue, change, path):
    r = client.post("/api/v1/experiments", json={**EXPERIMENT, **change}, headers=auth["marketing"])
    assert r.status_code == 400, r.json
    assert r.json["error"]["code"] == "validation_error"
    assert path in [d["path"] for d in r.json["error"]["details"]]
    assert _audit_count(db) == 0


def test_malformed_json_and_wrong_content_type_are_rejected(client, auth, catalogue):
    headers = {**auth["marketing"], "Content-Type": "application/json"}
    for method, url in (
        ("post", "/api/v1/experiments"),
        ("patch", URL),
        ("post", f"{URL}/transition"),
        ("post", f"{URL}/phases"),
    ):
        r = getattr(client, method)(url, data="{not json", headers=headers)
        assert r.status_code == 400 and r.json["error"]["code"] == "invalid_json", (method, url)
    r = client.post("/api/v1/experiments", data="key=x", headers={**auth["marketing"], "Content-Type": "text/plain"})
    assert r.status_code == 415
    _create(client, auth)
    r = client.patch(URL, json=["a", "list"], headers=auth["marketing"])
    assert r.status_code == 400 and r.json["error"]["code"] == "invalid_json"


def test_nul_characters_are_400_not_a_database_error(client, auth, catalogue):
    assert client.get("/api/v1/experiments/a%00b", headers=auth["analyst"]).status_code == 404
    r = client.post("/api/v1/experiments", json={**EXPERIMENT, "hypothesis": "a\u0000b"}, headers=auth["marketing"])
    assert r.status_code == 400 and r.json["error"]["details"][0]["path"] == "$.hypothesis"
    r = client.post("/api/v1/experiments", json={**EXPERIMENT, "target": {"arpu\u0000": 1}}, headers=auth["marketing"])
    assert r.status_code == 400 and r.json["error"]["details"][0]["path"] == "$.target"
    _create(client, auth)
    r = client.patch(URL, json={"name": "x\u0000"}, headers=auth["marketing"])
    assert r.status_code == 400 and r.json["error"]["details"][0]["path"] == "$.name"
    r = client.post(f"{URL}/transition", json={"to": "stopped", "reason": "\u0000"}, headers=auth["marketing"])
    assert r.status_code == 400 and r.json["error"]["details"][0]["path"] == "$.reason"


def test_invalid_target_condition_is_400_naming_the_path(client, auth, db, catalogue):
    bad = {"$or": [{"arpu": {"$gt": 10}}, {"tenure_months": {"$between": [1, 2]}}]}
    r = client.post("/api/v1/experiments", json={**EXPERIMENT, "target": bad}, headers=auth["marketing"])
    assert r.status_code == 400 and r.json["error"]["code"] == "invalid_condition"
    assert r.json["error"]["details"][0]["path"].startswith("$.target.$or[1].tenure_months")
    assert _audit_count(db) == 0

    _create(client, auth)
    r = client.patch(URL, json={"target": bad}, headers=auth["marketing"])
    assert r.status_code == 400 and r.json["error"]["details"][0]["path"].startswith("$.target.$or[1]")

    # Lenient JSON's NaN is no JSON number (PostgreSQL's JSONB refuses it): a 400, never a 500.
    headers = {**auth["marketing"], "Content-Type": "application/json"}
    nan_target = '{"target": {"arpu": {"$in": [1, NaN]}}}'
    r = client.patch(URL, data=nan_target, headers=headers)
    assert r.status_code == 400 and r.json["error"]["code"] == "invalid_json"
    r = client.post("/api/v1/experiments", data='{"key": "k", "name": "n", ' + nan_target[1:], headers=headers)
    assert r.status_code == 400 and r.json["error"]["code"] == "invalid_json"
    r = client.patch(URL, data='{"coverage": Infinity}', headers=headers)
    assert r.status_code == 400 and "Infinity is not a JSON number" in r.json["error"]["message"]


def test_unknown_offer_and_budget_are_400_naming_the_path(client, auth, db, catalogue):
    arms = [{"key": "control"}, {"key": "gift", "offer_code": "NO_SUCH_OFFER"}]
    r = client.post("/api/v1/experiments", json={**EXPERIMENT, "arms": arms}, headers=auth["marketing"])
    assert r.status_code == 400 and r.json["error"]["code"] == "unknown_reference"
    assert r.json["error"]["details"] == [{"path": "$.arms[1].offer_code", "message": "no offer 'NO_SUCH_OFFER'"}]

    r = client.post("/api/v1/experiments", json={**EXPERIMENT, "budget_code": "nope"}, headers=auth["marketing"])
    assert r.status_code == 400 and r.json["error"]["details"][0]["path"] == "$.budget_code"

    client.delete("/api/v1/offers/BILL_CREDIT", headers=auth["marketing"])
    arms = [{"key": "control"}, {"key": "credit", "offer_code": "BILL_CREDIT"}]
    r = client.post("/api/v1/experiments", json={**EXPERIMENT, "arms": arms}, headers=auth["marketing"])
    assert r.status_code == 400 and "inactive" in r.json["error"]["details"][0]["message"]
    assert _audit_count(db) == 0


def test_read_only_fields_cannot_be_patched(client, auth, catalogue):
    _create(client, auth)
    r = client.patch(URL, json={"status": "pilot"}, headers=auth["marketing"])
    assert r.status_code == 400 and r.json["error"]["code"] == "read_only_field"
    assert f"/api/v1/experiments/{KEY}/transition" in r.json["error"]["message"]
    r = client.patch(URL, json={"phase": 2}, headers=auth["marketing"])
    assert r.status_code == 400 and "/phases" in r.json["error"]["message"]
    r = client.patch(URL, json={"key": "renamed"}, headers=auth["marketing"])
    assert r.status_code == 400 and r.json["error"]["code"] == "immutable_field"
    r = client.patch(URL, json={"coverage": "high"}, headers=auth["marketing"])
    assert r.status_code == 400 and r.json["error"]["details"][0]["path"] == "$.coverage"


# --- roles -------------------------------------------------------------------------------


def test_analysts_and_channels_cannot_write(client, auth, db, catalogue):
    _create(client, auth)
    before = _audit_count(db)
    for who in ("analyst", "sms"):
        writes = [
            client.post("/api/v1/experiments", json={**EXPERIMENT, "key": "x"}, headers=auth[who]),
            client.patch(URL, json={"name": "Renamed"}, headers=auth[who]),
            client.post(f"{URL}/transition", json={"to": "pilot"}, headers=auth[who]),
            client.post(f"{URL}/phases", json={"weights": {"control": 1, "night_pack": 1}}, headers=auth[who]),
        ]
        assert [r.status_code for r in writes] == [403] * 4, who
    assert client.get(URL, headers=auth["analyst"]).status_code == 200
    assert client.get(URL, headers=auth["sms"]).status_code == 403
    assert client.get(URL).status_code == 401
    assert _audit_count(db) == before
    assert client.patch(URL, json={"name": "Renamed"}, headers=auth["admin"]).status_code == 200


# --- lifecycle ---------------------------------------------------------------------------


def test_valid_path_draft_pilot_rollout_completed(client, auth, db, catalogue):
    _create(client, auth)
    r = _move(client, auth, "pilot")
    assert r.status_code == 200, r.json
    assert r.json["status"] == "pilot" and r.json["started_at"] is not None
    assert r.json["phases"] == [
        {
            "phase": 1,
            "hash_seed": KEY,
            "coverage": 0.05,
            "weights": [{"arm": "control", "weight": 1.0}, {"arm": "night_pack", "weight": 1.0}],
            "started_at": r.json["started_at"],
        }
    ]
    r = _move(client, auth, "rollout")
    assert r.status_code == 200 and r.json["status"] == "rollout" and r.json["ended_at"] is None
    r = _move(client, auth, "completed")
    assert r.status_code == 200 and r.json["status"] == "completed" and r.json["ended_at"] is not None
    assert r.json["allowed_transitions"] == []

    rows = _audit(db)
    assert [row.action for row in rows] == ["create", "transition", "transition", "transition"]
    assert [(row.before["status"], row.after["status"]) for row in rows[1:]] == [
        ("draft", "pilot"),
        ("pilot", "rollout"),
        ("rollout", "completed"),
    ]
    assert db.scalar(select(func.count()).select_from(ExperimentPhase)) == 1


@pytest.mark.parametrize("start", ["draft", "pilot", "rollout"])
def test_every_live_state_can_stop(client, auth, db, catalogue, start):
    _running(client, auth, start)
    r = client.post(f"{URL}/transition", json={"to": "stopped", "reason": "budget cut"}, headers=auth["marketing"])
    assert r.status_code == 200 and r.json["status"] == "stopped" and r.json["ended_at"]
    assert _audit(db)[-1].after["reason"] == "budget cut"


def test_the_lifecycle_table_is_the_issue_s():
    assert ALLOWED_TRANSITIONS == ALLOWED and set(STATUSES) == set(ALLOWED)


@pytest.mark.parametrize("start, to", [(s, t) for s in ALLOWED for t in ALLOWED if t not in ALLOWED[s]])
def test_every_invalid_transition_is_409_naming_the_allowed_ones(client, auth, db, catalogue, start, to):
    _running(client, auth, start)
    audited = _audit_count(db)
    r = _move(client, auth, to)
    assert r.status_code == 409, r.json
    error = r.json["error"]
    assert error["code"] == "invalid_transition"
    assert error["details"] == {"status": start, "to": to, "allowed": list(ALLOWED[start])}
    for allowed in ALLOWED[start]:
        assert allowed in error["message"]
    if not ALLOWED[start]:
        assert "final" in error["message"]
    assert client.get(URL, headers=auth["analyst"]).json["status"] == start
    assert _audit_count(db) == audited


def test_unknown_target_status_is_400(client, auth, catalogue):
    _create(client, auth)
    r = client.post(f"{URL}/transition", json={"to": "paused"}, headers=auth["marketing"])
    assert r.status_code == 400 and r.json["error"]["details"][0]["path"] == "$.to"
    r = client.post(f"{URL}/transition", json={"to": "pilot", "force": True}, headers=auth["marketing"])
    assert r.status_code == 400 and r.json["error"]["details"][0]["path"] == "$.force"


def test_a_pilot_needs_two_arms_and_one_control(client, auth, db, catalogue):
    _create(client, auth, arms=[{"key": "control"}])
    r = _move(client, auth, "pilot")
    assert r.status_code == 409 and r.json["error"]["code"] == "not_ready" and "two" in r.json["error"]["message"]

    _create(
        client,
        auth,
        key="no-control",
        arms=[{"key": "a", "offer_code": "NIGHT_PACK"}, {"key": "b", "offer_code": "BILL_CREDIT"}],
    )
    r = _move(client, auth, "pilot", key="no-control")
    assert r.status_code == 409 and "control" in r.json["error"]["message"]

    # An offer retired after the draft was written blocks the start too.
    client.delete("/api/v1/offers/NIGHT_PACK", headers=auth["marketing"])
    _create(client, auth, key="retired", arms=[{"key": "control"}, {"key": "credit", "offer_code": "BILL_CREDIT"}])
    client.delete("/api/v1/offers/BILL_CREDIT", headers=auth["marketing"])
    r = _move(client, auth, "pilot", key="retired")
    assert r.status_code == 409 and r.json["error"]["details"][0]["path"] == "$.arms[1].offer_code"
    assert [row.action for row in _audit(db, "retired")] == ["create"]


def test_overlapping_namespace_ranges_cannot_run_together(client, auth, catalogue):
    _running(client, auth, "pilot", namespace="winback", namespace_start=0.0, namespace_end=0.5)
    _create(client, auth, key="overlap", namespace="winback", namespace_start=0.4, namespace_end=1.0)
    r = _move(client, auth, "pilot", key="overlap")
    assert r.status_code == 409 and r.json["error"]["code"] == "namespace_overlap"
    assert KEY in r.json["error"]["message"]
    _create(client, auth, key="disjoint", namespace="winback", namespace_start=0.5, namespace_end=1.0)
    assert _move(client, auth, "pilot", key="disjoint").status_code == 200
    _create(client, auth, key="elsewhere", namespace="birthday", namespace_start=0.0, namespace_end=1.0)
    assert _move(client, auth, "pilot", key="elsewhere").status_code == 200


# --- editing -----------------------------------------------------------------------------


def test_a_draft_is_freely_editable(client, auth, db, catalogue):
    _create(client, auth)
    arms = [
        {"key": "control", "weight": 2},
        {"key": "credit", "offer_code": "BILL_CREDIT"},
        {"key": "night_pack", "offer_code": "NIGHT_PACK"},
    ]
    r = client.patch(
        URL,
        json={
            "arms": arms,
            "hash_seed": "custom",
            "coverage": 0.02,
            "hash_version": 1,
            "promotion_policy": {"mode": "auto"},
        },
        headers=auth["marketing"],
    )
    assert r.status_code == 200, r.json
    assert [(a["key"], a["position"], a["weight"]) for a in r.json["arms"]] == [
        ("control", 0, 2.0),
        ("credit", 1, 1.0),
        ("night_pack", 2, 1.0),
    ]
    assert r.json["hash_seed"] == "custom" and r.json["coverage"] == 0.02 and r.json["hash_version"] == 1
    # promotion_policy is merged over the stored one, not reset to the defaults
    assert r.json["promotion_policy"]["mode"] == "auto" and r.json["promotion_policy"]["min_p_best"] == 0.95

    r = client.patch(URL, json={"arms": [{"key": "control", "weight": 5}, *arms[1:]]}, headers=auth["marketing"])
    assert r.status_code == 200 and r.json["arms"][0]["weight"] == 5.0

    rows = _audit(db)
    assert [row.action for row in rows] == ["create", "update", "update"]
    assert rows[1].before["hash_seed"] == KEY and rows[1].after["hash_seed"] == "custom"
    assert len(rows[1].after["arms"]) == 3

    r = client.patch(URL, json={"hash_seed": None}, headers=auth["marketing"])
    assert r.json["hash_seed"] == KEY  # back to GrowthBook's default: the key


def test_a_patch_that_changes_nothing_writes_no_audit_row(client, auth, db, catalogue):
    _running(client, auth, "pilot")
    r = client.patch(URL, json={"arms": EXPERIMENT["arms"], "name": EXPERIMENT["name"]}, headers=auth["marketing"])
    assert r.status_code == 200, r.json
    assert [row.action for row in _audit(db)] == ["create", "transition"]


def test_editing_weights_of_a_running_experiment_is_409_explaining_phases(client, auth, db, catalogue):
    _running(client, auth, "pilot")
    audited = _audit_count(db)
    arms = [{"key": "control", "weight": 1}, {"key": "night_pack", "offer_code": "NIGHT_PACK", "weight": 3}]
    r = client.patch(URL, json={"arms": arms}, headers=auth["marketing"])
    assert r.status_code == 409
    error = r.json["error"]
    assert error["code"] == "experiment_running"
    assert f"POST /api/v1/experiments/{KEY}/phases" in error["message"]
    assert "re-seeds assignment" in error["message"]
    assert "existing assignments of the old phase stay as they are" in error["message"]
    assert error["details"][0]["path"] == "$.arms"
    assert "arm weights cannot change in place" in error["message"]
    assert _audit_count(db) == audited

    r = client.patch(
        URL, json={"arms": [*arms, {"key": "credit", "offer_code": "BILL_CREDIT"}]}, headers=auth["marketing"]
    )
    assert r.status_code == 409 and "cannot be added, removed" in r.json["error"]["message"]


@pytest.mark.parametrize(
    "change, path",
    [
        ({"hash_seed": "other"}, "$.hash_seed"),
        ({"hash_version": 1}, "$.hash_version"),
        ({"bucket_version": 2}, "$.bucket_version"),
        ({"arms": [{"key": "control"}, {"key": "credit", "offer_code": "BILL_CREDIT"}]}, "$.arms"),
        ({"arms": [{"key": "control"}]}, "$.arms"),
        ({"target": {"arpu": {"$gt": 100}}}, "$.target"),
        ({"namespace": "winback"}, "$.namespace"),
        ({"holdout_share": 0.1}, "$.holdout_share"),
        ({"primary_metric": "retained_d90"}, "$.primary_metric"),
    ],
)
@pytest.mark.parametrize("status", ["pilot", "rollout"])
def test_assignment_and_population_are_frozen_while_running(client, auth, db, catalogue, status, change, path):
    _running(client, auth, status)
    r = client.patch(URL, json=change, headers=auth["marketing"])
    assert r.status_code == 409, r.json
    assert r.json["error"]["code"] == "experiment_running"
    assert [d["path"] for d in r.json["error"]["details"]] == [path]
    if path in ("$.hash_seed", "$.hash_version", "$.bucket_version", "$.arms"):
        assert "/phases" in r.json["error"]["message"]


def test_descriptive_fields_stay_editable_while_running(client, auth, db, catalogue):
    _running(client, auth, "rollout")
    r = client.patch(
        URL,
        json={
            "name": "Win-back Q4 (rollout)",
            "hypothesis": "still true",
            "guardrails": ["complaints"],
            "promotion_policy": {"min_runtime_days": 45},
            "budget_code": None,
        },
        headers=auth["marketing"],
    )
    assert r.status_code == 200, r.json
    assert r.json["guardrails"] == ["complaints"] and r.json["promotion_policy"]["min_runtime_days"] == 45
    assert r.json["budget_code"] is None
    assert _audit(db)[-1].action == "update"


def test_coverage_can_be_raised_but_not_lowered_while_running(client, auth, db, catalogue):
    _running(client, auth, "pilot", coverage=0.2)
    spec_before = experiment_spec(get_experiment(db, KEY))

    r = client.patch(URL, json={"coverage": 0.1}, headers=auth["marketing"])
    assert r.status_code == 409 and r.json["error"]["code"] == "coverage_cannot_decrease"
    assert "strand" in r.json["error"]["message"]

    r = client.patch(URL, json={"coverage": 0.6}, headers=auth["marketing"])
    assert r.status_code == 200 and r.json["coverage"] == 0.6
    row = _audit(db)[-1]
    assert row.action == "update" and (row.before["coverage"], row.after["coverage"]) == (0.2, 0.6)

    db.expire_all()
    spec_after = experiment_spec(get_experiment(db, KEY))
    moved = 0
    for i in range(3000):
        before = assign(spec_before, f"s-{i}")
        if before.in_experiment:
            moved += assign(spec_after, f"s-{i}").arm_key != before.arm_key
    assert moved == 0


def test_an_ended_experiment_keeps_only_its_description_editable(client, auth, catalogue):
    _running(client, auth, "completed")
    r = client.patch(URL, json={"coverage": 0.5}, headers=auth["marketing"])
    assert r.status_code == 409 and r.json["error"]["code"] == "experiment_ended"
    r = client.patch(URL, json={"hypothesis": "confirmed: +2.1 pp retention"}, headers=auth["marketing"])
    assert r.status_code == 200


# --- phases ------------------------------------------------------------------------------


def test_a_new_phase_bumps_phase_and_seed_and_writes_a_phase_row(client, auth, db, catalogue):
    _running(client, auth, "pilot")
    r = client.post(
        f"{URL}/phases",
        json={"weights": {"control": 1, "night_pack": 3}, "reason": "favour treatment"},
        headers=auth["marketing"],
    )
    assert r.status_code == 201, r.json
    assert r.json["phase"] == 2 and r.json["hash_seed"] == f"{KEY}:p2" and r.json["status"] == "pilot"
    assert [(a["key"], a["weight"]) for a in r.json["arms"]] == [("control", 1.0), ("night_pack", 3.0)]
    assert [(p["phase"], p["hash_seed"]) for p in r.json["phases"]] == [(1, KEY), (2, f"{KEY}:p2")]
    assert r.json["phases"][1]["weights"] == [{"arm": "control", "weight": 1.0}, {"arm": "night_pack", "weight": 3.0}]

    row = _audit(db)[-1]
    assert row.action == "start_phase"
    assert row.before["phase"] == 1 and row.before["hash_seed"] == KEY
    assert row.after["phase"] == 2 and row.after["reason"] == "favour treatment"

    spec = experiment_spec(get_experiment(db, KEY))
    assert spec.seed == f"{KEY}:p2" and spec.weights == (0.25, 0.75)

    r = client.post(
        f"{URL}/phases",
        json={"weights": {"control": 1, "night_pack": 1}, "hash_seed": "fresh"},
        headers=auth["marketing"],
    )
    assert r.status_code == 201 and r.json["phase"] == 3 and r.json["hash_seed"] == "fresh"
    assert db.scalar(select(func.count()).select_from(ExperimentPhase)) == 3


def test_phase_requests_are_checked(client, auth, db, catalogue):
    _create(client, auth)
    weights = {"control": 1, "night_pack": 1}
    r = client.post(f"{URL}/phases", json={"weights": weights}, headers=auth["marketing"])
    assert r.status_code == 409 and r.json["error"]["code"] == "experiment_not_running"
    assert "PATCH" in r.json["error"]["message"]

    _move(client, auth, "pilot")
    audited = _audit_count(db)
    r = client.post(f"{URL}/phases", json={"weights": {"control": 1, "other": 1}}, headers=auth["marketing"])
    assert r.status_code == 400 and r.json["error"]["code"] == "invalid_weights"
    assert {"path": "$.weights.other", "message": "no such arm"} in r.json["error"]["details"]
    r = client.post(f"{URL}/phases", json={"weights": {"control": 1, "night_pack": 0}}, headers=auth["marketing"])
    assert r.status_code == 400 and r.json["error"]["code"] == "validation_error"
    r = client.post(f"{URL}/phases", json={"weights": weights, "hash_seed": KEY}, headers=auth["marketing"])
    assert r.status_code == 409 and r.json["error"]["code"] == "seed_reused"
    r = client.post(f"{URL}/phases", json={"weights": "50/50"}, headers=auth["marketing"])
    assert r.status_code == 400 and r.json["error"]["details"][0]["path"] == "$.weights"
    assert _audit_count(db) == audited

    _move(client, auth, "stopped")
    r = client.post(f"{URL}/phases", json={"weights": weights}, headers=auth["marketing"])
    assert r.status_code == 409 and r.json["error"]["code"] == "experiment_not_running"
