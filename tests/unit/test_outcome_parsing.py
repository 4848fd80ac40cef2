"""The rows of a bulk outcome body (experiments/outcomes/parsing.py): the CSV fast path gives
``OutcomeIn``'s answer, value for value, or leaves the row to it."""

from __future__ import annotations

import math
import string
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from experiments.models import DAY_N_OUTCOME_TYPES, OUTCOME_TYPES
from experiments.outcomes.parsing import OutcomeRowParser, plain_csv_reader, typed_csv_reader
from experiments.outcomes.schemas import OutcomeFields
from infra.bulk_import import RowRejected
from infra.errors import BadRequest

pytestmark = pytest.mark.heavy

OPTIONAL_COLUMNS = ("decision_id", "value", "day_n")
ZONES = (UTC, timezone(timedelta(hours=8)), timezone(timedelta(hours=-5, minutes=-30)))
MOMENTS = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30))
CODES = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}", fullmatch=True)
PLAIN_IDS = st.text(string.ascii_letters + string.digits + "-_", min_size=1, max_size=64)
PLAIN_NUMBERS = st.one_of(
    st.decimals(allow_nan=False, allow_infinity=False, places=2, min_value=-(10**12), max_value=10**12).map(str),
    st.integers(min_value=-(10**12), max_value=10**12).map(str),
)
PLAIN_TIMES = st.builds(lambda moment, zone: moment.replace(tzinfo=zone).isoformat(), MOMENTS, st.sampled_from(ZONES))

# Each column's other cells: forms pydantic's lax parsing reads differently from the plain
# ones or refuses, the edges of each range, and arbitrary text.
ODD_CELLS = {
    "experiment": st.one_of(
        st.sampled_from(["winback-q4 ", " winback-q4", "-x", "_x", "x" * 64, "x" * 65, ""]), st.text(max_size=12)
    ),
    "subscriber_id": st.one_of(
        st.sampled_from([" s-2 ", "s-2\u00a0", "s-2\x1f", "bad\x07id", "", " ", "s" * 64, "s" * 65, "ünï", 'o"q']),
        st.sampled_from(["\ud800", "s\u200b", "\u2028"]),
        st.text(max_size=70),
    ),
    "decision_id": st.one_of(st.sampled_from(["d-1", " ", "x" * 64, "x" * 65]), st.text(max_size=8)),
    "type": st.one_of(st.sampled_from(["Delivered", "delivered ", "", " retained", "revenue\n"]), st.text(max_size=9)),
    "value": st.one_of(
        st.sampled_from(["1000000000000", "1000000000000.01", "-1000000000000", "-1000000000000.5", "999999999999.99"]),
        st.sampled_from(
            [" 12", "1e3", "1_000", ".5", "5.", "+1", "nan", "-inf", "0x10", "\uff11\uff12", "-0", "007.50"]
        ),
        st.sampled_from(["1" * 400, "0." + "1" * 400, "-", "--1", "1.2.3"]),
        st.integers(min_value=-(10**13), max_value=10**13).map(str),
        st.floats().map(repr),
        st.text("0123456789.-+e_ ", max_size=8),
        st.text(max_size=8),
    ),
    "occurred_at": st.one_of(
        st.builds(lambda moment: moment.replace(tzinfo=UTC).isoformat().replace("+00:00", "Z"), MOMENTS),
        MOMENTS.map(datetime.isoformat),
        st.sampled_from(["1700000000", "0001-01-01T00:00:00+01:00", "9999-12-31T23:00:00-05:00", ""]),
        st.sampled_from([" 2025-01-01T00:00:00Z", "2025-02-30T00:00Z", "2025-06-01", "2025-06-01T10:00+0800"]),
        st.text(max_size=26),
    ),
    "day_n": st.one_of(
        st.sampled_from(["3650", "3651", "9999", "10000", "-0", "-1"]),
        st.integers(min_value=-5, max_value=4000).map(str),
        st.sampled_from(["030", "0000", "00000", "+30", "30.0", " 30", "\u0663", "\u00b2", "9" * 5000]),
        st.text("0123456789+-. ", max_size=6),
    ),
}


@st.composite
def plain_csv_rows(draw: st.DrawFn, with_column: str | None = None) -> tuple[list[str], list[str]]:
    """A header (its columns in any order, the optional ones or not; ``with_column`` always)
    and a row under it whose cells all have their plain forms."""
    type_ = draw(st.sampled_from(OUTCOME_TYPES))
    cells = {
        "experiment": draw(CODES),
        "subscriber_id": draw(PLAIN_IDS),
        "type": type_,
        "occurred_at": draw(PLAIN_TIMES),
    }
    if type_ == "revenue" or draw(st.booleans()):
        cells["value"] = draw(PLAIN_NUMBERS)
    if type_ in DAY_N_OUTCOME_TYPES and draw(st.booleans()):
        cells["day_n"] = str(draw(st.integers(0, 3650)))
    for name in OPTIONAL_COLUMNS:
        if name not in cells and (name == with_column or draw(st.booleans())):
            cells[name] = ""  # the column is there, its cell empty
    header = draw(st.permutations(list(cells)))
    return header, [cells[name] for name in header]


@st.composite
def csv_rows(draw: st.DrawFn) -> tuple[list[str], list[str]]:
    """A plain row with up to three of its cells in another form."""
    header, cells = draw(plain_csv_rows())
    for _ in range(draw(st.integers(0, 3))):
        column = draw(st.integers(0, len(header) - 1))
        cells[column] = draw(ODD_CELLS[header[column]])
    return header, cells


# What the fast path's fallback answers, told apart by identity: the row left to the typed reader
DEFERRED = OutcomeFields(None, None, None, "deferred", None, datetime.min.replace(tzinfo=UTC), None)


def answer(read: Any, cells: list[str]) -> Any:
    """What a reader makes of a row: its fields, exactly (the sign of a zero, the time zone of a
    time), or the message it refuses the row with."""
    try:
        fields = read(list(cells))
    except RowRejected as exc:
        return ("rejected", exc.message)
    if fields is DEFERRED:
        return fields
    assert type(fields) is OutcomeFields
    value = fields.value
    return (*fields, None if value is None else math.copysign(1.0, value), fields.occurred_at.utcoffset())


def check_the_fast_path(header: list[str], cells: list[str]) -> None:
    """The fast path's answer is the typed one, or it leaves the row to the typed reader."""
    fast = answer(plain_csv_reader(header, lambda values: DEFERRED), cells)
    if fast is not DEFERRED:
        assert fast == answer(typed_csv_reader(header), cells)


@settings(max_examples=600, deadline=None)
@given(csv_rows())
def test_the_fast_path_gives_the_typed_answer_or_leaves_the_row_to_it(header_and_cells):
    check_the_fast_path(*header_and_cells)


@pytest.mark.parametrize("column", sorted(ODD_CELLS))
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_one_cell_in_another_form_gets_the_typed_answer(column, data):
    header, cells = data.draw(plain_csv_rows(with_column=column))
    cells[header.index(column)] = data.draw(ODD_CELLS[column])
    check_the_fast_path(header, cells)


@settings(max_examples=300, deadline=None)
@given(csv_rows())
def test_the_csv_reader_accepts_and_refuses_as_outcome_in_does(header_and_cells):
    header, cells = header_and_cells
    assert answer(OutcomeRowParser().csv_reader(header), cells) == answer(typed_csv_reader(header), cells)


@settings(max_examples=300, deadline=None)
@given(plain_csv_rows())
def test_rows_in_their_plain_forms_take_the_fast_path(header_and_cells):
    header, cells = header_and_cells
    fast = answer(plain_csv_reader(header, lambda values: DEFERRED), cells)
    assert fast is not DEFERRED
    assert fast == answer(typed_csv_reader(header), cells)


def test_a_refused_row_names_each_field_and_its_problem():
    read = OutcomeRowParser().csv_reader(["experiment", "subscriber_id", "type", "occurred_at", "day_n"])
    with pytest.raises(RowRejected) as caught:
        read(["winback-q4", "s-1", "delivery", "2025-06-01T10:00:00", "3"])
    assert caught.value.message.startswith("type: Input should be 'retained', 'churned'")
    assert "; occurred_at: Input should have timezone info" in caught.value.message


def test_json_lines_are_strict_and_report_invalid_json():
    read = OutcomeRowParser().jsonl_reader()
    line = '{"experiment": "w", "subscriber_id": "s-1", "type": "revenue", "value": %s, "occurred_at": "%s"}'
    fields = read(line % ("2", "2025-06-01T10:00:00+08:00"))
    assert fields == OutcomeFields("w", "s-1", None, "revenue", 2.0, datetime(2025, 6, 1, 2, tzinfo=UTC), None)
    with pytest.raises(RowRejected, match=r"^value: Input should be a valid number"):
        read(line % ('"2"', "2025-06-01T10:00:00Z"))
    with pytest.raises(RowRejected, match=r"^invalid JSON: "):
        read("{broken")


@pytest.mark.parametrize(
    "header, fragment",
    [
        (["experiment", "subscriber_id", "type", "occurred_at", "colour"], "unknown column(s) colour"),
        (["experiment", "subscriber_id", "occurred_at"], "no type column"),
        (["subscriber_id", "type", "occurred_at"], "experiment and subscriber_id (or decision_id)"),
        (["experiment", "subscriber_id", "type", " type", "occurred_at"], "repeated column(s) type"),
        (["experiment", "", "subscriber_id", "type", "occurred_at"], "column 2 has no name"),
    ],
)
def test_a_bad_header_is_refused_with_every_problem(header, fragment):
    with pytest.raises(BadRequest) as caught:
        OutcomeRowParser().csv_reader(header)
    assert caught.value.code == "invalid_csv_header" and fragment in caught.value.message
