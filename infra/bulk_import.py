"""Shared pieces of streamed bulk imports (subscriber profiles, outcomes).

A bulk import reads its body in fixed-size chunks (``LineReader``), parses and validates it
row by row, and writes it in batches, each committed on its own: memory stays flat however
large the file, and a bad row costs only itself — it is reported by line number
(``ImportReport``) and the good rows around it are kept. On PostgreSQL each batch can travel
as one statement sent without waiting (``PostgresPipeline``), so the server writes batch N
while Python parses batch N+1.

Why imports commit (unlike other services): one transaction over a million rows would hold
its locks and undo for minutes, and one late failure would throw away every good row before
it. So an import takes a session *factory* and opens one short session per batch; its single
audit row (``audit_import``) is written in its own transaction at the end.
"""

from __future__ import annotations

import csv
import gc
import io
import json
import logging
import select
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any, Literal

import psycopg
from flask import request
from psycopg import pq
from sqlalchemy.orm import Session, sessionmaker

from infra.audit import record_audit
from infra.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

log = logging.getLogger(__name__)

ImportFormat = Literal["csv", "jsonl"]
CONTENT_TYPES: dict[str, ImportFormat] = {
    "text/csv": "csv",
    "application/x-ndjson": "jsonl",
    "application/jsonl": "jsonl",
}
CHUNK_BYTES = 1 << 20
MAX_LINE_BYTES = 1 << 20  # a row is a few hundred bytes; a 1 MiB line is a broken file


class ImportTooLarge(Exception):
    """The body grew past the import size limit while being read."""


class LineReader:
    """The lines of a UTF-8 byte stream, read ``chunk_bytes`` at a time.

    Iterating yields each line as text including its ``\\n`` (the last may lack it). A line
    that is not valid UTF-8, or is longer than ``max_line_bytes`` (its bytes are skipped, not
    held), is yielded as a blank line and recorded in ``bad_lines`` (line number → why), so
    the parser can report it. Raises ImportTooLarge once more than ``max_bytes`` have been
    read. A leading byte-order mark is dropped. Only ``\\n`` ends a line, so line numbers
    match what an editor shows for LF and CRLF files alike.
    """

    def __init__(
        self, stream: IO[bytes], *, max_bytes: int, chunk_bytes: int = CHUNK_BYTES, max_line_bytes: int = MAX_LINE_BYTES
    ) -> None:
        if chunk_bytes > max_line_bytes:
            raise ValueError("chunk_bytes may not exceed max_line_bytes")
        self._stream = stream
        self.max_bytes = max_bytes
        self._chunk_bytes = chunk_bytes
        self._max_line_bytes = max_line_bytes
        self.bytes_read = 0
        self.bad_lines: dict[int, str] = {}
        self._lines = 0  # lines yielded so far

    def _chunks(self) -> Iterator[bytes]:
        first = True
        while True:
            chunk = self._stream.read(self._chunk_bytes)
            if not chunk:
                return
            while first and len(chunk) < 3:  # a short first read must not split a byte-order mark
                more = self._stream.read(self._chunk_bytes)
                if not more:
                    break
                chunk += more
            if first and chunk.startswith(b"\xef\xbb\xbf"):
                self.bytes_read += 3
                chunk = chunk[3:]
            first = False
            self.bytes_read += len(chunk)
            if self.bytes_read > self.max_bytes:
                raise ImportTooLarge(f"the upload is larger than {self.max_bytes} bytes")
            yield chunk

    def _bad(self, error: str) -> str:
        self._lines += 1
        self.bad_lines[self._lines] = error
        return "\n"

    def __iter__(self) -> Iterator[str]:
        too_long = f"line is longer than {self._max_line_bytes} bytes"
        limit = self._max_line_bytes
        pending = b""  # the start of a line whose end has not arrived yet (at most ``limit``)
        skipping = False  # inside an over-long line, dropping bytes up to its end
        for chunk in self._chunks():
            end = chunk.rfind(b"\n")
            if end < 0:
                if not skipping:
                    pending += chunk
                    if len(pending) > limit:
                        pending, skipping = b"", True
                continue
            # Only the line running into this chunk can be over-long: every other line of the
            # block lies inside the chunk, and chunks are no longer than the limit.
            first_end = chunk.find(b"\n") + 1
            if skipping or len(pending) + first_end - 1 > limit:
                yield self._bad(too_long)
                block = chunk[first_end : end + 1]
                skipping = False
            else:
                block = pending + chunk[: end + 1]
            pending = chunk[end + 1 :]
            yield from self._decode(block)
        if skipping:
            yield self._bad(too_long)
        elif pending:
            yield from self._decode(pending)

    def _decode(self, block: bytes) -> Iterator[str]:
        """The lines of ``block``: one C-level decode and split in the common case, line by
        line only when the block holds invalid UTF-8."""
        if not block:
            return
        try:
            text = block.decode("utf-8")
        except UnicodeDecodeError:
            for raw in block.split(b"\n")[:-1] if block.endswith(b"\n") else block.split(b"\n"):
                try:
                    line = raw.decode("utf-8") + "\n"
                except UnicodeDecodeError:
                    yield self._bad("line is not valid UTF-8 text")
                    continue
                self._lines += 1
                yield line
            return
        self._lines += block.count(b"\n") + (not block.endswith(b"\n"))
        yield from io.StringIO(text, newline="\n")


@dataclass
class ImportReport:
    """What an import did: rows accepted, rows rejected (the first ``max_listed`` by line)."""

    import_id: str
    format: ImportFormat
    max_listed: int
    accepted: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)
    rejected_count: int = 0
    written: int = 0  # rows committed: accepted minus duplicates within a batch
    batches: int = 0  # batches committed
    bytes_read: int = 0
    stopped: str | None = None  # why the import ended before the end of the body, if it did

    def reject(self, line: int, error: str) -> None:
        self.rejected_count += 1
        if len(self.rejected) < self.max_listed:
            self.rejected.append({"line": line, "error": error})

    @property
    def rejected_truncated(self) -> bool:
        return self.rejected_count > len(self.rejected)

    def counts(self) -> dict[str, Any]:
        """The audit row's ``after``: counts only, never the rows."""
        return {
            "format": self.format,
            "accepted": self.accepted,
            "rejected_count": self.rejected_count,
            "written": self.written,
            "batches": self.batches,
            "bytes_read": self.bytes_read,
            "stopped": self.stopped,
        }

    def as_json(self) -> dict[str, Any]:
        return {
            "import_id": self.import_id,
            "format": self.format,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "rejected_count": self.rejected_count,
            "rejected_truncated": self.rejected_truncated,
        }


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


# NaN and Infinity are not JSON (Python's parser accepts them; PostgreSQL's JSONB does not)
decode_json_line = json.JSONDecoder(parse_constant=_refuse_constant).decode


class _CollectorPause:
    """Who has paused the cyclic collector: it resumes when the last of them is done, so one
    thread's bulk call ending never lets the collector walk another's objects mid-call."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.holders = 0
        self.resume = False  # whether the collector was enabled before the first holder


_COLLECTOR_PAUSE = _CollectorPause()


@contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for a bulk loop.

    Every row allocates a few dicts, which triggers a generation-0 collection every few
    hundred rows; rows form no reference cycles, so reference counting alone frees them and
    memory stays flat. Measured: ~17% more rows/s on the 1M-row benchmark. Threads may nest
    pauses (two bulk calls in one web process): the collector resumes when the last one ends,
    and only if it was enabled when the first began.
    """
    pause = _COLLECTOR_PAUSE
    with pause.lock:
        if pause.holders == 0:
            pause.resume = gc.isenabled()
            gc.disable()
        pause.holders += 1
    try:
        yield
    finally:
        with pause.lock:
            pause.holders -= 1
            if pause.holders == 0 and pause.resume:
                gc.enable()


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

    def __init__(self, session_factory: sessionmaker) -> None:
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
            pgconn = session.connection().connection.driver_connection.pgconn  # type: ignore[union-attr]
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


def audit_import(
    session_factory: sessionmaker, report: ImportReport, actor: str, entity_type: str, *, best_effort: bool = False
) -> None:
    """The import's one audit row (action "import", counts only), in its own transaction
    (the batches are committed). ``best_effort`` logs instead of raising, for the audit of an
    import that is failing anyway."""
    try:
        with session_factory() as session:
            record_audit(
                session,
                actor=actor,
                action="import",
                entity_type=entity_type,
                entity_key=report.import_id,
                after=report.counts(),
            )
            session.commit()
    except Exception:
        if not best_effort:
            raise
        log.exception("could not audit the partial import %s", report.import_id)


def upload_lines(*, max_bytes: int, what: str) -> tuple[LineReader, ImportFormat]:
    """The current request's body as a streamed ``LineReader`` and its format, from the
    content type: CSV (``text/csv``) or JSON lines (``application/x-ndjson``,
    ``application/jsonl``), UTF-8 only (415 otherwise); 413 when the declared length is
    already over ``max_bytes``. ``what`` names the rows in messages ("the outcomes")."""
    fmt = CONTENT_TYPES.get(request.mimetype)
    if fmt is None:
        raise UnsupportedMediaType(
            f"send {what} as text/csv (with a header row) or as JSON lines (application/x-ndjson or application/jsonl)"
        )
    charset = request.mimetype_params.get("charset", "utf-8").lower()
    if charset not in ("utf-8", "utf8"):
        raise UnsupportedMediaType(f"the import must be UTF-8 text, not {charset}")
    if request.content_length is not None and request.content_length > max_bytes:
        raise PayloadTooLarge(f"the upload is larger than {max_bytes} bytes", code="import_too_large")
    return LineReader(request.stream, max_bytes=max_bytes), fmt


# --- reading rows -----------------------------------------------------------------------------


def jsonl_lines(
    lines: Iterable[str], bad_lines: dict[int, str], reject: Callable[[int, str], None], *, empty_message: str
) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of each non-blank line of a JSON-lines body. Lines the
    ``LineReader`` could not read (``bad_lines``) go to ``reject``. Raises BadRequest
    (``empty_import``, ``empty_message``) when the body has no line at all."""
    seen_any = False
    for line_no, line in enumerate(lines, 1):
        if not line or line.isspace():
            if bad_lines and line_no in bad_lines:
                seen_any = True
                reject(line_no, bad_lines.pop(line_no))
            continue
        seen_any = True
        yield line_no, line
    if not seen_any:
        raise BadRequest(empty_message, code="empty_import")


def csv_records(
    lines: Iterable[str], bad_lines: dict[int, str], reject: Callable[[int, str], None], *, empty_message: str
) -> Iterator[tuple[int, list[str]]]:
    """``(first line number, values)`` of each CSV record, the header row first; blank lines
    are skipped. A record ``csv`` cannot parse, or one spanning a line the ``LineReader``
    could not read (``bad_lines``), goes to ``reject`` — unless it is the header, which is a
    BadRequest (``invalid_csv_header``). Raises BadRequest (``empty_import``,
    ``empty_message``) when there is no header row."""
    reader = csv.reader(lines, strict=True)
    header_seen = False
    last_line = 0  # reader.line_num after the previous record; a record starts on the next line
    while True:
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            reject(last_line + 1, f"invalid CSV: {exc}")
            last_line = reader.line_num
            continue
        start, last_line = last_line + 1, reader.line_num
        if bad_lines:  # a line of this record could not be read
            spoiled = sorted(n for n in bad_lines if n <= last_line)
            if spoiled:
                error = bad_lines[spoiled[0]]
                for n in spoiled:
                    del bad_lines[n]
                if not header_seen:
                    raise BadRequest(
                        f"the CSV header (line {start}) cannot be read: {error}", code="invalid_csv_header"
                    )
                reject(start if values else spoiled[0], error)
                continue
        if not values or (len(values) == 1 and values[0].isspace()):
            continue  # a blank line
        header_seen = True
        yield start, values
    if not header_seen:
        raise BadRequest(empty_message, code="empty_import")
