"""GrowthBook's cross-SDK assignment vectors (``hash``, ``getBucketRange``, ``chooseVariation``,
``inNamespace``, ``getEqualWeights``) against ``experiments.assignment``.

The vectors live beside the project (``../shared/conformance/growthbook-cases.json``, as in
CI) and are read at run time, never copied into the project.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments.assignment import bucket_ranges, choose_variation, equal_weights, hash_value, in_namespace

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CASES_FILE = PROJECT_ROOT / ".." / "shared" / "conformance" / "growthbook-cases.json"
FAMILIES = ("hash", "getBucketRange", "chooseVariation", "inNamespace", "getEqualWeights")
# The SDKs' own suites compare ranges and weights rounded to 4 (ranges) or 8 (weights) decimals
RANGE_TOLERANCE = 1e-4
WEIGHT_TOLERANCE = 1e-8


def _load_families() -> dict[str, list[list]]:
    if not CASES_FILE.is_file():
        pytest.skip(
            f"GrowthBook conformance vectors not found at {CASES_FILE.resolve()} "
            "(they are provided beside the project root in CI, not vendored)",
            allow_module_level=True,
        )
    suite = json.loads(CASES_FILE.read_text(encoding="utf-8"))
    families = {}
    for family in FAMILIES:
        if not suite.get(family):
            pytest.fail(f"{CASES_FILE.resolve()} has no {family} cases")
        families[family] = suite[family]
    return families


def _ids(cases: list[list], name_of) -> list[str]:
    # Keep ids unique but recognisable even if the suite repeats a name
    seen: dict[str, int] = {}
    ids = []
    for case in cases:
        name = str(name_of(case))
        seen[name] = seen.get(name, 0) + 1
        ids.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return ids


SUITE = _load_families()


@pytest.mark.parametrize("case", SUITE["hash"], ids=_ids(SUITE["hash"], lambda c: f"v{c[2]} {c[0]!r}+{c[1]!r}"))
def test_hash_vector(case: list) -> None:
    seed, value, version, expected = case
    result = hash_value(seed, value, version)
    if expected is None:
        assert result is None
    else:
        # Exact: both versions produce k/1000 or k/10000, computed the same way as the SDKs
        assert result == expected


@pytest.mark.parametrize("case", SUITE["getBucketRange"], ids=_ids(SUITE["getBucketRange"], lambda c: c[0]))
def test_bucket_range_vector(case: list) -> None:
    _name, (num_variations, coverage, weights), expected = case
    result = bucket_ranges(num_variations, coverage, weights)
    assert len(result) == len(expected)
    for (start, end), (expected_start, expected_end) in zip(result, expected):
        assert start == pytest.approx(expected_start, abs=RANGE_TOLERANCE)
        assert end == pytest.approx(expected_end, abs=RANGE_TOLERANCE)


@pytest.mark.parametrize("case", SUITE["chooseVariation"], ids=_ids(SUITE["chooseVariation"], lambda c: c[0]))
def test_choose_variation_vector(case: list) -> None:
    _name, n, ranges, expected = case
    assert choose_variation(n, [tuple(r) for r in ranges]) == expected


@pytest.mark.parametrize("case", SUITE["inNamespace"], ids=_ids(SUITE["inNamespace"], lambda c: c[0]))
def test_in_namespace_vector(case: list) -> None:
    _name, user_id, namespace, expected = case
    assert in_namespace(user_id, tuple(namespace)) is expected


@pytest.mark.parametrize("case", SUITE["getEqualWeights"], ids=_ids(SUITE["getEqualWeights"], lambda c: f"n={c[0]}"))
def test_equal_weights_vector(case: list) -> None:
    n, expected = case
    result = equal_weights(n)
    assert result == pytest.approx(expected, abs=WEIGHT_TOLERANCE)
    assert len(result) == len(expected)
