"""Request and response schemas of the decision API (DESIGN §7)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, field_validator

from experiments.outcomes import SubscriberId
from infra.http import StrictModel
from infra.openapi import ResponseModel
from offers.schemas import Channel
from offers.subscriber_attributes import ProfileError, coerce_profile

RequestId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$")]
MAX_BULK_CONTACTS = 10_000
MAX_CONTEXT_KEYS = 100


class DecisionIn(StrictModel):
    """One contact: who, on which channel, and what the channel knows right now (``context``
    attributes override the stored profile for this decision only)."""

    subscriber_id: SubscriberId
    channel: Channel
    request_id: RequestId | None = None
    context: dict[str, Any] = Field(default_factory=dict, max_length=MAX_CONTEXT_KEYS)

    @field_validator("context")
    @classmethod
    def _typed_like_a_profile(cls, context: dict[str, Any]) -> dict[str, Any]:
        """The checks a stored profile's attributes get (``offers.subscriber_attributes``): a
        known attribute has its type and range (``has_broadband`` a boolean, ``ltv`` a finite
        amount), any other is a flat JSON value, and computed names (``tier``,
        ``hours_since_join``…) cannot be sent. A null is kept: the attribute is unknown now,
        whatever the stored profile says."""
        if not context:
            return context
        known = {name: value for name, value in context.items() if value is not None}
        try:
            typed = coerce_profile(known, "json")
        except ProfileError as exc:
            raise ValueError(str(exc)) from None
        return typed if len(known) == len(context) else {name: typed.get(name) for name in context}


class BulkDecisionsIn(StrictModel):
    """Up to 10,000 contacts of an outbound batch, answered in the same order."""

    contacts: list[DecisionIn] = Field(min_length=1, max_length=MAX_BULK_CONTACTS)


class ActionOut(ResponseModel):
    offer_code: str
    name: str
    cost: float
    granted_by: str | None = None


class ExperimentOut(ResponseModel):
    key: str
    arm: str | None
    in_holdout: bool


class ReasonOut(ResponseModel):
    offer_code: str
    code: str
    message: str


class RiskReasonOut(ResponseModel):
    code: str
    message: str


class DecisionOut(ResponseModel):
    """The answer: the action (null = no action), why, the tier, risk level, experiment arm."""

    decision_id: str
    subscriber_id: str
    channel: str
    tier: str | None
    risk_level: str
    risk_reasons: list[RiskReasonOut]
    action: ActionOut | None
    experiment: ExperimentOut | None
    reasons: list[ReasonOut]
    probability: float
    degraded: bool
    created_at: str
    replayed: bool  # true: this request id was answered before; this is the stored answer


class StoredDecisionOut(DecisionOut):
    """A stored decision with its explanation, and the request it answered."""

    request_id: str
    snapshot_version: int


class BulkDecisionsOut(ResponseModel):
    decisions: list[DecisionOut]
