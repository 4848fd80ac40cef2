"""JSON API for experiments: create, edit and move them through their lifecycle.

    GET   /api/v1/experiments                    list (?status=pilot)          (every role)
    POST  /api/v1/experiments                    create a draft with its arms  (admin, marketing)
    GET   /api/v1/experiments/<key>              one, with its phase history   (every role)
    PATCH /api/v1/experiments/<key>              partial edit                  (admin, marketing)
    POST  /api/v1/experiments/<key>/transition   {"to": "pilot"}               (admin, marketing)
    POST  /api/v1/experiments/<key>/phases       {"weights": {...}}            (admin, marketing)

Every write is audited in the same transaction as the change.
"""

from __future__ import annotations

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue
from pydantic import BaseModel, Field

from experiments import schemas, service
from experiments.models import STATUSES
from infra.auth import CONFIG_READERS, CONFIG_WRITERS, current_principal, require_user
from infra.db import db_session
from infra.errors import BadRequest
from infra.http import read_json_body, read_json_object, refuse_unknown_query
from infra.openapi import api_doc
from offers.schemas import Code

bp = Blueprint("experiments_api", __name__, url_prefix="/api/v1")
KEY = {"key": Code}


class ExperimentListQuery(BaseModel):
    status: schemas.Status | None = Field(None, description="only experiments in this status")


@bp.get("/experiments")
@api_doc("List experiments", query=ExperimentListQuery, responses={200: schemas.ExperimentList})
@require_user(*CONFIG_READERS)
def list_experiments() -> ResponseReturnValue:
    refuse_unknown_query(("status",), "filters: status")
    status = request.args.get("status")
    if status is not None and status not in STATUSES:
        raise BadRequest(f"unknown status {status!r}; use one of {', '.join(STATUSES)}", code="invalid_query")
    experiments = service.list_experiments(db_session(), status=status)
    return jsonify({"items": [service.experiment_json(e) for e in experiments]})


@bp.post("/experiments")
@api_doc(
    "Create a draft experiment with its arms", body=schemas.ExperimentIn, responses={201: schemas.ExperimentDetailOut}
)
@require_user(*CONFIG_WRITERS)
def create_experiment() -> ResponseReturnValue:
    data = read_json_body(schemas.ExperimentIn)
    s = db_session()
    experiment = service.create_experiment(s, data, actor=current_principal().actor)
    s.commit()
    return jsonify(service.experiment_json(experiment, with_phases=True)), 201


@bp.get("/experiments/<key>")
@api_doc("Get an experiment with its phase history", path=KEY, responses={200: schemas.ExperimentDetailOut})
@require_user(*CONFIG_READERS)
def get_experiment(key: str) -> ResponseReturnValue:
    experiment = service.get_experiment(db_session(), key)
    return jsonify(service.experiment_json(experiment, with_phases=True))


@bp.patch("/experiments/<key>")
@api_doc(
    "Edit an experiment",
    description="Send only the fields to change. ``arms`` replaces the whole list; "
    "``promotion_policy`` is merged over the stored policy. A running experiment keeps its split and "
    "population frozen (409 experiment_running): start a new phase instead.",
    body=schemas.ExperimentIn,
    partial=True,
    path=KEY,
    responses={200: schemas.ExperimentDetailOut},
)
@require_user(*CONFIG_WRITERS)
def patch_experiment(key: str) -> ResponseReturnValue:
    patch = read_json_object()
    s = db_session()
    experiment = service.update_experiment(s, key, patch, actor=current_principal().actor)
    s.commit()
    return jsonify(service.experiment_json(experiment, with_phases=True))


@bp.post("/experiments/<key>/transition")
@api_doc(
    "Move an experiment through its lifecycle",
    description="draft → pilot → rollout → completed, and draft | pilot | rollout → stopped.",
    body=schemas.TransitionIn,
    path=KEY,
    responses={200: schemas.ExperimentDetailOut},
)
@require_user(*CONFIG_WRITERS)
def transition_experiment(key: str) -> ResponseReturnValue:
    body = read_json_body(schemas.TransitionIn)
    s = db_session()
    experiment = service.transition_experiment(s, key, body.to, actor=current_principal().actor, reason=body.reason)
    s.commit()
    return jsonify(service.experiment_json(experiment, with_phases=True))


@bp.post("/experiments/<key>/phases")
@api_doc(
    "Start a new phase (new weights, re-seeded split)",
    body=schemas.PhaseIn,
    path=KEY,
    responses={201: schemas.ExperimentDetailOut},
)
@require_user(*CONFIG_WRITERS)
def start_phase(key: str) -> ResponseReturnValue:
    body = read_json_body(schemas.PhaseIn)
    s = db_session()
    experiment = service.start_phase(s, key, body, actor=current_principal().actor)
    s.commit()
    return jsonify(service.experiment_json(experiment, with_phases=True)), 201
