"""Reading the rows of a bulk outcome body: each CSV row or JSON line becomes ``OutcomeFields``
or is refused with ``OutcomeIn``'s own message.

``OutcomeIn`` is the typed parser. A CSV row whose cells all have their plain forms goes
through a hand-written fast path instead (``plain_csv_reader``): it gives ``OutcomeIn``'s answer
at half the cost, and hands every other row to ``OutcomeIn``
(tests/unit/test_outcome_parsing.py checks the two agree on arbitrary rows).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from operator import itemgetter

from pydantic import TypeAdapter, ValidationError

from experiments.models import DAY_N_OUTCOME_TYPES, OUTCOME_TYPES
from experiments.outcomes.schemas import (
    FIELDS,
    MAX_ABS_VALUE,
    MAX_DAY_N,
    OutcomeFields,
    OutcomeIn,
    parse_occurred_at,
)
from infra.bulk_import import RowRejected, refuse_bad_header, repeated_columns
from offers.schemas import Code
from offers.subscriber_attributes import validate_subscriber_id

CsvRowReader = Callable[[list[str]], OutcomeFields]


def row_error(exc: ValidationError) -> str:
    """A pydantic error as one line of text for the import report."""
    parts = []
    for err in exc.errors(include_url=False):
        if err["type"] == "json_invalid":
            return f"invalid JSON: {err.get('ctx', {}).get('error', err['msg'])}"
        message = err["msg"].removeprefix("Value error, ")
        where = ".".join(str(p) for p in err["loc"])
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def check_csv_header(values: list[str]) -> list[str]:
    """The header's column names, or BadRequest (``invalid_csv_header``) listing every problem."""
    names = [name.strip() for name in values]
    problems = [f"column {i} has no name" for i, name in enumerate(names, 1) if not name]
    unknown = [name for name in names if name and name not in FIELDS]
    if unknown:
        problems.append(f"unknown column(s) {', '.join(unknown)}; the columns are {', '.join(FIELDS)}")
    problems.extend(repeated_columns(names))
    missing = [name for name in ("type", "occurred_at") if name not in names]
    if not ({"experiment", "subscriber_id"} <= set(names) or "decision_id" in names):
        missing.append("experiment and subscriber_id (or decision_id)")
    if missing:
        problems.insert(0, f"the header row has no {', '.join(missing)} column")
    refuse_bad_header(problems)
    return names


def typed_csv_reader(header: list[str]) -> CsvRowReader:
    """A CSV row through ``OutcomeIn``: an empty cell is an absent field, and text is converted
    (lax mode), as CSV has no types. RowRejected with the report's message for a bad row."""
    validate, fields_of = OutcomeIn.model_validate, OutcomeFields.of

    def read(values: list[str]) -> OutcomeFields:
        try:
            return fields_of(validate({name: cell for name, cell in zip(header, values) if cell}))
        except ValidationError as exc:
            raise RowRejected(row_error(exc)) from None

    return read


_TYPES = frozenset(OUTCOME_TYPES)
_DAY_N_TYPES = frozenset(DAY_N_OUTCOME_TYPES)
_CODE = TypeAdapter(Code)
_PLAIN_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")  # what a float cell almost always looks like


def plain_csv_reader(header: list[str], fallback: CsvRowReader) -> CsvRowReader:
    """The fast path for a CSV row (about half the time of a row through ``OutcomeIn``): the
    row's outcome when every
    cell has its plain form — exactly the value ``OutcomeIn`` makes of it — else
    ``fallback(row)``, the typed reader. The fallback gets every error and every form
    pydantic's lax parsing accepts that this does not check (``" 12"``, ``1e3``, ``1_000``,
    ``+30``, a decision id, …), so each row is accepted or refused, and refused with the same
    message, as by ``OutcomeIn`` alone. The row list gets an empty cell appended: a column the
    header lacks reads as that cell, an absent field."""
    absent = len(header)
    cells = itemgetter(*(header.index(name) if name in header else absent for name in FIELDS))
    checked_experiment = ""  # one import rarely names more than one experiment: check it once

    def read(values: list[str]) -> OutcomeFields:
        nonlocal checked_experiment
        values.append("")
        experiment, subscriber_id, decision_id, type_, value, occurred_at, day_n = cells(values)
        if decision_id or not experiment or not subscriber_id or type_ not in _TYPES:
            return fallback(values)
        if experiment != checked_experiment:
            try:
                experiment = checked_experiment = _CODE.validate_python(experiment)
            except ValidationError:
                return fallback(values)
        try:
            subscriber_id = validate_subscriber_id(subscriber_id)  # the check SubscriberId makes
            moment = parse_occurred_at(occurred_at)  # the parse OutcomeIn makes
        except ValueError:  # ProfileError too
            return fallback(values)
        if moment.tzinfo is None:
            return fallback(values)
        number: float | None = None
        if value:
            if not _PLAIN_NUMBER.fullmatch(value):
                return fallback(values)
            number = float(value)
            if not -MAX_ABS_VALUE <= number <= MAX_ABS_VALUE:
                return fallback(values)
        elif type_ == "revenue":
            return fallback(values)
        day: int | None = None
        if day_n:
            if type_ not in _DAY_N_TYPES or len(day_n) > 4 or not (day_n.isdigit() and day_n.isascii()):
                return fallback(values)
            day = int(day_n)
            if day > MAX_DAY_N:
                return fallback(values)
        return OutcomeFields(experiment, subscriber_id, None, type_, number, moment, day)

    return read


class OutcomeRowParser:
    """The rows of a bulk outcome body (``infra.bulk_import.RowParser``)."""

    csv_empty_message = "the body is empty: send a header row, then one outcome per row"
    jsonl_empty_message = "the body is empty: send one JSON object per line"

    def csv_reader(self, header: list[str]) -> CsvRowReader:
        """The fast path over the typed reader, for the columns of a checked ``header``."""
        names = check_csv_header(header)
        return plain_csv_reader(names, typed_csv_reader(names))

    def jsonl_reader(self) -> Callable[[str], OutcomeFields]:
        """A JSON line through ``OutcomeIn`` in strict mode: JSON has types, and they must match."""
        validate, fields_of = OutcomeIn.model_validate_json, OutcomeFields.of

        def read(line: str) -> OutcomeFields:
            try:
                return fields_of(validate(line, strict=True))
            except ValidationError as exc:
                raise RowRejected(row_error(exc)) from None

        return read
