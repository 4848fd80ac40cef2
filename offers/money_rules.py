"""The money rules that gate spending on care actions, and their defaults, stated once.

Pure: standard library only, so the decision core, the catalogue's models and schemas, and the
promotion policy can all take their defaults from here.

The two rules come from the operator's retention playbooks (BRIEF, "Money rules"):

* **ROI floor** (``roi_floor``, default 1.5): the playbooks' *ROI alarm line*. A programme
  whose ROI falls below 1.5 must change strategy, so arbitration only offers an action whose
  expected gain is at least 1.5 × its cost, promotion asks for P(ROI ≥ floor), and a rollout's
  spending pauses when P(ROI < floor) is high.
* **Cost share of LTV** (``max_cost_share_of_ltv``, default 0.20): the cost to retain a
  customer must not exceed 20% of that customer's lifetime value. It is checked twice, with
  two meanings:

  - per subscriber, in arbitration: one contact's action may cost at most this share of that
    subscriber's value (``decisioning.core.cost_within_subscriber_ltv_cap``; the budgets in
    scope set the share);
  - per arm on average, at promotion: a pilot arm's cost per exposed subscriber may be at most
    this share of the value of a retained subscriber
    (``experiments.promotion_rules.arm_average_cost_within_ltv_cap``; the experiment's
    promotion policy sets the share).

Budgets carry their own rules (table ``budgets``) and promotion policies theirs; both start
from :data:`DEFAULT_MONEY_RULES`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class MoneyRules:
    """An ROI floor and a cap on cost as a share of lifetime value (see the module docstring)."""

    roi_floor: float = 1.5
    max_cost_share_of_ltv: float = 0.20


DEFAULT_MONEY_RULES = MoneyRules()


def strictest_money_rules(rules: Iterable[MoneyRules]) -> MoneyRules:
    """The rules that satisfy every one of ``rules`` at once: the highest ROI floor and the
    lowest LTV share (an action spending from several budgets must pass each budget's rules).
    :data:`DEFAULT_MONEY_RULES` when there are none."""
    rules = tuple(rules)
    if not rules:
        return DEFAULT_MONEY_RULES
    return MoneyRules(
        roi_floor=max(rule.roi_floor for rule in rules),
        max_cost_share_of_ltv=min(rule.max_cost_share_of_ltv for rule in rules),
    )
