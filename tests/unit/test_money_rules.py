"""The money rules: the brief's defaults, stated once and used everywhere; how budgets' rules
combine; and the two LTV checks (per subscriber in arbitration, per arm at promotion)."""

from __future__ import annotations

import pytest

from decisioning.core import cost_within_subscriber_ltv_cap
from decisioning.snapshot import BudgetRule
from experiments.promotion_policy import DEFAULT_PROMOTION_POLICY
from experiments.promotion_rules import arm_average_cost_within_ltv_cap
from offers.models import Budget
from offers.money_rules import DEFAULT_MONEY_RULES, MoneyRules, strictest_money_rules
from offers.schemas import BudgetIn


def test_the_defaults_are_the_briefs_alarm_line_and_ltv_share():
    assert MoneyRules(roi_floor=1.5, max_cost_share_of_ltv=0.20) == DEFAULT_MONEY_RULES


def test_every_default_of_a_money_rule_is_the_money_rules_default():
    budget_in = BudgetIn(code="FUND", name="Fund", cap_amount=100)
    columns = Budget.__table__.c
    assert (budget_in.roi_floor, budget_in.max_cost_share_of_ltv) == (1.5, 0.20)
    assert (columns.roi_floor.default.arg, columns.max_cost_share_of_ltv.default.arg) == (1.5, 0.20)
    assert BudgetRule("FUND", "programme", None, 100.0).money_rules == DEFAULT_MONEY_RULES
    policy = DEFAULT_PROMOTION_POLICY
    assert (policy.roi_floor, policy.max_cost_share_of_ltv) == (1.5, 0.20)


def test_the_strictest_rules_take_the_highest_floor_and_the_lowest_share():
    rules = [MoneyRules(2.0, 0.3), MoneyRules(1.2, 0.1), MoneyRules(1.5, 0.2)]
    assert strictest_money_rules(rules) == MoneyRules(roi_floor=2.0, max_cost_share_of_ltv=0.1)
    assert strictest_money_rules([]) == DEFAULT_MONEY_RULES


@pytest.mark.parametrize(
    "check", [cost_within_subscriber_ltv_cap, arm_average_cost_within_ltv_cap], ids=["subscriber", "arm_average"]
)
def test_both_ltv_checks_allow_exactly_the_share_and_refuse_more(check):
    assert check(80.0, 400.0, 0.20)
    assert not check(80.01, 400.0, 0.20)


def test_the_subscriber_check_forgives_float_sums_of_cents():
    assert cost_within_subscriber_ltv_cap(0.1 + 0.2, 1.0, 0.3)
