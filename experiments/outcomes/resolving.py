"""Which exposure an outcome belongs to, and whether it may be one of its outcomes.

An outcome names its exposure by experiment key + subscriber id, or by decision id, which the
decision ledger resolves (``DecisionExposures``). ``finish_row`` applies the exposure's rules
(no outcome before the first exposure or in the future; ``day_n`` from the first exposure).
A bulk batch is resolved by ``ExposureResolver``: one query per experiment in the batch,
never one per row.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from experiments.models import DAY_N_OUTCOME_TYPES, Experiment, Exposure
from experiments.outcomes.schemas import CLOCK_SKEW, OutcomeFields, OutcomeIn, OutcomeRow
from infra.bulk_import import Reject
from infra.errors import ApiError, Conflict, NotFound
from infra.sql_dialect import is_postgresql, psycopg_connection

NOT_IN_EXPERIMENT = (
    "that decision was not part of an experiment, and outcomes feed experiment "
    "readouts; report outcomes of experiment decisions, or by experiment and subscriber_id"
)

# decision id → (experiment key or None, subscriber id), for the decisions that exist. The
# decisions table belongs to the decision ledger above this package, so the caller hands its
# lookup in (``decisioning.repository.decision_exposures``, wired by the composition root).
DecisionExposures = Callable[[Session, Collection[str]], Mapping[str, tuple[str | None, str]]]


def unknown_decision(decision_id: str) -> str:
    return f"unknown decision id {decision_id!r}"


def decision_not_in_experiment(decision_id: str) -> str:
    return f"decision {decision_id!r}: {NOT_IN_EXPERIMENT}"


def not_exposed(experiment_key: str, subscriber_id: str) -> str:
    return (
        f"subscriber {subscriber_id!r} was never exposed to experiment {experiment_key!r}; "
        f"only exposed subscribers have outcomes"
    )


def by_decision(
    data: OutcomeFields | OutcomeIn, known: Mapping[str, tuple[str | None, str]]
) -> tuple[str, str] | ApiError:
    """(experiment, subscriber id) of an outcome reported by decision id, or the error."""
    assert data.decision_id is not None
    decision = known.get(data.decision_id)
    if decision is None:
        return NotFound(unknown_decision(data.decision_id), code="unknown_decision")
    key, subscriber_id = decision
    if key is None:
        return Conflict(decision_not_in_experiment(data.decision_id), code="decision_not_in_experiment")
    if (data.experiment not in (None, key)) or (data.subscriber_id not in (None, subscriber_id)):
        return Conflict(
            f"decision {data.decision_id!r} is for experiment {key!r} and subscriber "
            f"{subscriber_id!r}, not the ones given",
            code="decision_mismatch",
        )
    return key, subscriber_id


def finish_row(
    data: OutcomeIn | OutcomeFields, assignment_id: int, first_exposed_at: datetime, now: datetime
) -> OutcomeRow | str:
    """The row to write for ``data`` against its exposure, or why it cannot be written."""
    occurred_at = data.occurred_at.astimezone(UTC)
    if occurred_at > now + CLOCK_SKEW:
        return f"occurred_at {occurred_at.isoformat()} is in the future"
    if occurred_at < first_exposed_at - CLOCK_SKEW:
        return (
            f"occurred_at {occurred_at.isoformat()} is before the subscriber's first exposure to "
            f"{data.experiment!r} ({first_exposed_at.isoformat()}); an earlier event cannot be "
            f"an outcome of the experiment"
        )
    day_n = data.day_n
    if day_n is None and data.type in DAY_N_OUTCOME_TYPES:
        day_n = max(0, (occurred_at - first_exposed_at).days)
    return OutcomeRow(assignment_id, data.type, data.value, day_n, occurred_at)


Record = tuple[int, OutcomeFields]  # (line number, validated outcome)


class ExposureResolver:
    """Exposure ids and first-exposure times for a batch: one query per experiment in it."""

    def __init__(self, decision_exposures: DecisionExposures, now: datetime) -> None:
        self._experiment_ids: dict[str, int | None] = {}
        self._decision_exposures = decision_exposures
        self._now = now

    def _experiments(self, session: Session, keys: Iterable[str]) -> None:
        unknown = set(keys) - self._experiment_ids.keys()
        if unknown:
            found = dict(
                session.execute(select(Experiment.key, Experiment.id).where(Experiment.key.in_(unknown))).all()
            )
            for key in unknown:
                self._experiment_ids[key] = found.get(key)

    def resolve(self, session: Session, records: list[Record], reject: Reject) -> list[OutcomeRow]:
        """The writable rows of ``records``; the others go to ``reject``."""
        by_decision_ids = [data.decision_id for _, data in records if data.decision_id is not None]
        if by_decision_ids:  # resolve decision ids to (experiment, subscriber) first
            known = self._decision_exposures(session, set(by_decision_ids))
            resolved: list[Record] = []
            for line_no, data in records:
                if data.decision_id is not None:
                    named = by_decision(data, known)
                    if isinstance(named, ApiError):
                        reject(line_no, named.message)
                        continue
                    data = data._replace(experiment=named[0], subscriber_id=named[1], decision_id=None)
                resolved.append((line_no, data))
            records = resolved
        # From here every record names its exposure by experiment and subscriber id: the schema
        # requires both without a decision id, and the decision ids were resolved above. Typed
        # locals rather than a check per row (thousands of rows per batch).
        wanted: dict[str, set[str]] = {}  # experiment key → subscriber ids
        for _, data in records:
            if data.decision_id is None:
                key: str = data.experiment  # type: ignore[assignment]  # set: see above
                subscriber_id: str = data.subscriber_id  # type: ignore[assignment]  # set: see above
                sids = wanted.get(key)
                if sids is None:
                    sids = wanted[key] = set()
                sids.add(subscriber_id)
        self._experiments(session, wanted)
        # experiment key → {subscriber id: (subscriber id, exposure id, first exposure)}, or
        # None for an unknown experiment
        exposures: dict[str, dict[str, Any] | None] = {}
        for key, sids in wanted.items():
            experiment_id = self._experiment_ids[key]
            exposures[key] = None if experiment_id is None else _exposures_of(session, experiment_id, sids)
        rows: list[OutcomeRow] = []
        append, now = rows.append, self._now
        for line_no, data in records:
            key = data.experiment  # type: ignore[assignment]  # set: see above
            exposed = exposures[key]
            if exposed is None:
                reject(line_no, f"no experiment {key!r}")
                continue
            subscriber_id = data.subscriber_id  # type: ignore[assignment]  # set: see above
            exposure = exposed.get(subscriber_id)
            if exposure is None:
                reject(line_no, not_exposed(key, subscriber_id))
                continue
            row = finish_row(data, exposure[1], exposure[2], now)
            if isinstance(row, str):
                reject(line_no, row)
            else:
                append(row)
        return rows


_PG_EXPOSURES = (
    "SELECT subscriber_id, id, first_exposed_at FROM assignments "
    "WHERE experiment_id = %s AND subscriber_id = ANY(%s::text[])"
)


def _pg_text_array(items: Collection[str]) -> str:
    """A PostgreSQL array literal of ``items``, each quoted (so ``NULL``, commas, braces and
    spaces stay text)."""
    if not items:
        return "{}"
    body = '","'.join(items)
    # Each separator brings two quotes; more mean an item holds one, which needs escaping
    if "\\" in body or body.count('"') != 2 * (len(items) - 1):
        body = '","'.join(item.replace("\\", "\\\\").replace('"', '\\"') for item in items)
    return '{"' + body + '"}'


def _exposures_of(session: Session, experiment_id: int, subscriber_ids: set[str]) -> dict[str, Any]:
    """subscriber id → (subscriber id, exposure id, first exposure) for those of
    ``subscriber_ids`` exposed."""
    found: Sequence[Sequence[Any]]  # (subscriber id, exposure id, first exposure): driver rows or Rows
    if is_postgresql(session):
        # One array literal for the whole batch, rows straight from the driver: at thousands
        # of ids per batch, SQLAlchemy's per-value binding and result processing would cost
        # more than the lookups themselves. Binary rows: no time text to format and parse.
        cursor = psycopg_connection(session).cursor()
        try:
            cursor.execute(_PG_EXPOSURES, (experiment_id, _pg_text_array(subscriber_ids)), binary=True)
            found = cursor.fetchall()
        finally:
            cursor.close()
    else:
        found = session.execute(
            select(Exposure.subscriber_id, Exposure.id, Exposure.first_exposed_at).where(
                Exposure.experiment_id == experiment_id, Exposure.subscriber_id.in_(subscriber_ids)
            )
        ).all()
    return {row[0]: row for row in found}
