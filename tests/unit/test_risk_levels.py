"""Churn-risk warning levels blue / yellow / red (decisioning/risk.py)."""

from __future__ import annotations

import pytest

from decisioning.risk import RISK_REASON_MESSAGES, RiskAssessment, RiskPolicy, assess_risk


@pytest.mark.parametrize(
    ("score", "level", "reasons"),
    [
        (0.0, "blue", ()),
        (0.39, "blue", ()),
        (0.4, "yellow", ("churn_score_yellow",)),
        (0.69, "yellow", ("churn_score_yellow",)),
        (0.7, "red", ("churn_score_red",)),
        (1.0, "red", ("churn_score_red",)),
    ],
)
def test_churn_score_thresholds(score, level, reasons):
    assert assess_risk({"churn_score": score}) == RiskAssessment(level, reasons)


@pytest.mark.parametrize(
    ("attributes", "reason"),
    [
        ({"inactive_months": 3}, "inactive_months"),  # no usage for 3 consecutive months
        ({"downgrades_3m": 3}, "consecutive_downgrades"),  # a downgrade in each of 3 months
        ({"unresolved_complaints": 1}, "unresolved_complaint"),
        ({"complaints_90d": 3}, "complaint_surge"),
    ],
)
def test_each_churn_signal_escalates_one_level(attributes, reason):
    assert assess_risk(attributes) == RiskAssessment("yellow", (reason,))
    assert assess_risk({**attributes, "churn_score": 0.5}) == RiskAssessment("red", ("churn_score_yellow", reason))
    assert assess_risk({**attributes, "churn_score": 0.9}).level == "red"  # red is the top


@pytest.mark.parametrize(
    "attributes",
    [
        {"inactive_months": 2},
        {"downgrades_3m": 2},
        {"unresolved_complaints": 0},
        {"complaints_90d": 2},
    ],
)
def test_signals_below_their_threshold_do_not_escalate(attributes):
    assert assess_risk(attributes) == RiskAssessment("blue", ())


def test_two_signals_make_a_quiet_subscriber_red():
    result = assess_risk({"churn_score": 0.1, "inactive_months": 4, "unresolved_complaints": 2})
    assert result == RiskAssessment("red", ("inactive_months", "unresolved_complaint"))


def test_the_demo_at_risk_vip_is_red_for_every_reason():
    profile = {"churn_score": 0.71, "complaints_90d": 3, "unresolved_complaints": 1, "downgrades_3m": 2}
    assert assess_risk(profile) == RiskAssessment("red", ("churn_score_red", "unresolved_complaint", "complaint_surge"))


@pytest.mark.parametrize(
    "profile",
    [
        {},
        {"churn_score": None},
        {"churn_score": "0.9"},
        {"churn_score": float("nan")},
        {"inactive_months": True},
        {"unresolved_complaints": "yes"},
        {"complaints_90d": [5]},
    ],
)
def test_missing_or_malformed_values_count_as_absent(profile):
    assert assess_risk(profile) == RiskAssessment("blue", ())


def test_thresholds_come_from_the_policy():
    strict = RiskPolicy(yellow_churn_score=0.2, red_churn_score=0.5, inactive_months=1, complaint_surge_90d=2)
    assert assess_risk({"churn_score": 0.25}, strict).level == "yellow"
    assert assess_risk({"churn_score": 0.5}, strict).level == "red"
    assert assess_risk({"inactive_months": 1}, strict).reasons == ("inactive_months",)
    assert assess_risk({"complaints_90d": 2}, strict).reasons == ("complaint_surge",)


@pytest.mark.parametrize(
    "settings",
    [
        {"yellow_churn_score": 0.8, "red_churn_score": 0.7},
        {"red_churn_score": 1.5},
        {"yellow_churn_score": -0.1},
        {"inactive_months": 0},
        {"complaint_surge_90d": 0},
    ],
)
def test_inconsistent_policies_are_refused(settings):
    with pytest.raises(ValueError):
        RiskPolicy(**settings)


def test_every_reason_has_a_message():
    profile = {
        "churn_score": 0.5,
        "inactive_months": 3,
        "downgrades_3m": 3,
        "unresolved_complaints": 1,
        "complaints_90d": 3,
    }
    reasons = assess_risk(profile).reasons + assess_risk({"churn_score": 0.9}).reasons
    assert set(reasons) == set(RISK_REASON_MESSAGES)
