"""Typed rows out of a bulk body (infra/bulk_import/rows.py), with a toy import's parser."""

from __future__ import annotations

import io
import json
from collections.abc import Callable

import pytest

from infra.bulk_import import ImportFormat, LineReader, RowRejected, parse_rows
from infra.errors import BadRequest


class Pairs:
    """A toy import: rows of a name and a whole number."""

    csv_empty_message = "no header"
    jsonl_empty_message = "no lines"

    def csv_reader(self, header: list[str]) -> Callable[[list[str]], tuple[str, int]]:
        if header != ["name", "n"]:
            raise BadRequest("the header must be name,n", code="invalid_csv_header")

        def read(values: list[str]) -> tuple[str, int]:
            if not values[1].isdigit():
                raise RowRejected(f"n is not a whole number: {values[1]!r}")
            return values[0], int(values[1])

        return read

    def jsonl_reader(self) -> Callable[[str], tuple[str, int]]:
        def read(line: str) -> tuple[str, int]:
            obj = json.loads(line)
            if type(obj.get("n")) is not int:
                raise RowRejected("n is not a whole number")
            return obj["name"], obj["n"]

        return read


def rows_of(body: bytes, fmt: ImportFormat) -> tuple[list[tuple[int, tuple[str, int]]], list[tuple[int, str]]]:
    reader = LineReader(io.BytesIO(body), max_bytes=10**6, chunk_bytes=16, max_line_bytes=32)
    rejected: list[tuple[int, str]] = []
    rows = list(parse_rows(reader, fmt, reader.bad_lines, lambda line, error: rejected.append((line, error)), Pairs()))
    return rows, rejected


def test_csv_rows_come_with_the_line_they_start_on_and_bad_ones_are_reported_by_it():
    body = b'name,n\na,1\n\n"b\nc",2\nd\ne,x\n\xff,3\n' + b"f" * 40 + b",4\ng,5,6\nh,7\n"
    rows, rejected = rows_of(body, "csv")
    assert rows == [(2, ("a", 1)), (4, ("b\nc", 2)), (11, ("h", 7))]
    assert rejected == [
        (6, "expected 2 columns as in the header, got 1"),
        (7, "n is not a whole number: 'x'"),
        (8, "line is not valid UTF-8 text"),
        (9, "line is longer than 32 bytes"),
        (10, "expected 2 columns as in the header, got 3"),
    ]


def test_json_lines_skip_blank_lines_and_report_bad_ones_by_line():
    rows, rejected = rows_of(b'{"name": "a", "n": 1}\n\n  \n{"name": "b", "n": "2"}\n{"name": "c", "n": 3}', "jsonl")
    assert rows == [(1, ("a", 1)), (5, ("c", 3))]
    assert rejected == [(4, "n is not a whole number")]


@pytest.mark.parametrize("body, fmt, message", [(b"\n\n", "csv", "no header"), (b" \n", "jsonl", "no lines")])
def test_a_body_without_rows_is_refused_with_the_imports_message(body, fmt, message):
    with pytest.raises(BadRequest, match=message) as caught:
        rows_of(body, fmt)
    assert caught.value.code == "empty_import"


def test_the_header_check_is_the_imports():
    with pytest.raises(BadRequest, match="the header must be name,n"):
        rows_of(b"n,name\n1,a\n", "csv")
