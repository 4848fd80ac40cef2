"""The admin UI's blueprint at ``/admin`` and what every page shares: login, CSRF, roles,
security headers and the HTML error pages.

People log in with email + password into a session cookie; every unsafe request carries the
session's CSRF token in a hidden ``csrf_token`` field. Roles: admin and marketing may change
the catalogue, analysts read it. Errors under /admin are HTML pages (this blueprint's own
handlers), not the JSON envelope. The pages live in ``views`` (login, overview, catalogue,
audit log) and ``experiments_views`` (experiments and readouts).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from flask import Blueprint, g, redirect, render_template, request, url_for
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response

from admin_ui.forms import FORM_LEVEL, compact_json, pretty_json
from infra.auth import CONFIG_WRITERS, SAFE_METHODS, Principal, check_csrf, csrf_token, session_user
from infra.db import rollback_request_session
from infra.errors import ApiError, BadRequest, Forbidden

log = logging.getLogger(__name__)

bp = Blueprint("admin", __name__, url_prefix="/admin", template_folder="templates", static_folder="static")

PUBLIC_ENDPOINTS = frozenset({"admin.login", "admin.static"})
NAV = (
    ("admin.overview", "Overview"),
    ("admin.offers", "Offers"),
    ("admin.tiers", "Tiers"),
    ("admin.risk_levels", "Risk levels"),
    ("admin.experiments", "Experiments"),
    ("admin.audit", "Audit log"),
)
FORM_EXPIRED = (
    "This form has expired or was not sent from this site, so nothing was changed. "
    "Go back, reload the page and submit it again."
)
# No scripts at all: the UI is plain HTML forms, so the strictest policy costs nothing.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

P = ParamSpec("P")
R = TypeVar("R")


# --- who is logged in, CSRF, roles -----------------------------------------------------


@bp.before_request
def _require_login_and_csrf() -> Response | None:
    user = session_user()
    g.admin_user = user
    if user is not None:
        # The rest of the app (and its audit actor strings) sees the same caller.
        g.principal = Principal(kind="user", name=user.email, role=user.role, user_id=user.id)
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    if user is None:
        target = request.full_path.rstrip("?") if request.method in SAFE_METHODS else None
        return redirect(url_for("admin.login", next=target))
    if request.method not in SAFE_METHODS:
        _require_form_csrf()
    return None


def _require_form_csrf() -> None:
    try:
        check_csrf(request.form.get("csrf_token"))
    except Forbidden:
        raise BadRequest(FORM_EXPIRED, code="csrf_failed") from None


def require_role(*roles: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """The logged-in user must have one of ``roles`` (else the 403 page)."""

    def decorate(view: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(view)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            if g.admin_user.role not in roles:
                raise Forbidden(
                    f"This needs the role {' or '.join(roles)}; you are logged in as "
                    f"{g.admin_user.role}. Nothing was changed.",
                    code="role_forbidden",
                )
            return view(*args, **kwargs)

        return wrapper

    return decorate


def actor() -> str:
    return g.principal.actor


def _can_edit() -> bool:
    user = g.get("admin_user")
    return user is not None and user.role in CONFIG_WRITERS


@bp.context_processor
def _template_helpers() -> dict[str, Any]:
    return {
        "current_user": g.get("admin_user"),
        "csrf_token": csrf_token,
        "nav_items": NAV,
        "can_edit": _can_edit(),
        "pretty_json": pretty_json,
        "compact_json": compact_json,
        "FORM_LEVEL": FORM_LEVEL,
    }


@bp.after_request
def _security_headers(response: Response) -> Response:
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if request.endpoint != "admin.static":
        response.headers["Cache-Control"] = "no-store"  # pages show config and the audit log
    return response


# --- HTML error pages --------------------------------------------------------------------


def _rollback() -> None:
    rollback_request_session()


def _error_page(status: int, title: str, message: str) -> tuple[str, int]:
    return render_template("error.html", status=status, title=title, message=message), status


_TITLES = {
    400: "The request could not be used",
    403: "Not allowed",
    404: "Not found",
    405: "Not allowed here",
    409: "Conflict",
    413: "Too large",
}


@bp.errorhandler(ApiError)
def _api_error_page(exc: ApiError) -> tuple[str, int]:
    _rollback()
    title = "Form expired" if exc.code == "csrf_failed" else _TITLES.get(exc.status, "Error")
    return _error_page(exc.status, title, exc.message)


@bp.errorhandler(HTTPException)
def _http_error_page(exc: HTTPException) -> tuple[str, int]:
    _rollback()
    status = exc.code or 500
    return _error_page(status, _TITLES.get(status, exc.name), exc.description or exc.name)


@bp.errorhandler(IntegrityError)
def _integrity_page(exc: IntegrityError) -> tuple[str, int]:
    # A unique rule the service's own checks could not see (two people saving at once).
    _rollback()
    return _error_page(
        409, "Conflict", "The change conflicts with data saved meanwhile; nothing was changed. Reload and try again."
    )


@bp.errorhandler(OperationalError)
@bp.errorhandler(PoolTimeoutError)
def _database_unavailable_page(exc: Exception) -> tuple[str, int]:
    _rollback()
    log.error("database unavailable: %s", exc)
    return _error_page(
        503, "Database unavailable", "The database could not be reached; nothing was changed. Try again in a moment."
    )


@bp.errorhandler(Exception)
def _unexpected_page(exc: Exception) -> tuple[str, int]:
    _rollback()
    log.exception("unhandled error in the admin UI")
    return _error_page(
        500, "Something went wrong", "An unexpected error occurred and has been logged; nothing was changed."
    )


def render_page(template: str, section: str, status: int = 200, **context: Any) -> Any:
    html = render_template(template, section=section, **context)
    return html if status == 200 else (html, status)


@bp.get("/<path:unknown>")
def not_found(unknown: str) -> Any:
    """Unknown /admin pages get the HTML 404 page rather than the API's JSON envelope."""
    return _error_page(404, "Not found", f"There is no admin page at /admin/{unknown}.")
