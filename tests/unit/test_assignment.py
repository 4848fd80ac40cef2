"""Properties and pinned values of the pure experiment assignment core (DESIGN §4.5)."""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import binomtest, chisquare

from experiments.assignment import (
    Assignment,
    ExperimentSpec,
    assign,
    bucket_ranges,
    choose_variation,
    fnv1a32,
    hash_value,
    in_holdout,
    in_namespace,
)

# --- pinned values, worked by hand from the formulas -------------------------------------


def test_fnv1a32_published_vectors():
    # The FNV-1a 32 reference test values (offset basis for "", then "a" and "foobar")
    assert fnv1a32("") == 0x811C9DC5
    assert fnv1a32("a") == 0xE40C292C
    assert fnv1a32("foobar") == 0xBF9CF968


@pytest.mark.parametrize("length", [1, 10, 63, 64, 65, 200])
@pytest.mark.parametrize("alphabet", ["subscriber-0123456789", "€😀é"])
def test_fnv1a32_equals_the_step_by_step_definition_at_every_length(length, alphabet):
    # short strings are masked once at the end, long ones at every step: both are FNV-1a
    text = (alphabet * length)[:length]
    units = text.encode("utf-16-le")
    expected = 0x811C9DC5
    for i in range(0, len(units), 2):
        expected = ((expected ^ int.from_bytes(units[i : i + 2], "little")) * 0x01000193) % 2**32
    assert fnv1a32(text) == expected
    assert fnv1a32(text[length // 2 :], fnv1a32(text[: length // 2])) == expected


def test_fnv1a32_hashes_utf16_code_units_like_javascript():
    prime, basis = 0x01000193, 0x811C9DC5
    # "€" is one UTF-16 unit 0x20AC (outside Latin-1): one xor-multiply step
    assert fnv1a32("€") == ((basis ^ 0x20AC) * prime) % 2**32 == 2839424075
    # "😀" is the surrogate pair D83D DE00 in JavaScript's charCodeAt
    step = ((basis ^ 0xD83D) * prime) % 2**32
    assert fnv1a32("😀") == ((step ^ 0xDE00) * prime) % 2**32 == 3409036472


def test_fnv1a32_continues_from_a_prefix_state():
    assert fnv1a32("s-1", fnv1a32("winback-q4")) == fnv1a32("winback-q4s-1")


def test_hash_v2_pinned():
    # v2: fnv1a32("winback-q4" + "s-1") = 1817904195; fnv1a32("1817904195") = 1202899620;
    # 1202899620 % 10000 = 9620 → 0.962
    assert fnv1a32("winback-q4s-1") == 1817904195
    assert fnv1a32("1817904195") == 1202899620
    assert hash_value("winback-q4", "s-1", 2) == 0.962


def test_hash_v1_pinned():
    # v1 hashes value + seed: fnv1a32("s-1winback-q4") = 3019392857; % 1000 = 857 → 0.857
    assert fnv1a32("s-1winback-q4") == 3019392857
    assert hash_value("winback-q4", "s-1", 1) == 0.857


def test_hash_unknown_version_is_none():
    assert hash_value("winback-q4", "s-1", 3) is None


def test_bucket_ranges_pilot_coverage_pinned():
    # 5% pilot of a 40/30/30 experiment: each arm keeps its start, 5% of its width
    expected = [(0.0, 0.02), (0.4, 0.415), (0.7, 0.715)]
    for (start, end), (want_start, want_end) in zip(bucket_ranges(3, 0.05, (0.4, 0.3, 0.3)), expected):
        assert start == pytest.approx(want_start, abs=1e-12)
        assert end == pytest.approx(want_end, abs=1e-12)


# Hashes of the first ids under seed "winback-q4" (v2), as pinned by test_hash_v2_pinned's method
PINNED_ARMS_50_50 = {
    "s-1": (0.962, "data_pack"),
    "s-2": (0.7169, "data_pack"),
    "s-3": (0.0018, "control"),
    "s-4": (0.4169, "control"),
    "s-5": (0.1694, "control"),
    "s-6": (0.6637, "data_pack"),
}


@pytest.mark.parametrize("subscriber_id", sorted(PINNED_ARMS_50_50))
def test_assign_pinned_arms(subscriber_id):
    bucket, arm = PINNED_ARMS_50_50[subscriber_id]
    spec = ExperimentSpec("winback-q4", ("control", "data_pack"))
    assert hash_value("winback-q4", subscriber_id, 2) == bucket
    assert assign(spec, subscriber_id) == Assignment(int(bucket >= 0.5), arm, True, False, "assigned")


def test_pilot_coverage_pinned():
    # s-3 hashes to 0.0018 < 0.05 × 0.5 → covered by a 5% pilot; s-5 (0.1694) is not
    spec = ExperimentSpec("winback-q4", ("control", "data_pack"), coverage=0.05)
    assert assign(spec, "s-3").arm_key == "control"
    assert assign(spec, "s-5") == Assignment(None, None, False, False, "not_covered")


def test_holdout_pinned():
    # Holdout hash of s-3 is hash("winback-q4:holdout", "s-3", 2) = 0.1432: held out at 0.15
    assert hash_value("winback-q4:holdout", "s-3", 2) == 0.1432
    spec = ExperimentSpec("winback-q4", ("control", "data_pack"), holdout_share=0.15)
    assert assign(spec, "s-3") == Assignment(None, None, False, True, "holdout")
    assert assign(spec, "s-4").reason == "assigned"  # holdout hash 0.1971 ≥ 0.15


# --- reasons and spec handling ---------------------------------------------------------------


def test_reasons_for_not_assigned():
    arms = ("control", "offer")
    assert assign(ExperimentSpec("e", arms, hash_version=7), "s-1").reason == "bad_hash_version"
    assert assign(ExperimentSpec("e", ("control",)), "s-1").reason == "too_few_arms"
    assert assign(ExperimentSpec("e", arms), "").reason == "missing_subscriber_id"
    assert assign(ExperimentSpec("e", arms, coverage=0), "s-1").reason == "not_covered"
    outside = ExperimentSpec("e", arms, namespace=("ns", 0.0, 0.0))
    assert assign(outside, "s-1") == Assignment(None, None, False, False, "not_in_namespace")


def test_seed_defaults_to_key():
    arms = ("control", "offer")
    for i in range(50):
        sid = f"s-{i}"
        by_key = assign(ExperimentSpec("winback-q4", arms), sid)
        assert assign(ExperimentSpec("winback-q4", arms, seed="winback-q4"), sid) == by_key
        assert assign(ExperimentSpec("winback-q4", arms, seed=""), sid) == by_key


def test_spec_accepts_lists_and_stays_hashable():
    spec = ExperimentSpec("e", ["a", "b"], weights=[0.5, 0.5], namespace=["ns", 0, 1])  # type: ignore[arg-type]  # deliberately lists: their conversion to tuples is under test
    assert spec == ExperimentSpec("e", ("a", "b"), weights=(0.5, 0.5), namespace=("ns", 0, 1))
    assert hash(spec) == hash(ExperimentSpec("e", ("a", "b"), weights=(0.5, 0.5), namespace=("ns", 0, 1)))


# --- properties -----------------------------------------------------------------------------

subscriber_ids = st.text(min_size=1, max_size=24)
seeds = st.text(max_size=16)
unit_floats = st.floats(min_value=0.0, max_value=1.0)


@st.composite
def weight_sets(draw) -> tuple[float, ...]:
    raw = draw(st.lists(st.integers(min_value=1, max_value=100), min_size=2, max_size=5))
    return tuple(w / sum(raw) for w in raw)


@st.composite
def specs(draw, coverage=None, holdout_share=None) -> ExperimentSpec:
    weights = draw(weight_sets())
    return ExperimentSpec(
        key=draw(st.text(min_size=1, max_size=16)),
        arm_keys=tuple(f"arm{i}" for i in range(len(weights))),
        seed=draw(st.none() | seeds),
        hash_version=draw(st.sampled_from((1, 2))),
        coverage=draw(unit_floats) if coverage is None else coverage,
        weights=weights,
        holdout_share=draw(st.floats(min_value=0.0, max_value=0.5)) if holdout_share is None else holdout_share,
    )


@given(specs(), subscriber_ids)
def test_assignment_is_deterministic(spec, subscriber_id):
    rebuilt = ExperimentSpec(
        spec.key,
        spec.arm_keys,
        spec.seed,
        spec.hash_version,
        spec.coverage,
        spec.weights,
        spec.namespace,
        spec.holdout_share,
    )
    assert assign(spec, subscriber_id) == assign(spec, subscriber_id) == assign(rebuilt, subscriber_id)


@given(specs(holdout_share=0.0), subscriber_ids)
def test_assign_is_growthbook_choose_variation_of_hash(spec, subscriber_id):
    n = hash_value(spec.effective_seed, subscriber_id, spec.hash_version)
    assert n is not None
    index = choose_variation(n, bucket_ranges(len(spec.arm_keys), spec.coverage, spec.weights))
    result = assign(spec, subscriber_id)
    assert result.arm_index == (index if index >= 0 else None)
    assert result.in_experiment is (index >= 0)


@given(specs(), unit_floats, unit_floats, subscriber_ids)
def test_raising_coverage_never_moves_an_exposed_subscriber(spec, coverage_a, coverage_b, subscriber_id):
    low, high = sorted((coverage_a, coverage_b))
    before = assign(_with(spec, coverage=low), subscriber_id)
    after = assign(_with(spec, coverage=high), subscriber_id)
    if before.in_experiment:
        assert after.arm_index == before.arm_index  # only adds subscribers, never moves them
    # The holdout ignores coverage entirely
    assert after.in_holdout is before.in_holdout


@given(specs(), unit_floats, unit_floats, subscriber_ids)
def test_raising_holdout_share_only_adds_to_the_holdout(spec, share_a, share_b, subscriber_id):
    low, high = sorted((share_a, share_b))
    if in_holdout(_with(spec, holdout_share=low), subscriber_id):
        assert in_holdout(_with(spec, holdout_share=high), subscriber_id)


@given(weight_sets(), unit_floats)
def test_bucket_ranges_are_disjoint_ordered_and_sized(weights, coverage):
    ranges = bucket_ranges(len(weights), coverage, weights)
    cumulative = 0.0
    for (start, end), weight in zip(ranges, weights):
        assert start == pytest.approx(cumulative, abs=1e-9)
        assert end - start == pytest.approx(coverage * weight, abs=1e-9)
        cumulative += weight
    for (_, end), (next_start, _) in itertools.pairwise(ranges):
        assert end <= next_start + 1e-12
    assert ranges[0][0] >= 0.0 and ranges[-1][1] <= 1.0 + 1e-9


@given(st.text(max_size=12), st.lists(unit_floats, min_size=3, max_size=3), subscriber_ids)
def test_disjoint_namespace_ranges_never_share_a_subscriber(namespace_id, cuts, subscriber_id):
    a, b, c = sorted(cuts)
    first, second = (namespace_id, a, b), (namespace_id, b, c)
    assert not (in_namespace(subscriber_id, first) and in_namespace(subscriber_id, second))
    arms = ("control", "offer")
    both = [
        assign(ExperimentSpec(key, arms, namespace=ns), subscriber_id).in_experiment
        for key, ns in (("exp-a", first), ("exp-b", second))
    ]
    assert not all(both)


def _with(spec: ExperimentSpec, **changes) -> ExperimentSpec:
    return dataclasses.replace(spec, **changes)


# --- 1M synthetic subscribers -------------------------------------------------------------

POPULATION = 1_000_000
POPULATION_SEED = "retention-split"
POPULATION_HOLDOUT_SHARE = 0.05
P_FLOOR = 0.001


@pytest.fixture(scope="module")
def population_buckets() -> Counter:
    """Counts of (in_holdout, v2 arm hash) over 1M ids: hashing once, bucketing many times.

    v2 hashes take at most 10,000 values, so every split below is a sum over ≤ 20,000 keys.
    """
    spec = ExperimentSpec(POPULATION_SEED, ("a", "b"), holdout_share=POPULATION_HOLDOUT_SHARE)
    return Counter((in_holdout(spec, f"s-{i}"), hash_value(POPULATION_SEED, f"s-{i}", 2)) for i in range(POPULATION))


def _arm_counts(
    buckets: Counter, weights: tuple[float, ...], coverage: float = 1.0, holdout: bool | None = None
) -> list[int]:
    ranges = bucket_ranges(len(weights), coverage, weights)
    counts = [0] * len(weights)
    for (held_out, n), count in buckets.items():
        if holdout is not None and held_out is not holdout:
            continue
        index = choose_variation(n, ranges)
        if index >= 0:
            counts[index] += count
    return counts


@pytest.mark.heavy
@pytest.mark.parametrize(
    "weights", [(0.5, 0.5), (0.95, 0.05), (0.4, 0.2, 0.2, 0.2)], ids=["50/50", "95/5", "40/20/20/20"]
)
def test_split_over_a_million_ids_matches_weights(population_buckets, weights):
    counts = _arm_counts(population_buckets, weights)
    assert sum(counts) == POPULATION
    assert chisquare(counts, [w * POPULATION for w in weights]).pvalue > P_FLOOR
    # The arms outside the holdout still split by weight: the two hashes are independent
    kept = _arm_counts(population_buckets, weights, holdout=False)
    assert chisquare(kept, [w * sum(kept) for w in weights]).pvalue > P_FLOOR


@pytest.mark.heavy
def test_holdout_share_over_a_million_ids(population_buckets):
    held_out = sum(count for (flag, _), count in population_buckets.items() if flag)
    assert abs(held_out / POPULATION - POPULATION_HOLDOUT_SHARE) <= 0.005
    assert binomtest(held_out, POPULATION, POPULATION_HOLDOUT_SHARE).pvalue > P_FLOOR


@pytest.mark.heavy
@pytest.mark.parametrize("coverage", [0.05, 0.3, 1.0])
def test_holdout_share_is_the_same_at_every_coverage(population_buckets, coverage):
    # Among subscribers an arm range covers, the holdout keeps its share at any coverage
    covered_held = sum(_arm_counts(population_buckets, (0.5, 0.5), coverage, holdout=True))
    covered_all = sum(_arm_counts(population_buckets, (0.5, 0.5), coverage))
    assert math.isclose(covered_all / POPULATION, coverage, abs_tol=0.005)
    assert binomtest(covered_held, covered_all, POPULATION_HOLDOUT_SHARE).pvalue > P_FLOOR


@pytest.mark.parametrize("coverage", [0.05, 1.0])
def test_assign_agrees_with_the_population_path(coverage):
    # The population tests count via hash_value/choose_variation; assign() must give the same
    spec = ExperimentSpec(POPULATION_SEED, ("a", "b"), coverage=coverage, holdout_share=POPULATION_HOLDOUT_SHARE)
    ranges = bucket_ranges(2, coverage, None)
    for i in range(5000):
        sid = f"s-{i}"
        result = assign(spec, sid)
        if in_holdout(spec, sid):
            assert result.reason == "holdout"
        else:
            n = hash_value(POPULATION_SEED, sid, 2)
            assert n is not None
            index = choose_variation(n, ranges)
            assert result.arm_index == (index if index >= 0 else None)
