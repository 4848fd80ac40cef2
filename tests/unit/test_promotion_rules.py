"""The promotion policy, rule by rule: each gate blocks on its own, and all passing promotes."""

from __future__ import annotations

import copy

import pytest

from experiments.promotion_policy import DEFAULT_PROMOTION_POLICY
from experiments.promotion_rules import BLOCKERS, PromotionFacts, evaluate_promotion, roi_alarm

POLICY = DEFAULT_PROMOTION_POLICY
FACTS = PromotionFacts(status="pilot", runtime_days=45.0, value_per_retained=400.0, tier_winners={"vip": "bill_credit"})


def passing_readout() -> dict:
    """A readout every default rule accepts: bill_credit clearly beats the control."""
    control = {
        "key": "control",
        "is_control": True,
        "exposed": 5000,
        "p_best": 0.001,
        "expected_loss": 0.03,
        "cost_per_subscriber": 0.0,
        "p_roi_above_floor": None,
        "p_roi_below_floor": None,
        "p_complaint_harm": None,
        "p_arpu_harm": None,
    }
    treatment = {
        "key": "bill_credit",
        "is_control": False,
        "exposed": 5000,
        "p_best": 0.99,
        "expected_loss": 0.0001,
        "cost_per_subscriber": 10.0,
        "p_roi_above_floor": 0.97,
        "p_roi_below_floor": 0.03,
        "p_complaint_harm": 0.2,
        "p_arpu_harm": 0.3,
    }
    return {
        "arms": [control, treatment],
        "srm": {"p_value": 0.4, "flag": False},
        "error": None,
        "hierarchical": {"ok": True},
    }


def test_all_rules_pass_and_the_winner_is_named():
    verdict = evaluate_promotion(POLICY, passing_readout(), FACTS)
    assert verdict.eligible and verdict.blocked_by == ()
    assert verdict.winner == "bill_credit" and verdict.tier_winners == {"vip": "bill_credit"}
    assert verdict.as_json()["eligible"] is True


def _arm(readout: dict, key: str) -> dict:
    return next(arm for arm in readout["arms"] if arm["key"] == key)


def srm(r):
    r["srm"] = {"p_value": 0.0001, "flag": True}


def exposures(r):
    _arm(r, "control")["exposed"] = 999


def p_best(r):
    _arm(r, "bill_credit")["p_best"] = 0.9


def loss(r):
    _arm(r, "bill_credit")["expected_loss"] = 0.01


def roi(r):
    _arm(r, "bill_credit")["p_roi_above_floor"] = 0.5


def ltv(r):
    _arm(r, "bill_credit")["cost_per_subscriber"] = 81.0  # > 20% of 400


def complaints(r):
    _arm(r, "bill_credit")["p_complaint_harm"] = 0.96


def arpu(r):
    _arm(r, "bill_credit")["p_arpu_harm"] = 0.99


def error(r):
    r["error"] = "no_data"


def no_winner(r):
    _arm(r, "control")["p_best"], _arm(r, "bill_credit")["p_best"] = 0.8, 0.2


@pytest.mark.parametrize(
    "perturb, blocker",
    [
        (srm, "srm"),
        (exposures, "min_exposures_per_arm"),
        (p_best, "p_best"),
        (loss, "expected_loss"),
        (roi, "roi"),
        (ltv, "ltv_cap"),
        (complaints, "guardrail_complaints"),
        (arpu, "guardrail_arpu"),
        (error, "readout_error"),
        (no_winner, "no_winner"),
    ],
)
def test_each_readout_rule_blocks_on_its_own(perturb, blocker):
    readout = copy.deepcopy(passing_readout())
    perturb(readout)
    verdict = evaluate_promotion(POLICY, readout, FACTS)
    assert not verdict.eligible
    assert verdict.blocked_by == (blocker,)
    assert verdict.reasons[0]["message"].startswith(BLOCKERS[blocker])


@pytest.mark.parametrize(
    "facts, blocker",
    [
        (PromotionFacts(status="pilot", runtime_days=12.5, value_per_retained=400.0), "min_runtime"),
        (PromotionFacts(status="rollout", runtime_days=45.0, value_per_retained=400.0), "not_in_pilot"),
        (
            PromotionFacts(status="pilot", runtime_days=45.0, value_per_retained=400.0, diagnostics_failed=True),
            "diagnostics",
        ),
        (PromotionFacts(status="pilot", runtime_days=45.0, value_per_retained=None), "value_unknown"),
    ],
)
def test_each_fact_rule_blocks_on_its_own(facts, blocker):
    verdict = evaluate_promotion(POLICY, passing_readout(), facts)
    assert verdict.blocked_by == (blocker,)


def test_every_blocker_is_reported_not_just_the_first():
    readout = passing_readout()
    srm(readout), p_best(readout), complaints(readout)
    verdict = evaluate_promotion(POLICY, readout, PromotionFacts("pilot", 3.0, 400.0))
    assert set(verdict.blocked_by) == {"srm", "p_best", "guardrail_complaints", "min_runtime"}


def test_guardrails_not_chosen_do_not_block():
    readout = passing_readout()
    arpu(readout)
    facts = PromotionFacts("pilot", 45.0, 400.0, guardrails=("complaints",))
    assert evaluate_promotion(POLICY, readout, facts).eligible


def test_a_free_action_needs_no_value_or_roi():
    readout = passing_readout()
    _arm(readout, "bill_credit").update(cost_per_subscriber=0.0, p_roi_above_floor=None)
    assert evaluate_promotion(POLICY, readout, PromotionFacts("pilot", 45.0, None)).eligible


def test_the_policy_thresholds_are_the_ones_applied():
    readout = passing_readout()
    p_best(readout)  # 0.9
    assert evaluate_promotion(POLICY.model_copy(update={"min_p_best": 0.85}), readout, FACTS).eligible


def test_roi_alarm_fires_only_for_rolled_out_arms_below_the_floor():
    readout = passing_readout()
    assert roi_alarm(POLICY, readout, ["bill_credit"]) is None
    _arm(readout, "bill_credit")["p_roi_below_floor"] = 0.93
    alarm = roi_alarm(POLICY, readout, ["bill_credit"])
    assert alarm is not None
    assert alarm["arm"] == "bill_credit" and alarm["threshold"] == 0.9
    assert roi_alarm(POLICY, readout, ["control"]) is None  # the control costs nothing
    assert roi_alarm(POLICY.model_copy(update={"roi_alarm_p": 0.95}), readout, ["bill_credit"]) is None
