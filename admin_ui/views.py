"""The admin UI's own pages: login, overview, offers, tiers, risk levels and the audit log.

Writes go through the same audited catalogue service as the JSON API, so the UI and the API
can never disagree about what is valid.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import flash, g, redirect, render_template, request, session, url_for
from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response

from admin_ui.blueprint import actor, bp, render_page, require_role
from admin_ui.forms import RISK_THRESHOLDS, OfferForm, RiskLevelsForm, parse_json_object, safe_next
from infra.audit import list_audit
from infra.auth import CONFIG_WRITERS, authenticate_password, check_csrf, csrf_token
from infra.auth_models import CHANNELS
from infra.db import db_session
from infra.errors import ApiError, Forbidden
from offers import catalogue, schemas
from offers.api import present
from offers.config_service import (
    create_config,
    deactivate_config,
    entity_json,
    get_config,
    list_config,
    update_config,
    validate_payload,
)
from offers.models import Offer, RiskLevelPolicy, Subscriber, Tier, TierScheme
from offers.repository import active_risk_policy, load_tier_assigner

AUDIT_PAGE_ROWS = 200
RECENT_AUDIT_ROWS = 10
MAX_PASSWORD_CHARS = 1000  # argon2 cost grows with input; nobody's password is longer
CUSTOM_RISK_POLICY = "custom"  # the risk policy this page creates when none is active


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
        return render_template(
            "login.html", email=email, next_url=next_url, error="The login form expired. Please try again."
        ), 400
    password = request.form.get("password", "")
    user = None
    if email and password and len(password) <= MAX_PASSWORD_CHARS and len(email) <= 254:
        user = authenticate_password(db_session(), email, password)
    if user is None:
        # One message for unknown email and wrong password: no user enumeration.
        return render_template("login.html", email=email, next_url=next_url, error="Wrong email or password."), 401
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
    per_tier = s.execute(
        select(Subscriber.tier, func.count()).group_by(Subscriber.tier).order_by(func.count().desc(), Subscriber.tier)
    ).all()
    budgets = present(s, catalogue.BUDGETS, list_config(s, catalogue.BUDGETS))
    return render_page(
        "overview.html",
        "admin.overview",
        active_offers=active_offers,
        all_offers=all_offers,
        schemes=schemes,
        per_tier=per_tier,
        subscribers=sum(n for _, n in per_tier),
        primary=next((row.code for row in schemes if row.is_primary), None),
        budgets=budgets,
        audit=list_audit(s, limit=RECENT_AUDIT_ROWS),
    )


# --- offers ------------------------------------------------------------------------------------


@bp.get("/offers")
def offers() -> str:
    s = db_session()
    rows = present(s, catalogue.OFFERS, list_config(s, catalogue.OFFERS, include_inactive=True))
    return render_page("offers.html", "admin.offers", offers=rows)


@bp.route("/offers/new", methods=["GET", "POST"])
@require_role(*CONFIG_WRITERS)
def new_offer() -> Any:
    if request.method == "GET":
        return _offer_form(OfferForm.blank(), editing=None)
    return _save_offer(
        OfferForm.from_request(request.form),
        editing=None,
        write=lambda s, payload: (
            create_config(s, catalogue.OFFERS, validate_payload(catalogue.OFFERS, payload), actor=actor()).code
        ),
        done="created",
    )


@bp.route("/offers/<code>/edit", methods=["GET", "POST"])
@require_role(*CONFIG_WRITERS)
def edit_offer(code: str) -> Any:
    stored = entity_json(get_config(db_session(), catalogue.OFFERS, code))  # 404 page if unknown
    if request.method == "GET":
        return _offer_form(OfferForm.from_offer(stored), editing=stored)
    form = OfferForm.from_request(request.form)
    form.values["code"] = stored["code"]  # the key never changes; the field is read-only
    return _save_offer(
        form,
        editing=stored,
        write=lambda s, payload: update_config(s, catalogue.OFFERS, code, payload, actor=actor()).code,
        done="saved",
    )


@bp.post("/offers/<code>/deactivate")
@require_role(*CONFIG_WRITERS)
def deactivate_offer(code: str) -> Response:
    s = db_session()
    deactivate_config(s, catalogue.OFFERS, code, actor=actor())
    s.commit()
    flash(f"Offer {code} deactivated: it is no longer offered, and its history is kept.", "success")
    return redirect(url_for("admin.offers"))


def _save_offer(
    form: OfferForm, *, editing: dict[str, Any] | None, write: Callable[[Session, dict[str, Any]], str], done: str
) -> Any:
    """Write the posted offer form with ``write`` (which returns the offer's code) and go back
    to the list; or show the form again with what was wrong (400, or the write's refusal)."""
    payload = form.payload()
    if payload is None:
        return _offer_form(form, editing=editing, status=400)
    s = db_session()
    try:
        code = write(s, payload)
    except ApiError as exc:
        s.rollback()
        form.add_api_error(exc)
        return _offer_form(form, editing=editing, status=exc.status)
    s.commit()
    flash(f"Offer {code} {done}.", "success")
    return redirect(url_for("admin.offers"))


def _offer_form(form: OfferForm, *, editing: dict[str, Any] | None, status: int = 200) -> Any:
    return render_page("offer_form.html", "admin.offers", status=status, form=form, editing=editing, channels=CHANNELS)


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
    return render_page(
        "tiers.html",
        "admin.tiers",
        status=400 if profile_error else 200,
        schemes=schemes,
        by_scheme=by_scheme,
        primary_scheme=primary_scheme,
        profile_text=profile_text,
        profile_error=profile_error,
        result=result,
    )


# --- risk levels -----------------------------------------------------------------------------


def _risk_page(form: RiskLevelsForm, active: Any, status: int = 200) -> Any:
    return render_page(
        "risk_levels.html",
        "admin.risk_levels",
        status=status,
        form=form,
        active=active,
        thresholds=[name for name, _ in RISK_THRESHOLDS],
    )


@bp.get("/risk-levels")
def risk_levels() -> Any:
    """The blue / yellow / red thresholds in force: the active risk policy, else the playbook's."""
    active = active_risk_policy(db_session())
    defaults = {name: info.default for name, info in schemas.RiskPolicyIn.model_fields.items()}
    return _risk_page(RiskLevelsForm.from_policy(entity_json(active) if active is not None else defaults), active)


@bp.post("/risk-levels")
@require_role(*CONFIG_WRITERS)
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
            update_config(s, catalogue.RISK_POLICIES, active.code, payload, actor=actor())
        elif s.scalar(select(RiskLevelPolicy.id).where(RiskLevelPolicy.code == CUSTOM_RISK_POLICY)) is not None:
            update_config(s, catalogue.RISK_POLICIES, CUSTOM_RISK_POLICY, {**payload, "active": True}, actor=actor())
        else:
            data = validate_payload(
                catalogue.RISK_POLICIES, {"code": CUSTOM_RISK_POLICY, "name": "Warning levels", **payload}
            )
            create_config(s, catalogue.RISK_POLICIES, data, actor=actor())
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
    return render_page(
        "audit.html", "admin.audit", entries=list_audit(db_session(), limit=AUDIT_PAGE_ROWS), limit=AUDIT_PAGE_ROWS
    )
