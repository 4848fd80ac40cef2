"""Reading the rows of a bulk profile body: each CSV row or JSON line becomes a subscriber id
and its typed attributes (``offers.subscriber_attributes``), or is refused with the reason.

CSV: a header row with ``subscriber_id`` (anywhere) and one column per attribute; cells are
text, parsed by the attribute's kind, and an empty cell is an absent attribute. JSON lines: one
flat object per line, ``subscriber_id`` beside the attributes, whose JSON types must match.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from infra.bulk_import import RowRejected, decode_json_line, refuse_bad_header, repeated_columns
from offers.subscriber_attributes import (
    MAX_ATTRIBUTES,
    ProfileError,
    check_attribute_name,
    coerce_profile,
    csv_row_parser,
    validate_subscriber_id,
)

SubscriberRow = tuple[str, dict[str, Any]]  # (subscriber id, storable attributes)


def check_csv_header(row: list[str]) -> list[str]:
    """The header's column names, or BadRequest (``invalid_csv_header``) listing every problem."""
    names = [name.strip() for name in row]
    problems = []
    for index, name in enumerate(names, 1):
        if not name:
            problems.append(f"column {index} has no name")
        elif name != "subscriber_id":
            try:
                check_attribute_name(name)
            except ProfileError as exc:
                problems.append(f"column {index}: {exc.message}")
    problems.extend(repeated_columns(names))
    if "subscriber_id" not in names:
        problems.insert(0, "the header row has no subscriber_id column")
    elif len(names) - 1 > MAX_ATTRIBUTES:
        problems.append(f"a profile may have at most {MAX_ATTRIBUTES} attributes, the header has {len(names) - 1}")
    refuse_bad_header(problems)
    return names


class SubscriberRowParser:
    """The rows of a bulk profile body (``infra.bulk_import.RowParser``)."""

    csv_empty_message = "the body is empty: send a header row with subscriber_id, then one row per subscriber"
    jsonl_empty_message = "the body is empty: send one JSON object per line"

    def csv_reader(self, header: list[str]) -> Callable[[list[str]], SubscriberRow]:
        """The id column's value and the attribute columns' cells through the compiled CSV
        rules of a checked ``header``."""
        names = check_csv_header(header)
        id_column = names.index("subscriber_id")
        parse_attributes = csv_row_parser(names[:id_column] + names[id_column + 1 :])

        def read(values: list[str]) -> SubscriberRow:
            try:
                return validate_subscriber_id(values.pop(id_column)), parse_attributes(values)
            except ProfileError as exc:
                raise RowRejected(exc.message) from None

        return read

    def jsonl_reader(self) -> Callable[[str], SubscriberRow]:
        """A JSON object per line: ``subscriber_id`` and the attributes, with JSON types."""
        decode = decode_json_line

        def read(line: str) -> SubscriberRow:
            try:
                obj = decode(line)
            except json.JSONDecodeError as exc:
                raise RowRejected(f"invalid JSON: {exc.msg} at column {exc.colno}") from None
            except (ValueError, RecursionError) as exc:
                raise RowRejected(f"invalid JSON: {exc}") from None
            if type(obj) is not dict:
                raise RowRejected("each line must be a JSON object with subscriber_id and attributes")
            try:
                return validate_subscriber_id(obj.pop("subscriber_id", None)), coerce_profile(obj, "json")
            except ProfileError as exc:
                raise RowRejected(exc.message) from None

        return read
