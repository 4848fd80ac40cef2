"""Outcomes: what happened after an exposure — recorded singly or streamed in bulk.

An outcome names its exposure by experiment key + subscriber id (how billing reports), or by
decision id (how channels will report once the decision API exists: until then every decision
id is unknown and refused, since no decision ledger exists to look it up in).

Rules, the same for single and bulk outcomes:

* ``type`` is one of ``OUTCOME_TYPES``. ``value`` is required for ``revenue`` (any finite
  number; refunds may be negative) and optional otherwise.
* ``occurred_at`` is ISO-8601 with a time zone (``Z`` or ``+08:00``), stored in UTC. It may not
  be more than ``CLOCK_SKEW`` before the subscriber's first exposure (such an event cannot be
  caused by the experiment) or after the time of ingest.
* ``day_n`` belongs to ``retained`` (a status check on that day after the first exposure) and
  ``churned`` (the day the subscriber left). When it is not given it is the whole days
  between the first exposure and ``occurred_at``. Send it explicitly for scheduled checks
  ("retained at day 30"), whose run time may drift.
* Idempotent: one row per (exposure, ``retained``, day) and per (exposure, other type);
  re-sending updates the row, and the report with the latest ``occurred_at`` wins (ties: the
  last received), so replaying an old file cannot undo a correction. Within one bulk body
  the same rule picks among duplicates.
* An outcome for a subscriber never exposed to the experiment is refused.

Bulk bodies are CSV (header row naming the fields) or JSON lines with the same fields, read
as a stream (``infra.bulk_import``): bad rows are reported by line and the good ones kept,
each batch committed on its own. A CSV row whose cells have their plain forms is validated
by a hand-written fast path that gives ``OutcomeIn``'s answer at half the cost; any other row
by ``OutcomeIn`` itself. Exposures are resolved one query per batch and experiment, never per
row. On PostgreSQL each batch is then written by one statement sent without waiting, so the
server writes batch N while Python parses batch N+1 (and, on a second pooled connection,
resolves it). Measured with ``bench/ingest_outcomes.py`` (2 vCPUs shared with the server):
1,000,000 CSV rows in 11–12 s, 85–93k rows/s, peak RSS flat at ~106 MB, on an otherwise
idle host; per run ~5.5 s of Python CPU and ~13.5 s of PostgreSQL CPU, so another job busy
on one of the two vCPUs brings it down to ~45–48k rows/s.
"""

from __future__ import annotations

import gc
import logging
import re
import struct
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import chain, repeat
from operator import itemgetter
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import (
    AfterValidator,
    AwareDatetime,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from sqlalchemy import Connection, select
from sqlalchemy.orm import Session, sessionmaker

from experiments.exposures import find_exposure
from experiments.models import DAY_N_OUTCOME_TYPES, OUTCOME_TYPES, Experiment, Exposure, Outcome
from experiments.service import get_experiment
from infra.bulk_import import (
    ImportFormat,
    ImportReport,
    ImportTooLarge,
    LineReader,
    PostgresPipeline,
    audit_import,
    csv_records,
    cyclic_gc_paused,
    jsonl_lines,
)
from infra.db import utcnow
from infra.errors import ApiError, BadRequest, Conflict, NotFound, PayloadTooLarge
from infra.http import StrictModel
from infra.sql_dialect import upsert
from offers.schemas import Code
from offers.subscriber_attributes import ProfileError, validate_subscriber_id

log = logging.getLogger(__name__)

CLOCK_SKEW = timedelta(minutes=5)  # systems' clocks disagree a little; more is a data error
MAX_DAY_N = 3650
MAX_ABS_VALUE = 1e12
OUTCOMES = Outcome.__table__
NOT_IN_EXPERIMENT = (
    "that decision was not part of an experiment, and outcomes feed experiment "
    "readouts; report outcomes of experiment decisions, or by experiment and subscriber_id"
)


def _valid_subscriber_id(value: str) -> str:
    try:
        return validate_subscriber_id(value)
    except ProfileError as exc:
        raise ValueError(exc.message) from None


def _utc_moment(text: str) -> datetime:
    """``text`` (ISO-8601) as a time in UTC, or as a naive time when it names no time zone
    (``AwareDatetime`` then refuses it with pydantic's own message). ValueError when it is not
    ISO-8601 or has no UTC equivalent."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            "occurred_at must be an ISO-8601 date and time with a time zone, e.g. 2025-06-01T10:00:00Z"
        ) from None
    if moment.tzinfo is None:
        return moment
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 has no UTC equivalent
        raise ValueError("occurred_at is out of range") from None


OutcomeType = Literal[OUTCOME_TYPES]  # type: ignore[valid-type]
DecisionId = Annotated[str, Field(min_length=1, max_length=64)]
# the profile store's rules: 1–64 characters once surrounding spaces are stripped, no control or
# formatting characters (the schema states the length; the rest is the validator's)
SubscriberId = Annotated[
    str, AfterValidator(_valid_subscriber_id), Field(json_schema_extra={"minLength": 1, "maxLength": 64})
]


class OutcomeIn(StrictModel):
    """One reported outcome (the body of ``POST /api/v1/outcomes``, a line of a bulk body)."""

    experiment: Code | None = None
    subscriber_id: SubscriberId | None = None
    decision_id: DecisionId | None = None
    type: OutcomeType
    value: float | None = Field(None, ge=-MAX_ABS_VALUE, le=MAX_ABS_VALUE, allow_inf_nan=False)
    occurred_at: AwareDatetime
    day_n: int | None = Field(None, ge=0, le=MAX_DAY_N)

    @field_validator("occurred_at", mode="before")
    @classmethod
    def _iso_8601(cls, value: Any) -> Any:
        # Parsed here: pydantic would also read "1700000000" as a Unix time, which a feed
        # sending it surely did not mean
        return _utc_moment(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _consistent(self) -> OutcomeIn:
        if self.decision_id is None and (self.experiment is None or self.subscriber_id is None):
            raise ValueError("name the exposure: experiment and subscriber_id, or decision_id")
        if self.type == "revenue" and self.value is None:
            raise ValueError("a revenue outcome needs a value")
        if self.day_n is not None and self.type not in DAY_N_OUTCOME_TYPES:
            raise ValueError(f"day_n belongs to retained and churned outcomes, not {self.type}")
        return self


FIELDS = tuple(OutcomeIn.model_fields)


class OutcomeFields(NamedTuple):
    """A validated outcome's fields — what ``OutcomeIn`` holds, as a plain tuple: a bulk batch
    holds thousands of them, and a tuple costs a fraction of a model to build and keep."""

    experiment: str | None
    subscriber_id: str | None
    decision_id: str | None
    type: str
    value: float | None
    occurred_at: datetime
    day_n: int | None

    @classmethod
    def of(cls, data: OutcomeIn) -> OutcomeFields:
        return cls(
            data.experiment, data.subscriber_id, data.decision_id, data.type, data.value, data.occurred_at, data.day_n
        )


class OutcomeRow(NamedTuple):
    """An outcome ready to write: its exposure resolved, ``day_n`` computed, time in UTC."""

    assignment_id: int
    type: str
    value: float | None
    day_n: int | None
    occurred_at: datetime

    @property
    def key(self) -> tuple[int, str, int | None]:
        """The row's identity: (exposure, type, day) for retention checks, else (exposure, type)."""
        return (self.assignment_id, self.type, self.day_n if self.type == "retained" else None)


def unknown_decision(decision_id: str) -> str:
    return f"unknown decision id {decision_id!r}"


def decision_not_in_experiment(decision_id: str) -> str:
    return f"decision {decision_id!r}: {NOT_IN_EXPERIMENT}"


# decision id → (experiment key or None, subscriber id), for the decisions that exist. The
# decisions table belongs to the decision ledger above this package, so the caller hands its
# lookup in (``decisioning.repository.decision_exposures``, wired by the composition root).
DecisionExposures = Callable[[Session, Collection[str]], Mapping[str, tuple[str | None, str]]]


def _by_decision(
    data: OutcomeFields | OutcomeIn, known: Mapping[str, tuple[str | None, str]]
) -> tuple[str, str] | tuple[None, ApiError]:
    """(experiment, subscriber id) of an outcome reported by decision id, or (None, the error)."""
    assert data.decision_id is not None
    decision = known.get(data.decision_id)
    if decision is None:
        return None, NotFound(unknown_decision(data.decision_id), code="unknown_decision")
    key, subscriber_id = decision
    if key is None:
        return None, Conflict(decision_not_in_experiment(data.decision_id), code="decision_not_in_experiment")
    if (data.experiment not in (None, key)) or (data.subscriber_id not in (None, subscriber_id)):
        return None, Conflict(
            f"decision {data.decision_id!r} is for experiment {key!r} and subscriber "
            f"{subscriber_id!r}, not the ones given",
            code="decision_mismatch",
        )
    return key, subscriber_id


def not_exposed(experiment_key: str, subscriber_id: str) -> str:
    return (
        f"subscriber {subscriber_id!r} was never exposed to experiment {experiment_key!r}; "
        f"only exposed subscribers have outcomes"
    )


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


def latest_per_key(rows: Iterable[OutcomeRow]) -> dict[tuple[int, str, int | None], OutcomeRow]:
    """One row per identity: the latest ``occurred_at`` wins, ties go to the later row (the
    same rule the database applies to rows already stored)."""
    latest: dict[tuple[int, str, int | None], OutcomeRow] = {}
    for row in rows:
        key = row.key
        kept = latest.get(key)
        if kept is None or kept.occurred_at <= row.occurred_at:
            latest[key] = row
    return latest


# --- writing ----------------------------------------------------------------------------------


def _upsert(session: Session) -> Any:
    """``INSERT … ON CONFLICT (assignment_id, type, day_key) DO UPDATE``: a newer report
    replaces an older one."""
    return upsert(
        session,
        OUTCOMES,
        [OUTCOMES.c.assignment_id, OUTCOMES.c.type, OUTCOMES.c.day_key],
        ("value", "day_n", "occurred_at", "decision_id", "received_at"),
        where=lambda excluded: OUTCOMES.c.occurred_at <= excluded.occurred_at,
    )


def write_outcome_rows(session: Session, rows: Iterable[OutcomeRow], received_at: datetime) -> None:
    """Upsert ``rows`` (at most one per identity: see :func:`latest_per_key`) in one
    executemany. Never commits."""
    params = [
        {
            "assignment_id": row.assignment_id,
            "type": row.type,
            "value": row.value,
            "day_n": row.day_n,
            "occurred_at": row.occurred_at,
            "decision_id": None,
            "received_at": received_at,
        }
        for row in rows
    ]
    if params:
        session.execute(_upsert(session), params)


# One statement per batch: the rows travel as parallel arrays (text), unpacked by unnest.
_PG_UPSERT_BATCH = b"""
INSERT INTO outcomes (assignment_id, type, value, day_n, occurred_at, received_at)
SELECT b.assignment_id, b.type, b.value, b.day_n, b.occurred_at, $6::timestamptz
FROM unnest($1::bigint[], $2::text[], $3::float8[], $4::int[], $5::timestamptz[])
    AS b(assignment_id, type, value, day_n, occurred_at)
ON CONFLICT (assignment_id, type, day_key) DO UPDATE SET value = excluded.value, day_n = excluded.day_n,
    occurred_at = excluded.occurred_at, decision_id = excluded.decision_id, received_at = excluded.received_at
WHERE outcomes.occurred_at <= excluded.occurred_at
"""


_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)  # what PostgreSQL's binary times count from
_ONE_MICROSECOND = timedelta(microseconds=1)
_TIMESTAMPTZ_OID = 1184
# The statement's parameters as text, but the times in PostgreSQL's binary format
_PG_BATCH_PARAM_FORMATS = (0, 0, 0, 0, 1, 0)


def _pg_timestamptz_array(times: Sequence[datetime]) -> bytes:
    """``times`` as a one-dimensional ``timestamptz[]`` in PostgreSQL's binary format: a
    header (dimensions, no nulls, element type, length, lower bound), then each element as
    its byte length and its microseconds since 2000-01-01 UTC. Exact, about a quarter of the
    cost of ``isoformat`` here, and nothing for the server to parse."""
    micros = [(moment - _PG_EPOCH) // _ONE_MICROSECOND for moment in times]
    return struct.pack(
        ">5i" + "iq" * len(micros), 1, 0, _TIMESTAMPTZ_OID, len(micros), 1, *chain.from_iterable(zip(repeat(8), micros))
    )


def _pg_batch_params(rows: Iterable[OutcomeRow], received_at: datetime) -> list[bytes]:
    """The statement's parameters (formats: ``_PG_BATCH_PARAM_FORMATS``): one PostgreSQL
    array per column — literals for the numbers and words, which need no quoting, the binary
    format for the times — then the receive time."""
    ids, types, values, days, times = zip(*rows)

    def array(items: Iterable[str]) -> bytes:
        return ("{" + ",".join(items) + "}").encode()

    # str() of every item at C speed; the text of a number never holds "None", so replacing
    # it afterwards is how a missing value becomes the array's NULL
    return [
        array(map(str, ids)),
        array(types),
        array(map(str, values)).replace(b"None", b"NULL"),
        array(map(str, days)).replace(b"None", b"NULL"),
        _pg_timestamptz_array(times),
        received_at.isoformat().encode(),
    ]


# --- one outcome ------------------------------------------------------------------------------


def record_outcome(
    session: Session, data: OutcomeIn, *, now: datetime, decision_exposures: DecisionExposures
) -> tuple[Outcome, Experiment, bool]:
    """Record one outcome (upsert, never commits). Returns the stored row — which keeps a
    newer report's values if one was stored before — its experiment, and whether the row is
    new. 404 for an unknown decision id or experiment and for a subscriber never exposed;
    400 for an ``occurred_at`` the exposure rules out."""
    if data.decision_id is not None:
        key, found = _by_decision(data, decision_exposures(session, [data.decision_id]))
        if key is None:
            raise found  # type: ignore[misc]
        data = data.model_copy(update={"experiment": key, "subscriber_id": found})
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
    return stored, experiment, created


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


# --- many outcomes ----------------------------------------------------------------------------


def _row_error(exc: ValidationError) -> str:
    """A pydantic error as one line of text for the import report."""
    parts = []
    for err in exc.errors(include_url=False):
        if err["type"] == "json_invalid":
            return f"invalid JSON: {err.get('ctx', {}).get('error', err['msg'])}"
        message = err["msg"].removeprefix("Value error, ")
        where = ".".join(str(p) for p in err["loc"])
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


Record = tuple[int, OutcomeFields]  # (line number, validated outcome)


def _jsonl_records(lines: Iterable[str], bad: dict[int, str], reject: Callable[[int, str], None]) -> Iterator[Record]:
    validate, fields_of = OutcomeIn.model_validate_json, OutcomeFields.of
    for line_no, line in jsonl_lines(
        lines, bad, reject, empty_message="the body is empty: send one JSON object per line"
    ):
        try:
            yield line_no, fields_of(validate(line, strict=True))
        except ValidationError as exc:
            reject(line_no, _row_error(exc))


def _csv_header(values: list[str]) -> list[str]:
    names = [name.strip() for name in values]
    problems = [f"column {i} has no name" for i, name in enumerate(names, 1) if not name]
    unknown = [name for name in names if name and name not in FIELDS]
    if unknown:
        problems.append(f"unknown column(s) {', '.join(unknown)}; the columns are {', '.join(FIELDS)}")
    duplicates = sorted({n for n in names if n and names.count(n) > 1})
    if duplicates:
        problems.append(f"repeated column(s) {', '.join(duplicates)}")
    missing = [name for name in ("type", "occurred_at") if name not in names]
    if not ({"experiment", "subscriber_id"} <= set(names) or "decision_id" in names):
        missing.append("experiment and subscriber_id (or decision_id)")
    if missing:
        problems.insert(0, f"the header row has no {', '.join(missing)} column")
    if problems:
        raise BadRequest(
            "the CSV header is not valid: " + "; ".join(problems), code="invalid_csv_header", details=problems
        )
    return names


_TYPES = frozenset(OUTCOME_TYPES)
_DAY_N_TYPES = frozenset(DAY_N_OUTCOME_TYPES)
_CODE = TypeAdapter(Code)
_PLAIN_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")  # what a float cell almost always looks like


def _plain_csv_reader(header: list[str]) -> Callable[[list[str]], OutcomeFields | None]:
    """The fast path for a CSV row (with it, reading and validating a row of the benchmark's
    file takes 1.8 µs instead of 3.4 µs through ``OutcomeIn``): the row's outcome when every
    cell has its plain form — exactly the value ``OutcomeIn`` makes of it — else None, and
    ``OutcomeIn`` decides. None covers every error and every form pydantic's lax parsing
    accepts that this does not check (``" 12"``, ``1e3``, ``1_000``, ``+30``, a decision id,
    …), so each row is accepted or refused, and refused with the same message, as by
    ``OutcomeIn`` alone. The row list gets an empty cell appended: a column the header lacks
    reads as that cell, an absent field."""
    absent = len(header)
    cells = itemgetter(*(header.index(name) if name in header else absent for name in FIELDS))
    checked_experiment = ""  # one import rarely names more than one experiment: check it once

    def read(values: list[str]) -> OutcomeFields | None:
        nonlocal checked_experiment
        values.append("")
        experiment, subscriber_id, decision_id, type_, value, occurred_at, day_n = cells(values)
        if decision_id or not experiment or not subscriber_id or type_ not in _TYPES:
            return None
        if experiment != checked_experiment:
            try:
                experiment = checked_experiment = _CODE.validate_python(experiment)
            except ValidationError:
                return None
        try:
            subscriber_id = validate_subscriber_id(subscriber_id)  # the check SubscriberId makes
            moment = _utc_moment(occurred_at)  # the parse OutcomeIn makes
        except ValueError:  # ProfileError too
            return None
        if moment.tzinfo is None:
            return None
        number: float | None = None
        if value:
            if not _PLAIN_NUMBER.fullmatch(value):
                return None
            number = float(value)
            if not -MAX_ABS_VALUE <= number <= MAX_ABS_VALUE:
                return None
        elif type_ == "revenue":
            return None
        day: int | None = None
        if day_n:
            if type_ not in _DAY_N_TYPES or len(day_n) > 4 or not (day_n.isdigit() and day_n.isascii()):
                return None
            day = int(day_n)
            if day > MAX_DAY_N:
                return None
        return OutcomeFields(experiment, subscriber_id, None, type_, number, moment, day)

    return read


def _csv_records(lines: Iterable[str], bad: dict[int, str], reject: Callable[[int, str], None]) -> Iterator[Record]:
    validate, fields_of = OutcomeIn.model_validate, OutcomeFields.of
    header: list[str] = []
    read_plain: Callable[[list[str]], OutcomeFields | None] | None = None
    empty = "the body is empty: send a header row, then one outcome per row"
    for start, values in csv_records(lines, bad, reject, empty_message=empty):
        if read_plain is None:
            header = _csv_header(values)
            read_plain = _plain_csv_reader(header)
            continue
        if len(values) != len(header):
            reject(start, f"expected {len(header)} columns as in the header, got {len(values)}")
            continue
        fields = read_plain(values)
        if fields is None:
            try:  # an empty cell is an absent field; text is converted (lax mode), as CSV has no types
                fields = fields_of(validate({name: cell for name, cell in zip(header, values) if cell}))
            except ValidationError as exc:
                reject(start, _row_error(exc))
                continue
        yield start, fields


@dataclass
class _Batch:
    """Validated records waiting to be resolved and written, with the rejects of their lines."""

    records: list[Record]
    rejects: list[tuple[int, str]]


class _ExposureResolver:
    """Exposure ids and first-exposure times for a batch: one query per experiment in it."""

    def __init__(self, decision_exposures: DecisionExposures) -> None:
        self._experiment_ids: dict[str, int | None] = {}
        self._decision_exposures = decision_exposures

    def _experiments(self, session: Session, keys: Iterable[str]) -> None:
        unknown = set(keys) - self._experiment_ids.keys()
        if unknown:
            found = dict(
                session.execute(select(Experiment.key, Experiment.id).where(Experiment.key.in_(unknown))).all()
            )
            for key in unknown:
                self._experiment_ids[key] = found.get(key)

    def resolve(
        self, session: Session, records: list[Record], now: datetime, reject: Callable[[int, str], None]
    ) -> list[OutcomeRow]:
        """The writable rows of ``records``; the others go to ``reject``."""
        by_decision = [data.decision_id for _, data in records if data.decision_id is not None]
        if by_decision:  # resolve decision ids to (experiment, subscriber) first
            known = self._decision_exposures(session, set(by_decision))
            resolved: list[Record] = []
            for line_no, data in records:
                if data.decision_id is not None:
                    key, found = _by_decision(data, known)
                    if key is None:
                        reject(line_no, found.message)  # type: ignore[union-attr]
                        continue
                    data = data._replace(experiment=key, subscriber_id=found, decision_id=None)
                resolved.append((line_no, data))
            records = resolved
        wanted: dict[str, set[str]] = {}  # experiment key → subscriber ids
        for _, data in records:  # the schema guarantees experiment and subscriber_id without decision_id
            if data.decision_id is None:
                sids = wanted.get(data.experiment)  # type: ignore[arg-type]
                if sids is None:
                    sids = wanted[data.experiment] = set()  # type: ignore[index]
                sids.add(data.subscriber_id)  # type: ignore[arg-type]
        self._experiments(session, wanted)
        # experiment key → {subscriber id: (subscriber id, exposure id, first exposure)}, or
        # None for an unknown experiment
        exposures: dict[str, dict[str, Any] | None] = {}
        for key, sids in wanted.items():
            experiment_id = self._experiment_ids[key]
            exposures[key] = None if experiment_id is None else _exposures_of(session, experiment_id, sids)
        rows: list[OutcomeRow] = []
        append = rows.append
        for line_no, data in records:
            exposed = exposures[data.experiment]  # type: ignore[index]
            if exposed is None:
                reject(line_no, f"no experiment {data.experiment!r}")
                continue
            exposure = exposed.get(data.subscriber_id)
            if exposure is None:
                reject(line_no, not_exposed(data.experiment, data.subscriber_id))  # type: ignore[arg-type]
                continue
            row = finish_row(data, exposure[1], exposure[2], now)
            if type(row) is str:
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
    if session.get_bind().dialect.name == "postgresql":
        # One array literal for the whole batch, rows straight from the driver: at thousands
        # of ids per batch, SQLAlchemy's per-value binding and result processing would cost
        # more than the lookups themselves. Binary rows: no time text to format and parse.
        cursor = session.connection().connection.cursor()
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


class _Writer:
    """Resolves and writes batches; on PostgreSQL through a ``PostgresPipeline``."""

    def __init__(
        self,
        session_factory: sessionmaker,
        report: ImportReport,
        received_at: datetime,
        decision_exposures: DecisionExposures,
    ) -> None:
        self._factory = session_factory
        self._report = report
        self._received_at = received_at
        self._resolver = _ExposureResolver(decision_exposures)
        with session_factory() as session:
            postgres = session.get_bind().dialect.name == "postgresql"
        self._pipeline = PostgresPipeline(session_factory) if postgres else None
        # Sessions bound to one connection (as in tests) must wait for the batch in flight
        # before resolving the next; sessions from an engine resolve on another pooled
        # connection meanwhile, so the server resolves batch N+1 while it writes batch N.
        self._one_connection = isinstance(session_factory.kw.get("bind"), Connection)
        self.committed_batches = self.committed_rows = 0

    def submit(self, batch: _Batch) -> None:
        """Resolve ``batch`` and write its good rows; report its rejects in line order."""
        if self._pipeline is not None and self._one_connection:
            self._pipeline.collect()
        rejects = batch.rejects
        session = self._factory()
        try:
            rows = self._resolver.resolve(
                session, batch.records, self._received_at, lambda line, error: rejects.append((line, error))
            )
            for line, error in sorted(rejects):
                self._report.reject(line, error)
            self._report.accepted += len(rows)
            latest = latest_per_key(rows)
            if not latest:
                session.close()
            elif self._pipeline is not None:
                self._pipeline.send(
                    _PG_UPSERT_BATCH,
                    _pg_batch_params(latest.values(), self._received_at),
                    len(latest),
                    session=session,
                    formats=_PG_BATCH_PARAM_FORMATS,
                )
            else:
                write_outcome_rows(session, latest.values(), self._received_at)
                session.commit()
                session.close()
                self.committed_batches += 1
                self.committed_rows += len(latest)
        except BaseException:
            session.rollback()
            session.close()
            raise

    def close(self) -> None:
        if self._pipeline is not None:
            self._pipeline.close()

    def counts(self) -> tuple[int, int]:
        """(batches, rows) committed so far."""
        if self._pipeline is not None:
            return self._pipeline.committed_batches, self._pipeline.committed_rows
        return self.committed_batches, self.committed_rows


def import_outcomes(
    session_factory: sessionmaker,
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
    the bad ones by line number.

    ``lines`` is usually a ``LineReader`` over the request body (its unreadable lines are
    reported too). Commits each batch of ``batch_rows`` rows in its own session from
    ``session_factory``, then writes one audit row (entity "outcomes", counts only).
    ``accepted`` counts the rows that passed every check; ``written`` the rows stored after
    duplicates within a batch collapsed. Raises BadRequest for an empty body or a bad CSV
    header (nothing is written then) and PayloadTooLarge when a LineReader passes its byte
    limit (the rows before it are kept and audited). A failure part way keeps the committed
    batches and audits them with ``stopped: "failed: <error>"`` before re-raising.
    """
    if fmt not in ("csv", "jsonl"):
        raise ValueError(f"unknown import format {fmt!r}")
    if batch_rows < 1:
        raise ValueError("batch_rows must be at least 1")
    now = now or utcnow()
    report = ImportReport(import_id=uuid.uuid4().hex, format=fmt, max_listed=max_listed_errors)
    bad_lines = lines.bad_lines if isinstance(lines, LineReader) else {}
    writer = _Writer(session_factory, report, now, decision_exposures)
    batch = _Batch([], [])
    records = (_csv_records if fmt == "csv" else _jsonl_records)(
        lines, bad_lines, lambda line, error: batch.rejects.append((line, error))
    )

    def flush() -> None:
        nonlocal batch
        full, batch = batch, _Batch([], [])
        if full.records or full.rejects:
            writer.submit(full)
            del full  # freed now, so the collection below need not walk its thousands of records
            # A batch's session and results hold reference cycles; with the cyclic collector
            # paused they would pile up. Collecting the young generations costs ~1 ms.
            gc.collect(1)

    try:
        with cyclic_gc_paused():
            try:
                for record in records:
                    batch.records.append(record)
                    if len(batch.records) >= batch_rows:
                        flush()
            except ImportTooLarge as exc:
                report.stopped = str(exc)
            flush()
        writer.close()
    except BaseException as exc:
        try:
            writer.close()
        except Exception:  # the connection is likely what failed; the original error says more
            log.warning("could not finish the last outcome batch", exc_info=True)
        _count(report, writer, lines)
        if report.batches:
            report.stopped = report.stopped or f"failed: {exc.__class__.__name__}"
            audit_import(session_factory, report, actor, "outcomes", best_effort=True)
        raise
    _count(report, writer, lines)
    audit_import(session_factory, report, actor, "outcomes")
    if report.stopped:
        raise PayloadTooLarge(
            f"{report.stopped}; the {report.accepted} good rows before it were imported",
            code="import_too_large",
            details=report.as_json(),
        )
    return report


def _count(report: ImportReport, writer: _Writer, lines: Iterable[str]) -> None:
    report.batches, report.written = writer.counts()
    report.bytes_read = lines.bytes_read if isinstance(lines, LineReader) else 0
