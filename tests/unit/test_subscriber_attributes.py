"""Typed subscriber attributes (offers/subscriber_attributes.py)."""

from __future__ import annotations

import contextlib
import math
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from infra.settings import PROJECT_ROOT
from offers.subscriber_attributes import (
    ATTRIBUTE_KINDS,
    LIFECYCLE_STAGES,
    MAX_ATTRIBUTES,
    MAX_TEXT_LENGTH,
    ProfileError,
    Source,
    coerce_profile,
    csv_row_parser,
    validate_subscriber_id,
)


def error_of(raw: dict, source: Source) -> ProfileError:
    with pytest.raises(ProfileError) as caught:
        coerce_profile(raw, source)
    return caught.value


# --- CSV: text cells are parsed ---------------------------------------------------------------


def test_csv_parses_known_attributes_and_keeps_unknown_ones_as_text():
    raw = {
        "arpu": " 42.5 ",
        "ltv": "1e3",
        "tenure_months": "12",
        "complaints_90d": "3.0",
        "has_broadband": "Yes",
        "night_data_share": "0.25",
        "arpu_change_3m": "-0.2",
        "birthday": "1990-02-28",
        "join_date": "2024-01-31T10:00:00Z",
        "lifecycle_stage": " Growth ",
        "timezone": "Asia/Shanghai",
        "region": "  Shanghai ",
        "plan": "unlimited-69",
    }
    assert coerce_profile(raw, "csv") == {
        "arpu": 42.5,
        "ltv": 1000.0,
        "tenure_months": 12,
        "complaints_90d": 3,
        "has_broadband": True,
        "night_data_share": 0.25,
        "arpu_change_3m": -0.2,
        "birthday": "1990-02-28",
        "join_date": "2024-01-31T10:00:00Z",
        "lifecycle_stage": "growth",
        "timezone": "Asia/Shanghai",
        "region": "Shanghai",
        "plan": "unlimited-69",
    }


def test_csv_types_are_exact():
    profile = coerce_profile({"arpu": "40", "tenure_months": "7", "has_broadband": "0"}, "csv")
    assert type(profile["arpu"]) is float
    assert type(profile["tenure_months"]) is int
    assert profile["has_broadband"] is False


@pytest.mark.parametrize("cell", ["", "   ", "\t"])
def test_csv_empty_cells_mean_absent(cell):
    raw = {
        "arpu": cell,
        "tenure_months": cell,
        "has_broadband": cell,
        "birthday": cell,
        "lifecycle_stage": cell,
        "region": cell,
    }
    assert coerce_profile(raw, "csv") == {}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("true", True),
        ("TRUE", True),
        ("t", True),
        ("yes", True),
        ("Y", True),
        ("1", True),
        ("false", False),
        ("F", False),
        ("no", False),
        ("n", False),
        ("0", False),
        (" no ", False),
    ],
)
def test_csv_booleans(text, expected):
    assert coerce_profile({"has_broadband": text}, "csv") == {"has_broadband": expected}


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ({"arpu": "abc"}, "arpu: must be a number, got 'abc'"),
        ({"arpu": "12,5"}, "arpu: must be a number"),
        ({"arpu": "nan"}, "arpu: must be a finite number"),
        ({"ltv": "inf"}, "ltv: must be a finite number"),
        ({"arpu": "-1"}, "arpu: must be between 0 and"),
        ({"churn_score": "1.5"}, "churn_score: must be between 0 and 1"),
        ({"arpu_change_3m": "-1.5"}, "arpu_change_3m: must be between -1 and"),
        ({"tenure_months": "12.5"}, "tenure_months: must be a whole number"),
        ({"tenure_months": "twelve"}, "tenure_months: must be a whole number"),
        ({"complaints_90d": "-2"}, "complaints_90d: must be between 0 and"),
        ({"active_days_30d": "32"}, "active_days_30d: must be between 0 and 31"),
        ({"has_broadband": "maybe"}, "has_broadband: must be true or false"),
        ({"lifecycle_stage": "retired"}, "lifecycle_stage: must be one of onboarding, growth"),
        ({"birthday": "1990-02-30"}, "birthday: is not a real calendar date"),
        ({"birthday": "02-30"}, "birthday: is not a real calendar day"),
        ({"birthday": "13-01"}, "birthday: is not a real calendar day"),
        ({"birthday": "1990/01/01"}, "birthday: must be YYYY-MM-DD or MM-DD"),
        ({"join_date": "yesterday"}, "join_date: must be an ISO date"),
        ({"join_date": "2024-13-01"}, "join_date: is not a real date or time"),
        ({"join_date": "2024-01-01T25:00"}, "join_date: is not a real date or time"),
        ({"timezone": "Mars/Olympus"}, "timezone: must be an IANA time zone"),
        ({"region": "x" * (MAX_TEXT_LENGTH + 1)}, "region: text longer than"),
        ({"region": "a\x00b"}, "region: contains a NUL character"),
    ],
)
def test_csv_errors_name_the_attribute(raw, fragment):
    error = error_of(raw, "csv")
    assert fragment in error.message
    assert error.attribute == next(iter(raw))


def test_csv_values_must_be_text():
    assert "a CSV value must be text" in error_of({"arpu": 12.0}, "csv").message


@pytest.mark.parametrize("birthday", ["1990-02-28", "02-29", "--12-31", "2000-02-29"])
def test_birthdays(birthday):
    assert coerce_profile({"birthday": birthday}, "csv") == {"birthday": birthday}


@pytest.mark.parametrize(
    "join_date",
    [
        "2024-01-31",
        "2024-01-31T10:00",
        "2024-01-31T10:00:00",
        "2024-01-31T10:00:00.123Z",
        "2024-01-31 10:00:00+08:00",
        "2024-01-31T10:00:00-0500",
    ],
)
def test_join_dates(join_date):
    assert coerce_profile({"join_date": join_date}, "json") == {"join_date": join_date}


@given(st.floats(min_value=0, max_value=1e12, allow_nan=False))
def test_csv_numbers_round_trip(value):
    assert coerce_profile({"ltv": repr(value)}, "csv") == {"ltv": value}


@given(st.integers(min_value=0, max_value=1_000_000))
def test_csv_whole_numbers_round_trip(value):
    assert coerce_profile({"tenure_months": str(value)}, "csv") == {"tenure_months": value}


# --- JSON: types must already be right --------------------------------------------------------


def test_json_keeps_valid_typed_values():
    raw = {
        "arpu": 42,
        "ltv": 1200.5,
        "tenure_months": 12,
        "downgrades_3m": 2.0,
        "has_broadband": False,
        "lifecycle_stage": "decline",
        "birthday": "07-04",
        "region": "Wuhan",
        "segments": ["gamer", "family"],
        "vip_flag": True,
        "score": 3,
    }
    profile = coerce_profile(raw, "json")
    assert profile == {**raw, "arpu": 42.0, "downgrades_3m": 2}
    assert type(profile["arpu"]) is float and type(profile["downgrades_3m"]) is int


def test_json_null_means_absent():
    assert coerce_profile({"arpu": None, "region": None, "plan": "basic"}, "json") == {"plan": "basic"}


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ({"arpu": "12"}, "arpu: must be a number (not text)"),
        ({"arpu": True}, "arpu: must be a number (true/false is not a number)"),
        ({"arpu": [1]}, "arpu: must be a number"),
        ({"arpu": float("nan")}, "arpu: must be a finite number"),
        ({"arpu": 10**400}, "arpu: is far too large"),
        ({"tenure_months": 1.5}, "tenure_months: must be a whole number"),
        ({"tenure_months": "12"}, "tenure_months: must be a whole number (not text)"),
        ({"tenure_months": False}, "tenure_months: must be a whole number (true/false"),
        ({"has_broadband": 1}, "has_broadband: must be true or false"),
        ({"has_broadband": "true"}, "has_broadband: must be true or false"),
        ({"lifecycle_stage": 3}, "lifecycle_stage: must be text"),
        ({"birthday": 19900101}, "birthday: must be text"),
        ({"profile": {"nested": 1}}, "profile: profiles are flat"),
        ({"tags": [["a"]]}, "tags: list items must be text, numbers or booleans"),
        ({"tags": [{"a": 1}]}, "tags: list items must be text, numbers or booleans"),
        ({"tags": list(range(101))}, "tags: a list may hold at most 100 items"),
        ({"score": float("inf")}, "score: must be a finite number"),
        ({"note": "\ud800"}, "note: contains an unpaired UTF-16 surrogate"),
        ({"note": "a\x00"}, "note: contains a NUL character"),
    ],
)
def test_json_errors_name_the_attribute(raw, fragment):
    error = error_of(raw, "json")
    assert fragment in error.message
    assert error.attribute == next(iter(raw))


@pytest.mark.parametrize(
    "name", ["subscriber_id", "tier", "tiers", "hours_since_join", "is_birthday_today", "local_hour"]
)
@pytest.mark.parametrize("source", ["csv", "json"])
def test_reserved_names_cannot_be_stored(name, source):
    error = error_of({name: "1"}, source)
    assert error.message.startswith(f"{name} cannot be stored as an attribute")


@pytest.mark.parametrize("name", ["", "x" * 65, "bad\nname"])
def test_bad_attribute_names(name):
    assert "attribute name" in error_of({name: "1"}, "json").message


def test_too_many_attributes():
    raw = {f"a{i}": "1" for i in range(MAX_ATTRIBUTES + 1)}
    assert "at most" in error_of(raw, "csv").message
    assert "at most" in error_of(raw, "json").message


def test_unknown_source_is_a_programming_error():
    with pytest.raises(ValueError, match="source must be"):
        coerce_profile({}, "xml")  # type: ignore[arg-type]  # deliberately wrong: the refusal is under test


def test_lifecycle_stages_include_the_brief_and_churned():
    assert LIFECYCLE_STAGES == ("onboarding", "growth", "maturity", "decline", "churned")
    for stage in LIFECYCLE_STAGES:
        assert coerce_profile({"lifecycle_stage": stage}, "json") == {"lifecycle_stage": stage}


def test_every_known_attribute_has_a_kind():
    for name in (
        "arpu",
        "ltv",
        "tenure_months",
        "broadband_tenure_months",
        "complaints_90d",
        "unresolved_complaints",
        "night_data_share",
        "downgrades_3m",
        "inactive_months",
        "churn_score",
        "arpu_change_3m",
        "data_usage_gb",
        "has_broadband",
        "birthday",
        "join_date",
        "lifecycle_stage",
    ):
        assert name in ATTRIBUTE_KINDS


# --- the compiled CSV parser ------------------------------------------------------------------


def test_csv_row_parser_matches_coerce_profile():
    columns = ["arpu", "region", "tenure_months", "has_broadband", "birthday"]
    parse = csv_row_parser(columns)
    for row in (["40", " north ", "3", "yes", "01-02"], ["", "", "", "", ""], ["1.5", "x", "", "no", ""]):
        assert parse(row) == coerce_profile(dict(zip(columns, row)), "csv")


def test_csv_row_parser_checks_names_once():
    with pytest.raises(ProfileError, match="tier cannot be stored"):
        csv_row_parser(["arpu", "tier"])
    with pytest.raises(ProfileError, match="repeated"):
        csv_row_parser(["arpu", "arpu"])


@given(st.dictionaries(st.sampled_from([*sorted(ATTRIBUTE_KINDS), "region", "plan"]), st.text(max_size=12), max_size=8))
def test_csv_never_raises_anything_but_profile_error(raw):
    try:
        profile = coerce_profile(raw, "csv")
    except ProfileError:
        return
    for name, value in profile.items():
        if ATTRIBUTE_KINDS.get(name) == "number":
            assert type(value) is float and math.isfinite(value)


@given(
    st.dictionaries(
        st.sampled_from([*sorted(ATTRIBUTE_KINDS), "region"]),
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(),
            st.floats(),
            st.text(max_size=8),
            st.lists(st.integers(), max_size=3),
        ),
        max_size=8,
    )
)
def test_json_never_raises_anything_but_profile_error(raw):
    with contextlib.suppress(ProfileError):
        coerce_profile(raw, "json")


# --- ids --------------------------------------------------------------------------------------


def test_subscriber_ids():
    assert validate_subscriber_id("  s-1 ") == "s-1"
    assert validate_subscriber_id("x" * 64) == "x" * 64
    for bad, fragment in [
        (None, "must be text"),
        (12, "must be text, got 12"),
        ("", "missing or empty"),
        ("   ", "missing or empty"),
        ("x" * 65, "longer than 64"),
        ("a\tb", "control characters"),
        ("a\x00", "control characters"),
    ]:
        with pytest.raises(ProfileError, match=fragment):
            validate_subscriber_id(bad)


def test_imports_no_framework():
    code = (
        "import sys, offers.subscriber_attributes; "
        "bad = [m for m in ('flask', 'sqlalchemy', 'redis', 'rq') if m in sys.modules]; "
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
