"""Request schemas for the catalogue. Field names equal column names, so one generic
service can create, patch and serialise every config kind."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from infra.http import NoRepeats, StrictModel
from infra.openapi import ResponseModel
from offers.money_rules import DEFAULT_MONEY_RULES

Channel = Literal["sms", "app", "call_centre", "retail"]
Code = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")]
MoneyAmount = Annotated[float, Field(ge=0, le=1e9, allow_inf_nan=False)]
Name = Annotated[str, Field(min_length=1, max_length=200)]
Text = Annotated[str, Field(max_length=5000)]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


class OfferIn(StrictModel):
    code: Code
    name: Name
    description: Text = ""
    unit_cost: MoneyAmount
    currency: Currency = "EUR"
    channels: Annotated[list[Channel], NoRepeats] = Field(min_length=1)
    eligibility: dict[str, Any] = Field(default_factory=dict)
    prior_uplift: float = Field(0.0, ge=-1, le=1, allow_inf_nan=False)
    value_horizon_months: int = Field(12, ge=1, le=120)
    active: bool = True


class TierSchemeIn(StrictModel):
    code: Code
    name: Name
    description: Text = ""
    is_primary: bool = False
    active: bool = True


class TierIn(StrictModel):
    code: Code
    scheme_code: Code
    name: Name
    description: Text = ""
    rank: int = Field(ge=1, le=10_000)
    rule: dict[str, Any] = Field(default_factory=dict)
    active: bool = True


class TierPolicyIn(StrictModel):
    tier_code: Code
    offer_code: Code
    allowed: bool = True
    max_cost: MoneyAmount | None = None
    granted_by: Literal["automatic", "agent", "supervisor", "account_manager"] = "automatic"
    context_weight: float = Field(1.0, ge=0, le=100, allow_inf_nan=False)
    lever: float = Field(1.0, ge=0, le=100, allow_inf_nan=False)
    note: Text = ""
    active: bool = True


class ContactPolicyIn(StrictModel):
    channel: Channel
    max_contacts: int = Field(ge=0, le=1000)
    window_days: int = Field(ge=1, le=365)
    quiet_start: str | None = None
    quiet_end: str | None = None
    timezone: str = "UTC"
    active: bool = True

    @field_validator("quiet_start", "quiet_end")
    @classmethod
    def _hhmm(cls, value: str | None) -> str | None:
        if value is not None and not _HHMM.match(value):
            raise ValueError("use 24-hour HH:MM, e.g. 21:00")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}; use an IANA name such as Asia/Shanghai") from None
        return value

    @model_validator(mode="after")
    def _both_or_neither(self) -> ContactPolicyIn:
        if (self.quiet_start is None) != (self.quiet_end is None):
            raise ValueError("give both quiet_start and quiet_end, or neither")
        return self


class RiskPolicyIn(StrictModel):
    """The thresholds of the warning levels (``decisioning.risk``): the churn score's band sets
    the starting level, and each churn signal at or above its threshold raises it one step.
    Saving an active policy deactivates the one active before it."""

    code: Code
    name: Name
    yellow_churn_score: float = Field(
        0.4, ge=0, le=1, allow_inf_nan=False, description="churn score from which a subscriber starts at yellow"
    )
    red_churn_score: float = Field(
        0.7, ge=0, le=1, allow_inf_nan=False, description="churn score from which a subscriber starts at red"
    )
    inactive_months: int = Field(3, ge=1, le=120, description="consecutive months without usage")
    consecutive_downgrades: int = Field(3, ge=1, le=120, description="consecutive months with a plan downgrade")
    unresolved_complaints: int = Field(1, ge=1, le=1000, description="open complaints")
    complaint_surge_90d: int = Field(3, ge=1, le=1000, description="complaints in the last 90 days")
    note: Text = ""
    active: bool = True

    @model_validator(mode="after")
    def _ordered(self) -> RiskPolicyIn:
        if self.yellow_churn_score > self.red_churn_score:
            raise ValueError("yellow_churn_score must not be above red_churn_score")
        return self


class BudgetIn(StrictModel):
    code: Code
    name: Name
    period: Literal["month", "quarter", "year"] = "month"
    cap_amount: MoneyAmount | None = None
    cap_share_of_revenue: float | None = Field(None, gt=0, le=1, allow_inf_nan=False)
    currency: Currency = "EUR"
    scope_type: Literal["programme", "experiment", "tier", "channel"] = "programme"
    scope_value: Code | None = None
    roi_floor: float = Field(DEFAULT_MONEY_RULES.roi_floor, ge=0, le=100, allow_inf_nan=False)
    max_cost_share_of_ltv: float = Field(DEFAULT_MONEY_RULES.max_cost_share_of_ltv, gt=0, le=1, allow_inf_nan=False)
    active: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> BudgetIn:
        if (self.cap_amount is None) == (self.cap_share_of_revenue is None):
            raise ValueError(
                "give exactly one of cap_amount (absolute) or cap_share_of_revenue "
                "(share of the base's revenue per period, e.g. 0.015)"
            )
        if self.scope_type == "programme" and self.scope_value is not None:
            raise ValueError("a programme budget covers everything: leave scope_value empty")
        if self.scope_type != "programme" and self.scope_value is None:
            raise ValueError(f"a {self.scope_type} budget needs scope_value (which {self.scope_type})")
        return self


class TierOrderIn(StrictModel):
    tiers: list[Code] = Field(min_length=1, max_length=1000)


class ProfileIn(StrictModel):
    attributes: dict[str, Any]


# --- responses (documentation of what the handlers send; tests check the handlers against them) ---


class _StoredRow(ResponseModel):
    """Columns every catalogue row has besides its editable fields."""

    id: int = Field(ge=1)
    created_at: datetime
    updated_at: datetime


class OfferOut(OfferIn, _StoredRow):
    """An offer (care action) as stored."""


class TierSchemeOut(TierSchemeIn, _StoredRow):
    """A tier scheme as stored."""


class TierOut(TierIn, _StoredRow):
    """A tier as stored."""


class TierPolicyOut(TierPolicyIn, _StoredRow):
    """A tier policy as stored; its URL key is its ``id``."""


class ContactPolicyOut(ContactPolicyIn, _StoredRow):
    """A channel's contact policy as stored; its URL key is its ``channel``."""


class RiskPolicyOut(RiskPolicyIn, _StoredRow):
    """A risk-level policy as stored; its URL key is its ``code``."""


class BudgetOut(BudgetIn, _StoredRow):
    """A budget as stored, with its cap in money."""

    effective_cap_amount: float = Field(
        description="cap_amount, or cap_share_of_revenue × the base's revenue per month × months in the period"
    )


class OfferList(ResponseModel):
    items: list[OfferOut]


class TierSchemeList(ResponseModel):
    items: list[TierSchemeOut]


class TierList(ResponseModel):
    items: list[TierOut]


class TierPolicyList(ResponseModel):
    items: list[TierPolicyOut]


class ContactPolicyList(ResponseModel):
    items: list[ContactPolicyOut]


class RiskPolicyList(ResponseModel):
    items: list[RiskPolicyOut]


class BudgetList(ResponseModel):
    items: list[BudgetOut]


class TierPreviewOut(ResponseModel):
    """The tier a profile would get."""

    tier: str | None = Field(description="the primary scheme's tier, null when no rule matches")
    by_scheme: dict[str, str | None] = Field(description="scheme code → tier code (null: no rule matched)")


class ProfileOut(ResponseModel):
    """A stored subscriber profile with its computed tiers."""

    subscriber_id: str
    attributes: dict[str, Any]
    tier: str | None = Field(description="the primary scheme's tier")
    tiers: dict[str, str | None] = Field(description="scheme code → tier code")
    arpu: float | None
    ltv: float | None
    updated_at: datetime


class RejectedLine(ResponseModel):
    line: int = Field(ge=1, description="1-based line number in the upload (the CSV header is line 1)")
    error: str


class ImportReportOut(ResponseModel):
    """What a bulk import did: rows accepted, and the rejected ones by line."""

    import_id: str
    format: Literal["csv", "jsonl"]
    accepted: int = Field(ge=0)
    rejected: list[RejectedLine] = Field(description="the first rejected lines (see rejected_truncated)")
    rejected_count: int = Field(ge=0)
    rejected_truncated: bool
