"""Streamed bulk imports (subscriber profiles, outcomes) as one pipeline.

    source → lines → typed rows → batches: resolved, deduplicated, written → report

- ``source``: the request body or a file as a ``LineReader`` (``lines``), which reads it in
  fixed-size chunks, so memory stays flat however large the file. The only Flask-aware part.
- ``rows``: each CSV record or JSON line read into a typed row by the import's ``RowParser``
  (``formats`` splits the body into records; ``header`` holds the rules every CSV header
  check shares).
- ``pipeline``: ``run_import`` batches the rows; the import's resolver turns each batch into
  writable rows and one of ``writers`` writes it: an executemany upsert on any dialect, or on
  PostgreSQL one statement per batch sent without waiting (``postgres_pipeline``), so the
  server writes batch N while Python parses batch N+1. The cyclic collector is paused
  meanwhile (``gc_pause``).
- ``report``: rows accepted, rows rejected by line number, counts, and one audit row.

A bad row costs only itself: it is reported by line number and the good rows around it are
kept. Each batch is committed on its own. Why imports commit (unlike other services): one
transaction over a million rows would hold its locks and undo for minutes, and one late
failure would throw away every good row before it. So an import takes a session *factory*
and opens one short session per batch; its single audit row is written in its own
transaction at the end.

An import supplies only its own steps (``BulkImport``): ``experiments.outcomes`` and
``offers.subscriber_import``.
"""

from infra.bulk_import.formats import CONTENT_TYPES, IMPORT_FORMATS, ImportFormat, Reject, decode_json_line
from infra.bulk_import.gc_pause import cyclic_gc_paused
from infra.bulk_import.header import refuse_bad_header, repeated_columns
from infra.bulk_import.lines import ImportTooLarge, LineReader
from infra.bulk_import.pipeline import BulkImport, run_import
from infra.bulk_import.postgres_pipeline import PostgresPipeline
from infra.bulk_import.report import ImportReport, audit_import
from infra.bulk_import.rows import RowParser, RowRejected, parse_rows
from infra.bulk_import.writers import PostgresStatement

__all__ = [
    "CONTENT_TYPES",
    "IMPORT_FORMATS",
    "BulkImport",
    "ImportFormat",
    "ImportReport",
    "ImportTooLarge",
    "LineReader",
    "PostgresPipeline",
    "PostgresStatement",
    "Reject",
    "RowParser",
    "RowRejected",
    "audit_import",
    "cyclic_gc_paused",
    "decode_json_line",
    "parse_rows",
    "refuse_bad_header",
    "repeated_columns",
    "run_import",
]
