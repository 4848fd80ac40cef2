"""One error envelope for the whole HTTP surface: ``{"error": {"code", "message", "details"}}``.

Domain code raises ``ApiError`` subclasses; pydantic validation errors, malformed JSON and
Werkzeug's HTTP errors are mapped here, in one place. Bad input is always a 4xx; an
unexpected exception becomes a 500 after the request's transaction is rolled back.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, ClassVar

from flask import Flask, Response, jsonify
from flask.typing import ResponseReturnValue
from pydantic import ValidationError
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from infra.db import rollback_request_session

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error with an HTTP status, a stable machine-readable code and a human message."""

    status = 400
    code = "bad_request"
    headers: ClassVar[dict[str, str]] = {}  # extra response headers (e.g. Retry-After)

    def __init__(
        self, message: str, *, code: str | None = None, details: Any = None, status: int | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        if code:
            self.code = code
        if status:
            self.status = status


class BadRequest(ApiError):
    status, code = 400, "bad_request"


class Unauthorized(ApiError):
    status, code = 401, "unauthorized"


class Forbidden(ApiError):
    status, code = 403, "forbidden"


class NotFound(ApiError):
    status, code = 404, "not_found"


class Conflict(ApiError):
    status, code = 409, "conflict"


class PayloadTooLarge(ApiError):
    status, code = 413, "payload_too_large"


class UnsupportedMediaType(ApiError):
    status, code = 415, "unsupported_media_type"


def error_response(status: int, code: str, message: str, details: Any = None) -> tuple[Response, int]:
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    return jsonify({"error": body}), status


def pydantic_details(exc: ValidationError) -> list[dict[str, str]]:
    """Pydantic errors as [{"path": "$.field[0]", "message": ...}] (JSON-path style)."""
    details = []
    for err in exc.errors(include_url=False):
        path = "$"
        for part in err["loc"]:
            path += f"[{part}]" if isinstance(part, int) else f".{part}"
        # a validator's own sentence, without pydantic's "Value error, " in front of it
        details.append({"path": path, "message": err["msg"].removeprefix("Value error, ")})
    return details


def _after_rollback(
    status: int, code: str, message: str, details: Any = None, headers: Mapping[str, str] | None = None
) -> tuple[Response, int]:
    """The envelope of an error the app answers, once the request's transaction is rolled back."""
    rollback_request_session()
    response, status = error_response(status, code, message, details)
    if headers:
        response.headers.update(headers)
    return response, status


def register_error_handlers(app: Flask) -> None:
    """Map every error the app can raise to the envelope."""

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> ResponseReturnValue:
        return _after_rollback(exc.status, exc.code, exc.message, exc.details, exc.headers)

    @app.errorhandler(ValidationError)
    def _validation_error(exc: ValidationError) -> ResponseReturnValue:
        return _after_rollback(400, "validation_error", "the request body is not valid", pydantic_details(exc))

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> ResponseReturnValue:
        code = (exc.name or "error").lower().replace(" ", "_")
        allow = None
        if isinstance(exc, MethodNotAllowed) and exc.valid_methods:  # the 405 that routing raises
            allow = {"Allow": ", ".join(exc.valid_methods)}
        return _after_rollback(exc.code or 500, code, exc.description or exc.name, headers=allow)

    # the database unreachable (a restart, a failover) or every pooled connection busy: the
    # client may retry, so a 503, not a 500
    @app.errorhandler(OperationalError)
    @app.errorhandler(PoolTimeoutError)
    def _database_unavailable(exc: Exception) -> ResponseReturnValue:
        log.error("database unavailable: %s", exc)
        return _after_rollback(
            503,
            "database_unavailable",
            "the database is unavailable or busy; nothing was changed, retry shortly",
            headers={"Retry-After": "1"},
        )

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> ResponseReturnValue:
        log.exception("unhandled error")
        return _after_rollback(500, "internal_error", "an unexpected error occurred; it has been logged")
