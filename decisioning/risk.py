"""Churn-risk warning levels (blue / yellow / red) from a subscriber's profile.

Pure: standard library only. The playbooks' three warning levels map to escalating care
(blue → care SMS, red → a dedicated agent follow-up); the catalogue expresses that mapping as
data, because the decision core puts the level on the profile as ``risk_level`` before offer
eligibility and experiment targets are evaluated (``{"risk_level": "red"}``).

How the level is reached:

1. The churn model's ``churn_score`` (probability of churn ~30 days ahead) sets the starting
   level: ``red`` at or above ``red_churn_score`` (default 0.7), ``yellow`` at or above
   ``yellow_churn_score`` (default 0.4), else ``blue``. No score (or not a number) means blue.
2. Each of the playbooks' churn signals then escalates the level one step, up to red:

   - ``inactive_months`` ≥ 3: no usage for three consecutive months;
   - ``downgrades_3m`` ≥ 3: a plan downgrade in each of the last three months;
   - ``unresolved_complaints`` ≥ 1: an open complaint;
   - ``complaints_90d`` ≥ 3: a complaint surge (the demo's "frequent complaints" segment
     starts at 2; a surge is one more than that).

   So one signal makes a quiet subscriber yellow, two make them red, and any signal makes a
   yellow score red. The signals are facts the model may not have seen yet (an open complaint
   logged an hour ago), which is why they escalate rather than being folded into the score.

Blue is the floor, not "at risk": ``reasons`` is empty when nothing was seen. Values that are
not numbers (missing, text, booleans) count as absent; nothing here raises on profile data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

__all__ = ["LEVELS", "RISK_REASON_MESSAGES", "RiskAssessment", "RiskPolicy", "assess_risk"]

RiskLevel = Literal["blue", "yellow", "red"]
LEVELS: tuple[RiskLevel, ...] = ("blue", "yellow", "red")

# reason code -> a sentence a call-centre agent can read, with the policy's thresholds
_MESSAGE_TEMPLATES = {
    "churn_score_red": "churn score at or above the red threshold ({red_churn_score:g})",
    "churn_score_yellow": "churn score at or above the yellow threshold ({yellow_churn_score:g})",
    "inactive_months": "no usage for {inactive_months} or more consecutive months",
    "consecutive_downgrades": "plan downgraded in each of the last {consecutive_downgrades} months",
    "unresolved_complaint": "{unresolved_complaints_text}",
    "complaint_surge": "complaint surge: {complaint_surge_90d} or more complaints in the last 90 days",
}


# The churn signals, each one step up (module docstring): (profile attribute, the policy's
# threshold field, reason code)
_SIGNALS = (
    ("inactive_months", "inactive_months", "inactive_months"),
    ("downgrades_3m", "consecutive_downgrades", "consecutive_downgrades"),
    ("unresolved_complaints", "unresolved_complaints", "unresolved_complaint"),
    ("complaints_90d", "complaint_surge_90d", "complaint_surge"),
)


@dataclass(frozen=True)
class RiskPolicy:
    """Thresholds of the warning levels; the defaults are the playbooks' numbers. Marketing sets
    them as the active risk-level policy (``/api/v1/risk-policies``). ``messages``: each reason
    code's sentence under these thresholds."""

    yellow_churn_score: float = 0.4
    red_churn_score: float = 0.7
    inactive_months: int = 3
    consecutive_downgrades: int = 3
    unresolved_complaints: int = 1
    complaint_surge_90d: int = 3

    messages: Mapping[str, str] = field(init=False, repr=False, compare=False)
    # (profile attribute, threshold, reason code) of each churn signal, built once per policy
    signals: tuple[tuple[str, int, str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 0 <= self.yellow_churn_score <= self.red_churn_score <= 1:
            raise ValueError("churn score thresholds must satisfy 0 <= yellow <= red <= 1")
        for _, name, _ in _SIGNALS:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        signals = tuple((attribute, getattr(self, name), reason) for attribute, name, reason in _SIGNALS)
        object.__setattr__(self, "signals", signals)
        complaints = (
            "has an unresolved complaint"
            if self.unresolved_complaints == 1
            else f"has {self.unresolved_complaints} or more unresolved complaints"
        )
        values = {
            **{f.name: getattr(self, f.name) for f in fields(self) if f.init},
            "unresolved_complaints_text": complaints,
        }
        # reason code -> its sentence under these thresholds, built once per policy
        object.__setattr__(
            self, "messages", {code: template.format(**values) for code, template in _MESSAGE_TEMPLATES.items()}
        )


@dataclass(frozen=True)
class RiskAssessment:
    """The warning level and the reason codes that raised it (see RISK_REASON_MESSAGES)."""

    level: RiskLevel
    reasons: tuple[str, ...] = ()


DEFAULT_RISK_POLICY = RiskPolicy()
RISK_REASON_MESSAGES = DEFAULT_RISK_POLICY.messages  # the sentences under the playbooks' thresholds
_NUMBER = (int, float)  # bool deliberately absent: True is not a count
_BLUE = RiskAssessment("blue")  # most subscribers: one shared instance, no allocation per decision


def _number(profile: Mapping[str, Any], name: str) -> float | None:
    value = profile.get(name)
    if type(value) in _NUMBER and value == value:  # NaN is not a measurement
        return value
    return None


def assess_risk(profile: Mapping[str, Any], policy: RiskPolicy = DEFAULT_RISK_POLICY) -> RiskAssessment:
    """The subscriber's warning level: the churn score's band, escalated one step per churn
    signal (module docstring). Never raises on profile data."""
    reasons: list[str] = []
    step = 0
    score = _number(profile, "churn_score")
    if score is not None:
        if score >= policy.red_churn_score:
            step = 2
            reasons.append("churn_score_red")
        elif score >= policy.yellow_churn_score:
            step = 1
            reasons.append("churn_score_yellow")
    signals = 0
    for attribute, threshold, reason in policy.signals:
        value = _number(profile, attribute)
        if value is not None and value >= threshold:
            signals += 1
            reasons.append(reason)
    if not reasons:
        return _BLUE
    return RiskAssessment(LEVELS[min(2, step + signals)], tuple(reasons))
