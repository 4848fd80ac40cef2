"""Readouts, promotion and the ROI alarm over HTTP.

GET  /api/v1/experiments/<key>/readout            the latest readout (DESIGN §7 shape);
                                                  ?at=ISO-8601: the latest as of then   (every role)
GET  /api/v1/experiments/<key>/readout.csv        the same per arm and per tier × arm, as CSV
GET  /api/v1/experiments/<key>/readouts           the history: id, cutoff, method, verdict
POST /api/v1/experiments/<key>/readouts           compute one now (202 + job id)   (admin, marketing)
POST /api/v1/experiments/<key>/promotion          approve the promotion the latest readout
                                                  allows {"readout_id"?, "reason"?} (admin, marketing)
GET  /api/v1/experiments/<key>/promotions         promotions and alerts            (every role)
POST /api/v1/experiments/<key>/resume-spending    {"reason"} after the ROI alarm    (admin, marketing)
"""

from __future__ import annotations

import csv
import io
from datetime import datetime
from typing import Any

from flask import Blueprint, Response, jsonify, request
from flask.typing import ResponseReturnValue
from pydantic import BaseModel, Field
from sqlalchemy import select

from experiments import promotion, readouts, schemas
from experiments.jobs import enqueue_readout
from experiments.models import RUNNING_STATUSES, Readout
from experiments.service import experiment_json, get_experiment
from infra.auth import CONFIG_READERS, CONFIG_WRITERS, current_principal, require_user
from infra.db import db_session, utcnow
from infra.errors import Conflict
from infra.http import read_json_body, refuse_unknown_query
from infra.jobs_api import JobAccepted, redis_or_503
from infra.openapi import RawBody, api_doc
from infra.queues import job_json
from offers.schemas import Code

bp = Blueprint("readout_api", __name__, url_prefix="/api/v1")
HISTORY_LIMIT = 500
KEY = {"key": Code}


class ReadoutQuery(BaseModel):
    at: datetime | None = Field(
        None, description="ISO-8601 with a UTC offset: the latest readout whose data cutoff is at or before this time"
    )


class ReadoutJobAccepted(JobAccepted):
    """The readout job was queued (or one for the same cutoff is already waiting or running)."""

    data_cutoff: datetime
    poll: str = Field(description="GET this URL for the job's status")


def _only_query(*allowed: str) -> None:
    refuse_unknown_query(allowed, f"it takes {', '.join(allowed)}" if allowed else "it takes none")


def _latest(key: str) -> tuple[Any, Any]:
    _only_query("at")
    session = db_session()
    experiment = get_experiment(session, key)
    readout = readouts.latest_readout(session, experiment, at=readouts.parse_at(request.args.get("at")))
    return experiment, readout


@bp.get("/experiments/<key>/readout")
@api_doc("The latest readout of an experiment", query=ReadoutQuery, path=KEY, responses={200: schemas.ReadoutOut})
@require_user(*CONFIG_READERS)
def get_readout(key: str) -> ResponseReturnValue:
    experiment, readout = _latest(key)
    return jsonify(readouts.readout_json(readout, experiment))


CSV_FIELDS = (
    "tier",
    "arm",
    "is_control",
    "exposed",
    "trials",
    "retained",
    "retention_mean",
    "retention_ci95_low",
    "retention_ci95_high",
    "uplift_mean",
    "uplift_ci95_low",
    "uplift_ci95_high",
    "p_beats_control",
    "p_best",
    "expected_loss",
    "arpu_mean",
    "cost",
    "roi_mean",
    "p_roi_above_floor",
)


def _csv_row(tier: str, arm: dict[str, Any]) -> list[Any]:
    ci = arm.get("retention_ci95") or [None, None]
    uplift = arm.get("uplift_vs_control") or {}
    uplift_ci = uplift.get("ci95") or [None, None]
    values = {
        "tier": tier,
        "arm": arm.get("key"),
        "is_control": arm.get("is_control"),
        "retention_ci95_low": ci[0],
        "retention_ci95_high": ci[1],
        "uplift_mean": uplift.get("mean"),
        "uplift_ci95_low": uplift_ci[0],
        "uplift_ci95_high": uplift_ci[1],
    }
    return [values[name] if name in values else arm.get(name) for name in CSV_FIELDS]


@bp.get("/experiments/<key>/readout.csv")
@api_doc(
    "The latest readout as CSV (per arm, then per tier × arm)",
    query=ReadoutQuery,
    path=KEY,
    responses={
        200: RawBody(
            ("text/csv",), 'one row per arm (tier "all") and per tier × arm; columns: ' + ", ".join(CSV_FIELDS)
        )
    },
)
@require_user(*CONFIG_READERS)
def get_readout_csv(key: str) -> ResponseReturnValue:
    experiment, readout = _latest(key)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_FIELDS)
    for arm in readout.results.get("arms", []):
        writer.writerow(_csv_row("all", arm))
    for tier in readout.results.get("tiers", []):
        for arm in tier.get("arms", []):
            writer.writerow(_csv_row(tier.get("tier") or "(none)", arm))
    name = f"{experiment.key}-readout-{readout.data_cutoff.strftime('%Y%m%dT%H%M')}.csv"
    return Response(
        out.getvalue(), mimetype="text/csv", headers={"Content-Disposition": f'attachment; filename="{name}"'}
    )


@bp.get("/experiments/<key>/readouts")
@api_doc("The readout history of an experiment", path=KEY, responses={200: schemas.ReadoutHistoryOut})
@require_user(*CONFIG_READERS)
def list_readouts(key: str) -> ResponseReturnValue:
    _only_query()
    session = db_session()
    experiment = get_experiment(session, key)
    rows = session.scalars(
        select(Readout)
        .where(Readout.experiment_id == experiment.id)
        .order_by(Readout.data_cutoff.desc(), Readout.id.desc())
        .limit(HISTORY_LIMIT)
    )
    return jsonify(
        {
            "items": [
                {
                    "readout_id": r.id,
                    "data_cutoff": r.data_cutoff.isoformat(),
                    "computed_at": r.computed_at.isoformat(),
                    "method": r.method,
                    "model_version": r.model_version,
                    "status_at_readout": r.status_at_readout,
                    "eligible": r.eligible,
                    "error": r.error_code,
                    "blocked_by": r.results["promotion"]["blocked_by"],
                    "arms": [
                        {"key": a.get("key"), "retention_mean": a.get("retention_mean"), "p_best": a.get("p_best")}
                        for a in r.results.get("arms", [])
                    ],
                }
                for r in rows
            ]
        }
    )


@bp.post("/experiments/<key>/readouts")
@api_doc(
    "Compute a readout now (queued)",
    path=KEY,
    responses={202: ReadoutJobAccepted},
    errors={409: "the experiment is a draft", 503: None},
)
@require_user(*CONFIG_WRITERS)
def start_readout(key: str) -> ResponseReturnValue:
    _only_query()
    experiment = get_experiment(db_session(), key)
    if experiment.status == "draft":
        raise Conflict(
            f"experiment {key!r} is a draft: nothing to read out until its pilot starts", code="experiment_not_started"
        )
    cutoff = utcnow().replace(microsecond=0)
    job, created = enqueue_readout(redis_or_503(), experiment.key, cutoff)
    return jsonify(
        {"job": job_json(job), "created": created, "data_cutoff": cutoff.isoformat(), "poll": f"/api/v1/jobs/{job.id}"}
    ), 202


@bp.post("/experiments/<key>/promotion")
@api_doc(
    "Approve the promotion the latest readout allows",
    body=schemas.ApprovalIn,
    path=KEY,
    responses={201: schemas.ApprovalOut},
)
@require_user(*CONFIG_WRITERS)
def approve_promotion(key: str) -> ResponseReturnValue:
    body = read_json_body(schemas.ApprovalIn)
    session = db_session()
    row = promotion.approve_promotion(
        session, key, actor=current_principal().actor, readout_id=body.readout_id, reason=body.reason
    )
    session.commit()
    experiment = get_experiment(session, key)
    return jsonify(
        {
            "promotion": promotion.promotions_json(session, experiment)[-1],
            "promotion_id": row.id,
            "experiment": experiment_json(experiment),
        }
    ), 201


@bp.get("/experiments/<key>/promotions")
@api_doc("Promotions and alerts of an experiment", path=KEY, responses={200: schemas.PromotionsOut})
@require_user(*CONFIG_READERS)
def list_promotions(key: str) -> ResponseReturnValue:
    _only_query()
    session = db_session()
    experiment = get_experiment(session, key)
    return jsonify(
        {
            "promotions": promotion.promotions_json(session, experiment),
            "alerts": promotion.alerts_json(session, experiment),
            "spending_paused": experiment.spending_paused,
            "running": experiment.status in RUNNING_STATUSES,
        }
    )


@bp.post("/experiments/<key>/resume-spending")
@api_doc(
    "Resume spending after the ROI alarm",
    body=schemas.ResumeSpendingIn,
    path=KEY,
    responses={200: schemas.ExperimentOut},
)
@require_user(*CONFIG_WRITERS)
def resume_spending(key: str) -> ResponseReturnValue:
    body = read_json_body(schemas.ResumeSpendingIn)
    session = db_session()
    experiment = promotion.resume_spending(session, key, actor=current_principal().actor, reason=body.reason)
    session.commit()
    return jsonify(experiment_json(experiment))
