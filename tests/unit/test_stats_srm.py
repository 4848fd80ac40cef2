"""Sample-ratio mismatch: chi-square of exposures against configured weights."""

from __future__ import annotations

import math

import pytest

from experiments.stats.inputs import ArmData
from experiments.stats.srm import SRM_P_THRESHOLD, sample_ratio_mismatch


def _arm(key: str, weight: float, exposed: int) -> ArmData:
    return ArmData(key=key, is_control=key == "control", weight=weight, exposed=exposed, trials=0, retained=0)


def test_a_5200_4800_split_of_a_50_50_experiment_is_flagged():
    result = sample_ratio_mismatch((_arm("control", 0.5, 5200), _arm("sms", 0.5, 4800)))
    # chi² = 2 · 200² / 5000 = 16 on 1 df: p = erfc(√8)
    assert result.chi2 == pytest.approx(16.0)
    assert result.p_value is not None
    assert result.p_value == pytest.approx(math.erfc(math.sqrt(8)), rel=1e-9)
    assert round(result.p_value, 7) == 0.0000633
    assert result.flag and result.p_value < SRM_P_THRESHOLD


def test_a_5030_4970_split_is_not_flagged():
    result = sample_ratio_mismatch((_arm("control", 0.5, 5030), _arm("sms", 0.5, 4970)))
    assert result.chi2 == pytest.approx(0.36)
    assert result.p_value is not None
    assert result.p_value == pytest.approx(math.erfc(math.sqrt(0.18)), rel=1e-9)
    assert round(result.p_value, 4) == 0.5485
    assert not result.flag


def test_weights_need_not_sum_to_one_and_may_be_unequal():
    arms = (_arm("control", 50, 5000), _arm("sms", 25, 2500), _arm("call", 25, 2500))
    result = sample_ratio_mismatch(arms)
    assert result.p_value == pytest.approx(1.0) and not result.flag
    assert dict(result.expected) == {"control": 5000.0, "sms": 2500.0, "call": 2500.0}
    assert result.degrees_of_freedom == 2
    skewed = sample_ratio_mismatch((_arm("control", 50, 5600), _arm("sms", 25, 2200), _arm("call", 25, 2200)))
    assert skewed.flag


def test_exposures_in_a_zero_weight_arm_are_a_mismatch_and_an_idle_one_is_ignored():
    leaking = sample_ratio_mismatch((_arm("control", 1, 5000), _arm("sms", 1, 5000), _arm("old", 0, 3)))
    assert leaking.p_value == 0.0 and leaking.flag
    assert leaking.as_json()["chi2"] is None  # infinite: JSON cannot carry it
    idle = sample_ratio_mismatch((_arm("control", 1, 5000), _arm("sms", 1, 5000), _arm("old", 0, 0)))
    assert idle.degrees_of_freedom == 1 and idle.p_value == pytest.approx(1.0)


def test_untestable_splits_return_an_error_code():
    assert sample_ratio_mismatch(()).error == "fewer_than_two_arms"
    assert sample_ratio_mismatch((_arm("control", 1, 100),)).error == "fewer_than_two_arms"
    none_yet = sample_ratio_mismatch((_arm("control", 1, 0), _arm("sms", 1, 0)))
    assert none_yet.error == "no_exposures" and none_yet.p_value is None and not none_yet.flag
    assert none_yet.as_json()["p_value"] is None
