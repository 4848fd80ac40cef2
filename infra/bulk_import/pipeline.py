"""The bulk import pipeline: lines → typed rows → batches resolved and written → the report.

``run_import`` drives it for any kind of import; the kind (``BulkImport``) supplies only what
is its own: the row parser, the resolver that turns a batch of rows into writable rows (looking
up what they refer to, refusing what does not fit), which of them to keep when a batch holds
one key twice, and its two writers (an executemany upsert for any dialect, one statement per
batch for the pipelined PostgreSQL writer).
"""

from __future__ import annotations

import gc
import logging
import uuid
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sqlalchemy.orm import Session, sessionmaker

from infra.bulk_import.formats import IMPORT_FORMATS, ImportFormat, Reject
from infra.bulk_import.gc_pause import cyclic_gc_paused
from infra.bulk_import.lines import ImportTooLarge, LineReader
from infra.bulk_import.report import ImportReport, audit_import
from infra.bulk_import.rows import RowParser, parse_rows
from infra.bulk_import.writers import BatchWriter, PostgresStatement, writer_for
from infra.errors import PayloadTooLarge
from infra.sql_dialect import is_postgresql

log = logging.getLogger(__name__)

Row = TypeVar("Row")
Resolved = TypeVar("Resolved")


@dataclass(frozen=True)
class BulkImport(Generic[Row, Resolved]):
    """One kind of bulk import: the steps that are its own.

    - ``entity_type``: what its audit row names ("outcomes", "subscribers").
    - ``parser``: reads each line or CSV record into a typed row.
    - ``resolve(session, rows, reject)``: the writable rows of a batch of ``(line number,
      row)``, in the batch's session; rows it refuses go to ``reject`` by line.
    - ``keep_latest(resolved)``: at most one row per key (a statement may not touch a row
      twice), chosen as the database would choose between them.
    - ``write_rows(session, rows)``: the executemany upsert (any dialect; never commits).
    - ``postgres_statement(rows)``: the same upsert as one PostgreSQL statement.
    """

    entity_type: str
    parser: RowParser[Row]
    resolve: Callable[[Session, list[tuple[int, Row]], Reject], list[Resolved]]
    keep_latest: Callable[[list[Resolved]], Collection[Resolved]]
    write_rows: Callable[[Session, Collection[Resolved]], None]
    postgres_statement: Callable[[Collection[Resolved]], PostgresStatement]


@dataclass
class _Batch(Generic[Row]):
    """Parsed rows waiting to be resolved and written, with the rejects of their lines."""

    rows: list[tuple[int, Row]] = field(default_factory=list)
    rejects: list[tuple[int, str]] = field(default_factory=list)


class _BatchRunner(Generic[Row, Resolved]):
    """Resolves and writes one batch at a time, each in a session of its own."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        kind: BulkImport[Row, Resolved],
        report: ImportReport,
        postgresql: bool,
    ) -> None:
        self._factory = session_factory
        self._kind = kind
        self._report = report
        self.writer: BatchWriter[Any] = writer_for(
            postgresql, session_factory, kind.write_rows, kind.postgres_statement
        )

    def submit(self, batch: _Batch[Row]) -> None:
        """Resolve ``batch`` and write its good rows; report its rejects in line order."""
        self.writer.before_batch()
        rejects = batch.rejects
        session = self._factory()
        try:
            rows = self._kind.resolve(session, batch.rows, lambda line, error: rejects.append((line, error)))
            for line, error in sorted(rejects):
                self._report.reject(line, error)
            self._report.accepted += len(rows)
            latest = self._kind.keep_latest(rows)
            if latest:
                self.writer.write(session, latest)
            else:
                session.close()
        except BaseException:
            session.rollback()
            session.close()
            raise


def run_import(
    session_factory: sessionmaker[Session],
    lines: Iterable[str],
    fmt: ImportFormat,
    kind: BulkImport[Row, Resolved],
    *,
    batch_rows: int,
    max_listed_errors: int,
    actor: str,
) -> ImportReport:
    """Import every good row of ``lines`` (CSV with a header row, or JSON lines) as ``kind``
    says; report the bad ones by line number.

    ``lines`` is usually a ``LineReader`` (its unreadable lines are reported too); any
    iterable of text lines works. Every ``batch_rows`` parsed rows are resolved and written in
    a session of their own from ``session_factory``, and committed; then one audit row
    (action "import", counts only) is written. ``accepted`` counts the rows that passed every
    check; ``written`` the rows stored once a batch's duplicates collapsed.

    Raises BadRequest for an empty body or a bad CSV header (nothing is written then), and
    PayloadTooLarge when a LineReader passes its byte limit (the rows before it are kept and
    audited; the error's details carry the report). Any other failure part way (say, the
    database goes away) keeps the batches already committed and, where it can, audits them
    with ``stopped: "failed: <error>"`` before re-raising.
    """
    if fmt not in IMPORT_FORMATS:
        raise ValueError(f"unknown import format {fmt!r}")
    if batch_rows < 1:
        raise ValueError("batch_rows must be at least 1")
    report = ImportReport(import_id=uuid.uuid4().hex, format=fmt, max_listed=max_listed_errors)
    bad_lines = lines.bad_lines if isinstance(lines, LineReader) else {}
    with session_factory() as session:
        postgresql = is_postgresql(session)
    runner = _BatchRunner(session_factory, kind, report, postgresql)
    batch: _Batch[Row] = _Batch()
    rows = parse_rows(lines, fmt, bad_lines, lambda line, error: batch.rejects.append((line, error)), kind.parser)

    def flush() -> None:
        nonlocal batch
        full, batch = batch, _Batch()
        if full.rows or full.rejects:
            runner.submit(full)
            del full  # freed now, so the collection below need not walk its thousands of rows
            # A batch's session and results hold reference cycles; with the cyclic collector
            # paused they would pile up. Collecting the young generations costs ~1 ms.
            gc.collect(1)

    try:
        with cyclic_gc_paused():
            try:
                for row in rows:
                    batch.rows.append(row)
                    if len(batch.rows) >= batch_rows:
                        flush()
            except ImportTooLarge as exc:
                report.stopped = str(exc)
            flush()
        runner.writer.close()
    except BaseException as exc:
        _close_after_failure(runner.writer)
        _count(report, runner.writer, lines)
        if report.batches:  # rows were committed: leave a trace of the partial import
            report.stopped = report.stopped or f"failed: {exc.__class__.__name__}"
            audit_import(session_factory, report, actor, kind.entity_type, best_effort=True)
        raise
    _count(report, runner.writer, lines)
    audit_import(session_factory, report, actor, kind.entity_type)
    if report.stopped:
        raise PayloadTooLarge(
            f"{report.stopped}; the {report.accepted} good rows before it were imported",
            code="import_too_large",
            details=report.as_json(),
        )
    return report


def _count(report: ImportReport, writer: BatchWriter[Any], lines: Iterable[str]) -> None:
    report.batches, report.written = writer.committed_batches, writer.committed_rows
    report.bytes_read = lines.bytes_read if isinstance(lines, LineReader) else 0


def _close_after_failure(writer: BatchWriter[Any]) -> None:
    """Finish the batch in flight without hiding the error that stopped the import."""
    try:
        writer.close()
    except Exception:  # the connection is likely what failed; the original error says more
        log.warning("could not finish the last import batch", exc_info=True)
