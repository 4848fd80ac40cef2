"""The sufficient statistics a readout is computed from, and their validation.

These are plain frozen dataclasses: the readout service fills them from the SQL aggregation
(``experiments/stats_sql.py``) and the decision ledger; nothing here touches a database.
Validation returns a reason string instead of raising, so a readout over bad counts becomes a
result with the error code ``invalid_counts`` rather than an exception in a worker.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass


@dataclass(frozen=True)
class BetaPrior:
    """Beta(alpha, beta) prior of a retention rate; the default Beta(1, 1) is uniform."""

    alpha: float = 1.0
    beta: float = 1.0

    @classmethod
    def centred(cls, base_rate: float, strength: float) -> BetaPrior:
        """A prior with mean ``base_rate`` worth ``strength`` pseudo-subscribers."""
        return cls(alpha=base_rate * strength, beta=(1.0 - base_rate) * strength)


@dataclass(frozen=True)
class ArmData:
    """One arm's counts over one tier (or over all tiers)."""

    key: str
    is_control: bool
    weight: float  # configured traffic weight, used by the SRM check; need not sum to 1
    exposed: int  # subscribers first exposed
    trials: int  # of those, subscribers whose day-N retention status is known
    retained: int  # of the trials, retained at day N
    revenue_n: int = 0  # subscribers with a revenue figure
    revenue_sum: float = 0.0
    revenue_sum_squares: float = 0.0
    cost: float = 0.0  # money spent on this arm in total
    complaints: int = 0  # exposed subscribers with a complaint


@dataclass(frozen=True)
class TierData:
    """The arms' counts within one tier (``tier`` None: subscribers without a tier)."""

    tier: str | None
    arms: tuple[ArmData, ...]


@dataclass(frozen=True)
class ReadoutInputs:
    """Everything :func:`experiments.stats.conjugate.conjugate_readout` needs."""

    arms: tuple[ArmData, ...]  # totals over all tiers, in arm order
    tiers: tuple[TierData, ...]  # the same arms, per tier
    value_per_retained: float  # money value of one retained subscriber (e.g. mean LTV)
    # P(ROI ≥ floor) is judged against this; the caller passes the experiment's promotion policy's
    # floor (the statistics state no business default of their own)
    roi_floor: float
    prior: BetaPrior = BetaPrior()
    seed: int = 20240601
    draws: int = 20_000  # Monte Carlo draws per arm


def _is_count(value: object) -> bool:
    # numbers.Integral admits NumPy integers too; bool is an int but never a count. int(): the
    # numbers ABCs declare no `>=` for a type checker, and an integral converts exactly
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and int(value) >= 0


def _is_finite(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def invalid_arm_reason(arm: ArmData) -> str | None:
    """Why ``arm``'s counts cannot be analysed, or None when they can."""
    label = f"arm {arm.key!r}"
    for name in ("exposed", "trials", "retained", "revenue_n", "complaints"):
        if not _is_count(getattr(arm, name)):
            return f"{label}: {name} must be a non-negative integer, got {getattr(arm, name)!r}"
    for name in ("weight", "revenue_sum", "revenue_sum_squares", "cost"):
        if not _is_finite(getattr(arm, name)):
            return f"{label}: {name} must be a finite number, got {getattr(arm, name)!r}"
    if arm.weight < 0:
        return f"{label}: weight {arm.weight} is negative"
    if arm.cost < 0:
        return f"{label}: cost {arm.cost} is negative"
    if arm.revenue_sum_squares < 0:
        return f"{label}: revenue_sum_squares {arm.revenue_sum_squares} is negative"
    if arm.retained > arm.trials:
        return f"{label}: retained {arm.retained} > trials {arm.trials}"
    if arm.complaints > arm.exposed:
        return f"{label}: complaints {arm.complaints} > exposed {arm.exposed}"
    return None


def invalid_settings_reason(inputs: ReadoutInputs) -> str | None:
    """Why the readout settings (value, floor, prior, draws) are unusable, or None."""
    if not _is_finite(inputs.value_per_retained) or inputs.value_per_retained < 0:
        return f"value_per_retained must be a finite number ≥ 0, got {inputs.value_per_retained!r}"
    if not _is_finite(inputs.roi_floor):
        return f"roi_floor must be a finite number, got {inputs.roi_floor!r}"
    prior = inputs.prior
    if not (_is_finite(prior.alpha) and _is_finite(prior.beta) and prior.alpha > 0 and prior.beta > 0):
        return f"prior parameters must be finite and > 0, got Beta({prior.alpha!r}, {prior.beta!r})"
    if not (_is_count(inputs.draws) and 1_000 <= inputs.draws <= 1_000_000):
        return f"draws must be an integer in [1000, 1000000], got {inputs.draws!r}"
    if not _is_count(inputs.seed):
        return f"seed must be a non-negative integer, got {inputs.seed!r}"
    return None
