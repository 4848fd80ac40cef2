"""The API's own description: ``GET /api/v1/openapi.json`` (OpenAPI 3.1, built by
``infra.openapi`` from the routes) and ``GET /api/docs``, a server-rendered page of every
operation with its parameters, request body and responses. No scripts and nothing loaded
from elsewhere: the page is plain HTML with an inline stylesheet, readable offline."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import Blueprint, current_app, jsonify, render_template
from flask.typing import ResponseReturnValue
from pydantic import Field

from infra.openapi import ResponseModel, api_doc, openapi_document

bp = Blueprint("docs_api", __name__, template_folder="templates")
HTTP_METHODS = ("get", "put", "post", "patch", "delete")
# Nothing on the page runs code or loads anything; the stylesheet is inline.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
CONSTRAINT_KEYWORDS = (
    ("minimum", "≥ {}"),
    ("exclusiveMinimum", "> {}"),
    ("maximum", "≤ {}"),
    ("exclusiveMaximum", "< {}"),
    ("minLength", "length ≥ {}"),
    ("maxLength", "length ≤ {}"),
    ("pattern", "matches {}"),
    ("minItems", "items ≥ {}"),
    ("maxItems", "items ≤ {}"),
    ("minProperties", "entries ≥ {}"),
    ("maxProperties", "entries ≤ {}"),
    ("format", "format {}"),
    ("default", "default {}"),
)


class OpenApiDocumentOut(ResponseModel):
    """An OpenAPI 3.1 document."""

    openapi: str = Field(pattern=r"^3\.1\.\d+$")
    info: dict[str, Any]
    paths: dict[str, Any]
    components: dict[str, Any]


@bp.get("/api/v1/openapi.json")
@api_doc("This API's OpenAPI document", responses={200: OpenApiDocumentOut}, public=True, tags=("service",))
def openapi_json() -> ResponseReturnValue:
    """Generated from the routes and their pydantic models (``infra.openapi``)."""
    return jsonify(openapi_document(current_app))


@bp.get("/api/docs")
def api_docs_page() -> ResponseReturnValue:
    """The document as a readable page."""
    page = docs_page(openapi_document(current_app))
    response = current_app.make_response(render_template("api_docs.html", page=page))
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return response


# --- the page's view of the document ----------------------------------------------------------


@dataclass(frozen=True)
class TypePart:
    """A piece of a type's text; ``href`` links to a schema on the page."""

    text: str
    href: str | None = None


@dataclass(frozen=True)
class FieldRow:
    name: str
    type: list[TypePart]
    required: bool
    notes: str
    description: str


@dataclass(frozen=True)
class SchemaView:
    name: str
    anchor: str
    description: str
    type: list[TypePart]
    fields: list[FieldRow]
    closed: bool  # additionalProperties: false — unknown fields are refused


@dataclass(frozen=True)
class BodyView:
    media_types: list[str]
    type: list[TypePart]
    fields: list[FieldRow]
    description: str


@dataclass(frozen=True)
class ResponseView:
    status: str
    description: str
    media_types: list[str]
    type: list[TypePart]


@dataclass(frozen=True)
class OperationView:
    anchor: str
    method: str
    path: str
    summary: str
    description: list[str]
    auth: str
    parameters: list[FieldRow]
    parameter_places: list[str]
    body: BodyView | None
    responses: list[ResponseView]


@dataclass(frozen=True)
class TagView:
    name: str
    operations: list[OperationView]


@dataclass(frozen=True)
class DocsPage:
    title: str
    version: str
    description: str
    tags: list[TagView]
    schemas: list[SchemaView]
    security: list[tuple[str, str]]


def schema_anchor(name: str) -> str:
    return f"schema-{name}"


def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[1]


def _join(parts_list: list[list[TypePart]], separator: str) -> list[TypePart]:
    out: list[TypePart] = []
    for index, parts in enumerate(parts_list):
        if index:
            out.append(TypePart(separator))
        out.extend(parts)
    return out


def type_parts(schema: Any) -> list[TypePart]:
    """A schema's type in words, with links to the named schemas it uses."""
    if not isinstance(schema, dict) or not schema:
        return [TypePart("any")]
    if "$ref" in schema:
        name = _ref_name(schema["$ref"])
        return [TypePart(name, "#" + schema_anchor(name))]
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return _join([type_parts(option) for option in schema[key]], " | ")
    if "allOf" in schema:
        return _join([type_parts(option) for option in schema["allOf"]], " & ")
    if "const" in schema:
        return [TypePart(f"= {_show(schema['const'])}")]
    if "enum" in schema:
        return [TypePart("one of " + ", ".join(_show(value) for value in schema["enum"]))]
    kind = schema.get("type")
    if isinstance(kind, list):
        return _join([type_parts({**schema, "type": one}) for one in kind], " | ")
    if kind == "array":
        if "prefixItems" in schema:
            return [TypePart("["), *_join([type_parts(item) for item in schema["prefixItems"]], ", "), TypePart("]")]
        return [TypePart("array of "), *type_parts(schema.get("items", {}))]
    if kind == "object":
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict) and extra:
            return [TypePart("object of "), *type_parts(extra)]
        return [TypePart("object")]
    if kind == "null":
        return [TypePart("null")]
    return [TypePart(str(kind) if kind else "any")]


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


def _notes(schema: Any) -> str:
    """Constraints of a schema (and of the non-null branch of a nullable one), in words."""
    if not isinstance(schema, dict):
        return ""
    notes = []
    for key, text in CONSTRAINT_KEYWORDS:
        if key in schema:
            value = schema[key]
            notes.append(text.format(_show(value) if key == "default" else value))
    for option in schema.get("anyOf", ()):
        if isinstance(option, dict) and option.get("type") != "null":
            inner = _notes(option)
            if inner:
                notes.append(inner)
    return "; ".join(notes)


def field_rows(schema: dict[str, Any]) -> list[FieldRow]:
    """One row per property of an object schema."""
    required = set(schema.get("required", ()))
    return [
        FieldRow(
            name=name,
            type=type_parts(prop),
            required=name in required,
            notes=_notes(prop),
            description=str(prop.get("description", "")) if isinstance(prop, dict) else "",
        )
        for name, prop in schema.get("properties", {}).items()
    ]


def _resolve(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        return components.get(_ref_name(schema["$ref"]), {})
    return schema


def _component_response(response: dict[str, Any], document: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in response:
        return document["components"]["responses"][_ref_name(response["$ref"])]
    return response


def _operation_view(path: str, method: str, op: dict[str, Any], document: dict[str, Any]) -> OperationView:
    components = document["components"]["schemas"]
    parameters = [
        FieldRow(
            name=p["name"],
            type=type_parts(p.get("schema", {})),
            required=bool(p.get("required")),
            notes=_notes(p.get("schema", {})),
            description=p.get("description", ""),
        )
        for p in op.get("parameters", [])
    ]
    places = [p["in"] for p in op.get("parameters", [])]
    body = None
    if "requestBody" in op:
        content: dict[str, Any] = op["requestBody"].get("content", {})  # media type → its object
        media: dict[str, Any] = next(iter(content.values()), {})
        first = media.get("schema", {})
        body = BodyView(
            media_types=list(content),
            type=type_parts(first),
            fields=field_rows(_resolve(first, components)),
            description=op["requestBody"].get("description", ""),
        )
    responses = []
    for status, raw in op.get("responses", {}).items():
        response = _component_response(raw, document)
        content = response.get("content", {})
        schema = None
        if content:
            media = next(iter(content.values()), {})
            schema = media.get("schema")
        responses.append(
            ResponseView(
                status=status,
                description=response.get("description", ""),
                media_types=list(content),
                type=type_parts(schema) if schema else [],
            )
        )
    return OperationView(
        anchor=op.get("operationId", f"{method}-{path}"),
        method=method.upper(),
        path=path,
        summary=op.get("summary", ""),
        description=[part for part in op.get("description", "").split("\n\n") if part],
        auth=_auth_text(op),
        parameters=parameters,
        parameter_places=places,
        body=body,
        responses=responses,
    )


def _auth_text(op: dict[str, Any]) -> str:
    if "security" not in op:
        return "authentication: not documented"
    security = op["security"]
    if not security:
        return "public: no authentication"
    options = [" + ".join(requirement) for requirement in security]
    return "authenticate with " + " or ".join(options)


def docs_page(document: dict[str, Any]) -> DocsPage:
    """Everything the template shows, in the document's order."""
    tags: dict[str, list[OperationView]] = {}
    for path, item in document["paths"].items():
        for method in HTTP_METHODS:
            if method in item:
                op = item[method]
                tag = (op.get("tags") or ["other"])[0]
                tags.setdefault(tag, []).append(_operation_view(path, method, op, document))
    components = document["components"]
    schemas = [
        SchemaView(
            name=name,
            anchor=schema_anchor(name),
            description=str(schema.get("description", "")),
            type=type_parts({k: v for k, v in schema.items() if k != "properties"}),
            fields=field_rows(schema),
            closed=schema.get("additionalProperties") is False,
        )
        for name, schema in components["schemas"].items()
    ]
    security = [(name, scheme.get("description", "")) for name, scheme in components["securitySchemes"].items()]
    info = document["info"]
    return DocsPage(
        title=info["title"],
        version=info["version"],
        description=info.get("description", ""),
        tags=[TagView(name, ops) for name, ops in sorted(tags.items())],
        schemas=schemas,
        security=security,
    )
