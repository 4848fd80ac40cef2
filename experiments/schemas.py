"""Request schemas for experiments. Field names equal column names; arms are nested in order
(an arm's position in the list is its GrowthBook variation index)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from experiments.models import GUARDRAIL_METRICS, PILOT_COVERAGE, PRIMARY_METRICS, STATUSES
from infra.http import StrictModel
from offers.schemas import Code, Name, Text

Share = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
Weight = Annotated[float, Field(gt=0, le=1_000_000, allow_inf_nan=False)]
Seed = Annotated[str, Field(min_length=1, max_length=200)]
MAX_ARMS = 20

PrimaryMetric = Literal[PRIMARY_METRICS]  # type: ignore[valid-type]
Guardrail = Literal[GUARDRAIL_METRICS]  # type: ignore[valid-type]
Status = Literal[STATUSES]  # type: ignore[valid-type]


class PromotionPolicyIn(StrictModel):
    """When a pilot's winner may be promoted (DESIGN §5). ``mode`` "approve" waits for a person;
    "auto" lets the analysis job promote as soon as every rule holds."""

    min_exposures_per_arm: int = Field(1000, ge=1, le=1_000_000_000)
    min_runtime_days: int = Field(30, ge=0, le=3650)  # churn shows 30–90 days after the contact
    min_p_best: Share = 0.95
    max_expected_loss: Share = 0.005  # in retention-rate units: half a percentage point
    roi_floor: float = Field(1.5, ge=0, le=100, allow_inf_nan=False)
    min_p_roi_above_floor: Share = 0.9
    max_cost_share_of_ltv: float = Field(0.20, gt=0, le=1, allow_inf_nan=False)
    mode: Literal["auto", "approve"] = "approve"
    # a guardrail (complaints up, ARPU down) is harmed when P(harm) reaches this
    max_p_guardrail_harm: Share = 0.95
    # ROI alarm in rollout: P(ROI < roi_floor) at or above this pauses spending
    roi_alarm_p: Share = 0.9
    # share of the target kept out as the measured no-care baseline after promotion
    rollout_holdout_share: float = Field(0.05, ge=0, le=0.5, allow_inf_nan=False)
    # money value of one retained subscriber; None: the mean LTV of the exposed subscribers
    value_per_retained: float | None = Field(None, gt=0, le=1e9, allow_inf_nan=False)
    # retention prior: Beta(1, 1) unless a historical base rate is given, then
    # Beta(rate × strength, (1 − rate) × strength)
    prior_base_rate: float | None = Field(None, gt=0, lt=1, allow_inf_nan=False)
    prior_strength: float = Field(2.0, gt=0, le=1e6, allow_inf_nan=False)


DEFAULT_PROMOTION_POLICY: dict[str, Any] = PromotionPolicyIn().model_dump()


class ArmIn(StrictModel):
    """An arm: an offer, or no action (``offer_code`` null). ``is_control`` defaults to
    "no offer", so the usual control needs no flag."""

    key: Code
    offer_code: Code | None = None
    weight: Weight = 1.0  # relative: normalised over the arms when assigning
    is_control: bool | None = None

    @model_validator(mode="after")
    def _default_control(self) -> "ArmIn":
        if self.is_control is None:
            self.is_control = self.offer_code is None
        return self


class ExperimentIn(StrictModel):
    key: Code
    name: Name
    hypothesis: Text = ""
    target: dict[str, Any] = Field(default_factory=dict)  # GrowthBook condition; {} = everyone
    namespace: Code | None = None
    namespace_start: Share = 0.0
    namespace_end: Share = 1.0
    coverage: float = Field(PILOT_COVERAGE, gt=0, le=1, allow_inf_nan=False)
    holdout_share: float = Field(0.0, ge=0, le=0.5, allow_inf_nan=False)
    hash_seed: Seed | None = None  # None → the key (GrowthBook's rule)
    hash_version: Literal[1, 2] = 2
    bucket_version: int = Field(1, ge=1, le=1_000_000)
    primary_metric: PrimaryMetric = "retained_d30"
    guardrails: list[Guardrail] = Field(default_factory=lambda: list(GUARDRAIL_METRICS))
    promotion_policy: PromotionPolicyIn = Field(default_factory=PromotionPolicyIn)
    budget_code: Code | None = None
    readout_interval_minutes: int = Field(60, ge=5, le=31 * 24 * 60)
    arms: list[ArmIn] = Field(default_factory=list, max_length=MAX_ARMS)

    @field_validator("guardrails")
    @classmethod
    def _unique_guardrails(cls, guardrails: list[str]) -> list[str]:
        if len(set(guardrails)) != len(guardrails):
            raise ValueError("guardrails must not repeat")
        return guardrails

    @field_validator("arms")
    @classmethod
    def _arms_consistent(cls, arms: list[ArmIn]) -> list[ArmIn]:
        seen: set[str] = set()
        for index, arm in enumerate(arms):
            if arm.key in seen:
                raise ValueError(f"arm key {arm.key!r} repeats (arms[{index}]); arm keys are unique")
            seen.add(arm.key)
        controls = [arm.key for arm in arms if arm.is_control]
        if len(controls) > 1:
            raise ValueError(f"only one arm can be the control; {', '.join(controls)} all are")
        return arms

    @model_validator(mode="after")
    def _namespace_range(self) -> "ExperimentIn":
        if self.namespace_start >= self.namespace_end:
            raise ValueError("namespace_start must be below namespace_end (a range [start, end) of 0..1)")
        return self


class TransitionIn(StrictModel):
    to: Status
    reason: Text = ""


class PhaseIn(StrictModel):
    """A new phase of a running experiment: every arm's new weight, optionally a new seed
    (default ``"<key>:p<phase>"``)."""

    weights: dict[Code, Weight] = Field(min_length=2, max_length=MAX_ARMS)
    hash_seed: Seed | None = None
    reason: Text = ""


def promotion_policy(stored: dict[str, Any]) -> PromotionPolicyIn:
    """The experiment's policy with today's defaults for the fields it was stored without."""
    return PromotionPolicyIn.model_validate({**DEFAULT_PROMOTION_POLICY, **stored})


class ApprovalIn(StrictModel):
    """A person approving the promotion the latest readout allows (mode "approve")."""

    readout_id: int | None = Field(None, ge=1)  # None: the latest readout
    reason: Text = ""


class ResumeSpendingIn(StrictModel):
    reason: Text = Field(min_length=1)
