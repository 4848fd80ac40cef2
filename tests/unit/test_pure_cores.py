"""The layers and the pure cores of DESIGN §1 hold: the import-linter contracts in pyproject.toml.

`make lint` runs the same contracts; this test keeps them in `make test` too, so a plain test
run catches an upward import or a pure core that pulls in flask, sqlalchemy, redis or rq.
"""

from __future__ import annotations

import contextlib
import io
import tomllib

from importlinter.cli import lint_imports

from infra.settings import PROJECT_ROOT

PYPROJECT = PROJECT_ROOT / "pyproject.toml"
# what a pure core may never import, whichever contract lists it
STACK = {"flask", "werkzeug", "sqlalchemy", "alembic", "psycopg", "redis", "rq", "infra"}


def test_the_import_contracts_hold():
    report = io.StringIO()
    with contextlib.redirect_stdout(report):
        exit_code = lint_imports(config_filename=str(PYPROJECT), no_cache=True, no_logo=True)
    assert exit_code == 0, report.getvalue()


def test_the_pure_cores_contract_forbids_the_whole_stack():
    contracts = tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]["contracts"]
    pure = [c for c in contracts if "Pure cores" in c["name"]]
    assert len(pure) == 1
    assert set(pure[0]["forbidden_modules"]) >= STACK
    assert {"decisioning.core", "experiments.stats", "experiments.assignment", "offers.conditions"} <= set(
        pure[0]["source_modules"]
    )
