"""The rows of a bulk profile body (offers/subscriber_parsing.py): the compiled CSV reader gives
the typed rules' answer (``validate_subscriber_id`` + ``coerce_profile``) for any row."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infra.bulk_import import RowRejected
from infra.errors import BadRequest
from offers.subscriber_attributes import (
    ATTRIBUTE_KINDS,
    MAX_ATTRIBUTES,
    ProfileError,
    coerce_profile,
    validate_subscriber_id,
)
from offers.subscriber_parsing import SubscriberRowParser

ATTRIBUTES = [*sorted(ATTRIBUTE_KINDS), "region", "plan"]
CELLS = st.one_of(
    st.sampled_from(["", " ", "42.5", " 12 ", "1e3", "12.0", "-1", "yes", "No", "0", "1990-02-28", "02-29"]),
    st.sampled_from(["2024-01-31T10:00:00Z", "Growth", "Asia/Shanghai", "nan", "x" * 1001, "a\x00b"]),
    st.text(max_size=12),
)
IDS = st.one_of(st.sampled_from(["s-1", " s-2 ", "", "a\tb", "x" * 65]), st.text(max_size=8))


@st.composite
def csv_rows(draw: st.DrawFn) -> tuple[list[str], list[str]]:
    """A header of attribute columns with subscriber_id anywhere, and a row under it."""
    attributes = draw(st.lists(st.sampled_from(ATTRIBUTES), unique=True, max_size=8))
    header = list(attributes)
    header.insert(draw(st.integers(0, len(header))), "subscriber_id")
    return header, [draw(IDS) if name == "subscriber_id" else draw(CELLS) for name in header]


def typed_answer(header: list[str], cells: list[str]) -> Any:
    """The typed rules' answer for one CSV row, its values with their types."""
    raw = dict(zip(header, cells))
    try:
        subscriber_id = validate_subscriber_id(raw.pop("subscriber_id"))
        profile = coerce_profile(raw, "csv")
    except ProfileError as exc:
        return ("rejected", exc.message)
    return subscriber_id, [(name, type(value), value) for name, value in profile.items()]


def reader_answer(header: list[str], cells: list[str]) -> Any:
    try:
        subscriber_id, profile = SubscriberRowParser().csv_reader(header)(list(cells))
    except RowRejected as exc:
        return ("rejected", exc.message)
    return subscriber_id, [(name, type(value), value) for name, value in profile.items()]


@settings(max_examples=500, deadline=None)
@given(csv_rows())
def test_the_csv_reader_gives_the_typed_answer(header_and_cells):
    header, cells = header_and_cells
    assert reader_answer(header, cells) == typed_answer(header, cells)


def test_the_csv_reader_takes_the_id_from_its_column():
    read = SubscriberRowParser().csv_reader(["arpu", "subscriber_id", "region"])
    assert read(["40", " s-1 ", " north "]) == ("s-1", {"arpu": 40.0, "region": "north"})
    with pytest.raises(RowRejected, match=r"^arpu: must be a number, got 'x'$"):
        read(["x", "s-1", ""])
    with pytest.raises(RowRejected, match=r"^subscriber_id is missing or empty$"):
        read(["40", "", ""])


@pytest.mark.parametrize(
    "header, fragment",
    [
        (["arpu"], "the header row has no subscriber_id column"),
        (["subscriber_id", "arpu", "arpu"], "repeated column(s) arpu"),
        (["subscriber_id", "", "arpu"], "column 2 has no name"),
        (["subscriber_id", "tier"], "column 2: tier cannot be stored as an attribute"),
        (["subscriber_id", *(f"a{i}" for i in range(MAX_ATTRIBUTES + 1))], f"at most {MAX_ATTRIBUTES} attributes"),
    ],
)
def test_a_bad_header_is_refused_with_every_problem(header, fragment):
    with pytest.raises(BadRequest) as caught:
        SubscriberRowParser().csv_reader(header)
    assert caught.value.code == "invalid_csv_header" and fragment in caught.value.message


def test_a_header_of_the_most_attributes_a_profile_may_have_is_taken():
    header = ["subscriber_id", *(f"a{i}" for i in range(MAX_ATTRIBUTES))]
    assert SubscriberRowParser().csv_reader(header)(["s-1", *["x"] * MAX_ATTRIBUTES])[0] == "s-1"


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"subscriber_id": "s-1", "arpu": 40, "region": "north"}', None),
        ('{"subscriber_id": "s-1", "arpu": "40"}', "arpu: must be a number (not text), got '40'"),
        ('{"arpu": 40}', "subscriber_id must be text"),
        ('["s-1", 40]', "each line must be a JSON object with subscriber_id and attributes"),
        ('{"subscriber_id": "s-1", "arpu": NaN}', "invalid JSON: NaN is not a JSON number"),
        ('{"subscriber_id": "s-1",', "invalid JSON: Expecting property name enclosed in double quotes at column 25"),
    ],
)
def test_json_lines_keep_their_types(line, message):
    read = SubscriberRowParser().jsonl_reader()
    if message is None:
        assert read(line) == ("s-1", {"arpu": 40, "region": "north"})
    else:
        with pytest.raises(RowRejected) as caught:
            read(line)
        assert caught.value.message == message
