"""HTTP endpoints for logging in, personal keys, users, channel keys and the audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from flask import Blueprint, jsonify, request, session
from flask.typing import ResponseReturnValue
from pydantic import BaseModel, Field
from sqlalchemy import select

from infra.audit import audit_json, list_audit
from infra.auth import (
    CONFIG_READERS,
    api_key_json,
    authenticate_password,
    create_api_key,
    create_user,
    csrf_token,
    current_principal,
    require_user,
    revoke_api_key,
    user_json,
)
from infra.auth_models import ApiKey, User
from infra.db import db_session
from infra.errors import BadRequest, Unauthorized
from infra.http import MAX_ID, StrictModel, parse_row_id, read_json_body, refuse_unstorable
from infra.openapi import ResponseModel, api_doc

bp = Blueprint("auth_api", __name__, url_prefix="/api/v1")


class LoginBody(StrictModel):
    email: str = Field(min_length=3, max_length=254)
    password: str = Field(min_length=1, max_length=1000)


class TokenBody(LoginBody):
    name: str = Field(default="personal key", min_length=1, max_length=200)


class NewUserBody(StrictModel):
    email: str = Field(min_length=3, max_length=254)
    name: str = Field(default="", max_length=200)
    role: Literal["admin", "marketing", "analyst"]
    password: str = Field(min_length=10, max_length=1000)


class NewKeyBody(StrictModel):
    name: str = Field(min_length=1, max_length=200)
    channel: Literal["sms", "app", "call_centre", "retail"]


class UserOut(ResponseModel):
    id: int = Field(ge=1)
    email: str
    name: str
    role: Literal["admin", "marketing", "analyst"]
    active: bool


class UserList(ResponseModel):
    items: list[UserOut]


class LoginOut(ResponseModel):
    """Logged in: the session cookie is set; send csrf_token as X-CSRF-Token on every write."""

    user: UserOut
    csrf_token: str


class LogoutOut(ResponseModel):
    logged_out: Literal[True]


class ApiKeyOut(ResponseModel):
    """An API key's public facts (never its secret)."""

    id: int = Field(ge=1)
    name: str
    kind: Literal["channel", "user"]
    channel: Literal["sms", "app", "call_centre", "retail"] | None
    user_id: int | None
    prefix: str = Field(description="the key's first characters, to recognise it")
    created_by: str
    created_at: datetime | None
    revoked_at: datetime | None


class ApiKeyList(ResponseModel):
    items: list[ApiKeyOut]


class IssuedKeyOut(ResponseModel):
    """A new key: ``key`` is the secret, shown in this response only."""

    key: str
    api_key: ApiKeyOut
    note: str


class MeOut(ResponseModel):
    """Who the credentials belong to."""

    kind: Literal["user", "channel"]
    name: str
    role: Literal["admin", "marketing", "analyst"] | None
    channel: Literal["sms", "app", "call_centre", "retail"] | None


class AuditEntryOut(ResponseModel):
    id: int = Field(ge=1)
    occurred_at: datetime
    actor: str
    action: str
    entity_type: str
    entity_key: str
    before: Any
    after: Any


class AuditList(ResponseModel):
    """Audit entries, newest first."""

    items: list[AuditEntryOut]


class AuditQuery(BaseModel):
    entity_type: str | None = Field(None, description="e.g. offer, tier, experiment, api_key")
    entity_key: str | None = Field(None, description="the entity's key (code, id…)")
    limit: int = Field(100, ge=1, le=500, description="page size")
    before_id: int | None = Field(None, ge=1, le=MAX_ID, description="entries older than this id (paging)")


@bp.post("/auth/login")
@api_doc(
    "Log in (session cookie)",
    body=LoginBody,
    responses={200: LoginOut},
    public=True,
    errors={401: "wrong email or password"},
)
def login() -> ResponseReturnValue:
    """Start an admin session (cookie). Returns the CSRF token that unsafe requests must send."""
    body = read_json_body(LoginBody)
    user = authenticate_password(db_session(), body.email, body.password)
    if user is None:
        raise Unauthorized("wrong email or password", code="invalid_credentials")
    session.clear()
    session["user_id"] = user.id
    return jsonify({"user": user_json(user), "csrf_token": csrf_token()})


@bp.post("/auth/logout")
@api_doc("Log out (end the session)", responses={200: LogoutOut}, public=True)
def logout() -> ResponseReturnValue:
    session.clear()
    return jsonify({"logged_out": True})


def _issued_key(key: ApiKey, raw: str) -> ResponseReturnValue:
    """The 201 of a new key: its secret, shown this once (only its hash is stored)."""
    return jsonify({"key": raw, "api_key": api_key_json(key), "note": "store this key now: it is not shown again"}), 201


@bp.post("/auth/tokens")
@api_doc(
    "Get a personal bearer key for scripts",
    body=TokenBody,
    responses={201: IssuedKeyOut},
    public=True,
    errors={401: "wrong email or password"},
)
def issue_personal_key() -> ResponseReturnValue:
    """Exchange email + password for a personal bearer key (shown once) for scripts."""
    body = read_json_body(TokenBody)
    s = db_session()
    user = authenticate_password(s, body.email, body.password)
    if user is None:
        raise Unauthorized("wrong email or password", code="invalid_credentials")
    key, raw = create_api_key(s, name=body.name, user=user, actor=f"user:{user.email}")
    s.commit()
    return _issued_key(key, raw)


@bp.get("/me")
@api_doc("Who am I", responses={200: MeOut}, tags=("auth",))
def me() -> ResponseReturnValue:
    p = current_principal()
    return jsonify({"kind": p.kind, "name": p.name, "role": p.role, "channel": p.channel})


@bp.get("/users")
@api_doc("List users", responses={200: UserList})
@require_user("admin")
def list_users() -> ResponseReturnValue:
    users = db_session().scalars(select(User).order_by(User.id))
    return jsonify({"items": [user_json(u) for u in users]})


@bp.post("/users")
@api_doc("Add a user", body=NewUserBody, responses={201: UserOut})
@require_user("admin")
def add_user() -> ResponseReturnValue:
    body = read_json_body(NewUserBody)
    s = db_session()
    user = create_user(
        s, email=body.email, name=body.name, role=body.role, password=body.password, actor=current_principal().actor
    )
    s.commit()
    return jsonify(user_json(user)), 201


@bp.get("/api-keys")
@api_doc("List API keys", responses={200: ApiKeyList})
@require_user("admin")
def list_keys() -> ResponseReturnValue:
    keys = db_session().scalars(select(ApiKey).order_by(ApiKey.id))
    return jsonify({"items": [api_key_json(k) for k in keys]})


@bp.post("/api-keys")
@api_doc("Create a channel key", body=NewKeyBody, responses={201: IssuedKeyOut})
@require_user("admin")
def add_channel_key() -> ResponseReturnValue:
    """Create a channel key; the secret is in this response only."""
    body = read_json_body(NewKeyBody)
    s = db_session()
    key, raw = create_api_key(s, name=body.name, channel=body.channel, actor=current_principal().actor)
    s.commit()
    return _issued_key(key, raw)


@bp.delete("/api-keys/<key_id>")
@api_doc("Revoke an API key", path={"key_id": Annotated[int, Field(ge=1, le=MAX_ID)]}, responses={200: ApiKeyOut})
@require_user("admin")
def revoke_key(key_id: str) -> ResponseReturnValue:
    s = db_session()
    key = revoke_api_key(s, parse_row_id(key_id, "an API key id"), actor=current_principal().actor)
    s.commit()
    return jsonify(api_key_json(key))


@bp.get("/audit")
@api_doc("The audit log", query=AuditQuery, responses={200: AuditList})
@require_user(*CONFIG_READERS)
def audit_log() -> ResponseReturnValue:
    """Newest first. Filters: entity_type, entity_key; paging: limit (≤ 500), before_id."""
    refuse_unstorable(dict(request.args), "$query")  # PostgreSQL text cannot hold NUL
    limit_text = request.args.get("limit", "100")
    if not (limit_text.isascii() and limit_text.isdigit()):  # "²".isdigit() is true, int("²") fails
        raise BadRequest("limit must be a whole number between 1 and 500", code="invalid_query")
    limit = int(limit_text)
    before_id = parse_row_id(request.args["before_id"], "before_id") if "before_id" in request.args else None
    if not 1 <= limit <= 500:
        raise BadRequest("limit must be between 1 and 500", code="invalid_query")
    entries = list_audit(
        db_session(),
        entity_type=request.args.get("entity_type"),
        entity_key=request.args.get("entity_key"),
        limit=limit,
        before_id=before_id,
    )
    return jsonify({"items": [audit_json(e) for e in entries]})
