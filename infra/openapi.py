"""The OpenAPI 3.1 document of the JSON API, generated from the routes and their pydantic models.

Every view under ``/api/v1`` carries an ``@api_doc(...)`` annotation; the generator walks
``app.url_map`` (so a route cannot be missed), reads the annotation of each view, and builds
the operation from it: request body and query parameters from pydantic models, responses
from pydantic response models, security from whether the route is public, and the callers
(roles, channel keys) from the view's ``require_user`` / ``require_channel_or_user`` guard.
A route under ``/api/v1`` without an annotation still appears (so the document lists it) but
``undocumented_routes`` names it, and ``tests/integration/test_openapi.py`` fails on it.

How to annotate a view (put ``@api_doc`` directly under the route decorator)::

    from infra.openapi import RawBody, api_doc

    @bp.post("/decisions")
    @api_doc("Decide the next best action for one contact",
             body=schemas.DecisionIn,                        # JSON body (validation-mode schema)
             responses={200: schemas.DecisionOut},           # success status -> response model
             errors={409: "the Idempotency-Key was used with another body"},
             headers={"Idempotency-Key": "retries with the same key and body return the stored decision"})
    @require_channel_or_user(*CONFIG_WRITERS)
    def decide(): ...

Everything else is optional:

- ``description``: longer text; defaults to the view's docstring.
- ``body``: a pydantic model; ``partial=True`` documents it as a partial object (PATCH: every
  field optional, merged over the stored row).
- ``raw_body=RawBody(("text/csv", "application/x-ndjson"), "what the lines hold")``: a
  streamed non-JSON body, documented as a string per media type.
- ``query``: a pydantic model whose fields are the query parameters the handler allows.
- ``path``: ``{"key": SomeType}`` to type a path parameter (default: a non-empty string); any
  type pydantic can describe, e.g. ``Annotated[int, Field(ge=1)]``.
- ``responses``: status -> a response model (JSON), a ``RawBody`` (e.g. CSV) or a description
  string (no body). Response models subclass ``ResponseModel`` so every key they list is
  required in the schema; they document what the handler's dict holds.
- ``errors``: extra error statuses -> a description, or None for the standard one (e.g.
  ``{503: None}`` when the handler needs Redis, ``{429: None}`` for a rate limit). The common
  ones are added by rule; all use the one error envelope (``#/components/schemas/ErrorEnvelope``):
  400 when the operation takes input or writes, 401/403 unless ``public=True``, 404 with path
  parameters, 409 for authenticated writes, 413/415 with a body.
- ``headers``: optional request headers -> description, or (description, JSON schema) (e.g.
  ``Idempotency-Key``).
- ``public=True``: no authentication (login, health, this document).
- ``tags``: defaults to the first path segment after ``/api/v1``.

Response models must say what the handler really sends: ``tests/integration/test_openapi.py``
validates real responses against the document and ``tests/integration/test_schemathesis.py``
fuzzes every operation with the ``not_a_server_error``, status-code, content-type and
response-schema checks. Callers (roles, channel keys) are not annotated: they are read from
the view's ``require_user`` / ``require_channel_or_user`` guard (``view_callers``).
"""

from __future__ import annotations

import copy
import importlib.metadata
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from flask import Flask
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from pydantic.json_schema import models_json_schema
from werkzeug.routing import Rule

API_PREFIX = "/api/v1"
SCHEMA_REF = "#/components/schemas/{model}"
DOC_ATTR = "__api_doc__"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
IGNORED_METHODS = frozenset({"HEAD", "OPTIONS"})
ROUTE_VARIABLE = re.compile(r"<(?:[^<>:]+:)?([^<>:]+)>")  # <name> or <converter(args):name>

F = TypeVar("F", bound=Callable[..., Any])
JsonSchema = dict[str, Any]
ModelMode = Literal["validation", "serialization"]


# --- the shapes every operation shares --------------------------------------------------------


class ResponseModel(BaseModel):
    """Base of response models: every field is a key the handler always sends (required in the
    schema, even when it has a default); keys not listed may be added later (clients ignore them)."""

    model_config = ConfigDict(json_schema_serialization_defaults_required=True, extra="ignore")


class ErrorBody(BaseModel):
    code: str = Field(description="stable machine-readable code, e.g. validation_error, offer_not_found")
    message: str = Field(description="what went wrong and how to fix it, for people")
    details: Any = Field(
        None,
        description="present when there is more to say: for validation errors "
        "a list of {path, message}, path in JSON-path style ($.field[0])",
    )


class ErrorEnvelope(BaseModel):
    """The one error shape of the whole API."""

    error: ErrorBody


@dataclass(frozen=True)
class RawBody:
    """A non-JSON request or response body (CSV, JSON lines), documented as a string."""

    media_types: tuple[str, ...]
    description: str = ""


ResponseSpec = type[BaseModel] | RawBody | str


@dataclass(frozen=True)
class OperationDoc:
    """What ``api_doc`` attaches to a view."""

    summary: str
    description: str | None = None
    body: type[BaseModel] | None = None
    partial: bool = False
    raw_body: RawBody | None = None
    query: type[BaseModel] | None = None
    path: Mapping[str, Any] = field(default_factory=dict)
    responses: Mapping[int, ResponseSpec] = field(default_factory=dict)
    errors: Mapping[int, str | None] = field(default_factory=dict)
    headers: Mapping[str, str | tuple[str, JsonSchema]] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    public: bool = False


def api_doc(
    summary: str,
    *,
    description: str | None = None,
    body: type[BaseModel] | None = None,
    partial: bool = False,
    raw_body: RawBody | None = None,
    query: type[BaseModel] | None = None,
    path: Mapping[str, Any] | None = None,
    responses: Mapping[int, ResponseSpec] | None = None,
    errors: Mapping[int, str | None] | None = None,
    headers: Mapping[str, str | tuple[str, JsonSchema]] | None = None,
    tags: tuple[str, ...] = (),
    public: bool = False,
) -> Callable[[F], F]:
    """Decorator: document a view for the OpenAPI document (see the module docstring)."""
    doc = OperationDoc(
        summary=summary,
        description=description,
        body=body,
        partial=partial,
        raw_body=raw_body,
        query=query,
        path=dict(path or {}),
        responses=dict(responses or {200: "OK"}),
        errors=dict(errors or {}),
        headers=dict(headers or {}),
        tags=tuple(tags),
        public=public,
    )
    if body is not None and raw_body is not None:
        raise ValueError("an operation takes a JSON body or a raw body, not both")

    def attach(view: F) -> F:
        setattr(view, DOC_ATTR, doc)
        return view

    return attach


def _unwrapped(view: Callable[..., Any]) -> Iterator[Callable[..., Any]]:
    """The view and every function it wraps (``functools.wraps`` chains)."""
    seen: Callable[..., Any] | None = view
    while seen is not None:
        yield seen
        seen = getattr(seen, "__wrapped__", None)


def operation_doc(view: Callable[..., Any]) -> OperationDoc | None:
    """The view's ``api_doc`` annotation, wherever in its decorator stack it was put."""
    for func in _unwrapped(view):
        doc = getattr(func, DOC_ATTR, None)
        if isinstance(doc, OperationDoc):
            return doc
    return None


@dataclass(frozen=True)
class Callers:
    """Who may call an operation, as its ``infra.auth`` guard says."""

    roles: tuple[str, ...]
    channel_keys: bool


def view_callers(view: Callable[..., Any]) -> Callers | None:
    """Read the roles from the view's ``require_user`` / ``require_channel_or_user`` guard.

    The guards keep their roles in the closure of the wrapper they return (``allowed``), and
    the wrapper's code object keeps the guard's name, so the document is derived from the one
    place access is enforced rather than repeated by hand. None when the view has no guard.
    """
    for func in _unwrapped(view):
        code = getattr(func, "__code__", None)
        if code is None or func.__closure__ is None:
            continue
        guard = code.co_qualname.split(".", 1)[0]
        if guard not in ("require_user", "require_channel_or_user"):
            continue
        cells = dict(zip(code.co_freevars, func.__closure__))
        if "allowed" not in cells:
            continue
        return Callers(
            roles=tuple(sorted(cells["allowed"].cell_contents)), channel_keys=guard == "require_channel_or_user"
        )
    return None


# --- the document -----------------------------------------------------------------------------

STATUS_TEXT = {
    200: "OK",
    201: "Created",
    202: "Accepted",
    204: "No Content",
    400: "Bad request: malformed JSON, a body or parameter that is not valid, or a domain rule it breaks",
    401: "Authentication required, or the credentials are unknown or revoked",
    403: "Authenticated, but not allowed: wrong role, a channel key on a people-only endpoint, "
    "or a missing CSRF token on a session write",
    404: "No such resource",
    409: "Conflicts with the current state (exists already, wrong lifecycle state, a concurrent change)",
    413: "The body is larger than the server accepts",
    415: "Wrong Content-Type",
    429: "Too many requests for this key; retry after the Retry-After header's seconds",
    503: "A backing service (Redis / the job queue) is unreachable; retry shortly",
}
ERROR_COMPONENT_NAMES = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    409: "Conflict",
    413: "PayloadTooLarge",
    415: "UnsupportedMediaType",
    429: "TooManyRequests",
    503: "ServiceUnavailable",
}


def openapi_path(rule: Rule) -> str:
    """Flask's ``/x/<key>`` or ``/x/<int:key>`` as OpenAPI's ``/x/{key}``."""
    return ROUTE_VARIABLE.sub(lambda m: "{" + m.group(1) + "}", rule.rule)


def path_variables(rule: Rule) -> list[str]:
    """The rule's variables in the order they appear in the path."""
    return ROUTE_VARIABLE.findall(rule.rule)


def _rule_methods(rule: Rule) -> list[str]:
    return sorted((rule.methods or set()) - IGNORED_METHODS)


def documented_rules(app: Flask) -> Iterator[tuple[Rule, Callable[..., Any], OperationDoc | None]]:
    """Every rule the document covers: all of ``/api/v1`` and any other annotated route."""
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: (r.rule, r.endpoint)):
        view = app.view_functions[rule.endpoint]
        doc = operation_doc(view)
        if doc is not None or rule.rule.startswith(API_PREFIX + "/"):
            yield rule, view, doc


def undocumented_routes(app: Flask) -> list[str]:
    """``METHOD /path`` of every ``/api/v1`` route whose view has no ``api_doc``."""
    return [
        f"{method} {rule.rule}"
        for rule, _view, doc in documented_rules(app)
        if doc is None
        for method in _rule_methods(rule)
    ]


def _strip_property_titles(schema: Any) -> Any:
    """Pydantic titles every property ("Unit Cost"); the property name already says it."""
    if isinstance(schema, dict):
        out = {key: _strip_property_titles(value) for key, value in schema.items()}
        if isinstance(out.get("properties"), dict):
            out["properties"] = {
                name: ({k: v for k, v in prop.items() if k != "title"} if isinstance(prop, dict) else prop)
                for name, prop in out["properties"].items()
            }
        return out
    if isinstance(schema, list):
        return [_strip_property_titles(item) for item in schema]
    return schema


class _Schemas:
    """Every model the operations use, turned into components in one pydantic pass (so names
    are consistent: a model whose input and output schemas differ gets -Input / -Output)."""

    def __init__(self, wanted: set[tuple[type[BaseModel], ModelMode]]) -> None:
        ordered = sorted(wanted, key=lambda pair: (pair[0].__module__, pair[0].__qualname__, pair[1]))
        self.refs, defs = models_json_schema(ordered, ref_template=SCHEMA_REF)
        self.components: dict[str, JsonSchema] = _strip_property_titles(defs.get("$defs", {}))

    def ref(self, model: type[BaseModel], mode: ModelMode) -> JsonSchema:
        return dict(self.refs[(model, mode)])

    def partial_ref(self, model: type[BaseModel]) -> JsonSchema:
        """A copy of the model's request schema with no required field (a PATCH body)."""
        name = self.ref(model, "validation")["$ref"].rsplit("/", 1)[1]
        patch_name = f"{name}Patch"
        if patch_name not in self.components:
            schema = copy.deepcopy(self.components[name])
            schema.pop("required", None)
            schema["title"] = patch_name
            schema["description"] = (
                f"Any subset of the fields of {name}; it is merged over the stored "
                f"object and the result must be valid as a whole."
            )
            self.components[patch_name] = schema
        return {"$ref": SCHEMA_REF.format(model=patch_name)}


def _models_of(doc: OperationDoc) -> Iterator[tuple[type[BaseModel], ModelMode]]:
    if doc.body is not None:
        yield doc.body, "validation"
    for spec in doc.responses.values():
        if isinstance(spec, type) and issubclass(spec, BaseModel):
            yield spec, "serialization"


def _inline_schema(annotation: Any) -> JsonSchema:
    schema = TypeAdapter(annotation).json_schema(ref_template=SCHEMA_REF)
    schema.pop("title", None)
    return schema


def _query_parameters(model: type[BaseModel]) -> list[JsonSchema]:
    schema = model.model_json_schema(ref_template=SCHEMA_REF)
    required = set(schema.get("required", ()))
    params = []
    for name, prop in schema.get("properties", {}).items():
        prop = {k: v for k, v in prop.items() if k != "title"}
        description = prop.pop("description", None)
        param: JsonSchema = {"name": name, "in": "query", "required": name in required, "schema": prop}
        if description:
            param["description"] = description
        params.append(param)
    return params


def _path_parameters(rule: Rule, doc: OperationDoc | None) -> list[JsonSchema]:
    params = []
    for name in path_variables(rule):
        annotation = doc.path.get(name) if doc else None
        schema = _inline_schema(annotation) if annotation is not None else {"type": "string", "minLength": 1}
        params.append({"name": name, "in": "path", "required": True, "schema": schema})
    return params


def _error_statuses(method: str, doc: OperationDoc, has_path: bool) -> dict[int, str | None]:
    """The error statuses an operation can answer with: by rule, then the annotation's own."""
    takes_input = has_path or doc.body is not None or doc.raw_body is not None or doc.query is not None
    statuses: dict[int, str | None] = {}
    if takes_input or method not in SAFE_METHODS:
        statuses[400] = None
    if not doc.public:
        statuses[401] = None
        statuses[403] = None
    if has_path:
        statuses[404] = None
    if method not in SAFE_METHODS and not doc.public:
        statuses[409] = None
    if doc.body is not None or doc.raw_body is not None:
        statuses[413] = None
        statuses[415] = None
    statuses.update(doc.errors)
    return dict(sorted(statuses.items()))


def _error_response(status: int, description: str | None) -> JsonSchema:
    if description is None and status in ERROR_COMPONENT_NAMES:
        return {"$ref": f"#/components/responses/{ERROR_COMPONENT_NAMES[status]}"}
    return {
        "description": description or STATUS_TEXT.get(status, "Error"),
        "content": {"application/json": {"schema": {"$ref": SCHEMA_REF.format(model="ErrorEnvelope")}}},
    }


def _success_response(status: int, spec: ResponseSpec, schemas: _Schemas) -> JsonSchema:
    if isinstance(spec, str):
        return {"description": spec}
    if isinstance(spec, RawBody):
        return {
            "description": spec.description or STATUS_TEXT.get(status, "OK"),
            "content": {media: {"schema": {"type": "string"}} for media in spec.media_types},
        }
    description = (spec.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
    if spec.__doc__ == BaseModel.__doc__ or spec.__doc__ == ResponseModel.__doc__:
        description = ""
    return {
        "description": description or STATUS_TEXT.get(status, "OK"),
        "content": {"application/json": {"schema": schemas.ref(spec, "serialization")}},
    }


def _security(method: str, public: bool) -> list[JsonSchema]:
    if public:
        return []
    if method in SAFE_METHODS:
        return [{"bearerAuth": []}, {"sessionCookie": []}]
    return [{"bearerAuth": []}, {"sessionCookie": [], "csrfToken": []}]


def _callers_text(callers: Callers | None) -> str:
    if callers is None:
        return "Any authenticated caller."
    people = ", ".join(callers.roles)
    return (
        f"Callers: any channel key, or a person with the role {people}."
        if callers.channel_keys
        else f"Callers: a person with the role {people} (channel keys get 403)."
    )


def _tag(rule: Rule, doc: OperationDoc) -> list[str]:
    if doc.tags:
        return list(doc.tags)
    path = rule.rule
    if path.startswith(API_PREFIX + "/"):
        return [path[len(API_PREFIX) + 1 :].split("/", 1)[0]]
    return ["service"]


def _operation(
    rule: Rule, method: str, view: Callable[..., Any], doc: OperationDoc | None, schemas: _Schemas
) -> JsonSchema:
    operation_id = rule.endpoint if len(_rule_methods(rule)) == 1 else f"{rule.endpoint}.{method.lower()}"
    if doc is None:  # listed so the document is complete; undocumented_routes() flags it
        return {
            "operationId": operation_id,
            "summary": "(not documented yet)",
            "tags": ["undocumented"],
            "x-undocumented": True,
            "responses": {"default": {"description": "not documented"}},
        }
    parameters = _path_parameters(rule, doc)
    has_path = bool(parameters)
    if doc.query is not None:
        parameters += _query_parameters(doc.query)
    for name, spec in doc.headers.items():
        text, schema = spec if isinstance(spec, tuple) else (spec, {"type": "string"})
        parameters.append({"name": name, "in": "header", "required": False, "description": text, "schema": schema})
    callers = None if doc.public else view_callers(view)
    description = (doc.description or view.__doc__ or "").strip()
    if not doc.public:
        description = f"{description}\n\n{_callers_text(callers)}".strip()
    op: JsonSchema = {"operationId": operation_id, "summary": doc.summary, "tags": _tag(rule, doc)}
    if description:
        op["description"] = description
    if parameters:
        op["parameters"] = parameters
    if doc.body is not None:
        schema = schemas.partial_ref(doc.body) if doc.partial else schemas.ref(doc.body, "validation")
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": schema}}}
    elif doc.raw_body is not None:
        op["requestBody"] = {
            "required": True,
            "description": doc.raw_body.description,
            "content": {media: {"schema": {"type": "string"}} for media in doc.raw_body.media_types},
        }
    responses: JsonSchema = {
        str(status): _success_response(status, spec, schemas) for status, spec in sorted(doc.responses.items())
    }
    for status, error_text in _error_statuses(method, doc, has_path).items():
        responses.setdefault(str(status), _error_response(status, error_text))
    op["responses"] = responses
    op["security"] = _security(method, doc.public)
    if callers is not None:
        op["x-roles"] = list(callers.roles)
        op["x-channel-keys"] = callers.channel_keys
    return op


def _version() -> str:
    try:
        return importlib.metadata.version("carepilot")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def build_openapi(app: Flask) -> JsonSchema:
    """The OpenAPI 3.1 document of ``app``'s JSON API (see the module docstring)."""
    rules = list(documented_rules(app))
    wanted: set[tuple[type[BaseModel], ModelMode]] = {(ErrorEnvelope, "serialization")}
    for _rule, _view, doc in rules:
        if doc is not None:
            wanted.update(_models_of(doc))
    schemas = _Schemas(wanted)
    paths: dict[str, JsonSchema] = {}
    for rule, view, doc in rules:
        item = paths.setdefault(openapi_path(rule), {})
        for method in _rule_methods(rule):
            item[method.lower()] = _operation(rule, method, view, doc, schemas)
    error_ref = schemas.ref(ErrorEnvelope, "serialization")
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "carepilot API",
            "version": _version(),
            "description": (
                "Care decisioning and experimentation for telecom retention teams. Every error "
                'is the envelope {"error": {"code", "message", "details"}}. People '
                "authenticate with a personal bearer key (POST /api/v1/auth/tokens) or the admin "
                "session cookie (writes then need the X-CSRF-Token header); channels with a "
                "channel bearer key."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": dict(sorted(schemas.components.items())),
            "responses": {
                name: {"description": STATUS_TEXT[status], "content": {"application/json": {"schema": error_ref}}}
                for status, name in ERROR_COMPONENT_NAMES.items()
            },
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "a personal key (acts with its user's role) or a channel key",
                },
                "sessionCookie": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": app.config.get("SESSION_COOKIE_NAME", "session"),
                    "description": "the admin UI's login session (POST /api/v1/auth/login)",
                },
                "csrfToken": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-CSRF-Token",
                    "description": "the session's CSRF token, returned by POST /api/v1/auth/login; "
                    "required with the session cookie on every write",
                },
            },
        },
    }


def openapi_document(app: Flask) -> JsonSchema:
    """The document, built once per app (routes do not change after start-up)."""
    cached = app.extensions.get("carepilot.openapi")
    if cached is None:
        cached = build_openapi(app)
        app.extensions["carepilot.openapi"] = cached
    return cached
