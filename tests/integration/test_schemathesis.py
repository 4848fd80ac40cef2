"""Schemathesis against /api/v1/openapi.json, in process (WSGI): no request the document allows,
and none it forbids, gets a 5xx; every response has a status code, content type and body the
document declares. Bounded and derandomised, so CI runs the same cases every time.

The database starts with a realistic state (a tier scheme, a promoted experiment with a
readout, profiles, a queued job: ``seed_api_state``), and Schemathesis reuses the keys it sees
in responses, so the fuzzing reaches past the 404s. Everything happens inside the test's
rolled-back transaction.

Schemathesis' own pytest loader (``schemathesis.pytest.from_fixture``) does not run on pytest 9
(it writes ``request.node._nodeid``), so each operation is driven here with Hypothesis over
``operation.as_strategy()``, one pytest subtest per operation.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.integration.test_openapi import loaded_operation, seed_api_state

pytestmark = pytest.mark.heavy

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
CONFIG = {"generation": {"with-security-parameters": False}}
# DELETE is left out: fuzzing DELETE /api-keys/{id} would revoke the keys the test calls with.
FUZZED_METHODS = ("GET", "POST", "PUT", "PATCH")
EXAMPLES = {GenerationMode.POSITIVE: 30, GenerationMode.NEGATIVE: 20}
# the admin's operations are fuzzed in this many parts, so parallel test workers share them
ADMIN_PARTS = 4


def api_operations(app, *, channel_keys_only: bool = False):
    """The operations to fuzz, as Schemathesis reads them from the served document."""
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app, config=schemathesis.Config.from_dict(CONFIG))
    operations = [loaded_operation(result) for result in schema.get_all_operations()]
    return [
        op
        for op in operations
        if op.method.upper() in FUZZED_METHODS and (not channel_keys_only or op.definition.raw.get("x-channel-keys"))
    ]


def takes_input(operation) -> bool:
    raw = operation.definition.raw
    return bool(raw.get("parameters") or raw.get("requestBody"))


def fuzz(operation, headers: dict[str, str]) -> None:
    """Positive then negative cases of ``operation`` through the checks."""
    for mode, examples in EXAMPLES.items():
        if mode is GenerationMode.NEGATIVE and not takes_input(operation):
            continue  # nothing to make invalid

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=examples,
            derandomize=True,
            database=None,
            deadline=None,
            phases=[Phase.explicit, Phase.generate, Phase.shrink],
            suppress_health_check=list(HealthCheck),
        )
        def run(case) -> None:
            case.call_and_validate(headers=headers, checks=CHECKS)

        try:
            run()
        except Unsatisfiable:
            # Only a negative run can get here: every invalid value of the inputs (say, a
            # non-string for a free-text path segment) is the same text once in a URL, so no
            # invalid request exists. Positive runs are never excused.
            if mode is not GenerationMode.NEGATIVE:
                raise


@pytest.mark.parametrize("part", range(ADMIN_PARTS))
def test_every_operation_as_an_admin(app, client, auth, db, subtests, part):
    seed_api_state(client, auth, db)
    operations = api_operations(app)
    assert len(operations) >= 50
    for operation in operations[part::ADMIN_PARTS]:
        with subtests.test(msg=operation.label):
            fuzz(operation, auth["admin"])


def test_channel_operations_with_a_channel_key(app, client, auth, db, subtests):
    seed_api_state(client, auth, db)
    operations = api_operations(app, channel_keys_only=True)
    assert {op.label for op in operations} >= {
        "POST /api/v1/outcomes",
        "POST /api/v1/outcomes/bulk",
        "PUT /api/v1/subscribers/{subscriber_id}",
    }
    for operation in operations:
        with subtests.test(msg=operation.label):
            fuzz(operation, auth["sms"])
