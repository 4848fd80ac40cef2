"""The promotion policy applied to a readout (DESIGN §5): pure rules, no database.

``evaluate_promotion`` answers "may this pilot's winner roll out?" with the winner (overall and
per tier) and, when it may not, every rule that blocks it in ``blocked_by`` — all of them, not
the first, so an analyst sees at once what is missing. ``roi_alarm`` answers "must this
rollout stop spending?" (the playbooks' ROI alarm line).

Both read the readout in its JSON shape (the API's), so a stored readout can be re-judged
under an edited policy without recomputing it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from experiments.promotion_policy import PromotionPolicy

# Every reason a promotion can be blocked, with what it means (shown to analysts).
BLOCKERS: dict[str, str] = {
    "not_in_pilot": "only a pilot is promoted to rollout",
    "readout_error": "the readout could not be computed from the data",
    "srm": "the arms' exposures do not match the configured weights (sample-ratio mismatch)",
    "diagnostics": "the hierarchical model failed its diagnostics (r-hat, ESS, divergences) or could not be fitted",
    "min_exposures_per_arm": "an arm has fewer exposures than the policy's minimum",
    "min_runtime": "the experiment has not run for the policy's minimum number of days",
    "no_winner": "no care action beats the control",
    "p_best": "the best arm's probability of being best is below the policy's minimum",
    "expected_loss": "choosing the best arm risks more retention than the policy allows",
    "value_unknown": "no value per retained subscriber (no LTV data and none in the policy)",
    "roi": "P(ROI ≥ floor) is below the policy's minimum",
    "ltv_cap": "the action costs more than the policy's share of the subscribers' LTV",
    "guardrail_complaints": "the winner raises complaints",
    "guardrail_arpu": "the winner lowers ARPU",
}


@dataclass(frozen=True)
class PromotionFacts:
    """What the rules need besides the readout and the policy."""

    status: str
    runtime_days: float
    value_per_retained: float | None
    guardrails: Sequence[str] = ("complaints", "arpu")
    tier_winners: Mapping[str, str] = field(default_factory=dict)  # from the hierarchical model
    diagnostics_failed: bool = False


@dataclass(frozen=True)
class PromotionVerdict:
    eligible: bool
    winner: str | None
    tier_winners: Mapping[str, str]
    blocked_by: tuple[str, ...]
    reasons: tuple[dict[str, str], ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "eligible": self.eligible,
            "winner": self.winner,
            "tier_winners": dict(self.tier_winners),
            "blocked_by": list(self.blocked_by),
            "reasons": list(self.reasons),
        }


def _best_arm(arms: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    ranked = [arm for arm in arms if arm.get("p_best") is not None]
    return max(ranked, key=lambda arm: arm["p_best"]) if ranked else None


def evaluate_promotion(policy: PromotionPolicy, readout: Mapping[str, Any], facts: PromotionFacts) -> PromotionVerdict:
    """Apply ``policy`` to ``readout`` (the readout JSON)."""
    blocked: dict[str, str] = {}

    def block(code: str, detail: str) -> None:
        blocked.setdefault(code, f"{BLOCKERS[code]}: {detail}")

    arms = [arm for arm in readout.get("arms", []) if not arm.get("in_holdout")]
    if facts.status != "pilot":
        block("not_in_pilot", f"the experiment is {facts.status}")
    if readout.get("error"):
        block("readout_error", str(readout.get("error_message") or readout["error"]))
    srm = readout.get("srm") or {}
    if srm.get("flag"):
        block("srm", f"p = {srm.get('p_value'):.2g} < 0.001")
    if facts.diagnostics_failed:
        block("diagnostics", str((readout.get("hierarchical") or {}).get("reason") or "failed"))
    minimum = policy.min_exposures_per_arm
    short = [f"{arm['key']} has {arm.get('exposed', 0)}" for arm in arms if arm.get("exposed", 0) < minimum]
    if short:
        block("min_exposures_per_arm", f"{', '.join(short)} (minimum {minimum})")
    if facts.runtime_days < policy.min_runtime_days:
        block("min_runtime", f"{facts.runtime_days:.1f} of {policy.min_runtime_days} days")

    best = _best_arm(arms)
    winner = None
    if best is None or best.get("is_control"):
        block("no_winner", "the control is the most likely best" if best else "no arm has a posterior")
    else:
        winner = str(best["key"])
        _judge_winner(policy, best, facts, block)
    reasons = tuple({"code": code, "message": message} for code, message in blocked.items())
    tier_winners = dict(facts.tier_winners) if winner else {}
    return PromotionVerdict(not blocked, winner, tier_winners, tuple(blocked), reasons)


def arm_average_cost_within_ltv_cap(
    cost_per_subscriber: float, value_per_retained: float, max_cost_share_of_ltv: float
) -> bool:
    """The per-arm LTV check of promotion: whether an arm's average cost per exposed subscriber
    stays within the policy's ``max_cost_share_of_ltv`` of the value of a retained subscriber
    (the policy's ``value_per_retained``, else the mean LTV of the exposed). Failing it blocks
    promotion with ``ltv_cap``.

    Not to be confused with the per-subscriber check of arbitration
    (``decisioning.core.cost_within_subscriber_ltv_cap``), which holds each contact's action to
    the budgets' share of that subscriber's own value; see ``offers.money_rules``.
    """
    return cost_per_subscriber <= max_cost_share_of_ltv * value_per_retained


def _judge_winner(policy: PromotionPolicy, best: Mapping[str, Any], facts: PromotionFacts, block: Any) -> None:
    key = best["key"]
    if best["p_best"] < policy.min_p_best:
        block("p_best", f"{key} is best with p = {best['p_best']:.3f} < {policy.min_p_best}")
    loss = best.get("expected_loss")
    if loss is None or loss > policy.max_expected_loss:
        block("expected_loss", f"{key}'s expected loss {loss} > {policy.max_expected_loss}")
    cost = float(best.get("cost_per_subscriber") or 0.0)
    if cost > 0:
        if not facts.value_per_retained:
            block("value_unknown", "set promotion_policy.value_per_retained or import subscribers' ltv")
        else:
            p_roi = best.get("p_roi_above_floor")
            if p_roi is None or p_roi < policy.min_p_roi_above_floor:
                block("roi", f"{key}: P(ROI ≥ {policy.roi_floor}) = {p_roi} < {policy.min_p_roi_above_floor}")
            share = policy.max_cost_share_of_ltv
            if not arm_average_cost_within_ltv_cap(cost, facts.value_per_retained, share):
                block(
                    "ltv_cap",
                    f"{key} costs {cost:.2f} per subscriber > {share * facts.value_per_retained:.2f} "
                    f"({share:.0%} of LTV {facts.value_per_retained:.2f})",
                )
    threshold = policy.max_p_guardrail_harm
    if "complaints" in facts.guardrails:
        p = best.get("p_complaint_harm")
        if p is not None and p >= threshold:
            block("guardrail_complaints", f"P({key} raises complaints) = {p:.3f} ≥ {threshold}")
    if "arpu" in facts.guardrails:
        p = best.get("p_arpu_harm")
        if p is not None and p >= threshold:
            block("guardrail_arpu", f"P({key} lowers ARPU) = {p:.3f} ≥ {threshold}")


def roi_alarm(policy: PromotionPolicy, readout: Mapping[str, Any], arm_keys: Sequence[str]) -> dict[str, Any] | None:
    """The ROI alarm of a rollout: for the arms being rolled out (``arm_keys``: the winner and
    any per-tier winners), the first whose P(ROI < floor) reaches ``roi_alarm_p`` — as the
    alert's details — or None when spending may go on."""
    by_key = {arm["key"]: arm for arm in readout.get("arms", []) if not arm.get("in_holdout")}
    for key in arm_keys:
        arm = by_key.get(key)
        if arm is None or arm.get("is_control"):
            continue
        p_below = arm.get("p_roi_below_floor")
        if p_below is not None and p_below >= policy.roi_alarm_p:
            return {
                "arm": key,
                "p_roi_below_floor": p_below,
                "roi_mean": arm.get("roi_mean"),
                "roi_floor": policy.roi_floor,
                "threshold": policy.roi_alarm_p,
            }
    return None
