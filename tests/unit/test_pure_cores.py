"""Pure cores import no web, database or queue library (DESIGN §1)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from infra.settings import PROJECT_ROOT

PURE_MODULES = [
    "offers.conditions",
    "offers.tiering",
    "offers.derived_attributes",
    "experiments.assignment",
    "offers.subscriber_attributes",
    "offers.money_rules",
    "experiments.promotion_policy",
    "experiments.promotion_rules",
    "decisioning.risk",
    "decisioning.snapshot",
    "decisioning.core",
    "experiments.stats",
    "experiments.stats.inputs",
    "experiments.stats.beta",
    "experiments.stats.sampling",
    "experiments.stats.revenue",
    "experiments.stats.srm",
    "experiments.stats.rounding",
    "experiments.stats.results",
    "experiments.stats.conjugate",
    "experiments.stats.hierarchical",
]
FORBIDDEN = ("flask", "sqlalchemy", "redis", "rq", "werkzeug")


@pytest.mark.parametrize("module", PURE_MODULES)
def test_pure_module_imports_no_stack(module):
    probe = (
        f"import sys, {module}; "
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r}); "
        "print(','.join(bad))"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "", f"{module} pulls in {result.stdout.strip()}"
