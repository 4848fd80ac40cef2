"""What an outcome report holds: the request model (``OutcomeIn``), the tuple a bulk batch
keeps of it (``OutcomeFields``) and the row written for it (``OutcomeRow``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, NamedTuple

from pydantic import AfterValidator, AwareDatetime, Field, field_validator, model_validator

from experiments.models import DAY_N_OUTCOME_TYPES, OutcomeType
from infra.http import StrictModel
from offers.schemas import Code
from offers.subscriber_attributes import ProfileError, validate_subscriber_id

CLOCK_SKEW = timedelta(minutes=5)  # systems' clocks disagree a little; more is a data error
MAX_DAY_N = 3650
MAX_ABS_VALUE = 1e12


def _valid_subscriber_id(value: str) -> str:
    try:
        return validate_subscriber_id(value)
    except ProfileError as exc:
        raise ValueError(exc.message) from None


def parse_occurred_at(text: str) -> datetime:
    """``text`` (ISO-8601) as a time in UTC, or as a naive time when it names no time zone
    (``AwareDatetime`` then refuses it with pydantic's own message). ValueError when it is not
    ISO-8601 or has no UTC equivalent."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            "occurred_at must be an ISO-8601 date and time with a time zone, e.g. 2025-06-01T10:00:00Z"
        ) from None
    if moment.tzinfo is None:
        return moment
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 has no UTC equivalent
        raise ValueError("occurred_at is out of range") from None


DecisionId = Annotated[str, Field(min_length=1, max_length=64)]
# the profile store's rules: 1–64 characters once surrounding spaces are stripped, no control or
# formatting characters (the schema states the length; the rest is the validator's)
SubscriberId = Annotated[
    str, AfterValidator(_valid_subscriber_id), Field(json_schema_extra={"minLength": 1, "maxLength": 64})
]


class OutcomeIn(StrictModel):
    """One reported outcome (the body of ``POST /api/v1/outcomes``, a line of a bulk body)."""

    experiment: Code | None = None
    subscriber_id: SubscriberId | None = None
    decision_id: DecisionId | None = None
    type: OutcomeType
    value: float | None = Field(None, ge=-MAX_ABS_VALUE, le=MAX_ABS_VALUE, allow_inf_nan=False)
    occurred_at: AwareDatetime
    day_n: int | None = Field(None, ge=0, le=MAX_DAY_N)

    @field_validator("occurred_at", mode="before")
    @classmethod
    def _iso_8601(cls, value: Any) -> Any:
        # Parsed here: pydantic would also read "1700000000" as a Unix time, which a feed
        # sending it surely did not mean
        return parse_occurred_at(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _consistent(self) -> OutcomeIn:
        if self.decision_id is None and (self.experiment is None or self.subscriber_id is None):
            raise ValueError("name the exposure: experiment and subscriber_id, or decision_id")
        if self.type == "revenue" and self.value is None:
            raise ValueError("a revenue outcome needs a value")
        if self.day_n is not None and self.type not in DAY_N_OUTCOME_TYPES:
            raise ValueError(f"day_n belongs to retained and churned outcomes, not {self.type}")
        return self


FIELDS = tuple(OutcomeIn.model_fields)


class OutcomeFields(NamedTuple):
    """A validated outcome's fields — what ``OutcomeIn`` holds, as a plain tuple: a bulk batch
    holds thousands of them, and a tuple costs a fraction of a model to build and keep."""

    experiment: str | None
    subscriber_id: str | None
    decision_id: str | None
    type: str
    value: float | None
    occurred_at: datetime
    day_n: int | None

    @classmethod
    def of(cls, data: OutcomeIn) -> OutcomeFields:
        return cls(
            data.experiment, data.subscriber_id, data.decision_id, data.type, data.value, data.occurred_at, data.day_n
        )


class OutcomeRow(NamedTuple):
    """An outcome ready to write: its exposure resolved, ``day_n`` computed, time in UTC."""

    assignment_id: int
    type: str
    value: float | None
    day_n: int | None
    occurred_at: datetime

    @property
    def key(self) -> tuple[int, str, int | None]:
        """The row's identity: (exposure, type, day) for retention checks, else (exposure, type)."""
        return (self.assignment_id, self.type, self.day_n if self.type == "retained" else None)
