"""Subscriber profiles over HTTP.

    PUT  /api/v1/subscribers/<id>    {"attributes": {...}} → the stored profile with its tiers;
                                     201 when the profile was created, 200 when replaced
    GET  /api/v1/subscribers/<id>    the stored profile, or 404
    POST /api/v1/subscribers/bulk    CSV (text/csv, header row with subscriber_id) or JSON lines
                                     (application/x-ndjson, application/jsonl) →
                                     {"accepted", "rejected": [{"line", "error"}], "rejected_count",
                                      "rejected_truncated", "import_id", "format"}

PUT replaces the whole profile (attributes absent from the body are removed), as a re-import
does. Writes take a channel key or the role admin or marketing; reads any authenticated caller.
"""

from __future__ import annotations

from typing import Annotated, Any

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue
from pydantic import Field

from infra.auth import CONFIG_READERS, CONFIG_WRITERS, require_channel_or_user
from infra.bulk_import.source import import_request_body, upload_body_doc
from infra.db import db_session
from infra.errors import BadRequest
from infra.http import StrictModel, read_json_body
from infra.openapi import api_doc
from offers.models import Subscriber
from offers.repository import load_tier_assigner
from offers.schemas import ImportReportOut, ProfileOut
from offers.subscriber_attributes import SUBSCRIBER_ID_MAX_LENGTH, ProfileError, validate_subscriber_id
from offers.subscriber_import import import_subscribers
from offers.subscribers_service import get_profile, profile_json, upsert_profile

bp = Blueprint("subscribers_api", __name__, url_prefix="/api/v1/subscribers")


class ProfileBody(StrictModel):
    attributes: dict[str, Any] = Field(description="flat attributes; typed ones are checked")


SubscriberIdPath = Annotated[
    str,
    Field(
        min_length=1,
        max_length=SUBSCRIBER_ID_MAX_LENGTH,
        description="text without control characters or surrounding spaces",
    ),
]


def _subscriber_id(raw: str) -> str:
    try:
        return validate_subscriber_id(raw)
    except ProfileError as exc:
        raise BadRequest(exc.message, code="invalid_subscriber_id") from None


@bp.put("/<subscriber_id>")
@api_doc(
    "Create or replace a subscriber profile",
    body=ProfileBody,
    path={"subscriber_id": SubscriberIdPath},
    responses={200: ProfileOut, 201: ProfileOut},
)
@require_channel_or_user(*CONFIG_WRITERS)
def put_subscriber(subscriber_id: str) -> ResponseReturnValue:
    """Create or replace one profile; its tiers are computed with the current tier rules."""
    sid = _subscriber_id(subscriber_id)
    body = read_json_body(ProfileBody)
    session = db_session()
    created = session.get(Subscriber, sid) is None  # only for the status code: the write is an upsert
    try:
        subscriber = upsert_profile(session, sid, body.attributes, load_tier_assigner(session))
    except ProfileError as exc:
        path = f"$.attributes.{exc.attribute}" if exc.attribute else "$.attributes"
        raise BadRequest(
            "the profile is not valid", code="invalid_attributes", details=[{"path": path, "message": exc.message}]
        ) from None
    session.commit()
    return jsonify(profile_json(subscriber)), 201 if created else 200


@bp.get("/<subscriber_id>")
@api_doc("Get a subscriber profile", path={"subscriber_id": SubscriberIdPath}, responses={200: ProfileOut})
@require_channel_or_user(*CONFIG_READERS)
def get_subscriber(subscriber_id: str) -> ResponseReturnValue:
    """The stored profile with its tiers."""
    return jsonify(profile_json(get_profile(db_session(), _subscriber_id(subscriber_id))))


@bp.post("/bulk")
@api_doc(
    "Import many subscriber profiles (CSV or JSON lines)",
    raw_body=upload_body_doc(
        "UTF-8. CSV: a header row with subscriber_id and one column per attribute. "
        'JSON lines: one {"subscriber_id", "attributes"} object per line.'
    ),
    responses={200: ImportReportOut},
)
@require_channel_or_user(*CONFIG_WRITERS)
def bulk_import() -> ResponseReturnValue:
    """Stream a CSV or JSON-lines body into the profile store; report bad rows by line."""
    return jsonify(import_request_body(import_subscribers, what="the profiles").as_json())
