"""JSON admin API for the catalogue: offers, tier schemes, tiers, tier policies, contact
policies, budgets and risk-level policies. Every kind gets the same five routes:

    GET    /api/v1/<kind>            list (active only unless ?include_inactive=true; filters)
    POST   /api/v1/<kind>            create                       (admin, marketing)
    GET    /api/v1/<kind>/<key>      one
    PATCH  /api/v1/<kind>/<key>      partial update               (admin, marketing)
    DELETE /api/v1/<kind>/<key>      deactivate (soft)            (admin, marketing)
"""

from __future__ import annotations

from typing import Annotated, Any

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue
from pydantic import BaseModel, Field, create_model
from sqlalchemy.orm import Session

from infra.auth import CONFIG_READERS, CONFIG_WRITERS, current_principal, require_user
from infra.db import db_session
from infra.http import MAX_ID, parse_row_id, read_json_body, read_json_object, refuse_unknown_query, refuse_unstorable
from infra.jobs_api import JobAccepted, redis_or_503
from infra.openapi import api_doc
from infra.queues import enqueue_unique, job_json
from offers import catalogue, schemas
from offers.config_service import (
    ConfigKind,
    create_config,
    deactivate_config,
    entity_json,
    get_config,
    list_config,
    update_config,
)
from offers.jobs import RETIER_JOB_ID, retier_subscribers_job
from offers.repository import base_revenue_per_month, load_tier_assigner

bp = Blueprint("offers_api", __name__, url_prefix="/api/v1")
MONTHS_PER_PERIOD = {"month": 1, "quarter": 3, "year": 12}


def present(session: Session, kind: ConfigKind[Any], entities: list[Any]) -> list[dict[str, Any]]:
    """Rows as JSON; budgets also show their cap in money (``effective_cap_amount``)."""
    rows = [entity_json(e) for e in entities]
    if kind is catalogue.BUDGETS:
        needs_revenue = any(r["cap_share_of_revenue"] is not None for r in rows)
        revenue = base_revenue_per_month(session) if needs_revenue else 0.0
        for row in rows:
            share = row["cap_share_of_revenue"]
            row["effective_cap_amount"] = (
                row["cap_amount"] if share is None else round(share * revenue * MONTHS_PER_PERIOD[row["period"]], 2)
            )
    return rows


def _parse_key(kind: ConfigKind[Any], key: str) -> str | int:
    return parse_row_id(key, f"a {kind.entity_type} id") if kind.key_field == "id" else key


# What each kind's routes answer with, for the OpenAPI document: (one row, a list of rows).
RESPONSE_MODELS: dict[str, tuple[type[BaseModel], type[BaseModel]]] = {
    "offer": (schemas.OfferOut, schemas.OfferList),
    "tier_scheme": (schemas.TierSchemeOut, schemas.TierSchemeList),
    "tier": (schemas.TierOut, schemas.TierList),
    "tier_policy": (schemas.TierPolicyOut, schemas.TierPolicyList),
    "contact_policy": (schemas.ContactPolicyOut, schemas.ContactPolicyList),
    "budget": (schemas.BudgetOut, schemas.BudgetList),
    "risk_policy": (schemas.RiskPolicyOut, schemas.RiskPolicyList),
}
KEY_TYPES: dict[str, Any] = {
    "id": Annotated[int, Field(ge=1, le=MAX_ID)],
    "channel": schemas.Channel,
    "code": schemas.Code,
}


def _list_query(kind: ConfigKind[Any]) -> type[BaseModel]:
    """The list route's query parameters (the handler refuses any other)."""
    fields: dict[str, Any] = {
        "include_inactive": (bool, Field(False, description="also list deactivated rows (true, 1 or yes)"))
    }
    for column in kind.filters:
        fields[column] = (str | None, Field(None, description=f"only rows whose {column} equals this"))
    name = "".join(part.title() for part in kind.entity_type.split("_"))
    return create_model(f"{name}ListQuery", **fields)


def _document(kind: ConfigKind[Any], views: dict[str, Any]) -> None:
    """Attach the OpenAPI annotations of one kind's five routes."""
    one, many = RESPONSE_MODELS[kind.entity_type]
    what = kind.entity_type.replace("_", " ")
    path = {"key": KEY_TYPES[kind.key_field]}
    tags = (kind.path,)
    api_doc(f"List {what}s", query=_list_query(kind), responses={200: many}, tags=tags)(views["list"])
    article = "an" if what[0] in "aeiou" else "a"
    api_doc(f"Create {article} {what}", body=kind.schema, responses={201: one}, tags=tags)(views["create"])
    api_doc(f"Get one {what}", path=path, responses={200: one}, tags=tags)(views["get"])
    api_doc(
        f"Edit {article} {what}",
        description="Send only the fields to change; the merged object must still be valid.",
        body=kind.schema,
        partial=True,
        path=path,
        responses={200: one},
        tags=tags,
    )(views["patch"])
    api_doc(
        f"Deactivate {article} {what}",
        description="A soft delete: the row stays for the audit log and past decisions, but stops applying.",
        path=path,
        responses={200: one},
        tags=tags,
    )(views["deactivate"])


def _register(kind: ConfigKind[Any]) -> None:
    base = f"/{kind.path}"
    item = f"/{kind.path}/<key>"

    @require_user(*CONFIG_READERS)
    def list_view() -> ResponseReturnValue:
        refuse_unknown_query((*kind.filters, "include_inactive"), f"filters: {', '.join(kind.filters) or 'none'}")
        refuse_unstorable(dict(request.args), "$query")  # PostgreSQL text cannot hold NUL
        include_inactive = request.args.get("include_inactive", "false").lower() in ("1", "true", "yes")
        filters = {k: request.args[k] for k in kind.filters if k in request.args}
        s = db_session()
        entities = list_config(s, kind, include_inactive=include_inactive, filters=filters)
        return jsonify({"items": present(s, kind, entities)})

    @require_user(*CONFIG_WRITERS)
    def create_view() -> ResponseReturnValue:
        data = read_json_body(kind.schema)
        s = db_session()
        entity = create_config(s, kind, data, actor=current_principal().actor)
        s.commit()
        return jsonify(present(s, kind, [entity])[0]), 201

    @require_user(*CONFIG_READERS)
    def get_view(key: str) -> ResponseReturnValue:
        s = db_session()
        return jsonify(present(s, kind, [get_config(s, kind, _parse_key(kind, key))])[0])

    @require_user(*CONFIG_WRITERS)
    def patch_view(key: str) -> ResponseReturnValue:
        patch = read_json_object()
        s = db_session()
        entity = update_config(s, kind, _parse_key(kind, key), patch, actor=current_principal().actor)
        s.commit()
        return jsonify(present(s, kind, [entity])[0])

    @require_user(*CONFIG_WRITERS)
    def deactivate_view(key: str) -> ResponseReturnValue:
        s = db_session()
        entity = deactivate_config(s, kind, _parse_key(kind, key), actor=current_principal().actor)
        s.commit()
        return jsonify(present(s, kind, [entity])[0])

    _document(
        kind,
        {"list": list_view, "create": create_view, "get": get_view, "patch": patch_view, "deactivate": deactivate_view},
    )
    name = kind.entity_type
    bp.add_url_rule(base, f"{name}_list", list_view, methods=["GET"])
    bp.add_url_rule(base, f"{name}_create", create_view, methods=["POST"])
    bp.add_url_rule(item, f"{name}_get", get_view, methods=["GET"])
    bp.add_url_rule(item, f"{name}_patch", patch_view, methods=["PATCH"])
    bp.add_url_rule(item, f"{name}_deactivate", deactivate_view, methods=["DELETE"])


for _kind in catalogue.CONFIG_KINDS:
    _register(_kind)


@bp.post("/tiers/preview")
@api_doc("Preview the tier of a profile", body=schemas.ProfileIn, responses={200: schemas.TierPreviewOut})
@require_user(*CONFIG_READERS)
def preview_tier() -> ResponseReturnValue:
    """Which tier would this profile get? The primary tier and the tier in every scheme."""
    body = read_json_body(schemas.ProfileIn)
    result = load_tier_assigner(db_session()).assign(body.attributes)
    return jsonify({"tier": result.tier, "by_scheme": result.by_scheme})


@bp.post("/tier-schemes/<code>/order")
@api_doc(
    "Re-rank a scheme's tiers", body=schemas.TierOrderIn, path={"code": schemas.Code}, responses={200: schemas.TierList}
)
@require_user(*CONFIG_WRITERS)
def reorder_tiers(code: str) -> ResponseReturnValue:
    """Re-rank a scheme's tiers in one audited step: {"tiers": ["vip", "value", ...]}."""
    body = read_json_body(schemas.TierOrderIn)
    s = db_session()
    tiers = catalogue.reorder_scheme(s, code, body.tiers, actor=current_principal().actor)
    s.commit()
    return jsonify({"items": [entity_json(t) for t in tiers]})


@bp.post("/subscribers/retier")
@api_doc("Queue a re-tiering of every subscriber", responses={202: JobAccepted}, errors={503: None})
@require_user(*CONFIG_WRITERS)
def retier_subscribers() -> ResponseReturnValue:
    """Queue a re-tiering of the whole base (after tier rules change); 202 with the job."""
    job, created = enqueue_unique(redis_or_503(), retier_subscribers_job, job_id=RETIER_JOB_ID, timeout_s=3600)
    return jsonify({"job": job_json(job), "created": created}), 202
