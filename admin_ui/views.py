"""The server-rendered admin UI at ``/admin``: login, overview, offers, tiers, experiments and
their readouts (``experiments_views``), audit log.

People log in with email + password into a session cookie; every unsafe request carries the
session's CSRF token in a hidden ``csrf_token`` field. Roles: admin and marketing may change
the catalogue, analysts read it. Writes go through the same audited catalogue service as the
JSON API, so the UI and the API can never disagree about what is valid.

Errors under /admin are HTML pages (this blueprint's own handlers), not the JSON envelope.
"""

from __future__ import annotations

import functools
import logging
from typing import Any, Callable, TypeVar

from flask import (Blueprint, flash, g, redirect, render_template, request, session, url_for)
from sqlalchemy import and_, func, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response

from admin_ui.forms import (FORM_LEVEL, RISK_THRESHOLDS, OfferForm, RiskLevelsForm, compact_json, parse_json_object,
                            pretty_json, safe_next)
from infra.audit import list_audit
from infra.auth import (CONFIG_WRITERS, SAFE_METHODS, Principal, authenticate_password,
                        check_csrf, csrf_token, session_user)
from infra.auth_models import CHANNELS
from infra.db import db_session, rollback_request_session
from infra.errors import ApiError, BadRequest, Forbidden
from offers import catalogue, schemas
from offers.api import present
from offers.config_service import (create_config, deactivate_config, entity_json, get_config,
                                   list_config, update_config, validate_payload)
from offers.models import Offer, RiskLevelPolicy, Subscriber, Tier, TierScheme
from offers.repository import active_risk_policy, load_tier_assigner

log = logging.getLogger(__name__)

bp = Blueprint("admin", __name__, url_prefix="/admin", template_folder="templates",
               static_folder="static")

PUBLIC_ENDPOINTS = frozenset({"admin.login", "admin.static"})
AUDIT_PAGE_ROWS = 200
RECENT_AUDIT_ROWS = 10
MAX_PASSWORD_CHARS = 1000  # argon2 cost grows with input; nobody's password is longer
NAV = (("admin.overview", "Overview"), ("admin.offers", "Offers"), ("admin.tiers", "Tiers"),
       ("admin.risk_levels", "Risk levels"), ("admin.experiments", "Experiments"), ("admin.audit", "Audit log"))
CUSTOM_RISK_POLICY = "custom"  # the risk policy this page creates when none is active
FORM_EXPIRED = ("This form has expired or was not sent from this site, so nothing was changed. "
                "Go back, reload the page and submit it again.")
# No scripts at all: the UI is plain HTML forms, so the strictest policy costs nothing.
CONTENT_SECURITY_POLICY = ("default-src 'none'; style-src 'self'; img-src 'self' data:; "
                           "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")

F = TypeVar("F", bound=Callable[..., Any])


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


def _roles(*roles: str) -> Callable[[F], F]:
    """The logged-in user must have one of ``roles`` (else the 403 page)."""

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if g.admin_user.role not in roles:
                raise Forbidden(f"This needs the role {' or '.join(roles)}; you are logged in as "
                                f"{g.admin_user.role}. Nothing was changed.", code="role_forbidden")
            return view(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def _actor() -> str:
    return g.principal.actor


def _can_edit() -> bool:
    user = g.get("admin_user")
    return user is not None and user.role in CONFIG_WRITERS


@bp.context_processor
def _template_helpers() -> dict[str, Any]:
    return {"current_user": g.get("admin_user"), "csrf_token": csrf_token, "nav_items": NAV,
            "can_edit": _can_edit(), "pretty_json": pretty_json, "compact_json": compact_json,
            "FORM_LEVEL": FORM_LEVEL}


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


_TITLES = {400: "The request could not be used", 403: "Not allowed", 404: "Not found",
           405: "Not allowed here", 409: "Conflict", 413: "Too large"}


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
    return _error_page(409, "Conflict", "The change conflicts with data saved meanwhile; "
                                        "nothing was changed. Reload and try again.")


@bp.errorhandler(OperationalError)
@bp.errorhandler(PoolTimeoutError)
def _database_unavailable_page(exc: Exception) -> tuple[str, int]:
    _rollback()
    log.error("database unavailable: %s", exc)
    return _error_page(503, "Database unavailable", "The database could not be reached; nothing was changed. "
                                                    "Try again in a moment.")


@bp.errorhandler(Exception)
def _unexpected_page(exc: Exception) -> tuple[str, int]:
    _rollback()
    log.exception("unhandled error in the admin UI")
    return _error_page(500, "Something went wrong", "An unexpected error occurred and has been "
                                                    "logged; nothing was changed.")


# --- login / logout ------------------------------------------------------------------------

@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    """The login form; success starts a fresh session (no fixation) and follows ``next``."""
    next_url = safe_next(request.values.get("next"), url_for("admin.overview"))
    if request.method == "GET":
        if g.admin_user is not None:
            return redirect(next_url)
        return render_template("login.html", email="", next_url=next_url, error=None)
    email = request.form.get("email", "").strip()
    try:
        check_csrf(request.form.get("csrf_token"))
    except Forbidden:
        return render_template("login.html", email=email, next_url=next_url,
                               error="The login form expired. Please try again."), 400
    password = request.form.get("password", "")
    user = None
    if email and password and len(password) <= MAX_PASSWORD_CHARS and len(email) <= 254:
        user = authenticate_password(db_session(), email, password)
    if user is None:
        # One message for unknown email and wrong password: no user enumeration.
        return render_template("login.html", email=email, next_url=next_url,
                               error="Wrong email or password."), 401
    session.clear()
    session["user_id"] = user.id
    csrf_token()
    return redirect(next_url)


@bp.post("/logout")
def logout() -> Response:
    session.clear()
    flash("You are logged out.", "info")
    return redirect(url_for("admin.login"))


# --- overview --------------------------------------------------------------------------------

@bp.get("/")
def overview() -> str:
    """Counts at a glance, budgets with their caps in money, and the latest audit entries."""
    s = db_session()
    active_offers = s.scalar(select(func.count()).select_from(Offer).where(Offer.active.is_(True)))
    all_offers = s.scalar(select(func.count()).select_from(Offer))
    schemes = s.execute(
        select(TierScheme.code, TierScheme.name, TierScheme.is_primary, func.count(Tier.id))
        .outerjoin(Tier, and_(Tier.scheme_code == TierScheme.code, Tier.active.is_(True)))
        .where(TierScheme.active.is_(True))
        .group_by(TierScheme.code, TierScheme.name, TierScheme.is_primary)
        .order_by(TierScheme.is_primary.desc(), TierScheme.code)
    ).all()
    per_tier = s.execute(select(Subscriber.tier, func.count()).group_by(Subscriber.tier)
                         .order_by(func.count().desc(), Subscriber.tier)).all()
    budgets = present(s, catalogue.BUDGETS, list_config(s, catalogue.BUDGETS))
    return _page("overview.html", "admin.overview", active_offers=active_offers, all_offers=all_offers,
                 schemes=schemes, per_tier=per_tier, subscribers=sum(n for _, n in per_tier),
                 primary=next((row.code for row in schemes if row.is_primary), None),
                 budgets=budgets, audit=list_audit(s, limit=RECENT_AUDIT_ROWS))


def _page(template: str, section: str, status: int = 200, **context: Any) -> Any:
    html = render_template(template, section=section, **context)
    return html if status == 200 else (html, status)


# --- offers ------------------------------------------------------------------------------------

@bp.get("/offers")
def offers() -> str:
    s = db_session()
    rows = present(s, catalogue.OFFERS, list_config(s, catalogue.OFFERS, include_inactive=True))
    return _page("offers.html", "admin.offers", offers=rows)


@bp.route("/offers/new", methods=["GET", "POST"])
@_roles(*CONFIG_WRITERS)
def new_offer() -> Any:
    if request.method == "GET":
        return _offer_form(OfferForm.blank(), editing=None)
    form = OfferForm.from_request(request.form)
    payload = form.payload()
    if payload is None:
        return _offer_form(form, editing=None, status=400)
    s = db_session()
    try:
        offer = create_config(s, catalogue.OFFERS, validate_payload(catalogue.OFFERS, payload), actor=_actor())
    except ApiError as exc:
        s.rollback()
        form.add_api_error(exc)
        return _offer_form(form, editing=None, status=exc.status)
    s.commit()
    flash(f"Offer {offer.code} created.", "success")
    return redirect(url_for("admin.offers"))


@bp.route("/offers/<code>/edit", methods=["GET", "POST"])
@_roles(*CONFIG_WRITERS)
def edit_offer(code: str) -> Any:
    s = db_session()
    stored = entity_json(get_config(s, catalogue.OFFERS, code))  # 404 page if unknown
    if request.method == "GET":
        return _offer_form(OfferForm.from_offer(stored), editing=stored)
    form = OfferForm.from_request(request.form)
    form.values["code"] = stored["code"]  # the key never changes; the field is read-only
    payload = form.payload()
    if payload is None:
        return _offer_form(form, editing=stored, status=400)
    try:
        update_config(s, catalogue.OFFERS, code, payload, actor=_actor())
    except ApiError as exc:
        s.rollback()
        form.add_api_error(exc)
        return _offer_form(form, editing=stored, status=exc.status)
    s.commit()
    flash(f"Offer {code} saved.", "success")
    return redirect(url_for("admin.offers"))


@bp.post("/offers/<code>/deactivate")
@_roles(*CONFIG_WRITERS)
def deactivate_offer(code: str) -> Response:
    s = db_session()
    deactivate_config(s, catalogue.OFFERS, code, actor=_actor())
    s.commit()
    flash(f"Offer {code} deactivated: it is no longer offered, and its history is kept.", "success")
    return redirect(url_for("admin.offers"))


def _offer_form(form: OfferForm, *, editing: dict[str, Any] | None, status: int = 200) -> Any:
    return _page("offer_form.html", "admin.offers", status=status, form=form, editing=editing,
                 channels=CHANNELS)


# --- tiers -----------------------------------------------------------------------------------

@bp.route("/tiers", methods=["GET", "POST"])
def tiers() -> Any:
    """Tiers per scheme in rank order, and "which tier would this profile get" (POST)."""
    s = db_session()
    schemes = list_config(s, catalogue.TIER_SCHEMES, include_inactive=True)
    by_scheme: dict[str, list[Tier]] = {scheme.code: [] for scheme in schemes}
    for tier in list_config(s, catalogue.TIERS, include_inactive=True):
        by_scheme.setdefault(tier.scheme_code, []).append(tier)
    profile_text, profile_error, result = '{\n  "arpu": 45,\n  "tenure_months": 40\n}', None, None
    if request.method == "POST":
        profile_text = request.form.get("profile", "")
        try:
            attributes = parse_json_object(profile_text)
        except ValueError as exc:
            profile_error = str(exc)
        else:
            result = load_tier_assigner(s).assign(attributes)
    primary_scheme = next((sc.code for sc in schemes if sc.is_primary and sc.active), None)
    return _page("tiers.html", "admin.tiers", status=400 if profile_error else 200, schemes=schemes,
                 by_scheme=by_scheme, primary_scheme=primary_scheme, profile_text=profile_text,
                 profile_error=profile_error, result=result)


# --- risk levels -----------------------------------------------------------------------------

def _risk_page(form: RiskLevelsForm, active: Any, status: int = 200) -> Any:
    return _page("risk_levels.html", "admin.risk_levels", status=status, form=form, active=active,
                 thresholds=[name for name, _ in RISK_THRESHOLDS])


@bp.get("/risk-levels")
def risk_levels() -> Any:
    """The blue / yellow / red thresholds in force: the active risk policy, else the playbook's."""
    active = active_risk_policy(db_session())
    defaults = {name: info.default for name, info in schemas.RiskPolicyIn.model_fields.items()}
    return _risk_page(RiskLevelsForm.from_policy(entity_json(active) if active is not None else defaults), active)


@bp.post("/risk-levels")
@_roles(*CONFIG_WRITERS)
def save_risk_levels() -> Any:
    """Save the thresholds into the active risk policy (audited); with none active, into the
    ``custom`` one, which becomes active."""
    s = db_session()
    active = active_risk_policy(s)
    form = RiskLevelsForm.from_request(request.form)
    payload = form.payload()
    if payload is None:
        return _risk_page(form, active, status=400)
    try:
        if active is not None:
            update_config(s, catalogue.RISK_POLICIES, active.code, payload, actor=_actor())
        elif s.scalar(select(RiskLevelPolicy.id).where(RiskLevelPolicy.code == CUSTOM_RISK_POLICY)) is not None:
            update_config(s, catalogue.RISK_POLICIES, CUSTOM_RISK_POLICY, {**payload, "active": True}, actor=_actor())
        else:
            data = validate_payload(catalogue.RISK_POLICIES, {"code": CUSTOM_RISK_POLICY, "name": "Warning levels",
                                                              **payload})
            create_config(s, catalogue.RISK_POLICIES, data, actor=_actor())
    except ApiError as exc:
        s.rollback()
        form.add_api_error(exc)
        return _risk_page(form, active, status=exc.status)
    s.commit()
    flash("Risk levels saved: the next decisions use them.", "success")
    return redirect(url_for("admin.risk_levels"))


# --- audit log -------------------------------------------------------------------------------

@bp.get("/audit")
def audit() -> str:
    return _page("audit.html", "admin.audit", entries=list_audit(db_session(), limit=AUDIT_PAGE_ROWS),
                 limit=AUDIT_PAGE_ROWS)


@bp.get("/<path:unknown>")
def not_found(unknown: str) -> Any:
    """Unknown /admin pages get the HTML 404 page rather than the API's JSON envelope."""
    return _error_page(404, "Not found", f"There is no admin page at /admin/{unknown}.")


# The experiment and readout pages live in their own module on this blueprint; imported last
# because they use the helpers above.
from admin_ui import experiments_views  # noqa: E402,F401
