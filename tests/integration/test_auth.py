"""Who may call what: users by role, channels by key, sessions with CSRF."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from infra.audit import AuditEntry
from infra.auth_models import ApiKey
from tests.conftest import make_user

OFFER = {"code": "CARE_SMS", "name": "Care SMS", "unit_cost": 0.05, "channels": ["sms"]}


def test_no_key_is_401(client):
    r = client.get("/api/v1/offers")
    assert r.status_code == 401 and r.json["error"]["code"] == "authentication_required"


@pytest.mark.parametrize("header", ["Bearer cpk_nope", "Basic abc", "Bearer "])
def test_bad_key_is_401(client, header):
    assert client.get("/api/v1/offers", headers={"Authorization": header}).status_code == 401


def test_analyst_reads_but_cannot_write(client, auth):
    assert client.get("/api/v1/offers", headers=auth["analyst"]).status_code == 200
    r = client.post("/api/v1/offers", json=OFFER, headers=auth["analyst"])
    assert r.status_code == 403 and r.json["error"]["code"] == "role_forbidden"


def test_channel_key_cannot_touch_config(client, auth):
    r = client.get("/api/v1/offers", headers=auth["sms"])
    assert r.status_code == 403 and r.json["error"]["code"] == "wrong_key_kind"


def test_only_admins_manage_users_and_keys(client, auth):
    assert client.get("/api/v1/users", headers=auth["marketing"]).status_code == 403
    assert client.get("/api/v1/users", headers=auth["admin"]).status_code == 200


def test_channel_key_is_shown_once_stored_hashed_and_revocable(client, auth, db):
    r = client.post("/api/v1/api-keys", json={"name": "SMS gateway", "channel": "sms"}, headers=auth["admin"])
    assert r.status_code == 201
    raw, key_id = r.json["key"], r.json["api_key"]["id"]
    stored = db.get(ApiKey, key_id)
    assert raw not in (stored.key_hash, stored.prefix) and len(stored.key_hash) == 64
    assert "key" not in client.get("/api/v1/api-keys", headers=auth["admin"]).json["items"][0]
    me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {raw}"}).json
    assert me == {"kind": "channel", "name": "SMS gateway", "role": None, "channel": "sms"}
    assert client.delete(f"/api/v1/api-keys/{key_id}", headers=auth["admin"]).status_code == 200
    assert client.get("/api/v1/me", headers={"Authorization": f"Bearer {raw}"}).status_code == 401
    actions = db.scalars(
        select(AuditEntry.action).where(AuditEntry.entity_type == "api_key", AuditEntry.entity_key == str(key_id))
    )
    assert list(actions) == ["create", "revoke"]


def test_admin_creates_user_who_gets_a_personal_key(client, auth, db):
    body = {"email": "Ana@Example.test", "role": "marketing", "password": "long enough pw"}
    r = client.post("/api/v1/users", json=body, headers=auth["admin"])
    assert r.status_code == 201 and r.json["email"] == "ana@example.test"
    assert client.post("/api/v1/users", json=body, headers=auth["admin"]).status_code == 409
    assert client.post("/api/v1/users", json={**body, "password": "short"}, headers=auth["admin"]).status_code == 400
    r = client.post("/api/v1/auth/tokens", json={"email": "ana@example.test", "password": "long enough pw"})
    assert r.status_code == 201
    me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {r.json['key']}"}).json
    assert me["role"] == "marketing"
    r = client.post("/api/v1/auth/tokens", json={"email": "ana@example.test", "password": "wrong password"})
    assert r.status_code == 401


def test_session_login_requires_csrf_for_writes(client, db, password):
    make_user(db, "marketing", "m@example.test")
    db.commit()
    r = client.post("/api/v1/auth/login", json={"email": "m@example.test", "password": password})
    assert r.status_code == 200
    token = r.json["csrf_token"]
    assert client.get("/api/v1/offers").status_code == 200
    r = client.post("/api/v1/offers", json=OFFER)
    assert r.status_code == 403 and r.json["error"]["code"] == "csrf_failed"
    r = client.post("/api/v1/offers", json=OFFER, headers={"X-CSRF-Token": token})
    assert r.status_code == 201
    client.post("/api/v1/auth/logout")
    assert client.get("/api/v1/offers").status_code == 401


def test_wrong_password_is_401_without_saying_which(client, db):
    make_user(db, "analyst", "a@example.test")
    db.commit()
    wrong = client.post("/api/v1/auth/login", json={"email": "a@example.test", "password": "nope"})
    unknown = client.post("/api/v1/auth/login", json={"email": "z@example.test", "password": "nope"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json == unknown.json


def test_health_and_readiness(client):
    assert client.get("/healthz").json == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json["checks"] == {"database": "ok", "redis": "ok"}


def test_method_not_allowed_uses_the_envelope(client, auth):
    r = client.put("/api/v1/offers", json={}, headers=auth["admin"])
    assert r.status_code == 405 and r.json["error"]["code"] == "method_not_allowed"


def test_a_password_hashed_with_the_default_argon2_profile_verifies_under_the_tests_cheap_one():
    """The suite hashes with a cheap argon2 profile; each hash carries its own parameters."""
    from argon2 import PasswordHasher

    from infra.auth import verify_password

    stored = PasswordHasher().hash("correct horse")  # production's default profile
    assert verify_password(stored, "correct horse")
    assert not verify_password(stored, "wrong horse")
