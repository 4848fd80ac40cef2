"""Typed subscriber attributes: what a stored profile may hold and how raw input becomes it.

Pure (no flask, sqlalchemy or redis). Tier rules and offer eligibility compare attributes with
GrowthBook's condition language, where ``"12"`` and ``12`` compare differently and a missing
attribute compares as 0, so a profile is only stored once its known attributes have the right
type and range. ``coerce_profile`` is the one entry point:

- ``source="csv"``: every value is text (a CSV cell). Known attributes are parsed from text
  (``"42.5"`` → 42.5, ``"yes"`` → True), unknown ones stay text (stripped), and an empty or
  blank cell means the attribute is absent.
- ``source="json"``: values already have JSON types, which must match: ``"12"`` for ``arpu``
  is an error and ``true`` is not a number. ``null`` means absent. Unknown attributes may be
  text, numbers, booleans or lists of those (for ``$in``/``$elemMatch`` rules); nested objects
  are refused, because profiles are flat.

Dates are stored as the ISO text they were given (stripped): ``birthday`` as ``YYYY-MM-DD``
or ``MM-DD`` (``--MM-DD`` too), ``join_date`` as an ISO date or date-time. The contact-time
attributes derived from them (``offers.derived_attributes``) cannot be stored.

A bulk CSV import parses millions of cells, so ``csv_row_parser(columns)`` compiles the CSV
rules for one header (names checked once, one call per cell); ``coerce_profile(raw, "csv")``
runs the same compiled parser, so the two cannot disagree.
"""

from __future__ import annotations

import calendar
import math
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime
from functools import lru_cache
from typing import Any, Literal

from offers.derived_attributes import DERIVED_ATTRIBUTES
from offers.time_zones import time_zone

__all__ = [
    "ATTRIBUTE_KINDS",
    "LIFECYCLE_STAGES",
    "MAX_ATTRIBUTES",
    "MAX_TEXT_LENGTH",
    "RESERVED_NAMES",
    "SUBSCRIBER_ID_MAX_LENGTH",
    "ProfileError",
    "check_attribute_name",
    "coerce_profile",
    "csv_row_parser",
    "validate_subscriber_id",
]

SUBSCRIBER_ID_MAX_LENGTH = 64  # the subscribers.id column
ATTRIBUTE_NAME_MAX_LENGTH = 64
MAX_ATTRIBUTES = 200  # per profile
MAX_TEXT_LENGTH = 1_000  # per text value
MAX_LIST_ITEMS = 100
_MAX_MAGNITUDE = 1e12  # beyond any real money, count or share: a unit or export error
# "churned" is the brief's former customer (win-back, return benefits); the playbooks' four
# stages describe customers still with the operator.
LIFECYCLE_STAGES = ("onboarding", "growth", "maturity", "decline", "churned")
# The id travels in the URL or its own column; tiers are computed; derived attributes are
# computed at contact time and would be stale if stored.
RESERVED_NAMES = frozenset({"subscriber_id", "tier", "tiers", *DERIVED_ATTRIBUTES})

Source = Literal["csv", "json"]
_ABSENT = object()  # what a CSV cell parser returns for a blank cell


class ProfileError(ValueError):
    """A raw profile that cannot be stored. ``attribute`` names the offending attribute."""

    def __init__(self, message: str, attribute: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.attribute = attribute

    def __str__(self) -> str:
        return self.message


def _show(value: Any) -> str:
    """A value as an error message quotes it: short, so one bad cell cannot bloat a report."""
    try:
        text = repr(value)
    except ValueError:  # an int with more digits than Python will print
        return "<a huge number>"
    return text if len(text) <= 40 else text[:37] + "..."


def _range_error(value: float, low: float, high: float) -> ValueError:
    if value != value or value in (math.inf, -math.inf):
        return ValueError("must be a finite number")
    return ValueError(f"must be between {low:g} and {high:g}")


def _json_type_error(expected: str, kind: type) -> ValueError:
    """Why a JSON value of type ``kind`` is not ``expected`` (a number or a whole number)."""
    hint = " (true/false is not a number)" if kind is bool else " (not text)" if kind is str else ""
    return ValueError(f"must be {expected}{hint}")


# --- cell parsers: each takes one raw value and returns the stored value (a CSV parser returns
# _ABSENT for a blank cell) or raises ValueError(reason). One Python call per cell: the
# error-message work happens only on the failure path.

_Parser = Callable[[Any], Any]


def _csv_number(low: float, high: float) -> _Parser:
    def parse(text: str) -> Any:
        try:
            value = float(text)
        except ValueError:
            if text.isspace():
                return _ABSENT
            raise ValueError("must be a number") from None
        if low <= value <= high:  # NaN fails both comparisons
            return value
        raise _range_error(value, low, high)

    return parse


def _json_number(low: float, high: float) -> _Parser:
    def parse(value: Any) -> float:
        kind = type(value)
        if kind is int:
            try:
                value = float(value)
            except OverflowError:
                raise ValueError("is far too large") from None
        elif kind is not float:
            raise _json_type_error("a number", kind)
        if low <= value <= high:
            number: float = value  # a float by now; a typed local, not cast(): no call per cell
            return number
        raise _range_error(value, low, high)

    return parse


def _csv_whole(low: int, high: int) -> _Parser:
    def parse(text: str) -> Any:
        try:
            value = int(text)
        except ValueError:
            try:
                number = float(text)  # "12.0" from a spreadsheet
            except ValueError:
                if text.isspace():
                    return _ABSENT
                raise ValueError("must be a whole number") from None
            if not number.is_integer():
                raise ValueError("must be a whole number") from None
            value = int(number)
        if low <= value <= high:
            return value
        raise _range_error(value, low, high)

    return parse


def _json_whole(low: int, high: int) -> _Parser:
    def parse(value: Any) -> int:
        kind = type(value)
        if kind is float and value.is_integer():  # 12.0 from a system that writes floats only
            value = int(value)
        elif kind is not int:
            raise _json_type_error("a whole number", kind)
        if low <= value <= high:
            whole: int = value  # an int by now; a typed local, not cast(): no call per cell
            return whole
        raise _range_error(value, low, high)

    return parse


_BOOL_TEXT = {
    "true": True,
    "t": True,
    "yes": True,
    "y": True,
    "1": True,
    "false": False,
    "f": False,
    "no": False,
    "n": False,
    "0": False,
}


def _csv_bool(text: str) -> Any:
    value = _BOOL_TEXT.get(text)
    if value is None:
        value = _BOOL_TEXT.get(text.strip().lower())
        if value is None:
            if not text or text.isspace():
                return _ABSENT
            raise ValueError("must be true or false (also yes/no, 1/0)")
    return value


def _json_bool(value: Any) -> bool:
    if type(value) is not bool:
        raise ValueError("must be true or false")
    return value


def _stripped_text(parse: Callable[[str], str]) -> tuple[_Parser, _Parser]:
    """CSV and JSON parsers for a text attribute checked by ``parse`` (given stripped text)."""

    def from_csv(text: str) -> Any:
        text = text.strip()
        return parse(text) if text else _ABSENT

    def from_json(value: Any) -> str:
        if type(value) is not str:
            raise ValueError("must be text")
        return parse(value.strip())

    return from_csv, from_json


_FULL_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_MONTH_DAY = re.compile(r"(?:--)?(\d{2})-(\d{2})")
_DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?(?:Z|[+-]\d{2}:?\d{2})?")


def _birthday(text: str) -> str:
    if _FULL_DATE.fullmatch(text):
        try:
            date.fromisoformat(text)
        except ValueError:
            raise ValueError("is not a real calendar date") from None
        return text
    match = _MONTH_DAY.fullmatch(text)
    if match is None:
        raise ValueError("must be YYYY-MM-DD or MM-DD")
    month, day = int(match[1]), int(match[2])
    # 2000 is a leap year: 02-29 is a birthday, 02-30 is not
    if not 1 <= month <= 12 or not 1 <= day <= calendar.monthrange(2000, month)[1]:
        raise ValueError("is not a real calendar day")
    return text


def _date_or_time(text: str) -> str:
    if _FULL_DATE.fullmatch(text):
        parse: Callable[[str], Any] = date.fromisoformat
    elif _DATE_TIME.fullmatch(text):
        parse = datetime.fromisoformat
    else:
        raise ValueError("must be an ISO date (YYYY-MM-DD) or date-time (YYYY-MM-DDTHH:MM:SSZ)")
    try:
        parse(text)
    except ValueError:  # 2025-02-30, 25:00
        raise ValueError("is not a real date or time") from None
    return text


def _lifecycle_stage(text: str) -> str:
    stage = text.lower()
    if stage not in LIFECYCLE_STAGES:
        raise ValueError(f"must be one of {', '.join(LIFECYCLE_STAGES)}")
    return stage


def _timezone(text: str) -> str:
    if time_zone(text) is None:
        raise ValueError("must be an IANA time zone name such as Asia/Shanghai")
    return text


# --- the known attributes ---------------------------------------------------------------------

_AMOUNT = (0.0, _MAX_MAGNITUDE)
_SHARE = (0.0, 1.0)
_COUNT = (0, 1_000_000)
_NUMBERS: dict[str, tuple[float, float]] = {
    "arpu": _AMOUNT,  # average monthly revenue per user
    "last_arpu": _AMOUNT,  # a churned customer's ARPU before leaving
    "ltv": _AMOUNT,  # lifetime value
    "data_usage_gb": _AMOUNT,
    "data_gb_month": _AMOUNT,
    "night_data_share": _SHARE,
    "digital_spend_share": _SHARE,
    "churn_score": _SHARE,  # churn probability, ~30 days ahead
    "arpu_change_3m": (-1.0, _MAX_MAGNITUDE),  # relative change; -1 means revenue fell to zero
}
_WHOLE_NUMBERS: dict[str, tuple[int, int]] = {
    "tenure_months": _COUNT,
    "broadband_tenure_months": _COUNT,
    "complaints_90d": _COUNT,
    "unresolved_complaints": _COUNT,
    "downgrades_3m": _COUNT,
    "inactive_months": _COUNT,
    "churned_months_ago": _COUNT,
    "active_days_30d": (0, 31),
}
_BOOLEANS = ("has_broadband",)

# name -> (kind, CSV cell parser, JSON value parser)
_KNOWN: dict[str, tuple[str, _Parser, _Parser]] = {}
for _name, (_low, _high) in _NUMBERS.items():
    _KNOWN[_name] = ("number", _csv_number(_low, _high), _json_number(_low, _high))
for _name, (_low, _high) in _WHOLE_NUMBERS.items():
    _KNOWN[_name] = ("whole number", _csv_whole(int(_low), int(_high)), _json_whole(int(_low), int(_high)))
for _name in _BOOLEANS:
    _KNOWN[_name] = ("boolean", _csv_bool, _json_bool)
_KNOWN["birthday"] = ("date (YYYY-MM-DD or MM-DD)", *_stripped_text(_birthday))
_KNOWN["join_date"] = ("ISO date or date-time", *_stripped_text(_date_or_time))
_KNOWN["lifecycle_stage"] = ("one of " + "/".join(LIFECYCLE_STAGES), *_stripped_text(_lifecycle_stage))
_KNOWN["timezone"] = ("IANA time zone", *_stripped_text(_timezone))

ATTRIBUTE_KINDS: dict[str, str] = {name: spec[0] for name, spec in _KNOWN.items()}
_FROM_CSV: dict[str, _Parser] = {name: spec[1] for name, spec in _KNOWN.items()}
_FROM_JSON: dict[str, _Parser] = {name: spec[2] for name, spec in _KNOWN.items()}
_SCALARS = (str, int, float, bool)
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1  # what JSON encoders and databases carry as integers


def check_attribute_name(name: Any) -> str:
    """``name`` if a profile may store an attribute under it, else ProfileError."""
    if type(name) is not str or not name or len(name) > ATTRIBUTE_NAME_MAX_LENGTH:
        raise ProfileError(f"attribute name {_show(name)} must be 1 to {ATTRIBUTE_NAME_MAX_LENGTH} characters")
    if name in RESERVED_NAMES:
        why = (
            "is computed at contact time; store join_date, birthday or timezone instead"
            if name in DERIVED_ATTRIBUTES
            else "is the profile's id"
            if name == "subscriber_id"
            else "is computed from the tier rules"
        )
        raise ProfileError(f"{name} cannot be stored as an attribute: it {why}", name)
    if not name.isprintable():
        raise ProfileError(f"attribute name {_show(name)} contains control characters", name)
    return name


def _check_text(value: str) -> str:
    if len(value) > MAX_TEXT_LENGTH:
        raise ValueError(f"text longer than {MAX_TEXT_LENGTH} characters")
    if "\x00" in value:  # PostgreSQL cannot store NUL in text or JSONB
        raise ValueError("contains a NUL character")
    return value


def _csv_other(text: str) -> Any:
    """An unknown CSV column: stripped text."""
    text = text.strip()
    return _check_text(text) if text else _ABSENT


def _json_other(value: Any) -> Any:
    """An unknown JSON attribute: a scalar or a list of scalars."""
    kind = type(value)
    if kind is str:
        try:
            value.encode("utf-8")  # JSON's "\ud800" escapes decode to lone surrogates
        except UnicodeEncodeError:
            raise ValueError("contains an unpaired UTF-16 surrogate") from None
        return _check_text(value)
    if kind is float and not math.isfinite(value):
        raise ValueError("must be a finite number")
    if kind is int and not _INT64_MIN <= value <= _INT64_MAX:
        raise ValueError("is an integer beyond 64 bits")
    if kind in _SCALARS:
        return value
    if kind is list:
        if len(value) > MAX_LIST_ITEMS:
            raise ValueError(f"a list may hold at most {MAX_LIST_ITEMS} items")
        for item in value:
            if type(item) not in _SCALARS:
                raise ValueError("list items must be text, numbers or booleans")
            _json_other(item)
        return value
    raise ValueError("profiles are flat; use text, a number, a boolean or a list of those")


def _cell_error(name: str, value: Any, exc: ValueError) -> ProfileError:
    return ProfileError(f"{name}: {exc}, got {_show(value)}", name)


def csv_row_parser(columns: Sequence[str]) -> Callable[[Sequence[str]], dict[str, Any]]:
    """Compile the CSV rules for one header of attribute columns (not ``subscriber_id``).

    The returned function maps a row of cells (one per column, all text) to the storable
    profile, exactly as ``coerce_profile(dict(zip(columns, cells)), "csv")`` would, raising
    the same ProfileError. Column names are checked here, once (ProfileError).
    """
    names = tuple(columns)
    if len(names) > MAX_ATTRIBUTES:
        raise ProfileError(f"a profile may have at most {MAX_ATTRIBUTES} attributes")
    for name in names:
        check_attribute_name(name)
    if len(set(names)) != len(names):
        raise ProfileError("a column name is repeated")
    plan: tuple[tuple[str, _Parser], ...] = tuple((name, _FROM_CSV.get(name, _csv_other)) for name in names)
    absent = _ABSENT

    def parse_row(cells: Sequence[str]) -> dict[str, Any]:
        profile: dict[str, Any] = {}
        for (name, parse), cell in zip(plan, cells):
            if cell:
                try:
                    value = parse(cell)
                except ValueError as exc:
                    raise _cell_error(name, cell, exc) from None
                if value is not absent:
                    profile[name] = value
        return profile

    return parse_row


_compiled_csv = lru_cache(maxsize=64)(csv_row_parser)


def coerce_profile(raw: Mapping[str, Any], source: Source) -> dict[str, Any]:
    """The storable profile for ``raw`` attributes read from ``source`` ("csv" or "json").

    Known attributes are parsed (CSV text) or type-checked (JSON) and range-checked; unknown
    ones are kept as given (CSV: as stripped text). Empty or blank CSV cells and JSON nulls
    mean the attribute is absent and are left out. Raises ProfileError naming the first bad
    attribute.
    """
    if len(raw) > MAX_ATTRIBUTES:
        raise ProfileError(f"a profile may have at most {MAX_ATTRIBUTES} attributes")
    if source == "csv":
        for name, value in raw.items():
            if type(value) is not str:
                raise ProfileError(f"{name}: a CSV value must be text, got {_show(value)}", name)
        return _compiled_csv(tuple(raw))(tuple(raw.values()))
    if source != "json":
        raise ValueError(f"source must be 'csv' or 'json', not {source!r}")
    profile: dict[str, Any] = {}
    for name, value in raw.items():
        if value is None:
            continue
        parse = _FROM_JSON.get(name)
        if parse is None:
            check_attribute_name(name)
            parse = _json_other
        try:
            profile[name] = parse(value)
        except ValueError as exc:
            raise _cell_error(name, value, exc) from None
    return profile


def validate_subscriber_id(value: Any) -> str:
    """A subscriber id as stored: text, 1 to 64 characters, no control characters, no
    surrounding spaces (stripped). Raises ProfileError."""
    if type(value) is not str:
        raise ProfileError(
            "subscriber_id must be text" + ("" if value is None else f", got {_show(value)}"), "subscriber_id"
        )
    text = value.strip()
    if not text:
        raise ProfileError("subscriber_id is missing or empty", "subscriber_id")
    if len(text) > SUBSCRIBER_ID_MAX_LENGTH:
        raise ProfileError(f"subscriber_id is longer than {SUBSCRIBER_ID_MAX_LENGTH} characters", "subscriber_id")
    if not text.isprintable():
        raise ProfileError(f"subscriber_id {_show(text)} contains control characters", "subscriber_id")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ProfileError("subscriber_id contains an unpaired UTF-16 surrogate", "subscriber_id") from None
    return text
