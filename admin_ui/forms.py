"""Form handling for the admin UI: turn posted text into the catalogue's JSON payloads and
turn the catalogue's ApiError details back into messages next to the right field.

The catalogue service stays the only validator of what an offer may be: this module only
converts form text (numbers, checkboxes, a JSON textarea) and never duplicates its rules.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from werkzeug.datastructures import MultiDict

from infra.auth_models import CHANNELS
from infra.errors import ApiError

FORM_LEVEL = "_form"  # errors that belong to no single field
_FIELD_OF_PATH = re.compile(r"^\$\.([A-Za-z_][A-Za-z0-9_]*)")


def safe_next(target: str | None, default: str) -> str:
    """``target`` if it is a path inside the admin UI, else ``default`` (no open redirects).

    Rejects absolute URLs, scheme-relative ``//host`` and backslash tricks that some browsers
    read as ``//host``.
    """
    if not target or "\\" in target or any(ord(c) < 32 for c in target):
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/admin") or target.startswith("//"):
        return default
    return target


def parse_json_object(text: str, *, empty: dict[str, Any] | None = None) -> dict[str, Any]:
    """A textarea's JSON as an object; ``ValueError`` with a readable message otherwise.

    Empty text gives ``empty`` (``{}`` by default): "no condition" is the natural blank.
    """
    if not text.strip():
        return dict(empty or {})
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"Not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    if not isinstance(value, dict):
        raise ValueError('Must be a JSON object, e.g. {"tenure_months": {"$gte": 36}}')
    return value


def pretty_json(value: Any) -> str:
    """JSON for people: indented, non-ASCII kept, keys in their stored order."""
    return json.dumps(value, indent=2, ensure_ascii=False)


def compact_json(value: Any) -> str:
    """JSON on one line, for table cells."""
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def _parse_number(raw: str, *, integer: bool = False) -> float | int:
    text = raw.strip()
    if not text:
        raise ValueError("required")
    try:
        number: float | int = int(text) if integer else float(text)
    except ValueError:
        raise ValueError("must be a whole number" if integer else "must be a number") from None
    if isinstance(number, float) and not math.isfinite(number):
        raise ValueError("must be a finite number")
    return number


@dataclass
class Form:
    """What the user typed (re-shown unchanged on error) and the messages per field."""

    values: dict[str, Any]
    errors: dict[str, list[str]] = field(default_factory=dict)

    def add_error(self, field_name: str, message: str) -> None:
        self.errors.setdefault(field_name, []).append(message)

    def add_api_error(self, exc: ApiError) -> None:
        """Spread an ApiError over the fields its details name (``$.eligibility.x`` → eligibility)."""
        placed = False
        for detail in exc.details or []:
            if not isinstance(detail, dict):
                continue
            path, message = str(detail.get("path", "$")), str(detail.get("message", exc.message))
            match = _FIELD_OF_PATH.match(path)
            if match and match.group(1) in self.values:
                name = match.group(1)
                # A condition error names where inside the JSON it is; a plain field error does not need it.
                self.add_error(name, f"{message} (at {path})" if path != f"$.{name}" else message)
                placed = True
            else:
                self.add_error(FORM_LEVEL, message)
                placed = True
        if not placed:
            target = "code" if exc.code.endswith("_exists") and "code" in self.values else FORM_LEVEL
            self.add_error(target, exc.message)


@dataclass
class OfferForm(Form):
    """The offer form: what the user typed and the messages per field."""

    @classmethod
    def blank(cls) -> OfferForm:
        return cls(
            {
                "code": "",
                "name": "",
                "description": "",
                "unit_cost": "",
                "currency": "EUR",
                "channels": [],
                "eligibility": "{}",
                "prior_uplift": "0",
                "value_horizon_months": "12",
                "active": True,
            }
        )

    @classmethod
    def from_offer(cls, row: Mapping[str, Any]) -> OfferForm:
        """Prefill from a stored offer (``entity_json`` form)."""
        return cls(
            {
                "code": row["code"],
                "name": row["name"],
                "description": row["description"] or "",
                "unit_cost": f"{row['unit_cost']:g}",
                "currency": row["currency"],
                "channels": list(row["channels"]),
                "eligibility": pretty_json(row["eligibility"]),
                "prior_uplift": f"{row['prior_uplift']:g}",
                "value_horizon_months": str(row["value_horizon_months"]),
                "active": bool(row["active"]),
            }
        )

    @classmethod
    def from_request(cls, form: MultiDict[str, str]) -> OfferForm:
        return cls(
            {
                "code": form.get("code", "").strip(),
                "name": form.get("name", ""),
                "description": form.get("description", ""),
                "unit_cost": form.get("unit_cost", ""),
                "currency": form.get("currency", "").strip().upper(),
                "channels": form.getlist("channels"),
                "eligibility": form.get("eligibility", ""),
                "prior_uplift": form.get("prior_uplift", ""),
                "value_horizon_months": form.get("value_horizon_months", ""),
                "active": form.get("active") == "on",
            }
        )

    def payload(self) -> dict[str, Any] | None:
        """The offer as the catalogue's JSON, or None (with ``errors`` filled) if some field's
        text cannot even be converted. Everything else is left to the catalogue's schema."""
        v = self.values
        out: dict[str, Any] = {
            "code": v["code"],
            "name": v["name"],
            "description": v["description"],
            "currency": v["currency"],
            "channels": v["channels"],
            "active": v["active"],
        }
        for name, integer, blank_default in (
            ("unit_cost", False, None),
            ("prior_uplift", False, 0.0),
            ("value_horizon_months", True, 12),
        ):
            raw = str(v[name])
            if not raw.strip() and blank_default is not None:
                out[name] = blank_default
                continue
            try:
                out[name] = _parse_number(raw, integer=integer)
            except ValueError as exc:
                self.add_error(name, str(exc))
        unknown = [c for c in v["channels"] if c not in CHANNELS]
        if unknown:
            self.add_error("channels", f"unknown channel(s): {', '.join(unknown)}")
        try:
            out["eligibility"] = parse_json_object(v["eligibility"])
        except ValueError as exc:
            self.add_error("eligibility", str(exc))
        return None if self.errors else out


# the risk policy's thresholds: (field, whole number?)
RISK_THRESHOLDS = (
    ("yellow_churn_score", False),
    ("red_churn_score", False),
    ("inactive_months", True),
    ("consecutive_downgrades", True),
    ("unresolved_complaints", True),
    ("complaint_surge_90d", True),
)


@dataclass
class RiskLevelsForm(Form):
    """The warning levels' thresholds (the active risk policy)."""

    @classmethod
    def from_policy(cls, row: Mapping[str, Any]) -> RiskLevelsForm:
        return cls({name: f"{row[name]:g}" for name, _ in RISK_THRESHOLDS})

    @classmethod
    def from_request(cls, form: MultiDict[str, str]) -> RiskLevelsForm:
        return cls({name: form.get(name, "") for name, _ in RISK_THRESHOLDS})

    def payload(self) -> dict[str, Any] | None:
        """The thresholds as numbers, or None (with ``errors``) if some text is not a number;
        their ranges are the risk policy schema's to check."""
        out: dict[str, Any] = {}
        for name, integer in RISK_THRESHOLDS:
            try:
                out[name] = _parse_number(str(self.values[name]), integer=integer)
            except ValueError as exc:
                self.add_error(name, str(exc))
        return None if self.errors else out
