"""Sample-ratio mismatch: are first exposures split as the configured weights say?

A Pearson chi-square goodness-of-fit test of each arm's exposures against its share of the
weights. A split this unlikely (p < ``SRM_P_THRESHOLD``) means the assignment or the exposure
logging is broken, so no comparison between the arms can be trusted: it blocks promotion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from scipy import special

from experiments.stats.inputs import ArmData
from experiments.stats.rounding import json_number

SRM_P_THRESHOLD = 0.001


@dataclass(frozen=True)
class SrmResult:
    """The test's outcome; ``p_value`` None (and ``error`` set) when it cannot be run."""

    p_value: float | None
    flag: bool
    chi2: float | None = None
    degrees_of_freedom: int | None = None
    observed: tuple[tuple[str, int], ...] = ()
    expected: tuple[tuple[str, float], ...] = ()
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "p_value": json_number(self.p_value),
            "flag": self.flag,
            "chi2": json_number(self.chi2),
            "degrees_of_freedom": self.degrees_of_freedom,
            "observed": dict(self.observed),
            "expected": {key: json_number(count) for key, count in self.expected},
            "error": self.error,
        }


def sample_ratio_mismatch(arms: tuple[ArmData, ...]) -> SrmResult:
    """Chi-square test of ``exposed`` against ``weight`` shares over ``arms``.

    Arms with zero weight and no exposures take no part. Exposures in an arm whose weight is
    zero are a mismatch no chance can explain: p = 0, flagged.
    """
    taking_part = [arm for arm in arms if arm.weight > 0 or arm.exposed > 0]
    if len(taking_part) < 2:
        return SrmResult(p_value=None, flag=False, error="fewer_than_two_arms")
    total_weight = sum(arm.weight for arm in taking_part)
    total_exposed = int(sum(arm.exposed for arm in taking_part))
    if total_exposed == 0:
        return SrmResult(p_value=None, flag=False, error="no_exposures")
    observed = tuple((arm.key, int(arm.exposed)) for arm in taking_part)
    expected = tuple((arm.key, total_exposed * arm.weight / total_weight) for arm in taking_part)
    degrees_of_freedom = len(taking_part) - 1
    if any(count == 0 for _, count in expected):
        return SrmResult(
            p_value=0.0,
            flag=True,
            chi2=math.inf,
            degrees_of_freedom=degrees_of_freedom,
            observed=observed,
            expected=expected,
        )
    chi2 = sum((seen - due) ** 2 / due for (_, seen), (_, due) in zip(observed, expected))
    p_value = float(special.chdtrc(degrees_of_freedom, chi2))
    return SrmResult(
        p_value=p_value,
        flag=p_value < SRM_P_THRESHOLD,
        chi2=chi2,
        degrees_of_freedom=degrees_of_freedom,
        observed=observed,
        expected=expected,
    )
