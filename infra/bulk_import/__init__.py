"""Streamed bulk imports (subscriber profiles, outcomes): the pieces they share.

- ``source``: the request body or a file as a ``LineReader`` (``lines``), which reads it in
  fixed-size chunks, so memory stays flat however large the file. The only Flask-aware part.
- ``formats``: the body split into records (JSON lines, or CSV with a header row).
- ``postgres_pipeline``: on PostgreSQL each batch can travel as one statement sent without
  waiting, so the server writes batch N while Python parses batch N+1. The cyclic collector
  is paused meanwhile (``gc_pause``).
- ``report``: rows accepted, rows rejected by line number, counts, and one audit row.

A bad row costs only itself: it is reported by line number and the good rows around it are
kept. Each batch is committed on its own. Why imports commit (unlike other services): one
transaction over a million rows would hold its locks and undo for minutes, and one late
failure would throw away every good row before it. So an import takes a session *factory*
and opens one short session per batch; its single audit row is written in its own
transaction at the end.
"""

from infra.bulk_import.formats import CONTENT_TYPES, ImportFormat, csv_records, decode_json_line, jsonl_lines
from infra.bulk_import.gc_pause import cyclic_gc_paused
from infra.bulk_import.lines import ImportTooLarge, LineReader
from infra.bulk_import.postgres_pipeline import PostgresPipeline
from infra.bulk_import.report import ImportReport, audit_import

__all__ = [
    "CONTENT_TYPES",
    "ImportFormat",
    "ImportReport",
    "ImportTooLarge",
    "LineReader",
    "PostgresPipeline",
    "audit_import",
    "csv_records",
    "cyclic_gc_paused",
    "decode_json_line",
    "jsonl_lines",
]
