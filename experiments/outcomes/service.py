"""The outcome use cases: record one outcome (``record_outcome``), import many
(``import_outcomes``)."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import datetime
from functools import partial
from typing import Any, NamedTuple

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from experiments.exposures import find_exposure
from experiments.models import Experiment, Outcome
from experiments.outcomes.parsing import OutcomeRowParser
from experiments.outcomes.resolving import DecisionExposures, ExposureResolver, by_decision, finish_row, not_exposed
from experiments.outcomes.schemas import OutcomeIn, OutcomeRow
from experiments.outcomes.writing import latest_per_key, postgres_upsert_batch, write_outcome_rows
from experiments.service import get_experiment
from infra.bulk_import import BulkImport, ImportFormat, ImportReport, run_import
from infra.db import utcnow
from infra.errors import ApiError, BadRequest, NotFound


class RecordedOutcome(NamedTuple):
    """The stored row — which keeps a newer report's values if one was stored before — with
    the experiment and subscriber it belongs to, and whether this call created it."""

    outcome: Outcome
    experiment: Experiment
    subscriber_id: str
    created: bool


def record_outcome(
    session: Session, data: OutcomeIn, *, now: datetime, decision_exposures: DecisionExposures
) -> RecordedOutcome:
    """Record one outcome (upsert, never commits), named by experiment and subscriber or by
    decision id. 404 for an unknown decision id or experiment and for a subscriber never
    exposed; 400 for an ``occurred_at`` the exposure rules out."""
    if data.decision_id is not None:
        named = by_decision(data, decision_exposures(session, [data.decision_id]))
        if isinstance(named, ApiError):
            raise named
        data = data.model_copy(update={"experiment": named[0], "subscriber_id": named[1]})
    assert data.experiment is not None and data.subscriber_id is not None  # the schema checks it
    experiment = get_experiment(session, data.experiment)
    exposure = find_exposure(session, experiment.id, data.subscriber_id)
    if exposure is None:
        raise NotFound(not_exposed(experiment.key, data.subscriber_id), code="not_exposed")
    row = finish_row(data, exposure.id, exposure.first_exposed_at, now)
    if isinstance(row, str):
        raise BadRequest(row, code="invalid_outcome", details=[{"path": "$.occurred_at", "message": row}])
    created = _stored(session, row) is None
    write_outcome_rows(session, [row], now)
    session.flush()
    stored = _stored(session, row)
    assert stored is not None
    session.refresh(stored)
    return RecordedOutcome(stored, experiment, data.subscriber_id, created)


def _stored(session: Session, row: OutcomeRow) -> Outcome | None:
    assignment_id, type_, day = row.key
    return session.scalar(
        select(Outcome).where(
            Outcome.assignment_id == assignment_id,
            Outcome.type == type_,
            Outcome.day_key == (-1 if day is None else day),
        )
    )


def outcome_json(outcome: Outcome, experiment_key: str, subscriber_id: str) -> dict[str, Any]:
    """A stored outcome as the API returns it."""
    return {
        "id": outcome.id,
        "experiment": experiment_key,
        "subscriber_id": subscriber_id,
        "decision_id": outcome.decision_id,
        "type": outcome.type,
        "value": outcome.value,
        "day_n": outcome.day_n,
        "occurred_at": outcome.occurred_at.isoformat(),
        "received_at": outcome.received_at.isoformat(),
    }


def _latest(rows: list[OutcomeRow]) -> Collection[OutcomeRow]:
    return latest_per_key(rows).values()


def import_outcomes(
    session_factory: sessionmaker[Session],
    lines: Iterable[str],
    fmt: ImportFormat,
    *,
    batch_rows: int,
    max_listed_errors: int,
    actor: str,
    decision_exposures: DecisionExposures,
    now: datetime | None = None,
) -> ImportReport:
    """Upsert every good outcome of ``lines`` (CSV with a header row, or JSON lines); report
    the bad ones by line number (``infra.bulk_import.run_import``; audit entity "outcomes").

    Each batch's exposures are looked up in one query per experiment, decision ids through
    ``decision_exposures``. ``accepted`` counts the rows that passed every check; ``written``
    the rows stored once duplicates within a batch collapsed to the latest report. Raises
    BadRequest for an empty body or a bad CSV header (nothing is written then) and
    PayloadTooLarge when a LineReader passes its byte limit (the rows before it are kept and
    audited).
    """
    received_at = now or utcnow()
    kind = BulkImport(
        entity_type="outcomes",
        parser=OutcomeRowParser(),
        resolve=ExposureResolver(decision_exposures, received_at).resolve,
        keep_latest=_latest,
        write_rows=partial(write_outcome_rows, received_at=received_at),
        postgres_statement=partial(postgres_upsert_batch, received_at=received_at),
    )
    return run_import(
        session_factory, lines, fmt, kind, batch_rows=batch_rows, max_listed_errors=max_listed_errors, actor=actor
    )
