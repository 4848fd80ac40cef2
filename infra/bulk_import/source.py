"""Where a bulk import's lines come from: the body of the current request, or a file.

The only part of the pipeline that knows about Flask; what it returns is a ``LineReader`` and
the body's format, which the rest of the pipeline takes from any source.
``import_request_body`` is the whole of a bulk upload endpoint's work.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO

from flask import current_app, request

from infra.auth import current_principal
from infra.bulk_import.formats import CONTENT_TYPES, ImportFormat
from infra.bulk_import.lines import ByteStream, LineReader
from infra.bulk_import.report import ImportReport
from infra.db import db_session, get_database
from infra.errors import PayloadTooLarge, UnsupportedMediaType
from infra.openapi import RawBody


def request_lines(*, max_bytes: int, what: str) -> tuple[LineReader, ImportFormat]:
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


def upload_body_doc(description: str) -> RawBody:
    """The documented body of a bulk upload endpoint: the media types ``request_lines``
    takes, and ``description`` of what the lines hold."""
    return RawBody(tuple(CONTENT_TYPES), description)


def import_request_body(importer: Callable[..., ImportReport], *, what: str) -> ImportReport:
    """Stream the current request's body (``request_lines``) through a bulk importer
    (``import_subscribers``, ``import_outcomes``) with the app's import settings, as the
    calling principal; ``what`` names the rows in messages ("the profiles")."""
    settings = current_app.config["CAREPILOT_SETTINGS"]
    lines, fmt = request_lines(max_bytes=settings.max_import_bytes, what=what)
    actor = current_principal().actor
    # The import opens its own short sessions; end the request's read transaction now rather
    # than leave it idle for the length of a large upload.
    db_session().rollback()
    return importer(
        get_database().sessionmaker,
        lines,
        fmt,
        batch_rows=settings.import_batch_rows,
        max_listed_errors=settings.max_listed_import_errors,
        actor=actor,
    )


def format_of_file(path: str) -> ImportFormat:
    """A file's format from its name: CSV for ``.csv``, else JSON lines."""
    return "csv" if path.lower().endswith(".csv") else "jsonl"


@contextmanager
def file_lines(path: str, *, max_bytes: int, on_read: Callable[[int], object] | None = None) -> Iterator[LineReader]:
    """The lines of the file at ``path``, streamed, while the block runs; ``on_read`` is told
    how many bytes each read returned (a progress bar)."""
    with open(path, "rb") as raw:
        stream: ByteStream = raw if on_read is None else _CountingStream(raw, on_read)
        yield LineReader(stream, max_bytes=max_bytes)


class _CountingStream:
    """A read-only byte stream that reports how much has been read."""

    def __init__(self, raw: IO[bytes], on_read: Callable[[int], object]) -> None:
        self._raw, self._on_read = raw, on_read

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self._on_read(len(data))
        return data
