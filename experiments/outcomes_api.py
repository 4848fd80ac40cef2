"""Exposures, outcomes and experiment statistics over HTTP.

    POST /api/v1/experiments/<key>/exposures  {"subscriber_id", "channel"?} → the subscriber's
                                              arm; 201 when this call recorded the first
                                              exposure, 200 otherwise           (channels; admin, marketing)
    POST /api/v1/outcomes                     one outcome: {"experiment", "subscriber_id", "type",
                                              "value"?, "occurred_at", "day_n"?} or {"decision_id", …};
                                              201 new, 200 updated             (channels; admin, marketing)
    POST /api/v1/outcomes/bulk                CSV (text/csv, header row) or JSON lines
                                              (application/x-ndjson, application/jsonl) →
                                              {"accepted", "rejected": [{"line", "error"}],
                                               "rejected_count", "rejected_truncated", "import_id",
                                               "format"}                        (channels; admin, marketing)
    GET  /api/v1/experiments/<key>/stats      sufficient statistics per arm (and holdout) and
                                              per arm × tier                    (every role)

The exposures endpoint is for channels that run an experiment themselves; the decision API
exposes subscribers as part of each decision. Rules for outcomes: ``experiments.outcomes``.
"""

from __future__ import annotations

import functools
from datetime import datetime

from flask import Blueprint, Flask, current_app, jsonify
from flask.typing import ResponseReturnValue
from pydantic import Field

from experiments.exposures import expose_if_targeted
from experiments.outcomes import (
    DecisionExposures,
    OutcomeIn,
    OutcomeType,
    SubscriberId,
    import_outcomes,
    outcome_json,
    record_outcome,
)
from experiments.schemas import ExperimentStatsOut
from experiments.service import get_experiment
from experiments.stats_sql import experiment_stats
from infra.auth import CONFIG_READERS, CONFIG_WRITERS, current_principal, require_channel_or_user, require_user
from infra.bulk_import.source import import_request_body, upload_body_doc
from infra.db import db_session, utcnow
from infra.errors import Forbidden
from infra.http import StrictModel, read_json_body, refuse_unknown_query
from infra.openapi import ResponseModel, api_doc
from offers.models import Subscriber
from offers.schemas import Channel, Code, ImportReportOut

bp = Blueprint("outcomes_api", __name__, url_prefix="/api/v1")

_DECISION_EXPOSURES = "carepilot.decision_exposures"


def use_decision_exposures(app: Flask, lookup: DecisionExposures) -> None:
    """Give this app's outcome endpoints the decision ledger's lookup of decision ids (the
    composition root passes ``decisioning.repository.decision_exposures``)."""
    app.extensions[_DECISION_EXPOSURES] = lookup


def _decision_exposures() -> DecisionExposures:
    lookup: DecisionExposures = current_app.extensions[_DECISION_EXPOSURES]  # set by use_decision_exposures
    return lookup


class ExposureIn(StrictModel):
    subscriber_id: SubscriberId
    channel: Channel | None = None  # a channel key's own channel when omitted


class ExposureOut(ResponseModel):
    """Where the subscriber stands in the experiment. ``reason``: assigned or holdout for a recorded
    exposure (``new``: this call recorded it), else why they are not in it (not_targeted, …)."""

    experiment: str
    subscriber_id: str
    arm: str | None
    in_experiment: bool
    in_holdout: bool
    reason: str
    new: bool
    phase: int | None
    tier: str | None
    channel: str | None
    first_exposed_at: datetime | None


class OutcomeOut(ResponseModel):
    """The stored outcome."""

    id: int = Field(ge=1)
    experiment: str
    subscriber_id: str
    decision_id: str | None
    type: OutcomeType
    value: float | None
    day_n: int | None
    occurred_at: datetime
    received_at: datetime


BULK_OUTCOMES = upload_body_doc(
    "UTF-8. The fields of POST /api/v1/outcomes: a CSV header row naming them, or one JSON object per line."
)


@bp.post("/experiments/<key>/exposures")
@api_doc(
    "Expose a subscriber to a running experiment",
    body=ExposureIn,
    path={"key": Code},
    responses={200: ExposureOut, 201: ExposureOut},
    tags=("experiments",),
)
@require_channel_or_user(*CONFIG_WRITERS)
def post_exposure(key: str) -> ResponseReturnValue:
    """Expose a subscriber to a running experiment and answer with their (sticky) arm."""
    body = read_json_body(ExposureIn)
    subscriber_id = body.subscriber_id
    principal = current_principal()
    channel: str | None = body.channel
    if principal.kind == "channel":
        if channel is not None and channel != principal.channel:
            raise Forbidden(
                f"this key belongs to channel {principal.channel}; it cannot record exposures for {channel}",
                code="channel_mismatch",
            )
        channel = principal.channel
    session = db_session()
    experiment = get_experiment(session, key)
    profile = session.get(Subscriber, subscriber_id)
    result = expose_if_targeted(
        session,
        experiment,
        subscriber_id,
        attributes=profile.attributes if profile else {},
        tier=profile.tier if profile else None,
        channel=channel,
        now=utcnow(),
    )
    session.commit()
    return jsonify(result.as_json()), 201 if result.new else 200


@bp.post("/outcomes")
@api_doc(
    "Report one outcome",
    body=OutcomeIn,
    responses={200: OutcomeOut, 201: OutcomeOut},
    errors={404: "no such experiment, decision or exposure"},
)
@require_channel_or_user(*CONFIG_WRITERS)
def post_outcome() -> ResponseReturnValue:
    """Record one outcome; re-sending it updates the same row."""
    data = read_json_body(OutcomeIn)
    session = db_session()
    recorded = record_outcome(session, data, now=utcnow(), decision_exposures=_decision_exposures())
    session.commit()
    body = outcome_json(recorded.outcome, recorded.experiment.key, recorded.subscriber_id)
    return jsonify(body), 201 if recorded.created else 200


@bp.post("/outcomes/bulk")
@api_doc("Report many outcomes (CSV or JSON lines)", raw_body=BULK_OUTCOMES, responses={200: ImportReportOut})
@require_channel_or_user(*CONFIG_WRITERS)
def bulk_outcomes() -> ResponseReturnValue:
    """Stream a CSV or JSON-lines body of outcomes in; report bad rows by line."""
    importer = functools.partial(import_outcomes, decision_exposures=_decision_exposures())
    return jsonify(import_request_body(importer, what="the outcomes").as_json())


@bp.get("/experiments/<key>/stats")
@api_doc("Sufficient statistics of an experiment", path={"key": Code}, responses={200: ExperimentStatsOut})
@require_user(*CONFIG_READERS)
def get_stats(key: str) -> ResponseReturnValue:
    """Exposed, matured, retained and churned at the primary metric day, revenue sums,
    complaints and channel events, per arm and per arm × tier (``experiments.stats_sql``)."""
    refuse_unknown_query((), "this endpoint takes none")
    session = db_session()
    experiment = get_experiment(session, key)
    out = experiment_stats(session, experiment).as_json()
    out["status"] = experiment.status
    return jsonify(out)
