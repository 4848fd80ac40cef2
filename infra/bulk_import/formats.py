"""The two formats of a bulk body, split into records: JSON lines (one object per line) and
CSV (a header row, then one record per row; a quoted cell may span lines)."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Iterator
from typing import Literal

from infra.errors import BadRequest

ImportFormat = Literal["csv", "jsonl"]
IMPORT_FORMATS: tuple[ImportFormat, ...] = ("csv", "jsonl")
CONTENT_TYPES: dict[str, ImportFormat] = {
    "text/csv": "csv",
    "application/x-ndjson": "jsonl",
    "application/jsonl": "jsonl",
}
Reject = Callable[[int, str], None]  # (line number, why): a row the import reports and skips


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


# NaN and Infinity are not JSON (Python's parser accepts them; PostgreSQL's JSONB does not)
decode_json_line = json.JSONDecoder(parse_constant=_refuse_constant).decode


def jsonl_lines(
    lines: Iterable[str], bad_lines: dict[int, str], reject: Reject, *, empty_message: str
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
    lines: Iterable[str], bad_lines: dict[int, str], reject: Reject, *, empty_message: str
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
