"""The typed promotion policy: parsed from an experiment's stored JSON in one place, and the
API's request schema is the same definition."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from experiments.promotion_policy import DEFAULT_PROMOTION_POLICY, PromotionPolicy, promotion_policy_from_json
from experiments.schemas import PromotionPolicyIn


def test_a_stored_policy_takes_the_defaults_for_what_it_lacks():
    policy = promotion_policy_from_json({"min_runtime_days": 5, "roi_floor": 2.0})
    assert policy.min_runtime_days == 5 and policy.roi_floor == 2.0
    assert policy.max_cost_share_of_ltv == DEFAULT_PROMOTION_POLICY.max_cost_share_of_ltv
    assert promotion_policy_from_json({}) == DEFAULT_PROMOTION_POLICY


def test_a_stored_policy_is_validated():
    with pytest.raises(ValidationError):
        promotion_policy_from_json({"min_p_best": 1.5})
    with pytest.raises(ValidationError):
        promotion_policy_from_json({"colour": "red"})


def test_the_api_schema_is_the_policy():
    assert PromotionPolicyIn.model_fields.keys() == PromotionPolicy.model_fields.keys()
    assert PromotionPolicyIn().model_dump() == DEFAULT_PROMOTION_POLICY.model_dump()


def test_a_policy_is_a_value():
    with pytest.raises(ValidationError):
        DEFAULT_PROMOTION_POLICY.min_p_best = 0.5  # type: ignore[misc]  # deliberately wrong: the refusal is under test
