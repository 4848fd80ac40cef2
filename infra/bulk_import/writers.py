"""The two ways a batch of resolved rows reaches the database: a SQLAlchemy executemany upsert
on any dialect, and one pipelined statement per batch on PostgreSQL.

Each writer is handed the batch's session (the one its rows were resolved in) and commits it:
bulk imports commit per batch (see ``infra.bulk_import``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from sqlalchemy import Connection
from sqlalchemy.orm import Session, sessionmaker

from infra.bulk_import.postgres_pipeline import PostgresPipeline

Resolved = TypeVar("Resolved")
Resolved_contra = TypeVar("Resolved_contra", contravariant=True)


@dataclass(frozen=True)
class PostgresStatement:
    """One batch as one PostgreSQL statement: its text with ``$n`` placeholders, its parameters,
    and per parameter whether it is text (0) or PostgreSQL's binary format (1); None: all text."""

    query: bytes
    params: Sequence[bytes | None]
    formats: Sequence[int] | None = None


class BatchWriter(Protocol[Resolved_contra]):
    """Writes and commits batches; counts what it has committed."""

    @property
    def committed_batches(self) -> int: ...

    @property
    def committed_rows(self) -> int: ...

    def before_batch(self) -> None:
        """Called before the next batch's session is opened."""
        ...

    def write(self, session: Session, rows: Collection[Resolved_contra]) -> None:
        """Write ``rows`` (at most one per key) in ``session`` and commit them (now, or by the
        next call or ``close``); the session is the writer's from here on."""
        ...

    def close(self) -> None:
        """Commit whatever is still in flight."""
        ...


class ExecutemanyWriter(Generic[Resolved]):
    """Any dialect: the import's executemany upsert (``write_rows``), committed before the next
    batch is parsed."""

    def __init__(self, write_rows: Callable[[Session, Collection[Resolved]], None]) -> None:
        self._write_rows = write_rows
        self.committed_batches = self.committed_rows = 0

    def before_batch(self) -> None:
        pass

    def write(self, session: Session, rows: Collection[Resolved]) -> None:
        """Upsert ``rows`` in ``session``, commit and close it."""
        self._write_rows(session, rows)
        session.commit()
        session.close()
        self.committed_batches += 1
        self.committed_rows += len(rows)

    def close(self) -> None:
        pass


class PipelinedPostgresWriter(Generic[Resolved]):
    """PostgreSQL: each batch as one statement (``statement_of``) sent through a
    ``PostgresPipeline`` without waiting, so the server writes batch N while Python parses
    batch N+1 — and, when the batch's resolver queries the database, resolves batch N+1 on a
    second pooled connection meanwhile."""

    def __init__(
        self, session_factory: sessionmaker[Session], statement_of: Callable[[Collection[Resolved]], PostgresStatement]
    ) -> None:
        self._pipeline = PostgresPipeline(session_factory)
        self._statement_of = statement_of
        # Sessions bound to one connection (as in tests) share it with the batch in flight:
        # that batch must be finished before the next one may query.
        self._one_connection = isinstance(session_factory.kw.get("bind"), Connection)

    @property
    def committed_batches(self) -> int:
        return self._pipeline.committed_batches

    @property
    def committed_rows(self) -> int:
        return self._pipeline.committed_rows

    def before_batch(self) -> None:
        if self._one_connection:
            self._pipeline.collect()

    def write(self, session: Session, rows: Collection[Resolved]) -> None:
        """Send ``rows`` as one statement in ``session``; it commits when the next batch is sent
        or the writer is closed."""
        statement = self._statement_of(rows)
        self._pipeline.send(statement.query, statement.params, len(rows), session=session, formats=statement.formats)

    def close(self) -> None:
        self._pipeline.close()


def writer_for(
    postgresql: bool,
    session_factory: sessionmaker[Session],
    write_rows: Callable[[Session, Collection[Resolved]], None],
    statement_of: Callable[[Collection[Resolved]], PostgresStatement],
) -> BatchWriter[Any]:
    """The pipelined writer on PostgreSQL, the executemany writer elsewhere."""
    if postgresql:
        return PipelinedPostgresWriter(session_factory, statement_of)
    return ExecutemanyWriter(write_rows)
