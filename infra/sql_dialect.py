"""The few places where SQLite and PostgreSQL differ, behind one small set of helpers.

Domain code writes ``upsert(...)``/``insert_ignoring_conflicts(...)`` and asks
``is_postgresql(...)`` for a pipelined bulk path; it never imports a dialect module itself.
Both dialects' ``INSERT`` support ``ON CONFLICT … DO NOTHING / DO UPDATE`` with the same
arguments, so one statement shape serves both.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

if TYPE_CHECKING:
    import psycopg

Bind = Session | Connection | Engine


def dialect_name(bind: Bind) -> str:
    """``"postgresql"`` or ``"sqlite"`` (the only two that ``Settings`` accepts)."""
    if isinstance(bind, Session):
        return bind.get_bind().dialect.name
    return bind.dialect.name


def is_postgresql(bind: Bind) -> bool:
    return dialect_name(bind) == "postgresql"


def psycopg_connection(session: Session) -> psycopg.Connection[Any]:
    """The driver's connection under ``session``'s transaction, on PostgreSQL, for the few
    paths that talk to psycopg directly (binary rows, pipelined queries)."""
    driver = session.connection().connection.driver_connection
    assert driver is not None  # the session's connection was just checked out: it is live
    return driver


def dialect_insert(bind: Bind, target: Any) -> Any:
    """``INSERT INTO target`` in the bind's dialect, so it can take ``on_conflict_do_…``."""
    name = dialect_name(bind)
    if name == "postgresql":
        return postgresql.insert(target)
    if name == "sqlite":
        return sqlite.insert(target)
    raise RuntimeError(f"no INSERT … ON CONFLICT for database {name!r}")


def insert_ignoring_conflicts(bind: Bind, target: Any, index_elements: Iterable[Any] | None = None) -> Any:
    """``INSERT … ON CONFLICT [(index_elements)] DO NOTHING``."""
    statement = dialect_insert(bind, target)
    if index_elements is None:
        return statement.on_conflict_do_nothing()
    return statement.on_conflict_do_nothing(index_elements=list(index_elements))


def upsert(
    bind: Bind, target: Table | Any, index_elements: Iterable[Any], replaced: Iterable[str], where: Any = None
) -> Any:
    """``INSERT … ON CONFLICT (index_elements) DO UPDATE SET`` each ``replaced`` column to the
    incoming value, when ``where`` (given the statement's ``excluded`` row) holds."""
    statement = dialect_insert(bind, target)
    excluded = statement.excluded
    return statement.on_conflict_do_update(
        index_elements=list(index_elements),
        set_={name: excluded[name] for name in replaced},
        where=where(excluded) if callable(where) else where,
    )
