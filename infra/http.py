"""Request-body helpers shared by every JSON handler: size, content type, strict validation."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, TypeVar

import orjson
from flask import current_app, request
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError, ValidationInfo

from infra.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType, pydantic_details

ModelT = TypeVar("ModelT", bound=BaseModel)
ItemT = TypeVar("ItemT")


class StrictModel(BaseModel):
    """Base of every request schema: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


def _no_repeats(items: list[ItemT], info: ValidationInfo) -> list[ItemT]:
    if len(set(items)) != len(items):
        raise ValueError(f"{info.field_name} must not repeat")
    return items


NoRepeats = AfterValidator(_no_repeats)
"""A list field whose items must be distinct: ``Annotated[list[Channel], NoRepeats]``."""


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number; send a finite number or null")


def refuse_unstorable(value: Any, path: str = "$") -> None:
    """Refuse NUL characters anywhere in a JSON value: JSON allows U+0000 in strings, but
    PostgreSQL text and JSONB cannot store it (it would fail as a 500 at the database)."""
    if isinstance(value, str):
        if "\x00" in value:
            raise BadRequest(
                f"{path} contains a NUL character (\\u0000)",
                code="validation_error",
                details=[{"path": path, "message": "NUL characters are not allowed"}],
            )
    elif isinstance(value, dict):
        for key, item in value.items():
            refuse_unstorable(key, path)
            refuse_unstorable(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            refuse_unstorable(item, f"{path}[{index}]")


def _parse_json(raw: bytes) -> Any:
    """Standard JSON only (no NaN/Infinity), with nothing the database cannot store.

    orjson parses (a 10,000-contact bulk decision is a megabyte); what it refuses is parsed
    again by the standard library, which accepts exactly what it did before (an unpaired
    surrogate, say) or names the problem. The walk looking for NUL characters runs only when
    the body contains the escape that writes one."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        try:
            data = json.loads(raw, parse_constant=_no_constants)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequest(f"the body is not valid JSON: {exc}", code="invalid_json") from None
        except RecursionError:  # orjson stops at 1,024 levels; the standard parser overflows the stack
            raise BadRequest("the body is not valid JSON: nested too deeply", code="invalid_json") from None
    if b"\\u0000" in raw:  # JSON can carry a NUL only as this escape (raw control bytes are invalid)
        refuse_unstorable(data)
    return data


def _read_raw_json(limit: int | None = None) -> bytes:
    """The body's bytes after the content-type and size checks (415, 413)."""
    if not request.is_json:
        raise UnsupportedMediaType("send the body as JSON with Content-Type: application/json")
    limit = limit or current_app.config["CAREPILOT_SETTINGS"].max_json_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"the JSON body is larger than {limit} bytes")
    raw = request.stream.read(limit + 1)
    if len(raw) > limit:
        raise PayloadTooLarge(f"the JSON body is larger than {limit} bytes")
    return raw


def read_json_body(model: type[ModelT], *, limit_bytes: int | None = None) -> ModelT:
    """Validate the request's JSON body against ``model`` (at most ``limit_bytes``, default the
    ``max_json_body_bytes`` setting).

    Malformed JSON → 400 ``invalid_json``; wrong types or unknown fields → 400
    ``validation_error`` with one JSON path per problem; too large → 413; not JSON → 415.
    Strict mode: "12" is not a number and 1 is not a string.
    """
    raw = _read_raw_json(limit_bytes)
    _parse_json(raw)  # bodies are small: one extra parse buys one set of JSON rules everywhere
    try:
        return model.model_validate_json(raw, strict=True)
    except ValidationError as exc:
        invalid = [e for e in exc.errors(include_url=False) if e["type"] == "json_invalid"]
        if invalid:
            raise BadRequest(
                f"the body is not valid JSON: {invalid[0].get('ctx', {}).get('error', '')}", code="invalid_json"
            ) from None
        raise BadRequest(
            "the request body is not valid", code="validation_error", details=pydantic_details(exc)
        ) from None


def read_json_object() -> dict[str, Any]:
    """The request's JSON body as an object (PATCH validates it later, merged over the row)."""
    data = _parse_json(_read_raw_json())
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object", code="invalid_json")
    return data


def refuse_unknown_query(allowed: Iterable[str], hint: str) -> None:
    """400 ``invalid_query`` when the query string has a parameter outside ``allowed``: a
    misspelt filter must not silently return everything. ``hint`` ends the message (what the
    endpoint takes)."""
    unknown = set(request.args).difference(allowed)
    if unknown:
        raise BadRequest(f"unknown query parameter(s) {', '.join(sorted(unknown))}; {hint}", code="invalid_query")


MAX_ID = 2**31 - 1  # INTEGER ids (config rows, keys, audit); larger numbers cannot name a row


def parse_row_id(text: str, what: str) -> int:
    """A database row id from a URL or query string: a whole number in 1..2^31-1, else 400."""
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_ID:  # "²".isdigit() is true
        raise BadRequest(f"{what} must be a whole number between 1 and {MAX_ID}", code="invalid_id")
    return int(text)
