"""The OpenAPI document (/api/v1/openapi.json) and the docs page (/api/docs): every /api/v1 route
is documented, the document is valid OpenAPI 3.1, it says what the handlers really accept and
answer, and the page shows every operation without loading anything from elsewhere."""

from __future__ import annotations

import re
from typing import Any

import jsonschema_rs
import pytest
import schemathesis
from pydantic import BaseModel
from schemathesis import APIOperation
from schemathesis.core.errors import InvalidSchema
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Err, Ok
from schemathesis.specs.openapi.definitions import OPENAPI_31_VALIDATOR

from experiments.jobs import run_readout
from experiments.models import Experiment
from experiments.schemas import ExperimentDetailOut
from infra.db import Base, get_database, utcnow
from infra.openapi import API_PREFIX, openapi_path, undocumented_routes
from offers import catalogue
from offers.models import Budget, ContactPolicy, Offer, RiskLevelPolicy, Tier, TierPolicy, TierScheme
from offers.schemas import BudgetOut, ContactPolicyOut, OfferOut, RiskPolicyOut, TierOut, TierPolicyOut, TierSchemeOut
from tests.integration.readout_data import KEY, LENIENT_POLICY, OFFER, Cell, populate, start_pilot

PUBLIC_OPERATIONS = {
    "POST /api/v1/auth/login",
    "POST /api/v1/auth/logout",
    "POST /api/v1/auth/tokens",
    "GET /api/v1/openapi.json",
    "GET /healthz",
    "GET /readyz",
}
METHODS = ("get", "put", "post", "patch", "delete")


@pytest.fixture()
def document(client) -> dict[str, Any]:
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    return response.get_json()


def operations(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``"METHOD /path"`` → the operation object."""
    return {
        f"{method.upper()} {path}": op
        for path, item in document["paths"].items()
        for method, op in item.items()
        if method in METHODS
    }


def resolve(document: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        section, name = node["$ref"].split("/")[-2:]
        node = document["components"][section][name]
    return node


# --- coverage of the routes -------------------------------------------------------------------


def test_every_api_route_is_documented(app):
    missing = undocumented_routes(app)
    assert missing == [], "annotate these views with infra.openapi.api_doc (see its module docstring): " + ", ".join(
        missing
    )


def test_the_document_lists_every_route_of_the_url_map_with_its_path_parameters(app, document):
    ops = operations(document)
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith(API_PREFIX + "/"):
            continue
        path = openapi_path(rule)
        assert "<" not in path and path.count("{") == len(rule.arguments)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            op = ops[f"{method} {path}"]
            declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            if not op.get("x-undocumented"):
                assert declared == set(rule.arguments), f"{method} {path}"
    assert "GET /api/v1/tier-policies/{key}" in ops and "PUT /api/v1/subscribers/{subscriber_id}" in ops


def test_the_document_is_valid_openapi_3_1_with_valid_schemas_and_resolvable_refs(document):
    assert document["openapi"] == "3.1.0"
    errors = [str(error) for error in OPENAPI_31_VALIDATOR.iter_errors(document)]
    assert errors == []
    for name, schema in document["components"]["schemas"].items():
        assert jsonschema_rs.meta.is_valid(schema), name
    text = str(document)
    for section, name in re.findall(r"#/components/(\w+)/(\w+)", text):
        assert name in document["components"][section], f"dangling $ref to {section}/{name}"
    ops = operations(document)
    assert len({op["operationId"] for op in ops.values()}) == len(ops)  # unique, so anchors are too


def loaded_operation(result: Ok[APIOperation] | Err[InvalidSchema]) -> APIOperation:
    """The operation Schemathesis loaded, or its error raised."""
    if isinstance(result, Err):
        raise result.err()
    return result.ok()


def test_schemathesis_loads_every_operation_of_the_served_document(app):
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
    loaded = {loaded_operation(result).label for result in schema.get_all_operations()}  # raises on a bad one
    # Schemathesis leaves out the operation that serves the document it was loaded from
    assert loaded == set(operations(schema.raw_schema)) - {"GET /api/v1/openapi.json"}


# --- what each operation says ---------------------------------------------------------------


def test_security_public_operations_and_csrf_on_session_writes(document):
    ops = operations(document)
    public = {label for label, op in ops.items() if op.get("security") == [] and not op.get("x-undocumented")}
    assert public == PUBLIC_OPERATIONS
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {**schemes["bearerAuth"], "type": "http", "scheme": "bearer"}
    assert schemes["sessionCookie"]["in"] == "cookie" and schemes["csrfToken"]["name"] == "X-CSRF-Token"
    for label, op in ops.items():
        if label in PUBLIC_OPERATIONS or op.get("x-undocumented"):
            continue
        method = label.split()[0]
        expected_session: dict[str, list[str]] = (
            {"sessionCookie": []} if method == "GET" else {"sessionCookie": [], "csrfToken": []}
        )
        assert op["security"] == [{"bearerAuth": []}, expected_session], label
        assert {"401", "403"} <= set(op["responses"]), label


def test_callers_come_from_the_views_guards(document):
    ops = operations(document)
    assert ops["GET /api/v1/users"]["x-roles"] == ["admin"]
    assert ops["GET /api/v1/users"]["x-channel-keys"] is False
    assert ops["POST /api/v1/offers"]["x-roles"] == ["admin", "marketing"]
    assert ops["GET /api/v1/offers"]["x-roles"] == ["admin", "analyst", "marketing"]
    assert ops["POST /api/v1/outcomes"]["x-channel-keys"] is True
    assert ops["PUT /api/v1/subscribers/{subscriber_id}"]["x-channel-keys"] is True
    assert "Callers: any channel key" in ops["POST /api/v1/outcomes/bulk"]["description"]


def test_every_error_response_is_the_one_envelope(document):
    envelope = document["components"]["schemas"]["ErrorEnvelope"]
    assert envelope["required"] == ["error"]
    assert set(resolve(document, envelope["properties"]["error"])["required"]) == {"code", "message"}
    for label, op in operations(document).items():
        for status, response in op["responses"].items():
            if status.startswith("4") or (status.startswith("5") and label != "GET /readyz"):
                schema = resolve(document, response)["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorEnvelope"}, (label, status)


def test_request_bodies_come_from_the_pydantic_models(document):
    ops = operations(document)
    schemas = document["components"]["schemas"]

    def body_schema(label: str, media: str = "application/json") -> dict[str, Any]:
        return ops[label]["requestBody"]["content"][media]["schema"]

    assert body_schema("POST /api/v1/offers") == {"$ref": "#/components/schemas/OfferIn"}
    assert schemas["OfferIn"]["additionalProperties"] is False
    assert set(schemas["OfferIn"]["required"]) == {"code", "name", "unit_cost", "channels"}
    patch = resolve(document, body_schema("PATCH /api/v1/offers/{key}"))
    assert "required" not in patch and set(patch["properties"]) == set(schemas["OfferIn"]["properties"])
    experiment = schemas["ExperimentIn"]
    assert experiment["properties"]["arms"]["items"] == {"$ref": "#/components/schemas/ArmIn"}
    assert "ArmIn" in schemas and "PromotionPolicyIn" in schemas  # nested models: components too
    for label in ("POST /api/v1/outcomes/bulk", "POST /api/v1/subscribers/bulk"):
        content = ops[label]["requestBody"]["content"]
        assert {"text/csv", "application/x-ndjson"} <= set(content), label
        assert all(media["schema"] == {"type": "string"} for media in content.values())


def test_query_parameters_are_the_ones_the_handlers_accept(client, auth, document):
    ops = operations(document)

    def query_names(label: str) -> set[str]:
        return {p["name"] for p in ops[label].get("parameters", []) if p["in"] == "query"}

    assert query_names("GET /api/v1/audit") == {"entity_type", "entity_key", "limit", "before_id"}
    assert query_names("GET /api/v1/tiers") == {"include_inactive", "scheme_code"}
    assert query_names("GET /api/v1/tier-policies") == {"include_inactive", "tier_code", "offer_code"}
    assert query_names("GET /api/v1/experiments") == {"status"}
    assert query_names("GET /api/v1/experiments/{key}/readout") == {"at"}
    # every documented query parameter is one the handler takes (never 400 invalid_query)
    for label, op in ops.items():
        params = [p for p in op.get("parameters", []) if p["in"] == "query"]
        if not params or not label.startswith("GET "):
            continue
        path = re.sub(r"\{[^}]+\}", "no-such-key", label.split(" ", 1)[1])
        query = {p["name"]: example_value(p["schema"]) for p in params}
        response = client.get(path, query_string=query, headers=auth["admin"])
        assert response.status_code in (200, 404), (label, query, response.get_json())


def example_value(schema: dict[str, Any]) -> str:
    for option in schema.get("anyOf", [schema]):
        if option.get("type") == "null":
            continue
        if "enum" in option:
            return str(option["enum"][0])
        if option.get("type") == "boolean":
            return "true"
        if option.get("type") == "integer":
            return str(option.get("minimum", 1))
        if option.get("format") == "date-time":
            return "2030-01-01T00:00:00+00:00"
    return "x"


def test_response_models_list_every_column_of_their_tables():
    """A column added to a catalogue table must be added to its response model (the handlers
    send every column)."""
    pairs: list[tuple[type[Base], type[BaseModel]]] = [
        (Offer, OfferOut),
        (TierScheme, TierSchemeOut),
        (Tier, TierOut),
        (TierPolicy, TierPolicyOut),
        (ContactPolicy, ContactPolicyOut),
        (Budget, BudgetOut),
        (RiskLevelPolicy, RiskPolicyOut),
        (Experiment, ExperimentDetailOut),
    ]
    for table, model in pairs:
        columns = {column.key for column in table.__table__.columns}
        fields = {info.alias or name for name, info in model.model_fields.items()}
        assert columns <= fields, (model.__name__, columns - fields)
    assert {kind.entity_type for kind in catalogue.CONFIG_KINDS} == {
        "offer",
        "tier_scheme",
        "tier",
        "tier_policy",
        "contact_policy",
        "budget",
        "risk_policy",
    }


# --- real responses against the document --------------------------------------------------------


def seed_api_state(client, auth, db) -> dict[str, Any]:
    """A realistic catalogue and a promoted experiment, built through the API; returns the
    responses of every call by ``"METHOD /path-template"``."""
    writer = auth["marketing"]
    responses: dict[str, Any] = {}

    def call(method: str, url: str, template: str | None = None, **kwargs: Any):
        response = client.open(url, method=method, headers=kwargs.pop("headers", writer), **kwargs)
        assert response.status_code < 300, (method, url, response.status_code, response.get_data(as_text=True))
        responses[f"{method} {template or url}"] = response
        return response

    call("POST", "/api/v1/tier-schemes", json={"code": "value", "name": "Value tiers", "is_primary": True})
    call(
        "POST",
        "/api/v1/tiers",
        json={"code": "vip", "scheme_code": "value", "name": "VIP", "rank": 1, "rule": {"arpu": {"$gte": 80}}},
    )
    call("POST", "/api/v1/tiers", json={"code": "basic", "scheme_code": "value", "name": "Basic", "rank": 2})
    experiment = start_pilot(client, auth, db, promotion_policy={**LENIENT_POLICY, "mode": "approve"})
    call("POST", "/api/v1/tier-policies", json={"tier_code": "basic", "offer_code": OFFER["code"], "max_cost": 10})
    call("POST", "/api/v1/budgets", json={"code": "retention", "name": "Retention fund", "cap_share_of_revenue": 0.015})
    call(
        "POST",
        "/api/v1/contact-policies",
        json={
            "channel": "sms",
            "max_contacts": 3,
            "window_days": 30,
            "quiet_start": "21:00",
            "quiet_end": "08:00",
            "timezone": "Asia/Shanghai",
        },
    )
    call(
        "POST",
        "/api/v1/risk-policies",
        json={"code": "strict", "name": "Strict warning levels", "yellow_churn_score": 0.3, "red_churn_score": 0.6},
    )
    call(
        "PUT",
        "/api/v1/subscribers/s-1",
        "/api/v1/subscribers/{subscriber_id}",
        json={"attributes": {"arpu": 95.0, "tenure_months": 40}},
    )
    call(
        "POST",
        "/api/v1/tier-schemes/value/order",
        "/api/v1/tier-schemes/{code}/order",
        json={"tiers": ["vip", "basic"]},
    )
    call("POST", "/api/v1/tiers/preview", json={"attributes": {"arpu": 20.0}})
    call("POST", "/api/v1/subscribers/bulk", data="subscriber_id,arpu\ns-2,30\ns-3,oops\n", content_type="text/csv")

    populate(db, experiment, [Cell("control", "basic", 300, 0.80), Cell("credit", "basic", 300, 0.93)], now=utcnow())
    summary = run_readout(get_database(client.application).sessionmaker, KEY, utcnow().replace(microsecond=0))
    assert summary["eligible"] and not summary["promoted"], summary
    now = utcnow().isoformat()
    call(
        "POST",
        "/api/v1/outcomes",
        json={"experiment": KEY, "subscriber_id": "control-basic-0", "type": "accepted", "occurred_at": now},
    )
    call(
        "POST",
        "/api/v1/outcomes/bulk",
        data=f'{{"experiment": "{KEY}", "subscriber_id": "credit-basic-1", '
        f'"type": "revenue", "value": 12.5, "occurred_at": "{now}"}}\n{{"bad": 1}}\n',
        content_type="application/x-ndjson",
    )
    call("POST", f"/api/v1/experiments/{KEY}/promotion", "/api/v1/experiments/{key}/promotion", json={})
    call(
        "POST",
        f"/api/v1/experiments/{KEY}/exposures",
        "/api/v1/experiments/{key}/exposures",
        json={"subscriber_id": "s-1", "channel": "sms"},
    )
    job = call("POST", f"/api/v1/experiments/{KEY}/readouts", "/api/v1/experiments/{key}/readouts").get_json()
    call("GET", f"/api/v1/jobs/{job['job']['id']}", "/api/v1/jobs/{job_id}")
    for kind in catalogue.CONFIG_KINDS:
        listed = call("GET", f"/api/v1/{kind.path}?include_inactive=true", f"/api/v1/{kind.path}").get_json()
        key = listed["items"][0][kind.key_field]
        call("GET", f"/api/v1/{kind.path}/{key}", f"/api/v1/{kind.path}/{{key}}")
    for suffix in ("", "/stats", "/readout", "/readout.csv", "/readouts", "/promotions"):
        call("GET", f"/api/v1/experiments/{KEY}{suffix}", f"/api/v1/experiments/{{key}}{suffix}")
    for url in (
        "/api/v1/experiments",
        "/api/v1/subscribers/s-1",
        "/api/v1/users",
        "/api/v1/api-keys",
        "/api/v1/audit",
        "/api/v1/me",
    ):
        call("GET", url, "/api/v1/subscribers/{subscriber_id}" if "s-1" in url else url, headers=auth["admin"])
    return responses


def test_real_responses_match_the_document(app, client, auth, db):
    responses = seed_api_state(client, auth, db)
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
    assert len(responses) >= 35
    for label, response in responses.items():
        method, path = label.split(" ", 1)
        operation = schema[path.split("?")[0]][method]
        assert str(response.status_code) in operation.definition.raw["responses"], label
        operation.validate_response(response)
    readout = responses["GET /api/v1/experiments/{key}/readout"].get_json()
    assert readout["arms"] and readout["tiers"] and readout["promotion"]["eligible"]
    assert responses["GET /api/v1/experiments/{key}/promotions"].get_json()["promotions"]
    assert responses["POST /api/v1/subscribers/bulk"].get_json()["rejected"]  # the "oops" row


def test_a_response_that_breaks_the_document_is_caught(app, client, auth):
    """The conformance check is not vacuous: a wrong body fails it."""
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
    response = client.get("/api/v1/me", headers=auth["sms"])
    assert response.status_code == 200
    operation = schema["/api/v1/me"]["GET"]
    operation.validate_response(response)
    response.set_data(b'{"kind": "robot", "name": 1}')
    with pytest.raises(FailureGroup):
        operation.validate_response(response)


# --- the page --------------------------------------------------------------------------------------


def test_the_docs_page_shows_every_operation_with_nothing_loaded_from_elsewhere(client, document):
    response = client.get("/api/docs")
    assert response.status_code == 200 and response.mimetype == "text/html"
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    html = response.get_data(as_text=True)
    assert "<script" not in html.lower()
    assert not re.search(r"""(src|href)\s*=\s*["'](https?:)?//""", html), "external resource on the page"
    for label, op in operations(document).items():
        _method, path = label.split(" ", 1)
        assert f'id="{op["operationId"]}"' in html, label
        assert f"<code>{path}</code>" in html, label
    for name in document["components"]["schemas"]:
        assert f'id="schema-{name}"' in html, name
    offer_create = html.split('id="offers_api.offer_create"', 1)[1].split("</section>", 1)[0]
    assert "Request body" in offer_create and 'href="#schema-OfferIn"' in offer_create
    assert "<code>unit_cost</code>" in offer_create and "201" in offer_create and "ErrorEnvelope" in offer_create
    audit = html.split('id="auth_api.audit_log"', 1)[1].split("</section>", 1)[0]
    assert "<code>before_id</code>" in audit and "query" in audit
