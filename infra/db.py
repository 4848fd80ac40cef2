"""The one owner of database engines and sessions.

Web requests get one session each (``db_session()``), closed at teardown; write handlers
commit once. Jobs and commands use ``session_scope(factory)``. Services take a session and
never commit, so a config write and its audit row always land in the same transaction.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import orjson
from flask import Flask, current_app, g
from sqlalchemy import JSON, DateTime, MetaData, Numeric, create_engine, event
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import CursorResult, Engine, Result, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# JSONB on PostgreSQL (indexable, compact), plain JSON text on SQLite.
JsonType = JSON().with_variant(JSONB(), "postgresql")

# Money amounts in the currency's major unit with two decimals, exact (Decimal in Python).
Money = Numeric(12, 2)


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite forgets the zone otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given; use datetime.now(timezone.utc)")
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def make_engine(
    database_url: str, echo: bool = False, *, statement_timeout_s: float | None = None, pool_timeout_s: float = 30.0
) -> Engine:
    """Build an engine with the pragmas each backend needs for correctness under concurrency.

    ``statement_timeout_s`` (PostgreSQL): the server cancels any statement of these connections,
    lock waits included, that runs longer (``psycopg.errors.QueryCanceled``). SQLite's lock
    wait is always bounded by its busy timeout (30 s). ``pool_timeout_s``: how long a thread
    waits for a free pooled connection before ``sqlalchemy.exc.TimeoutError``."""
    if database_url.startswith("sqlite:"):
        engine = create_engine(database_url, echo=echo, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # pysqlite's own transaction handling breaks SAVEPOINTs; let SQLAlchemy emit BEGIN.
            dbapi_conn.isolation_level = None
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN")

        return engine
    # No pre-ping (it costs a round trip per checkout on the decision hot path): a connection
    # broken by a server restart fails its first use, SQLAlchemy then invalidates the whole pool,
    # and the request gets a 503 it may retry; connections are also recycled every 10 minutes.
    connect_args: dict[str, Any] = {}
    if statement_timeout_s is not None:
        given = make_url(database_url).query.get("options", "")  # the URL's own, kept
        given = " ".join(given) if isinstance(given, tuple) else given
        connect_args["options"] = " ".join(
            filter(None, [given, f"-c statement_timeout={round(statement_timeout_s * 1000)}"])
        )
    return create_engine(
        database_url,
        echo=echo,
        pool_size=10,
        max_overflow=10,
        pool_recycle=600,
        pool_timeout=pool_timeout_s,
        json_serializer=_json_text,
        connect_args=connect_args,
    )


def _json_text(value: Any) -> str:
    """JSON columns encoded with orjson: several times faster than the standard library on
    the decision rows, same JSON for the values the project stores."""
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


class Database:
    """Engine + session factory for one app (stored in ``app.extensions['carepilot.db']``)."""

    def __init__(self, database_url: str) -> None:
        self.engine = make_engine(database_url)
        self.sessionmaker = sessionmaker(bind=self.engine, expire_on_commit=False)

    def init_app(self, app: Flask) -> None:
        app.extensions["carepilot.db"] = self
        app.teardown_appcontext(_close_request_session)


def get_database(app: Flask | None = None) -> Database:
    return (app or current_app).extensions["carepilot.db"]


def db_session() -> Session:
    """The current request's session, opened on first use and closed at teardown."""
    if "db_session" not in g:
        g.db_session = get_database().sessionmaker()
    return g.db_session


def rollback_request_session() -> None:
    """Roll back the request's session, if it opened one: after an error, or once a handler
    has read what it needs (the caller's key) and does the rest on connections of its own,
    as the decision endpoints do. Held open, the session would keep a second pooled
    connection per decision idle in its transaction while the decision store writes (and,
    in the tests, a savepoint around the store's writes, undone at teardown)."""
    session = g.get("db_session")
    if session is not None:
        try:
            session.rollback()
        except SQLAlchemyError:  # the connection is gone with the server: nothing to roll back
            session.invalidate()


def _close_request_session(exc: BaseException | None) -> None:
    session: Session | None = g.pop("db_session", None)
    if session is not None:
        if exc is not None:
            session.rollback()
        session.close()


def matched_rows(result: Result[*tuple[Any, ...]]) -> int:
    """How many rows an UPDATE or DELETE run by ``Session.execute`` matched. The session
    types its result as a plain ``Result``; for these statements it is a ``CursorResult``."""
    assert isinstance(result, CursorResult)
    return result.rowcount


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One transaction for a job or command: commit on success, roll back on any error."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
