"""The project's own cases for the compiled targeting-condition evaluator."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from offers.conditions import ConditionError, compile_condition, evaluate_condition, validate_condition

LOYAL_BROADBAND = {"tenure_months": {"$gt": 36}, "product": "broadband"}
NIGHT_OWL = {"night_data_share": {"$gte": 0.4}}
CHURN_SIGNALS = {
    "$or": [
        {"churn_score": {"$gte": 0.7}},
        {"complaints_90d": {"$gte": 3}},
        {"lifecycle_stage": {"$in": ["at_risk", "winback"]}},
    ]
}


def matches(condition, attributes, saved_groups=None) -> bool:
    result = compile_condition(condition, saved_groups)(attributes)
    assert result is evaluate_condition(condition, attributes, saved_groups)
    return result


# --- telecom eligibility --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        ({"tenure_months": 48, "product": "broadband"}, True),
        ({"tenure_months": 36, "product": "broadband"}, False),  # $gt is strict
        ({"tenure_months": 48, "product": "mobile"}, False),
        ({"product": "broadband"}, False),
        ({"tenure_months": 120, "product": "broadband", "region": "north"}, True),
    ],
)
def test_loyal_broadband(attributes, expected):
    assert matches(LOYAL_BROADBAND, attributes) is expected


@pytest.mark.parametrize(("share", "expected"), [(0.4, True), (0.65, True), (0.39, False), (0, False), (None, False)])
def test_night_data_share_threshold(share, expected):
    assert matches(NIGHT_OWL, {"night_data_share": share}) is expected


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        ({"churn_score": 0.81, "complaints_90d": 0, "lifecycle_stage": "active"}, True),
        ({"churn_score": 0.1, "complaints_90d": 4, "lifecycle_stage": "active"}, True),
        ({"churn_score": 0.1, "complaints_90d": 0, "lifecycle_stage": "winback"}, True),
        ({"churn_score": 0.1, "complaints_90d": 1, "lifecycle_stage": "active"}, False),
        ({"lifecycle_stage": "onboarding"}, False),
    ],
)
def test_or_of_churn_signals(attributes, expected):
    assert matches(CHURN_SIGNALS, attributes) is expected


def test_nested_attribute_paths():
    roamer = {"usage.roaming_days": {"$gte": 5}, "device.os.name": {"$in": ["android", "ios"]}}
    assert matches(roamer, {"usage": {"roaming_days": 9}, "device": {"os": {"name": "ios"}}})
    assert not matches(roamer, {"usage": {"roaming_days": 2}, "device": {"os": {"name": "ios"}}})
    assert not matches(roamer, {"usage": 9, "device": {"os": {"name": "ios"}}})  # not an object
    assert not matches(roamer, {"device": {"os": {"name": "ios"}}})


def test_array_paths_expose_index_and_length():
    assert matches({"addons.0": "sports_pack"}, {"addons": ["sports_pack", "hd"]})
    assert matches({"addons.length": {"$gte": 2}}, {"addons": ["sports_pack", "hd"]})
    assert not matches({"addons.2": {"$exists": True}}, {"addons": ["sports_pack", "hd"]})


def test_array_attribute_matches_if_any_element_does():
    bundle_offer = {"active_products": {"$in": ["tv", "fibre"]}}
    assert matches(bundle_offer, {"active_products": ["mobile", "fibre"]})
    assert not matches(bundle_offer, {"active_products": ["mobile"]})
    assert not matches(bundle_offer, {"active_products": []})
    assert matches({"active_products": {"$nin": ["tv"]}}, {"active_products": []})


def test_missing_attributes():
    assert not matches({"region": "north"}, {})
    assert matches({"region": {"$exists": False}}, {})
    assert matches({"region": None}, {"region": None})
    assert not matches({"region": {"$in": ["north", "south"]}}, {})
    assert matches({"region": {"$nin": ["north", "south"]}}, {})


def test_missing_attribute_counts_as_zero_in_comparisons():
    # GrowthBook (reference SDK and vectors): a missing attribute is null, and null < 0.2
    # compares as 0 < 0.2. Guard threshold offers with $exists when that is not wanted.
    assert matches({"churn_score": {"$lt": 0.2}}, {})
    assert not matches({"churn_score": {"$exists": True, "$lt": 0.2}}, {})
    assert matches({"churn_score": {"$exists": True, "$lt": 0.2}}, {"churn_score": 0.05})


def test_javascript_coercions_follow_growthbook():
    assert matches({"arpu": {"$gt": 30}}, {"arpu": "42.5"})  # numeric text compares as a number
    assert not matches({"arpu": {"$gt": 30}}, {"arpu": "n/a"})  # NaN compares false
    assert matches({"plan_code": {"$gt": "B"}}, {"plan_code": "C"})  # two strings compare as text
    assert matches({"complaints_90d": 2}, {"complaints_90d": "2"})  # literal equality is loose
    assert matches({"msisdn": "447700900123"}, {"msisdn": 447700900123})
    assert matches({"is_vip": True}, {"is_vip": 1})
    assert not matches({"complaints_90d": {"$eq": 2}}, {"complaints_90d": "2"})  # $eq is strict
    assert not matches({"is_vip": {"$eq": True}}, {"is_vip": 1})


def test_birthday_month_and_version_targeting():
    assert matches(
        {"birthday_month": 11, "app_version": {"$vgte": "4.2.0"}}, {"birthday_month": 11, "app_version": "4.10.1"}
    )
    assert not matches({"app_version": {"$vgte": "4.2.0"}}, {"app_version": "4.2.0-rc.1"})
    assert matches({"app_version": {"$vlt": "v5"}}, {"app_version": "4.99.9"})


def test_regex_and_case_insensitive_operators():
    assert matches({"email": {"$regex": "@operator\\.example$"}}, {"email": "ana@operator.example"})
    assert matches({"handset": {"$regexi": "^pixel"}}, {"handset": "PIXEL 8"})
    assert matches({"region": {"$ini": ["NORTH"]}}, {"region": "north"})
    assert matches({"addons": {"$alli": ["HD"]}}, {"addons": ["hd", "sports"]})


def test_elem_match_size_all_and_type():
    tickets = {"tickets": {"$elemMatch": {"severity": {"$gte": 3}, "open": True}}}
    assert matches(tickets, {"tickets": [{"severity": 1, "open": True}, {"severity": 4, "open": True}]})
    assert not matches(tickets, {"tickets": [{"severity": 4, "open": False}]})
    assert matches({"addons": {"$size": {"$gte": 2}}}, {"addons": ["a", "b"]})
    assert matches({"addons": {"$all": ["hd", "sports"]}}, {"addons": ["sports", "hd", "kids"]})
    assert matches({"usage": {"$type": "object"}}, {"usage": {}})
    assert not matches({"usage": {"$type": "object"}}, {"usage": []})


def test_logical_operators_and_empty_conditions():
    assert matches({}, {"anything": 1})
    assert matches({"$and": []}, {})
    assert matches({"$or": []}, {})
    assert not matches({"$nor": []}, {})  # the empty $or passes, so the empty $nor fails
    assert matches({"$nor": [{"product": "tv"}]}, {"product": "mobile"})
    assert matches({"$not": {"region": "capital"}}, {"region": "north"})
    assert matches({"region": {"$not": {"$in": ["capital"]}}}, {"region": "north"})


def test_saved_groups_are_bound_at_compile_time():
    condition = {"msisdn": {"$inGroup": "vip_msisdns"}}
    groups = {"vip_msisdns": ["447700900001", "447700900002"]}
    assert matches(condition, {"msisdn": "447700900002"}, groups)
    assert not matches(condition, {"msisdn": "447700900003"}, groups)
    assert not matches(condition, {"msisdn": "447700900002"})  # unknown group: empty
    assert matches({"msisdn": {"$notInGroup": "vip_msisdns"}}, {"msisdn": "447700900003"}, groups)


def test_lenient_mode_evaluates_what_growthbook_evaluates():
    assert not matches({"arpu": {"$gtt": 10}}, {"arpu": 50})  # unknown operator: false
    assert matches({"arpu": {"$not": {"$gtt": 10}}}, {"arpu": 50})  # ...so its $not is true
    assert not matches({"region": {"$in": "north"}}, {"region": "north"})
    assert not matches({"region": {"$nin": "north"}}, {"region": "south"})
    assert not matches({"name": {"$regex": "(unclosed"}}, {"name": "(unclosed"})


@pytest.mark.parametrize(
    "malformed",
    [
        [],
        "product",
        None,
        {"$or": {"product": "tv"}},
        {"$and": [1]},
        {"$not": "x"},
        {"$not": {"$or": 5}},
        {"tickets": {"$elemMatch": "open"}},
    ],
)
def test_lenient_mode_fails_malformed_structure_as_a_whole(malformed):
    evaluate = compile_condition(malformed)
    assert evaluate({"product": "tv", "tickets": ["open"]}) is False
    with pytest.raises(ConditionError):
        compile_condition(malformed, strict=True)


def test_evaluation_never_raises_on_odd_attributes():
    cyclic: list = []
    cyclic.append(cyclic)
    assert compile_condition({"addons": "x"})({"addons": cyclic}) is False
    assert compile_condition({"arpu": {"$gt": 1}})(None) is False  # type: ignore[arg-type]  # deliberately wrong: the refusal is under test
    assert compile_condition({"arpu": {"$gt": 1}})({"arpu": object()}) is False


# --- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "condition",
    [
        LOYAL_BROADBAND,
        NIGHT_OWL,
        CHURN_SIGNALS,
        {},
        {"usage.roaming_days": {"$gte": 5, "$lt": 30}, "plan": {"$ne": "basic"}},
        {"tickets": {"$elemMatch": {"severity": {"$gte": 3}}}},
        {"addons": {"$elemMatch": {"$in": ["hd"]}}, "$groups": {"$size": 2}},
        {"addons": {"$size": 0}, "flags": {"$all": [{"$regex": "^beta"}, "x"]}},
        {"churn_score": {"$exists": True}, "region": None, "tags": ["a", "b"], "geo": {"lat": 1}},
        {"app_version": {"$vgte": "4.2.0"}, "email": {"$regexi": "@example\\.com$"}, "x": {"$type": "null"}},
        {"msisdn": {"$inGroup": "vip"}, "$nor": [{"region": {"$nini": ["CAPITAL"]}}]},
    ],
)
def test_valid_conditions_pass_validation(condition):
    validate_condition(condition)
    compile_condition(condition, strict=True)


@pytest.mark.parametrize(
    ("condition", "path"),
    [
        (["arpu"], "$"),
        ({"arpu": {"$inn": [40, 50]}}, "$.arpu.$inn"),
        ({"$or": {"product": "tv"}}, "$.$or"),
        ({"$or": [{"product": "tv"}, "mobile"]}, "$.$or[1]"),
        ({"$or": [{}, {"tenure_months": {"$gt": [36]}}]}, "$.$or[1].tenure_months.$gt"),
        ({"$and": [{"$nor": [{"arpu": {"$lt": None}}]}]}, "$.$and[0].$nor[0].arpu.$lt"),
        ({"$not": ["region"]}, "$.$not"),
        ({"arpu": {"$in": 40}}, "$.arpu.$in"),
        ({"region": {"$nin": ["north", ["south"]]}}, "$.region.$nin[1]"),
        ({"addons": {"$all": "hd"}}, "$.addons.$all"),
        ({"addons": {"$all": [{"$regex": "["}]}}, "$.addons.$all[0].$regex"),
        ({"addons": {"$size": "2"}}, "$.addons.$size"),
        ({"addons": {"$size": -1}}, "$.addons.$size"),
        ({"addons": {"$size": {"$gte": 1, "$bigger": 2}}}, "$.addons.$size.$bigger"),
        ({"tickets": {"$elemMatch": "open"}}, "$.tickets.$elemMatch"),
        ({"tickets": {"$elemMatch": {}}}, "$.tickets.$elemMatch"),
        ({"tickets": {"$elemMatch": {"severity": {"$gte": "high", "$x": 1}}}}, "$.tickets.$elemMatch.severity.$x"),
        ({"email": {"$regex": "([a-z]+"}}, "$.email.$regex"),
        ({"email": {"$regexi": 42}}, "$.email.$regexi"),
        ({"churn_score": {"$exists": "yes"}}, "$.churn_score.$exists"),
        ({"usage": {"$type": "dict"}}, "$.usage.$type"),
        ({"$in": ["north"]}, "$.$in"),
        ({"usage..roaming_days": 1}, "$.usage..roaming_days"),
        ({"arpu": {"$gt": 30, "currency": "EUR"}}, "$.arpu"),
        ({"addons": {"$eq": ["hd"]}}, "$.addons.$eq"),
        ({"msisdn": {"$inGroup": ""}}, "$.msisdn.$inGroup"),
        ({"app_version": {"$vgt": None}}, "$.app_version.$vgt"),
        ({"region": {"$not": {"$ini": "north"}}}, "$.region.$not.$ini"),
        ({"tenure_months": {"$gte": True}}, "$.tenure_months.$gte"),
    ],
)
def test_validation_names_the_json_path(condition, path):
    with pytest.raises(ConditionError) as info:
        validate_condition(condition)
    assert info.value.path == path
    assert str(info.value) == f"{path}: {info.value.message}"


def test_condition_error_is_a_value_error_and_pickles():
    error = ConditionError("$.arpu.$in", "needs a list")
    assert isinstance(error, ValueError)
    assert str(error) == "$.arpu.$in: needs a list"
    clone = pickle.loads(pickle.dumps(error))
    assert (clone.path, clone.message, str(clone)) == (error.path, error.message, str(error))


# --- properties -----------------------------------------------------------------------------

FIXED_CONDITIONS = [
    LOYAL_BROADBAND,
    NIGHT_OWL,
    CHURN_SIGNALS,
    {"usage.roaming_days": {"$gte": 5}, "addons": {"$elemMatch": {"$regex": "^hd"}}},
    {"region": {"$nin": ["capital", None, 3]}, "addons": {"$size": {"$lt": 3}}, "x": {"$type": "array"}},
    {"$nor": [{"app_version": {"$vlt": "4.0.0"}}, {"name": {"$regexi": "test"}}], "arpu": {"$ne": 0}},
    {"tags": {"$all": [1, "b", {"$gt": 2}]}, "geo": {"lat": 1.5}, "flag": True, "msisdn": "1"},
]
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=8)
    | st.sampled_from(["broadband", "4.2.0", "0x1f", " 7 ", "hd-pack", "capital"]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=4), children, max_size=4),
    max_leaves=12,
)
ATTRIBUTE_KEYS = st.sampled_from(
    [
        "tenure_months",
        "product",
        "night_data_share",
        "churn_score",
        "complaints_90d",
        "lifecycle_stage",
        "usage",
        "addons",
        "region",
        "tags",
        "geo",
        "flag",
        "msisdn",
        "app_version",
        "name",
        "arpu",
        "x",
    ]
) | st.text(max_size=6)


@settings(max_examples=300, deadline=None)
@given(attributes=st.dictionaries(ATTRIBUTE_KEYS, JSON_VALUES, max_size=8))
def test_compiled_equals_convenience_and_never_raises(attributes):
    for condition in FIXED_CONDITIONS:
        result = compile_condition(condition)(attributes)
        assert isinstance(result, bool)
        assert result is evaluate_condition(condition, attributes)
