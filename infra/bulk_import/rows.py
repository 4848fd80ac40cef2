"""Typed rows out of a bulk body: the records of either format, each read by the import's
own row reader (``RowParser``) into the value its resolver takes.

The two formats share the rules every import follows: a CSV body opens with a header the
import checks once, every row has as many cells as the header, and an unreadable or invalid
row is reported by the line it starts on and skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Protocol, TypeVar

from infra.bulk_import.formats import ImportFormat, Reject, csv_records, jsonl_lines

Row = TypeVar("Row")
Record = TypeVar("Record")  # a CSV record's cells or a JSON line, as the reader takes it
Row_co = TypeVar("Row_co", covariant=True)


class RowRejected(Exception):
    """A row that cannot be imported; ``message`` is what the report says about its line."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class RowParser(Protocol[Row_co]):
    """How one kind of import reads its rows. Readers raise ``RowRejected`` for a bad row."""

    csv_empty_message: str  # the BadRequest for a CSV body without a header row
    jsonl_empty_message: str  # the BadRequest for a JSON-lines body without a line

    def csv_reader(self, header: list[str]) -> Callable[[list[str]], Row_co]:
        """The reader of the rows under ``header`` (the cells as read); BadRequest
        (``invalid_csv_header``) for a header the import cannot take. The reader may change
        the list of cells it is given."""
        ...

    def jsonl_reader(self) -> Callable[[str], Row_co]:
        """The reader of one line of a JSON-lines body."""
        ...


def parse_rows(
    lines: Iterable[str], fmt: ImportFormat, bad_lines: dict[int, str], reject: Reject, parser: RowParser[Row]
) -> Iterator[tuple[int, Row]]:
    """``(line number, row)`` of each good row of ``lines`` in format ``fmt``; bad rows, and the
    lines the ``LineReader`` could not read (``bad_lines``), go to ``reject``. Raises
    BadRequest (``empty_import``) for a body without rows, or from the parser's header check."""
    if fmt == "csv":
        return _csv_rows(lines, bad_lines, reject, parser)
    if fmt == "jsonl":
        return _jsonl_rows(lines, bad_lines, reject, parser)
    raise ValueError(f"unknown import format {fmt!r}")


def _csv_rows(
    lines: Iterable[str], bad_lines: dict[int, str], reject: Reject, parser: RowParser[Row]
) -> Iterator[tuple[int, Row]]:
    records = csv_records(lines, bad_lines, reject, empty_message=parser.csv_empty_message)
    first = next(records, None)  # the header row (csv_records raises BadRequest for a body without one)
    if first is None:
        return
    header = first[1]
    columns = len(header)  # before the parser sees the header, which it may change
    yield from _read_each(_as_wide_as(records, columns, reject), parser.csv_reader(header), reject)


def _as_wide_as(
    records: Iterator[tuple[int, list[str]]], columns: int, reject: Reject
) -> Iterator[tuple[int, list[str]]]:
    """The records with ``columns`` cells, as the header has; the others go to ``reject``."""
    for start, values in records:
        if len(values) != columns:
            reject(start, f"expected {columns} columns as in the header, got {len(values)}")
            continue
        yield start, values


def _jsonl_rows(
    lines: Iterable[str], bad_lines: dict[int, str], reject: Reject, parser: RowParser[Row]
) -> Iterator[tuple[int, Row]]:
    records = jsonl_lines(lines, bad_lines, reject, empty_message=parser.jsonl_empty_message)
    yield from _read_each(records, parser.jsonl_reader(), reject)


def _read_each(
    records: Iterable[tuple[int, Record]], read: Callable[[Record], Row], reject: Reject
) -> Iterator[tuple[int, Row]]:
    """``(line number, row)`` of each record ``read`` takes; a record it refuses
    (``RowRejected``) goes to ``reject`` by the line it starts on."""
    for line_no, record in records:
        try:
            row = read(record)
        except RowRejected as exc:
            reject(line_no, exc.message)
            continue
        yield line_no, row
