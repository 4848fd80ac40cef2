"""Sample-ratio mismatch: chi-square of exposures against configured weights."""

from __future__ import annotations

import math

import pytest

from experiments.stats.inputs import ArmData
from experiments.stats.srm import SRM_P_THRESHOLD, SrmResult, sample_ratio_mismatch


def _arm(key: str, weight: float, exposed: int) -> ArmData:
    return ArmData(key=key, is_control=key == "control", weight=weight, exposed=exposed, trials=0, retained=0)


def _even_split(control: int, sms: int, *, chi2: float, p_value: float, digits: int) -> SrmResult:
    """The SRM of a 50/50 experiment that exposed ``control`` and ``sms``: its chi² is ``chi2``, its
    p-value that of chi² on 1 df, erfc(√(chi²/2)), and ``p_value`` when rounded to ``digits``."""
    result = sample_ratio_mismatch((_arm("control", 0.5, control), _arm("sms", 0.5, sms)))
    assert result.chi2 == pytest.approx(chi2)
    assert result.p_value is not None
    assert result.p_value == pytest.approx(math.erfc(math.sqrt(chi2 / 2)), rel=1e-9)
    assert round(result.p_value, digits) == p_value
    return result


def test_a_5200_4800_split_of_a_50_50_experiment_is_flagged():
    # chi² = 2 · 200² / 5000 = 16 on 1 df: p = erfc(√8)
    result = _even_split(5200, 4800, chi2=16.0, p_value=0.0000633, digits=7)
    assert result.flag and result.p_value is not None and result.p_value < SRM_P_THRESHOLD


def test_a_5030_4970_split_is_not_flagged():
    result = _even_split(5030, 4970, chi2=0.36, p_value=0.5485, digits=4)
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
