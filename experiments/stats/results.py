"""What a conjugate readout returns: frozen dataclasses that serialise to plain JSON."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from experiments.stats.rounding import json_money, json_number, json_pair
from experiments.stats.srm import SrmResult


@dataclass(frozen=True)
class Interval:
    """A posterior mean with its equal-tailed 95% credible interval."""

    mean: float
    low: float
    high: float

    @classmethod
    def zero(cls) -> Interval:
        """A comparison of the control with itself."""
        return cls(0.0, 0.0, 0.0)

    def as_json(self) -> dict[str, Any]:
        return {"mean": json_number(self.mean), "ci95": json_pair((self.low, self.high))}


def _interval_json(interval: Interval | None) -> dict[str, Any] | None:
    return None if interval is None else interval.as_json()


@dataclass(frozen=True)
class ArmResult:
    """One arm's posterior summaries. Differences are arm − control; probabilities that
    compare with the control are None for the control itself and when there is none."""

    key: str
    is_control: bool
    exposed: int
    trials: int
    retained: int
    retention_mean: float
    retention_ci95: tuple[float, float]
    uplift_vs_control: Interval | None  # retention difference
    p_beats_control: float | None  # exact P(retention > control's)
    p_best: float  # P(highest retention of all arms), Monte Carlo
    expected_loss: float  # E[best arm's retention − this arm's], Monte Carlo
    arpu_mean: float | None  # mean revenue per subscriber with a revenue figure
    arpu_ci95: tuple[float, float] | None
    arpu_uplift: Interval | None
    p_arpu_harm: float | None  # P(ARPU < control's)
    cost: float
    cost_per_subscriber: float | None  # cost / exposed
    incremental_value: Interval | None  # money per exposed subscriber vs control
    roi_mean: float | None  # incremental value / cost per subscriber
    p_roi_above_floor: float | None
    p_roi_below_floor: float | None
    complaint_rate: float | None  # complaints / exposed
    p_complaint_harm: float | None  # P(complaint rate > control's)

    def as_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "is_control": self.is_control,
            "exposed": self.exposed,
            "trials": self.trials,
            "retained": self.retained,
            "retention_mean": json_number(self.retention_mean),
            "retention_ci95": json_pair(self.retention_ci95),
            "uplift_vs_control": _interval_json(self.uplift_vs_control),
            "p_beats_control": json_number(self.p_beats_control),
            "p_best": json_number(self.p_best),
            "expected_loss": json_number(self.expected_loss),
            "arpu_mean": json_number(self.arpu_mean),
            "arpu_ci95": json_pair(self.arpu_ci95),
            "arpu_uplift": _interval_json(self.arpu_uplift),
            "p_arpu_harm": json_number(self.p_arpu_harm),
            "cost": json_money(self.cost),
            "cost_per_subscriber": json_number(self.cost_per_subscriber),
            "incremental_value": _interval_json(self.incremental_value),
            "roi_mean": json_number(self.roi_mean),
            "p_roi_above_floor": json_number(self.p_roi_above_floor),
            "p_roi_below_floor": json_number(self.p_roi_below_floor),
            "complaint_rate": json_number(self.complaint_rate),
            "p_complaint_harm": json_number(self.p_complaint_harm),
        }


@dataclass(frozen=True)
class TierResult:
    """The arms' results within one tier; ``error`` as for the whole readout."""

    tier: str | None
    arms: tuple[ArmResult, ...]
    error: str | None = None
    error_message: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "tier": self.tier,
            "arms": [arm.as_json() for arm in self.arms],
            "error": self.error,
            "error_message": self.error_message,
        }


@dataclass(frozen=True)
class ConjugateReadout:
    """A whole readout. ``error`` codes:

    * nothing analysable, ``arms`` empty: ``invalid_inputs`` (settings), ``invalid_counts``,
      ``no_arms``, ``duplicate_arms``;
    * arms reported (counts, posteriors, P(best)) but not compared with a control:
      ``no_data`` (no trials yet, so each posterior is the prior; the SRM check still runs on
      exposures), ``single_arm``, ``no_control``, ``multiple_controls``.

    A tier's ``error`` follows the same codes.
    """

    arms: tuple[ArmResult, ...]
    tiers: tuple[TierResult, ...]
    srm: SrmResult
    value_per_retained: float
    roi_floor: float
    seed: int
    draws: int
    error: str | None = None
    error_message: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "arms": [arm.as_json() for arm in self.arms],
            "tiers": [tier.as_json() for tier in self.tiers],
            "srm": self.srm.as_json(),
            "value_per_retained": json_number(self.value_per_retained),
            "roi_floor": json_number(self.roi_floor),
            "seed": self.seed,
            "draws": self.draws,
            "error": self.error,
            "error_message": self.error_message,
        }
