"""The decision API (DESIGN §6–7): one call per contact, or a batch for outbound campaigns.

    POST /api/v1/decisions        {"subscriber_id", "channel", "request_id"?, "context"?}
                                  optional header Idempotency-Key        (channel keys; admin, marketing)
    POST /api/v1/decisions/bulk   {"contacts": [...]} up to 10,000 → {"decisions": [...]} in order
    GET  /api/v1/decisions/<id>   the stored decision with its explanation   (channels; every role)

Single decisions arriving together in one process are decided together (``decisioning.batcher``):
each request still gets its own answer or error. A channel key decides for its own channel
only. Same request id + same body → the stored
decision (``replayed: true``); same request id + another body → 409. Redis down → answers
with ``degraded: true`` and no paid action; never a 500. Rate limit per API key: 429.
"""

from __future__ import annotations

from typing import Any

import orjson
from flask import Blueprint, Response, current_app, jsonify, request
from flask.typing import ResponseReturnValue

from decisioning import schemas
from decisioning.batcher import DecisionBatcher
from decisioning.service import DecisionContext, decide_contacts, decision_json, get_decision
from decisioning.snapshot_cache import SnapshotCache
from infra.auth import CONFIG_READERS, CONFIG_WRITERS, Principal, current_principal, require_channel_or_user
from infra.bulk_import import cyclic_gc_paused
from infra.db import db_session, get_database, rollback_request_session
from infra.errors import BadRequest, Forbidden, NotFound
from infra.http import read_json_body
from infra.openapi import api_doc
from infra.redis_conn import connect_redis

bp = Blueprint("decisions_api", __name__, url_prefix="/api/v1")
IDEMPOTENCY_HEADER = "Idempotency-Key"
# printable ASCII without spaces or commas: a proxy (gunicorn among them) joins repeated headers with ","
IDEMPOTENCY_KEY_SCHEMA = {"type": "string", "minLength": 1, "maxLength": 128, "pattern": "^[\\x21-\\x2b\\x2d-\\x7e]+$"}
# the errors every deciding endpoint may answer besides its own 409
_DECIDING_ERRORS = {429: "more decisions per second than this key may make", 503: "the decision store is down"}


def _idempotency_header(description: str) -> dict[str, tuple[str, dict[str, Any]]]:
    """The documented Idempotency-Key header of a deciding endpoint."""
    return {IDEMPOTENCY_HEADER: (description, IDEMPOTENCY_KEY_SCHEMA)}


def decision_context() -> DecisionContext:
    """This app's decision context (built on first use: engine, hot-path Redis, snapshot cache)."""
    ext = current_app.extensions
    if ext.get("carepilot.decisions") is None:
        settings = current_app.config["CAREPILOT_SETTINGS"]
        ext["carepilot.decisions"] = DecisionContext(
            get_database().sessionmaker,
            connect_redis(settings, hot_path=True),
            SnapshotCache(),
            deadline_ms=settings.decision_deadline_ms,
        )
    return ext["carepilot.decisions"]


def _caller(principal: Principal) -> str:
    return f"key:{principal.key_id}" if principal.key_id is not None else f"user:{principal.user_id}"


def _check_channel(principal: Principal, channels: set[str]) -> None:
    if principal.kind == "channel" and channels - {principal.channel}:
        other = sorted(channels - {principal.channel})
        raise Forbidden(
            f"this key belongs to the {principal.channel} channel; it cannot decide for {', '.join(other)}",
            code="channel_forbidden",
        )


def _json(body: dict[str, Any]) -> Response:
    """The answer encoded with orjson (the hot path; a bulk answer holds 10,000 decisions)."""
    return Response(orjson.dumps(body), status=200, mimetype="application/json")


def _idempotency_key() -> str | None:
    keys = request.headers.getlist(IDEMPOTENCY_HEADER)
    if not keys:
        return None
    if len(keys) > 1:
        raise BadRequest(f"send one {IDEMPOTENCY_HEADER} header, not {len(keys)}", code="invalid_header")
    key = keys[0]
    if not 1 <= len(key) <= 128 or not key.isascii() or not key.isprintable() or " " in key or "," in key:
        raise BadRequest(
            f"{IDEMPOTENCY_HEADER} must be one value of 1–128 printable ASCII characters without spaces or commas",
            code="invalid_header",
        )
    return key


@bp.post("/decisions")
@api_doc(
    "Decide the next best care action for one contact",
    body=schemas.DecisionIn,
    responses={200: schemas.DecisionOut},
    errors={409: "the request id (or Idempotency-Key) was used before with another body", **_DECIDING_ERRORS},
    headers=_idempotency_header(
        "a retry with the same key and body gets the stored decision; 1–128 "
        "printable ASCII characters, no spaces or commas"
    ),
)
@require_channel_or_user(*CONFIG_WRITERS)
def create_decision() -> ResponseReturnValue:
    body = read_json_body(schemas.DecisionIn)
    principal = current_principal()
    _check_channel(principal, {body.channel})
    idempotency_key = _idempotency_key()
    if idempotency_key and body.request_id and idempotency_key != body.request_id:
        raise BadRequest(
            f"{IDEMPOTENCY_HEADER} and request_id differ; send one of them, or the same value",
            code="idempotency_mismatch",
        )
    rollback_request_session()  # the key is read; the store writes on connections of its own
    ctx = decision_context()
    if ctx.batcher is None:
        ctx.batcher = DecisionBatcher(ctx)
    answer = ctx.batcher.decide(
        _caller(principal),
        body,
        idempotency_key=idempotency_key,
        rate_limit_per_s=current_app.config["CAREPILOT_SETTINGS"].decision_rate_limit_per_s,
    )
    return _json(answer)


@bp.post("/decisions/bulk")
@api_doc(
    "Decide for up to 10,000 contacts of an outbound batch, answered in order",
    body=schemas.BulkDecisionsIn,
    responses={200: schemas.BulkDecisionsOut},
    errors={409: "a request id repeats in the batch or was used before with another body", **_DECIDING_ERRORS},
    headers=_idempotency_header(
        "covers the whole call: the same key and body replay it, another body "
        "is a 409; each contact gets <key>#<index>, so contacts must not carry "
        "request ids of their own as well (a 400)"
    ),
)
@require_channel_or_user(*CONFIG_WRITERS)
def create_decisions_bulk() -> ResponseReturnValue:
    settings = current_app.config["CAREPILOT_SETTINGS"]
    # 10,000 contacts allocate a few million objects, none in a reference cycle: the cyclic
    # collector would walk them over and over for nothing (about a tenth of the call). They
    # are freed before it resumes, or its first collection would walk every one of them
    # (30–60 ms with the process's other requests waiting).
    with cyclic_gc_paused():
        body = read_json_body(schemas.BulkDecisionsIn, limit_bytes=settings.max_bulk_decision_bytes)
        principal = current_principal()
        _check_channel(principal, {contact.channel for contact in body.contacts})
        rollback_request_session()  # as for one decision
        ctx = decision_context()
        caller = _caller(principal)
        answers = decide_contacts(
            ctx,
            caller,
            body.contacts,
            idempotency_key=_idempotency_key(),
            rate_limit_per_s=settings.decision_rate_limit_per_s,
            bulk=True,
        )
        response = _json({"decisions": answers})
        del body, answers
    return response


@bp.get("/decisions/<decision_id>")
@api_doc("A stored decision with its explanation", responses={200: schemas.StoredDecisionOut})
@require_channel_or_user(*CONFIG_READERS)
def read_decision(decision_id: str) -> ResponseReturnValue:
    if not (len(decision_id) == 32 and all(ch in "0123456789abcdef" for ch in decision_id)):
        raise NotFound(f"no decision {decision_id!r}", code="decision_not_found")
    decision = get_decision(db_session(), decision_id)
    principal = current_principal()
    if decision is None or (principal.kind == "channel" and decision.channel != principal.channel):
        raise NotFound(f"no decision {decision_id!r}", code="decision_not_found")
    return jsonify(decision_json(decision))
