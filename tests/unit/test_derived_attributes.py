"""Contact-time attributes derived from stored facts (offers/derived_attributes.py)."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from infra.settings import PROJECT_ROOT
from offers.conditions import compile_condition
from offers.derived_attributes import derive_contact_attributes

NOW = datetime(2025, 6, 15, 10, 30, tzinfo=UTC)


# --- hours_since_join -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("join_date", "hours"),
    [
        ("2025-06-14T10:30:00+00:00", 24.0),
        ("2025-06-14T10:30:00Z", 24.0),
        ("2025-06-14T18:30:00+08:00", 24.0),  # offsets are honoured
        ("2025-06-14T10:30:00", 24.0),  # no offset: UTC
        ("2025-06-15", 10.5),  # a date alone: midnight UTC
        ("  2025-06-12T10:30:00Z ", 72.0),
        (datetime(2025, 6, 15, 9, 30, tzinfo=UTC), 1.0),
        (datetime(2025, 6, 15, 9, 30), 1.0),  # naive: UTC
        (date(2025, 6, 14), 34.5),
        ("2025-06-15T10:30:00Z", 0.0),
        ("2025-06-15T11:00:00Z", 0.0),  # half an hour ahead: clock skew, joined just now
    ],
)
def test_hours_since_join(join_date, hours):
    assert derive_contact_attributes({"join_date": join_date}, NOW)["hours_since_join"] == pytest.approx(hours)


@pytest.mark.parametrize(
    "join_date",
    [
        "2025-06-16T10:30:00Z",  # a day in the future is a bad fact, not a brand-new joiner
        "yesterday",
        "",
        "2025-13-01",
        "2025-02-30",
        "2025-06-15T25:00",
        20250614,
        1.5,
        True,
        None,
        ["2025-06-14"],
        {"date": "2025-06-14"},
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:30:00-01:00",  # out of range once moved to UTC
    ],
)
def test_malformed_or_future_join_date_derives_nothing(join_date):
    profile = derive_contact_attributes({"join_date": join_date}, NOW)
    assert "hours_since_join" not in profile
    assert profile["join_date"] == join_date  # the stored fact is passed through untouched


def test_missing_join_date_keeps_a_value_given_by_the_caller():
    assert derive_contact_attributes({"hours_since_join": 5}, NOW)["hours_since_join"] == 5
    # …but a real join date wins over a stale stored age
    fresh = derive_contact_attributes({"hours_since_join": 5, "join_date": "2025-06-01"}, NOW)
    assert fresh["hours_since_join"] == pytest.approx(14 * 24 + 10.5)


def test_new_user_guide_condition_needs_a_join_date():
    """A missing attribute compares as 0 in GrowthBook, so the guide's condition must also say
    $exists — otherwise every profile without a join date would be a "new joiner"."""
    new_joiner = compile_condition({"hours_since_join": {"$exists": True, "$lte": 72}})
    assert new_joiner(derive_contact_attributes({"join_date": "2025-06-14T10:30:00Z"}, NOW))
    assert not new_joiner(derive_contact_attributes({"join_date": "2025-06-11T06:30:00Z"}, NOW))  # 100 h
    assert not new_joiner(derive_contact_attributes({}, NOW))
    assert not new_joiner(derive_contact_attributes({"join_date": "garbage"}, NOW))


# --- is_birthday_today ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("birthday", "today", "expected"),
    [
        ("1990-06-15", date(2025, 6, 15), True),
        ("06-15", date(2025, 6, 15), True),
        ("--06-15", date(2025, 6, 15), True),
        (" 1990-06-15 ", date(2025, 6, 15), True),
        (date(1990, 6, 15), date(2025, 6, 15), True),
        ("1990-06-14", date(2025, 6, 15), False),
        ("1990-07-15", date(2025, 6, 15), False),
        # 29 February: the 28th in common years, the 29th (only) in leap years
        ("2000-02-29", date(2025, 2, 28), True),
        ("02-29", date(2025, 2, 28), True),
        ("2000-02-29", date(2025, 3, 1), False),
        ("2000-02-29", date(2024, 2, 28), False),
        ("2000-02-29", date(2024, 2, 29), True),
        ("1999-02-28", date(2024, 2, 28), True),
        ("1999-02-28", date(2024, 2, 29), False),
        ("12-31", date(2025, 12, 31), True),
        ("01-01", date(2026, 1, 1), True),
    ],
)
def test_is_birthday_today(birthday, today, expected):
    now = datetime(today.year, today.month, today.day, 12, tzinfo=UTC)
    assert derive_contact_attributes({"birthday": birthday}, now)["is_birthday_today"] is expected


@pytest.mark.parametrize(
    "birthday",
    [
        "1990-02-29",  # 1990 was not a leap year
        "02-30",
        "04-31",
        "13-01",
        "00-10",
        "06-00",
        "6-15",
        "0615",
        "1990/06/15",
        "1990-06-15T00:00",
        "",
        "birthday",
        615,
        None,
        False,
        ["06-15"],
    ],
)
def test_malformed_birthday_derives_nothing(birthday):
    assert "is_birthday_today" not in derive_contact_attributes({"birthday": birthday}, NOW)


def test_birthday_uses_the_subscribers_local_date():
    # 17:00 UTC on 14 June is 01:00 on 15 June in Shanghai
    evening_utc = datetime(2025, 6, 14, 17, 0, tzinfo=UTC)
    assert (
        derive_contact_attributes({"birthday": "06-15", "timezone": "Asia/Shanghai"}, evening_utc)["is_birthday_today"]
        is True
    )
    assert derive_contact_attributes({"birthday": "06-15"}, evening_utc)["is_birthday_today"] is False
    # an unknown zone falls back to now's own zone instead of failing
    assert (
        derive_contact_attributes({"birthday": "06-15", "timezone": "Mars/Olympus"}, evening_utc)["is_birthday_today"]
        is False
    )


def test_birthday_follows_the_zone_of_now_without_a_profile_zone():
    shanghai_now = datetime(2025, 6, 15, 1, 0, tzinfo=timezone(timedelta(hours=8)))  # 14 June 17:00 UTC
    assert derive_contact_attributes({"birthday": "06-15"}, shanghai_now)["is_birthday_today"] is True


# --- local_hour -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "hour"),
    [
        ("Asia/Shanghai", 18),
        ("Europe/Dublin", 11),
        ("UTC", 10),
        (None, 10),
        ("", 10),
        ("not/a zone", 10),
        ("../../etc/passwd", 10),
        (8, 10),
        ("x" * 500, 10),
    ],
)
def test_local_hour(zone, hour):
    attributes = {} if zone is None else {"timezone": zone}
    assert derive_contact_attributes(attributes, NOW)["local_hour"] == hour


def test_naive_now_is_utc():
    naive = datetime(2025, 6, 15, 10, 30)
    assert derive_contact_attributes({"join_date": "2025-06-14T10:30:00Z"}, naive) == derive_contact_attributes(
        {"join_date": "2025-06-14T10:30:00Z"}, NOW
    )


# --- the whole function -----------------------------------------------------------------------


def test_returns_a_new_dict_and_keeps_every_stored_attribute():
    stored = {"arpu": 42.0, "birthday": "1990-06-15", "join_date": "2020-01-01", "region": "north"}
    profile = derive_contact_attributes(stored, NOW)
    assert profile is not stored and "is_birthday_today" not in stored
    assert {k: profile[k] for k in stored} == stored
    assert set(profile) - set(stored) == {"hours_since_join", "is_birthday_today", "local_hour"}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)


@given(
    join_date=json_values | st.datetimes() | st.dates(),
    birthday=json_values | st.dates(),
    zone=json_values,
    now=st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(9998, 1, 1)),
)
def test_never_raises_on_any_stored_value(join_date, birthday, zone, now):
    profile = derive_contact_attributes({"join_date": join_date, "birthday": birthday, "timezone": zone}, now)
    assert 0 <= profile["local_hour"] <= 23
    assert profile.get("hours_since_join", 0.0) >= 0.0
    assert profile.get("is_birthday_today", False) in (True, False)


def test_imports_no_framework():
    code = (
        "import sys, offers.derived_attributes; "
        "bad = {'flask', 'sqlalchemy', 'redis', 'rq'} & {m.split('.')[0] for m in sys.modules}; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PROJECT_ROOT)
