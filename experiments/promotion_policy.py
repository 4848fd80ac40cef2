"""The promotion policy (DESIGN §5): when a pilot's winner may roll out, and when a rollout's
spending must stop. One definition, with its defaults stated once.

The API's request schema (``experiments.schemas.PromotionPolicyIn``) derives from
:class:`PromotionPolicy`, and an experiment stores the policy as its JSON dump; every reader
turns that JSON back into a :class:`PromotionPolicy` with :func:`promotion_policy_from_json`
and reads attributes. The money rules' defaults come from ``offers.money_rules``.

Pure: pydantic and the project's pure modules, no web or database library.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from offers.money_rules import DEFAULT_MONEY_RULES

_UnitInterval = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]


class PromotionPolicy(BaseModel):
    """When a pilot's winner may be promoted (DESIGN §5). ``mode`` "approve" waits for a person;
    "auto" lets the analysis job promote as soon as every rule holds."""

    # unknown keys are an error, as in every request schema; frozen: a policy is a value
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, frozen=True)

    min_exposures_per_arm: int = Field(1000, ge=1, le=1_000_000_000)
    min_runtime_days: int = Field(30, ge=0, le=3650)  # churn shows 30–90 days after the contact
    min_p_best: _UnitInterval = 0.95
    max_expected_loss: _UnitInterval = 0.005  # in retention-rate units: half a percentage point
    # the ROI alarm line: promotion asks P(ROI ≥ roi_floor) ≥ min_p_roi_above_floor
    roi_floor: float = Field(DEFAULT_MONEY_RULES.roi_floor, ge=0, le=100, allow_inf_nan=False)
    min_p_roi_above_floor: _UnitInterval = 0.9
    # per arm on average: promotion_rules.arm_average_cost_within_ltv_cap
    max_cost_share_of_ltv: float = Field(DEFAULT_MONEY_RULES.max_cost_share_of_ltv, gt=0, le=1, allow_inf_nan=False)
    mode: Literal["auto", "approve"] = "approve"
    # a guardrail (complaints up, ARPU down) is harmed when P(harm) reaches this
    max_p_guardrail_harm: _UnitInterval = 0.95
    # ROI alarm in rollout: P(ROI < roi_floor) at or above this pauses spending
    roi_alarm_p: _UnitInterval = 0.9
    # share of the target kept out as the measured no-care baseline after promotion
    rollout_holdout_share: float = Field(0.05, ge=0, le=0.5, allow_inf_nan=False)
    # money value of one retained subscriber; None: the mean LTV of the exposed subscribers
    value_per_retained: float | None = Field(None, gt=0, le=1e9, allow_inf_nan=False)
    # retention prior: Beta(1, 1) unless a historical base rate is given, then
    # Beta(rate × strength, (1 − rate) × strength)
    prior_base_rate: float | None = Field(None, gt=0, lt=1, allow_inf_nan=False)
    prior_strength: float = Field(2.0, gt=0, le=1e6, allow_inf_nan=False)


DEFAULT_PROMOTION_POLICY = PromotionPolicy()


def promotion_policy_from_json(stored: Mapping[str, Any]) -> PromotionPolicy:
    """The policy an experiment stores (its ``promotion_policy`` JSON), with today's defaults
    for the fields it was stored without."""
    return PromotionPolicy.model_validate(dict(stored))
