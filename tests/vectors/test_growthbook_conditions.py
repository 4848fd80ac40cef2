"""GrowthBook's cross-SDK ``evalCondition`` vectors against the compiled evaluator.

The vectors live beside the project (``../shared/conformance/growthbook-cases.json``, as in
CI) and are read at run time, never copied into the project.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from offers.conditions import compile_condition

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CASES_FILE = PROJECT_ROOT / ".." / "shared" / "conformance" / "growthbook-cases.json"


def _load_cases() -> list[list]:
    if not CASES_FILE.is_file():
        pytest.skip(
            f"GrowthBook conformance vectors not found at {CASES_FILE.resolve()} "
            "(they are provided beside the project root in CI, not vendored)",
            allow_module_level=True,
        )
    cases = json.loads(CASES_FILE.read_text(encoding="utf-8")).get("evalCondition")
    if not cases:
        pytest.fail(f"{CASES_FILE.resolve()} has no evalCondition cases")
    return cases


def _case_ids(cases: list[list]) -> list[str]:
    # The suite reuses a few names ("$not - pass"); keep ids unique but recognisable
    seen: dict[str, int] = {}
    ids = []
    for case in cases:
        seen[case[0]] = seen.get(case[0], 0) + 1
        ids.append(case[0] if seen[case[0]] == 1 else f"{case[0]} ({seen[case[0]]})")
    return ids


CASES = _load_cases()


@pytest.mark.parametrize("case", CASES, ids=_case_ids(CASES))
def test_eval_condition_vector(case: list) -> None:
    _name, condition, attributes, expected = case[:4]
    saved_groups = case[4] if len(case) > 4 else None
    assert compile_condition(condition, saved_groups)(attributes) is expected
