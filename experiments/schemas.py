"""Request schemas for experiments. Field names equal column names; arms are nested in order
(an arm's position in the list is its GrowthBook variation index)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from experiments.models import GUARDRAIL_METRICS, PILOT_COVERAGE, Guardrail, PrimaryMetric, Status
from experiments.promotion_policy import PromotionPolicy
from infra.http import MAX_ID, NoRepeats, StrictModel
from infra.openapi import ResponseModel
from offers.schemas import Code, Name, Text

Share = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
Weight = Annotated[float, Field(gt=0, le=1_000_000, allow_inf_nan=False)]
Seed = Annotated[str, Field(min_length=1, max_length=200)]
MAX_ARMS = 20


# The request schema is the typed policy itself (its fields and defaults are stated there once);
# the subclass keeps the schema's name in the OpenAPI document, and its docstring describes it there.
class PromotionPolicyIn(PromotionPolicy):
    """When a pilot's winner may be promoted (DESIGN §5). ``mode`` "approve" waits for a person;
    "auto" lets the analysis job promote as soon as every rule holds."""


class ArmIn(StrictModel):
    """An arm: an offer, or no action (``offer_code`` null). ``is_control`` defaults to
    "no offer", so the usual control needs no flag."""

    key: Code
    offer_code: Code | None = None
    weight: Weight = 1.0  # relative: normalised over the arms when assigning
    is_control: bool | None = None

    @model_validator(mode="after")
    def _default_control(self) -> ArmIn:
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
    guardrails: Annotated[list[Guardrail], NoRepeats] = Field(default_factory=lambda: list(GUARDRAIL_METRICS))
    promotion_policy: PromotionPolicyIn = Field(default_factory=PromotionPolicyIn)
    budget_code: Code | None = None
    readout_interval_minutes: int = Field(60, ge=5, le=31 * 24 * 60)
    arms: list[ArmIn] = Field(default_factory=list, max_length=MAX_ARMS)

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
    def _namespace_range(self) -> ExperimentIn:
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


class ApprovalIn(StrictModel):
    """A person approving the promotion the latest readout allows (mode "approve")."""

    readout_id: int | None = Field(None, ge=1, le=MAX_ID)  # None: the latest readout
    reason: Text = ""


class ResumeSpendingIn(StrictModel):
    reason: Text = Field(min_length=1)


# --- responses (documentation of what the handlers send; tests check the handlers against them) ---

Probability = Annotated[float, Field(ge=0, le=1)]
Pair = tuple[float | None, float | None]  # (low, high) of a 95% credible interval


class ArmOut(ResponseModel):
    key: str
    offer_code: str | None = Field(description="null: no action (the usual control)")
    weight: float = Field(ge=0, description="relative; normalised over the arms when assigning")
    is_control: bool
    position: int = Field(ge=0, description="the GrowthBook variation index")


class PhaseWeight(ResponseModel):
    arm: str
    weight: float = Field(ge=0)


class PhaseOut(ResponseModel):
    """One phase: a re-seeded split. After promotion the rollout phase gives the winner all the weight."""

    phase: int = Field(ge=1)
    hash_seed: str
    weights: list[PhaseWeight]
    coverage: float = Field(ge=0, le=1)
    started_at: datetime


class ExperimentOut(ExperimentIn, ResponseModel):
    """An experiment as stored, with its arms in variation order and the states it may move to."""

    id: int = Field(ge=1)
    status: Status
    phase: int = Field(ge=1)
    hash_seed: str  # stored: defaults to the key
    promotion_policy: dict[str, Any]  # type: ignore[assignment]  # as stored; fields added later take defaults
    arms: list[ArmOut]  # type: ignore[assignment]  # the stored arms, which are not the request's ArmIn
    allowed_transitions: list[Status]
    started_at: datetime | None
    ended_at: datetime | None
    winner_arm_key: str | None
    tier_winners: dict[str, str] | None = Field(description="tier code → the arm promoted for that tier")
    promoted_at: datetime | None
    spending_paused: bool = Field(description="set by the ROI alarm; resume with POST …/resume-spending")
    created_at: datetime
    updated_at: datetime


class ExperimentDetailOut(ExperimentOut):
    """An experiment with its phase history."""

    phases: list[PhaseOut]


class ExperimentList(ResponseModel):
    items: list[ExperimentOut]


class ArmStatsOut(ResponseModel):
    """Sufficient statistics of one arm (or of the holdout: ``arm`` null, ``in_holdout`` true)."""

    arm: str | None
    is_control: bool
    in_holdout: bool
    exposed: int = Field(ge=0)
    matured: int = Field(ge=0, description="exposed at least day_n days before the data cutoff")
    retained: int = Field(ge=0)
    churned: int = Field(ge=0)
    revenue_n: int = Field(ge=0)
    revenue_sum: float
    revenue_sum_squares: float = Field(ge=0)
    complaints: int = Field(ge=0)
    delivered: int = Field(ge=0)
    accepted: int = Field(ge=0)
    declined: int = Field(ge=0)


class TierStatsOut(ResponseModel):
    tier: str | None
    arms: list[ArmStatsOut]


class ExperimentStatsOut(ResponseModel):
    """Sufficient statistics per arm (and holdout) and per arm × tier, at the primary metric's day."""

    experiment: str
    status: Status
    primary_metric: PrimaryMetric
    day_n: int = Field(ge=0)
    data_cutoff: datetime
    matured_before: datetime
    arms: list[ArmStatsOut]
    tiers: list[TierStatsOut]


class IntervalOut(ResponseModel):
    """A posterior mean with its equal-tailed 95% credible interval."""

    mean: float | None
    ci95: Pair | None


class ArmReadoutOut(ResponseModel):
    """One arm's posterior summaries; comparisons are arm − control (null for the control itself)."""

    key: str
    is_control: bool
    exposed: int = Field(ge=0)
    trials: int = Field(ge=0)
    retained: int = Field(ge=0)
    retention_mean: float | None
    retention_ci95: Pair | None
    uplift_vs_control: IntervalOut | None
    p_beats_control: Probability | None
    p_best: Probability | None
    expected_loss: float | None
    arpu_mean: float | None
    arpu_ci95: Pair | None
    arpu_uplift: IntervalOut | None
    p_arpu_harm: Probability | None
    cost: float | None
    cost_per_subscriber: float | None
    incremental_value: IntervalOut | None
    roi_mean: float | None
    p_roi_above_floor: Probability | None
    p_roi_below_floor: Probability | None
    complaint_rate: float | None
    p_complaint_harm: Probability | None


class TierReadoutOut(ResponseModel):
    tier: str | None
    arms: list[ArmReadoutOut]
    error: str | None
    error_message: str | None


class SrmOut(ResponseModel):
    """Sample-ratio mismatch: chi-square of first exposures against the configured weights."""

    p_value: Probability | None
    flag: bool = Field(description="p < 0.001: blocks promotion")
    chi2: float | None
    degrees_of_freedom: int | None
    observed: dict[str, int]
    expected: dict[str, float | None]
    error: str | None


class PromotionVerdictOut(ResponseModel):
    eligible: bool
    winner: str | None
    tier_winners: dict[str, str]
    blocked_by: list[str] = Field(description="codes of the rules that block promotion, e.g. min_runtime, srm")
    reasons: list[dict[str, str]]


class ReadoutOut(ResponseModel):
    """The latest readout of an experiment (DESIGN §7)."""

    readout_id: int = Field(ge=1)
    experiment: str
    status: Status = Field(description="the experiment's status now")
    status_at_readout: Status
    computed_at: datetime
    data_cutoff: datetime
    model_version: str
    inputs_hash: str
    method: Literal["conjugate", "hierarchical"]
    primary_metric: PrimaryMetric
    value_per_retained: float | None
    value_source: Literal["policy", "mean_ltv"] | None
    cost_source: str
    roi_floor: float | None
    seed: int
    draws: int
    arms: list[ArmReadoutOut]
    tiers: list[TierReadoutOut]
    srm: SrmOut
    holdout: ArmStatsOut | None
    hierarchical: dict[str, Any] = Field(
        description="the hierarchical model: attempted, ok, reason, diagnostics, per-tier posteriors"
    )
    promotion: PromotionVerdictOut
    error: str | None
    error_message: str | None


class ReadoutArmSummary(ResponseModel):
    key: str
    retention_mean: float | None
    p_best: Probability | None


class ReadoutSummaryOut(ResponseModel):
    readout_id: int = Field(ge=1)
    data_cutoff: datetime
    computed_at: datetime
    method: Literal["conjugate", "hierarchical"]
    model_version: str
    status_at_readout: Status
    eligible: bool
    error: str | None
    blocked_by: list[str]
    arms: list[ReadoutArmSummary]


class ReadoutHistoryOut(ResponseModel):
    """The experiment's readouts, newest data cutoff first (at most 500)."""

    items: list[ReadoutSummaryOut]


class PromotionOut(ResponseModel):
    id: int = Field(ge=1)
    readout_id: int = Field(ge=1)
    from_status: Status = Field(alias="from")
    to_status: Status = Field(alias="to")
    winner: str
    tier_winners: dict[str, str]
    mode: Literal["auto", "approve"]
    actor: str
    created_at: datetime


class AlertOut(ResponseModel):
    id: int = Field(ge=1)
    kind: str
    message: str
    details: dict[str, Any]
    readout_id: int = Field(ge=1)
    created_at: datetime
    resolved_at: datetime | None
    resolved_by: str | None


class PromotionsOut(ResponseModel):
    """Promotions (oldest first) and alerts (newest first) of an experiment."""

    promotions: list[PromotionOut]
    alerts: list[AlertOut]
    spending_paused: bool
    running: bool


class ApprovalOut(ResponseModel):
    """The promotion just approved and the experiment after it."""

    promotion: PromotionOut
    promotion_id: int = Field(ge=1)
    experiment: ExperimentOut
