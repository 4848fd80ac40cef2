"""Batches sent to PostgreSQL without waiting, so the server writes one batch while Python
parses the next."""

from __future__ import annotations

import select
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import pq
from sqlalchemy.orm import Session, sessionmaker

from infra.sql_dialect import psycopg_connection


class PostgresPipeline:
    """PostgreSQL batches, overlapped with parsing in one thread.

    ``send`` sends a batch as one statement through libpq's asynchronous API and returns at
    once; the batch's result is collected, and its transaction committed, just before the
    next batch is sent (or on ``collect``/``close``). So the server works while Python parses,
    with no thread. Each batch runs in its own session from the factory — or in the session
    the caller passes, which may already have run queries in its transaction (say, to
    resolve the batch's references) — so in tests the "commit" is the release of a savepoint,
    as for every other write.

    The connection is busy while a batch is in flight: call ``collect`` before using another
    session that may share it (tests bind every session to one connection).
    """

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._factory = session_factory
        self._in_flight: tuple[Session, Any, int] | None = None
        self.committed_batches = self.committed_rows = 0

    def send(
        self,
        query: bytes,
        params: Sequence[bytes | None],
        rows: int,
        session: Session | None = None,
        *,
        formats: Sequence[int] | None = None,
    ) -> None:
        """Commit the batch in flight, then send ``query`` with ``params`` (``rows`` rows, for
        the counts) in ``session`` (default: a new one), without waiting for it. ``formats``
        says per parameter whether it is text (0, the default for all) or PostgreSQL's binary
        format (1)."""
        self.collect()
        session = session or self._factory()
        try:
            pgconn = psycopg_connection(session).pgconn
            if pgconn.transaction_status == pq.TransactionStatus.IDLE:
                # psycopg opens its transaction lazily, on its own first query; this query
                # bypasses psycopg, so open it here (session.commit() then commits it).
                pgconn.send_query(b"BEGIN")
                _flush(pgconn)
                _raise_for_results(pgconn)
            pgconn.send_query_params(query, list(params), param_formats=formats)
        except BaseException:
            session.rollback()
            session.close()
            raise
        self._in_flight = (session, pgconn, rows)
        _flush(pgconn)

    def collect(self) -> None:
        """Wait for the batch in flight, then commit it (or roll back and raise its error)."""
        if self._in_flight is None:
            return
        session, pgconn, rows = self._in_flight
        self._in_flight = None
        try:
            _raise_for_results(pgconn)
            session.commit()
            self.committed_batches += 1
            self.committed_rows += rows
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def close(self) -> None:
        self.collect()


def _raise_for_results(pgconn: Any) -> None:
    """Wait for every result of the query sent last; raise the first error among them."""
    error: Exception | None = None
    while (result := pgconn.get_result()) is not None:
        if error is None and result.status == pq.ExecStatus.FATAL_ERROR:
            error = psycopg.errors.error_from_result(result)
    if error is not None:
        raise error


def _flush(pgconn: Any) -> None:
    """Push a sent query out to the server (psycopg's connections are non-blocking)."""
    while pgconn.flush():
        select.select([pgconn.socket], [pgconn.socket], [])
        pgconn.consume_input()
