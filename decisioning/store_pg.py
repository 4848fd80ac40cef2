"""The decision store on PostgreSQL: the hot path in two statements.

``read`` is one SELECT (a UNION ALL of the stored decisions of the request ids, the profiles
and the recorded arms) and ``write`` one INSERT with data-modifying CTEs (new exposures, the
decision rows linked to them, and the budget charges of the rows actually inserted). Each
runs in autocommit, so it is its own transaction and costs one round trip: no BEGIN, no
COMMIT. A whole bulk call is the same two statements (ids as array parameters, rows as JSON
documents), so the SQL text never changes and psycopg prepares it once per connection.

Same guarantees as :class:`decisioning.store.SqlStore`; the SQL is plain psycopg on a pooled
connection (SQLAlchemy's per-statement work was most of a decision's database time) of the
store's own pool, whose connections carry a statement timeout (``STATEMENT_TIMEOUT_S``).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
import psycopg
from sqlalchemy import Column, Table, event
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError as SqlAlchemyOperationalError
from sqlalchemy.exc import TimeoutError as SqlAlchemyTimeoutError
from sqlalchemy.orm import Session, sessionmaker

from decisioning.models import Decision
from decisioning.store import (
    Contact,
    Experiments,
    ReadRows,
    Replays,
    RequestKey,
    StoreUnavailable,
    charge_rows,
    decision_row,
    exposure_row,
)
from experiments.models import Exposure
from infra.db import Base, make_engine
from offers.models import BudgetCharge

_READ_SQL = """
SELECT 'd', request_id, request_hash, NULL::bigint, NULL::bigint, NULL::boolean, response::text, caller
  FROM decisions WHERE caller = ANY(%(callers)s::text[]) AND request_id = ANY(%(request_ids)s::text[])
UNION ALL
SELECT 'p', id, NULL, NULL, NULL, NULL, attributes::text, NULL
  FROM subscribers WHERE id = ANY(%(subscriber_ids)s::text[])
UNION ALL
SELECT 'a', subscriber_id, arm_key, id, experiment_id, in_holdout, NULL, NULL
  FROM assignments
 WHERE experiment_id = ANY(%(experiment_ids)s::bigint[]) AND subscriber_id = ANY(%(subscriber_ids)s::text[])
UNION ALL
SELECT 'g', NULL, NULL, generation, NULL, NULL, NULL, NULL FROM config_generation WHERE id = 1
"""

# Decision and exposure columns whose value is one per write: statement parameters, so the
# rows document does not repeat them in every row.
_DECISION_PER_WRITE = {"snapshot_version": "%(snapshot_version)s", "created_at": "%(now)s"}
_EXPOSURE_PER_WRITE = {"first_exposed_at": "%(now)s"}
_RESPONSE = "response"  # sent apart from the rows document: see _write_sql
_POSTGRESQL = postgresql.dialect()


def table_of(model: type[Base]) -> Table:
    """The table a model maps."""
    table = model.__table__
    assert isinstance(table, Table)
    return table


def inserted_columns(table: Table) -> list[Column[Any]]:
    """The columns an INSERT into ``table`` names: all of them but a key the database
    generates."""
    return [column for column in table.columns if column is not table.autoincrement_column]


def document_fields(table: Table, apart: Iterable[str] = ()) -> tuple[str, ...]:
    """The fields of ``table``'s rows in the write's JSON document: every inserted column but
    those the statement gets ``apart`` from it."""
    left_out = set(apart)
    return tuple(column.name for column in inserted_columns(table) if column.name not in left_out)


def _definitions(table: Table, fields: Iterable[str]) -> str:
    """A json_to_recordset column definition list: each field with its column's type."""
    return ", ".join(f"{name} {table.c[name].type.compile(dialect=_POSTGRESQL)}" for name in fields)


def write_sql(decisions: Table, exposures: Table, charges: Table) -> str:
    """The write statement for these tables (``decisions``, ``assignments``, ``budget_charges``):
    every column list is the table's own, so a column added to a model is written by this store
    as by :class:`decisioning.store.SqlStore`, or the write fails loudly (its row lacks it).

    One statement, one transaction. The decision rows come as one JSON document (orjson writes
    it and PostgreSQL parses it far faster than psycopg adapts an array per column), zipped by
    position with the answers, which come apart as one binary text[] (each answer's own JSON
    text): inside the document PostgreSQL would lex every answer twice, once with the document
    and once more as its field, and that was half of a bulk write's database time. Each answer
    goes into its ``json`` column as the text it is, never built into jsonb. The new exposures
    and the budget charges come as documents of their own. The exposures inserted here are
    joined to the decisions through RETURNING (CTEs share one snapshot, so a plain SELECT would
    not see them); a decision that met an exposure recorded concurrently by another request
    comes back ``unlinked`` and is linked by a second statement (two first contacts of one
    subscriber racing). A join, not a subquery per row: a chunk of first exposures would make
    that quadratic in the chunk's length. Charges join the decisions actually
    inserted, so a request another writer stored first charges nothing here."""
    decision_fields = document_fields(decisions, [*_DECISION_PER_WRITE, _RESPONSE])
    exposure_fields = document_fields(exposures, _EXPOSURE_PER_WRITE)
    charge_fields = document_fields(charges)
    link = exposures.c.experiment_id  # which experiment's exposure a decision row links to
    decision_values = {
        **{name: f"i.{name}" for name in decision_fields},
        "assignment_id": "COALESCE(i.assignment_id, e.id)",
        **_DECISION_PER_WRITE,
        _RESPONSE: f"i.{_RESPONSE}::json",
    }
    exposure_values = {**{name: f"x.{name}" for name in exposure_fields}, **_EXPOSURE_PER_WRITE}
    decision_columns = [column.name for column in inserted_columns(decisions)]
    exposure_columns = [column.name for column in inserted_columns(exposures)]
    return f"""
WITH input AS (
  SELECT * FROM ROWS FROM (
    json_to_recordset(%(rows)s::json) AS ({_definitions(decisions, decision_fields)},
      {link.name} {link.type.compile(dialect=_POSTGRESQL)}),
    unnest(%(responses)b::text[])) AS t({", ".join(decision_fields)}, {link.name}, {_RESPONSE})
), exposed AS (
  INSERT INTO {exposures.name} ({", ".join(exposure_columns)})
  SELECT {", ".join(exposure_values[name] for name in exposure_columns)}
    FROM json_to_recordset(%(exposures)s::json) AS x({_definitions(exposures, exposure_fields)})
  ON CONFLICT (experiment_id, subscriber_id) DO NOTHING
  RETURNING id, experiment_id, subscriber_id
), stored AS (
  INSERT INTO {decisions.name} ({", ".join(decision_columns)})
  SELECT {", ".join(decision_values[name] for name in decision_columns)}
    FROM input i
    LEFT JOIN exposed e ON e.experiment_id = i.{link.name} AND e.subscriber_id = i.subscriber_id
  ON CONFLICT (caller, request_id) DO NOTHING
  RETURNING id, caller, request_id, experiment_key IS NOT NULL AND assignment_id IS NULL AS unlinked
), charged AS (
  INSERT INTO {charges.name} ({", ".join(charge_fields)})
  SELECT {", ".join(f"c.{name}" for name in charge_fields)}
    FROM json_to_recordset(%(charges)s::json) AS c({_definitions(charges, charge_fields)})
    JOIN stored s ON s.id = c.decision_id
)
SELECT caller, request_id, unlinked FROM stored
"""


# Built once per process: the same text on every call, so psycopg parses it once (it caches
# statements under 4 KiB) and prepares it once per connection.
_WRITE_SQL = write_sql(table_of(Decision), table_of(Exposure), table_of(BudgetCharge))
_DECISION_FIELDS = document_fields(table_of(Decision), [*_DECISION_PER_WRITE, _RESPONSE])
_EXPOSURE_FIELDS = document_fields(table_of(Exposure), _EXPOSURE_PER_WRITE)

_LINK_SQL = """
UPDATE decisions d SET assignment_id = a.id
  FROM unnest(%(decision_ids)s::text[], %(experiment_ids)s::bigint[]) AS u(decision_id, experiment_id),
       assignments a
 WHERE d.id = u.decision_id AND a.experiment_id = u.experiment_id AND a.subscriber_id = d.subscriber_id
"""

_STORED_SQL = """
SELECT caller, request_id, request_hash, response::text FROM decisions
 WHERE caller = ANY(%(callers)s::text[]) AND request_id = ANY(%(request_ids)s::text[])
"""

_CHARGED_SQL = """
SELECT DISTINCT d.caller, d.request_id FROM decisions d JOIN budget_charges c ON c.decision_id = d.id
 WHERE d.caller = ANY(%(callers)s::text[]) AND d.request_id = ANY(%(request_ids)s::text[])
"""


def array_literal(values: Iterable[str | int]) -> str:
    """A PostgreSQL array literal (``{"a","b"}``), sent as one text parameter and cast by the
    statement: a few microseconds, where psycopg's list adaptation costs tens per array."""
    return (
        "{"
        + ",".join(
            str(v) if isinstance(v, int) else '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values
        )
        + "}"
    )


def _json_default(value: Any) -> str:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in a decision row")


# Every statement of the store ends within this, lock waits included, or fails (a 503, with
# its reservations released): the reconcile counts on a reservation's row being written
# within RESERVATION_TO_ROW_S (45 s) or never, and a write stuck behind a lock (a migration's,
# say) could otherwise commit after the counters were rebuilt without its charge.
STATEMENT_TIMEOUT_S = 20.0
# a decision waiting this long for a free connection is past any deadline: a 503 it may retry
POOL_TIMEOUT_S = 5.0

# app engine → {statement timeout: the store's own engine on its database}; gone with the app's
_store_engines: weakref.WeakKeyDictionary[Engine, dict[float, Engine]] = weakref.WeakKeyDictionary()
_store_engines_lock = threading.Lock()


def store_engine(bind: Engine, statement_timeout_s: float) -> Engine:
    """The decision store's own pool on ``bind``'s database, one per app engine and timeout:
    its connections carry the statement timeout, which the app's other queries (admin pages,
    imports, migrations) must not get. Disposed when ``bind`` is."""
    engine = _store_engines.get(bind, {}).get(statement_timeout_s)
    if engine is not None:  # the hot path: every batch of decisions asks
        return engine
    with _store_engines_lock:
        engines = _store_engines.setdefault(bind, {})
        engine = engines.get(statement_timeout_s)
        if engine is None:
            engine = engines[statement_timeout_s] = make_engine(
                bind.url.render_as_string(hide_password=False),
                statement_timeout_s=statement_timeout_s,
                pool_timeout_s=POOL_TIMEOUT_S,
            )
            event.listen(bind, "engine_disposed", lambda _bind, own=engine: own.dispose())
        return engine


class PostgresStore:
    """The decision store on the PostgreSQL database of a session factory."""

    def __init__(
        self, session_factory: sessionmaker[Session], statement_timeout_s: float = STATEMENT_TIMEOUT_S
    ) -> None:
        self.session_factory = session_factory
        self.statement_timeout_s = statement_timeout_s

    @contextmanager
    def connect(self) -> Iterator[PostgresConnection]:
        """One pooled connection of the store's own, switched to autocommit for the call; or,
        when the session factory is bound to a connection (a caller's transaction, as in the
        tests), that connection inside its transaction."""
        bind = self.session_factory.kw["bind"]
        if isinstance(bind, Connection):
            driver = bind.connection.driver_connection
            assert driver is not None  # the caller's connection is open: it holds their transaction
            yield PostgresConnection(driver)
            return
        engine = store_engine(bind, self.statement_timeout_s)
        try:
            pooled = engine.raw_connection()
        except (SqlAlchemyOperationalError, SqlAlchemyTimeoutError, psycopg.OperationalError) as exc:
            raise StoreUnavailable(str(exc)) from exc  # the server is down, or every connection busy
        connection = pooled.driver_connection
        assert connection is not None  # None only once the pool has let the connection go
        try:
            connection.autocommit = True
            yield PostgresConnection(connection)
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            pooled.invalidate()  # a broken connection never goes back to the pool
            if connection.broken or connection.closed:
                # the server went away (a restart, a failover): the pool's idle connections
                # went with it, and each would fail a request of its own before being dropped
                engine.dispose()
            raise StoreUnavailable(str(exc)) from exc
        finally:
            if pooled.is_valid:  # an invalidated connection was already handed back
                if not connection.closed:
                    connection.autocommit = False  # as the pool's other users expect it
                pooled.close()


class PostgresConnection:
    """The store's statements on one psycopg connection."""

    writes_concurrently = True  # psycopg serialises a connection's use across threads

    def __init__(self, connection: psycopg.Connection[Any]) -> None:
        self.connection = connection
        self.config_generation: int | None = None

    def _execute(self, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        with self.connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall() if cursor.description is not None else []

    def read(self, contacts: list[Contact], experiments: Experiments) -> Replays:
        reads = ReadRows(contacts, experiments, orjson.loads)
        reads.file(
            self._execute(
                _READ_SQL,
                {
                    "callers": array_literal({c.caller for c in contacts}),
                    "request_ids": array_literal(c.request_id for c in contacts),
                    "subscriber_ids": array_literal({c.body.subscriber_id for c in contacts}),
                    "experiment_ids": array_literal(reads.experiment_keys),
                },
            )
        )
        self.config_generation = reads.config_generation
        return reads.apply(contacts)

    def write(
        self, contacts: list[Contact], experiments: Experiments, snapshot_version: int, now: datetime
    ) -> set[RequestKey]:
        rows, responses, exposures, charges = [], [], [], []
        experiment_of: dict[str, int] = {}
        for c in contacts:
            row = decision_row(c, experiments, snapshot_version, now)
            ids = experiments.get(row["experiment_key"]) if row["experiment_key"] is not None else None
            if ids is not None:
                experiment_of[row["id"]] = ids[0]
            rows.append({name: row[name] for name in _DECISION_FIELDS} | {"experiment_id": ids[0] if ids else None})
            responses.append(orjson.dumps(row["response"], default=_json_default).decode())
            if (exposure := c.new_exposure(experiments)) is not None:
                exposed = exposure_row(c, *exposure, now)
                exposures.append({name: exposed[name] for name in _EXPOSURE_FIELDS})
            charges.extend(charge_rows(c))
        stored = self._execute(
            _WRITE_SQL,
            {
                "rows": orjson.dumps(rows, default=_json_default).decode(),
                "responses": responses,
                "exposures": orjson.dumps(exposures, default=_json_default).decode(),
                "charges": orjson.dumps(charges, default=_json_default).decode(),
                "snapshot_version": snapshot_version,
                "now": now,
            },
        )
        unlinked = {(caller, request_id) for caller, request_id, flag in stored if flag}
        if unlinked:
            decision_ids = [c.response["decision_id"] for c in contacts if c.key in unlinked and c.response is not None]
            self._execute(
                _LINK_SQL,
                {
                    "decision_ids": array_literal(decision_ids),
                    "experiment_ids": array_literal(experiment_of[d] for d in decision_ids),
                },
            )
        inserted = {(caller, request_id) for caller, request_id, _ in stored}
        return {c.key for c in contacts} - inserted

    def stored(self, keys: list[RequestKey]) -> Replays:
        wanted = set(keys)
        rows = self._execute(
            _STORED_SQL,
            {
                "callers": array_literal({caller for caller, _ in keys}),
                "request_ids": array_literal(rid for _, rid in keys),
            },
        )
        return {
            (caller, rid): (digest, orjson.loads(response))
            for caller, rid, digest, response in rows
            if (caller, rid) in wanted
        }

    def charged(self, keys: list[RequestKey]) -> set[RequestKey]:
        wanted = set(keys)
        rows = self._execute(
            _CHARGED_SQL,
            {
                "callers": array_literal({caller for caller, _ in keys}),
                "request_ids": array_literal(rid for _, rid in keys),
            },
        )
        return {(caller, rid) for caller, rid in rows if (caller, rid) in wanted}
