"""Writing outcome rows: an upsert keyed by (exposure, type, day) where the latest report wins —
as one executemany on any dialect, or as one PostgreSQL statement per bulk batch."""

from __future__ import annotations

import struct
from collections.abc import Collection, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from itertools import chain, repeat
from typing import Any

from sqlalchemy.orm import Session

from experiments.models import Outcome
from experiments.outcomes.schemas import OutcomeRow
from infra.bulk_import import PostgresStatement
from infra.sql_dialect import upsert

OUTCOMES = Outcome.__table__


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


def postgres_upsert_batch(rows: Collection[OutcomeRow], received_at: datetime) -> PostgresStatement:
    """``rows`` (at most one per identity) as one statement: one PostgreSQL array per column —
    literals for the numbers and words, which need no quoting, the binary format for the
    times — then the receive time."""
    ids, types, values, days, times = zip(*rows)

    def array(items: Iterable[str]) -> bytes:
        return ("{" + ",".join(items) + "}").encode()

    # str() of every item at C speed; the text of a number never holds "None", so replacing
    # it afterwards is how a missing value becomes the array's NULL
    params = [
        array(map(str, ids)),
        array(types),
        array(map(str, values)).replace(b"None", b"NULL"),
        array(map(str, days)).replace(b"None", b"NULL"),
        _pg_timestamptz_array(times),
        received_at.isoformat().encode(),
    ]
    return PostgresStatement(_PG_UPSERT_BATCH, params, _PG_BATCH_PARAM_FORMATS)
