"""Attributes that depend on the moment of contact, derived from a profile's stored facts.

A profile stores facts that do not go stale (``join_date``, ``birthday``, ``timezone``); what
they mean *now* ("joined less than 72 hours ago", "it is their birthday today") is computed
at contact time, so eligibility conditions stay simple comparisons such as
``{"hours_since_join": {"$exists": true, "$lte": 72}}`` or ``{"is_birthday_today": true}``.

Pure: no flask, sqlalchemy or redis. Never raises on a malformed stored value: the derived
attribute is then simply not computed (and any value the caller passed under that name,
e.g. a call-centre agent's explicit ``is_birthday_today``, is left as it was).
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

from offers.instants import as_utc
from offers.time_zones import time_zone

__all__ = ["DERIVED_ATTRIBUTES", "derive_contact_attributes"]

DERIVED_ATTRIBUTES = ("hours_since_join", "is_birthday_today", "local_hour")

# A join date slightly in the future is clock skew between the systems that wrote it and
# this one, not a bad fact; beyond this it is a bad fact and no age is derived.
_CLOCK_SKEW_TOLERANCE = timedelta(hours=1)
_MONTH_DAY = re.compile(r"^(?:--)?(\d{2})-(\d{2})$")  # "MM-DD" or ISO 8601's "--MM-DD"
_FULL_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def derive_contact_attributes(attributes: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """Return a copy of ``attributes`` plus the contact-time attributes derived from it.

    - ``hours_since_join`` (float): hours from ``join_date`` (ISO date or date-time; a date
      alone means midnight UTC, a date-time without offset means UTC) to ``now``.
    - ``is_birthday_today`` (bool): whether the local date of ``now`` is the ``birthday``
      (``YYYY-MM-DD`` or ``MM-DD``); a 29 February birthday is celebrated on 28 February in
      non-leap years.
    - ``local_hour`` (int, 0–23): the hour of ``now`` in the profile's ``timezone`` (an IANA
      name), else in ``now``'s own zone.

    ``now`` without a time zone is taken as UTC. The local date for the birthday uses the
    profile's ``timezone`` when it is a valid IANA name.
    """
    profile = dict(attributes)
    now_utc = as_utc(now)
    local_now = now_utc.astimezone(time_zone(profile.get("timezone")) or now.tzinfo or UTC)

    joined = _parse_instant(profile.get("join_date"))
    if joined is not None:
        elapsed = now_utc - joined
        if elapsed >= -_CLOCK_SKEW_TOLERANCE:
            profile["hours_since_join"] = max(elapsed, timedelta(0)).total_seconds() / 3600.0

    month_day = _parse_birthday(profile.get("birthday"))
    if month_day is not None:
        profile["is_birthday_today"] = _celebrated_on(month_day, local_now.year) == (local_now.month, local_now.day)
    profile["local_hour"] = local_now.hour
    return profile


def _parse_instant(value: Any) -> datetime | None:
    """A stored join date as an aware UTC datetime, or None if it is not one."""
    try:
        if isinstance(value, datetime):
            return as_utc(value)
        if isinstance(value, date):
            return datetime(value.year, value.month, value.day, tzinfo=UTC)
        if type(value) is not str:
            return None
        text = value.strip()
        if _FULL_DATE.match(text):
            return datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC)
        return as_utc(datetime.fromisoformat(text))
    except (ValueError, OverflowError):  # not a date; or out of range once moved to UTC
        return None


def _parse_birthday(value: Any) -> tuple[int, int] | None:
    """(month, day) of a stored birthday, or None if it is not a real calendar day."""
    if isinstance(value, date):  # datetime is a date too
        return value.month, value.day
    if type(value) is not str:
        return None
    text = value.strip()
    if _FULL_DATE.match(text):
        try:
            born = date.fromisoformat(text)
        except ValueError:  # 1990-02-30, 1990-02-29 (not a leap year)
            return None
        return born.month, born.day
    match = _MONTH_DAY.match(text)
    if match is None:
        return None
    month, day = int(match[1]), int(match[2])
    # 2000 is a leap year, so this accepts 02-29 and rejects 02-30, 04-31, 13-01, 00-10
    if not 1 <= month <= 12 or not 1 <= day <= calendar.monthrange(2000, month)[1]:
        return None
    return month, day


def _celebrated_on(month_day: tuple[int, int], year: int) -> tuple[int, int]:
    """The day a birthday is celebrated in ``year`` (29 Feb → 28 Feb outside leap years)."""
    if month_day == (2, 29) and not calendar.isleap(year):
        return 2, 28
    return month_day
