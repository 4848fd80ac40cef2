"""The server-rendered admin UI through Flask's test client: login, roles, CSRF, offer forms,
tiers preview, audit log and the HTML error pages."""

from __future__ import annotations

import html
import re

import pytest
from sqlalchemy import select

from infra.audit import AuditEntry
from offers import catalogue, schemas
from offers.config_service import create_config
from offers.models import Offer
from tests.conftest import make_user
from tests.integration.admin_forms import csrf_token, log_in_through_the_form, page_text

FIELD_ERROR = re.compile(r'data-testid="error-([a-z_]+)">([^<]*)<')


def _field_errors(response) -> dict[str, str]:
    return {name: html.unescape(message) for name, message in FIELD_ERROR.findall(response.get_data(as_text=True))}


def _offers(db) -> dict[str, Offer]:
    db.expire_all()
    return {o.code: o for o in db.scalars(select(Offer))}


def _offer_form(**overrides) -> dict:
    form = {
        "code": "NIGHT_DATA",
        "name": "Night data pack",
        "description": "10 GB from 23:00 to 07:00",
        "unit_cost": "2.5",
        "currency": "EUR",
        "channels": ["sms", "app"],
        "eligibility": '{"night_data_share": {"$gte": 0.4}}',
        "prior_uplift": "0.03",
        "value_horizon_months": "6",
        "active": "on",
    }
    form.update(overrides)
    return form


@pytest.fixture()
def login(client, db, password):
    """login(role) → the user, logged in through the real form; returns a fresh CSRF token too."""

    def do(role: str):
        user = log_in_through_the_form(client, db, role, password)
        return user, csrf_token(client, "/admin/")

    return do


# --- login, logout, redirects -----------------------------------------------------------


def test_login_through_the_form_shows_the_user_and_role(client, db, password):
    user = make_user(db, "analyst")
    db.commit()
    before = csrf_token(client)
    r = client.post(
        "/admin/login", data={"email": "  Analyst@Example.test ", "password": password, "csrf_token": before}
    )
    assert r.status_code == 302 and r.headers["Location"] == "/admin/"
    page = client.get("/admin/")
    assert page.status_code == 200
    body = page_text(page)
    assert f'data-testid="current-user">{user.email}<' in body
    assert 'data-testid="current-role">analyst<' in body
    # The session was replaced at login (no fixation): the pre-login token is gone.
    assert csrf_token(client, "/admin/") != before


@pytest.mark.parametrize(
    "email, wrong_password", [("marketing@example.test", "not the password"), ("nobody@example.test", None)]
)
def test_wrong_credentials_rerender_the_form_with_one_message(client, db, password, email, wrong_password):
    make_user(db, "marketing")
    db.commit()
    r = client.post(
        "/admin/login", data={"email": email, "password": wrong_password or password, "csrf_token": csrf_token(client)}
    )
    assert r.status_code == 401
    body = page_text(r)
    assert "Wrong email or password." in body  # the same words whether or not the email exists
    assert f'value="{email}"' in body and 'name="password"' in body
    assert client.get("/admin/").status_code == 302  # still logged out


def test_login_without_csrf_token_is_refused(client, db, password):
    make_user(db, "admin")
    db.commit()
    client.get("/admin/login")
    r = client.post("/admin/login", data={"email": "admin@example.test", "password": password})
    assert r.status_code == 400 and "expired" in page_text(r)
    assert client.get("/admin/").status_code == 302


@pytest.mark.parametrize("path", ["/admin/", "/admin/offers", "/admin/tiers", "/admin/audit", "/admin/offers/new"])
def test_pages_need_a_login_and_remember_where_you_were_going(client, path):
    r = client.get(path)
    assert r.status_code == 302
    assert r.headers["Location"].startswith("/admin/login?next=")
    assert client.get(r.headers["Location"]).status_code == 200


def test_login_follows_next_only_inside_the_admin_ui(client, db, password):
    make_user(db, "marketing")
    db.commit()
    for target, expected in (
        ("/admin/audit", "/admin/audit"),
        ("https://evil.example/x", "/admin/"),
        ("//evil.example/x", "/admin/"),
        ("/\\evil.example", "/admin/"),
        ("/api/v1/offers", "/admin/"),
    ):
        browser = client.application.test_client()  # a fresh, logged-out cookie jar
        r = browser.post(
            "/admin/login",
            data={
                "email": "marketing@example.test",
                "password": password,
                "csrf_token": csrf_token(browser),
                "next": target,
            },
        )
        assert r.status_code == 302 and r.headers["Location"] == expected, target


def test_logout_needs_csrf_and_ends_the_session(client, login):
    _, token = login("marketing")
    r = client.post("/admin/logout")
    assert r.status_code == 400 and "expired" in page_text(r)
    assert client.get("/admin/").status_code == 200  # a forged logout did nothing
    r = client.post("/admin/logout", data={"csrf_token": token})
    assert r.status_code == 302 and r.headers["Location"] == "/admin/login"
    assert "You are logged out." in page_text(client.get("/admin/login"))
    assert client.get("/admin/offers").status_code == 302


def test_deactivated_user_is_logged_out(client, db, login):
    user, _ = login("admin")
    user.active = False
    db.commit()
    assert client.get("/admin/").status_code == 302


# --- CSRF and roles ---------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "forged-token"])
def test_missing_or_wrong_csrf_token_changes_nothing(client, db, login, token):
    login("marketing")
    data = _offer_form()
    if token:
        data["csrf_token"] = token
    r = client.post("/admin/offers/new", data=data)
    assert r.status_code == 400
    assert r.content_type.startswith("text/html")
    assert "form has expired" in page_text(r) and "nothing was changed" in page_text(r)
    assert "NIGHT_DATA" not in _offers(db)


def test_analyst_sees_offers_read_only_and_cannot_write(client, db, login):
    create_config(
        db,
        catalogue.OFFERS,
        schemas.OfferIn(code="CARE_SMS", name="Care SMS", unit_cost=0.05, channels=["sms"]),
        actor="test",
    )
    db.commit()
    _, token = login("analyst")
    page = page_text(client.get("/admin/offers"))
    assert "CARE_SMS" in page
    assert "New offer" not in page and "/edit" not in page and "Deactivate" not in page
    assert client.get("/admin/offers/new").status_code == 403
    for path, data in (
        ("/admin/offers/new", _offer_form()),
        ("/admin/offers/CARE_SMS/edit", _offer_form(code="CARE_SMS", name="Hacked")),
        ("/admin/offers/CARE_SMS/deactivate", {}),
    ):
        r = client.post(path, data={**data, "csrf_token": token})
        assert r.status_code == 403, path
        assert r.content_type.startswith("text/html") and "you are logged in as analyst" in page_text(r)
    offers = _offers(db)
    assert set(offers) == {"CARE_SMS"} and offers["CARE_SMS"].name == "Care SMS" and offers["CARE_SMS"].active


# --- creating and editing offers -------------------------------------------------------------


def test_marketing_creates_an_offer_through_the_form(client, db, login):
    user, token = login("marketing")
    assert "New offer" in page_text(client.get("/admin/offers"))
    r = client.post("/admin/offers/new", data={**_offer_form(), "csrf_token": token})
    assert r.status_code == 302 and r.headers["Location"] == "/admin/offers"
    offer = _offers(db)["NIGHT_DATA"]
    assert (
        offer.name,
        float(offer.unit_cost),
        offer.channels,
        offer.eligibility,
        offer.prior_uplift,
        offer.value_horizon_months,
        offer.active,
    ) == ("Night data pack", 2.5, ["sms", "app"], {"night_data_share": {"$gte": 0.4}}, 0.03, 6, True)
    audit = db.scalars(
        select(AuditEntry).where(AuditEntry.entity_type == "offer", AuditEntry.entity_key == "NIGHT_DATA")
    ).all()
    assert [(a.actor, a.action) for a in audit] == [(f"user:{user.email}", "create")]
    assert audit[0].after["eligibility"] == {"night_data_share": {"$gte": 0.4}}
    listing = page_text(client.get("/admin/offers"))
    assert "Offer NIGHT_DATA created." in listing and 'id="offer-NIGHT_DATA"' in listing


def test_a_change_saves_while_redis_is_down(client, db, login, monkeypatch):
    """The save commits with its config generation; the Redis version cannot be bumped, which
    the decisions do not need to see the change (``test_decisions``)."""
    import redis

    from infra import config_version

    _user, token = login("marketing")
    down = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    monkeypatch.setattr(config_version, "_redis_source", [lambda: down])
    r = client.post("/admin/offers/new", data={**_offer_form(), "csrf_token": token})
    assert r.status_code == 302 and "NIGHT_DATA" in _offers(db)
    listing = page_text(client.get("/admin/offers"))
    assert "Offer NIGHT_DATA created." in listing and "Redis" not in listing


def test_invalid_eligibility_json_keeps_the_input_and_names_the_problem(client, db, login):
    _, token = login("marketing")
    typed = '{"night_data_share": {"$gte": 0.4}'  # missing closing brace
    r = client.post("/admin/offers/new", data={**_offer_form(eligibility=typed, name="Kept name"), "csrf_token": token})
    assert r.status_code == 400
    errors = _field_errors(r)
    assert errors["eligibility"].startswith("Not valid JSON: Expecting ',' delimiter")
    body = page_text(r)
    assert typed in body and 'value="Kept name"' in body and "Nothing was saved." in body
    assert "NIGHT_DATA" not in _offers(db)


def test_invalid_condition_is_shown_at_its_json_path_next_to_eligibility(client, db, login):
    _, token = login("admin")
    typed = '{"tenure_months": {"$gtee": 36}}'
    r = client.post("/admin/offers/new", data={**_offer_form(eligibility=typed), "csrf_token": token})
    assert r.status_code == 400
    assert _field_errors(r) == {"eligibility": "unknown operator $gtee (at $.eligibility.tenure_months.$gtee)"}
    assert typed in page_text(r)
    assert "NIGHT_DATA" not in _offers(db)
    assert db.scalar(select(AuditEntry).where(AuditEntry.entity_type == "offer")) is None


def test_field_errors_from_conversion_and_from_the_catalogue_schema(client, db, login):
    _, token = login("marketing")
    r = client.post(
        "/admin/offers/new", data={**_offer_form(unit_cost="cheap", value_horizon_months="1.5"), "csrf_token": token}
    )
    assert r.status_code == 400
    assert _field_errors(r) == {"unit_cost": "must be a number", "value_horizon_months": "must be a whole number"}
    data = {**_offer_form(code="bad code!", prior_uplift="2"), "csrf_token": token}
    data.pop("channels")
    r = client.post("/admin/offers/new", data=data)
    assert r.status_code == 400
    errors = _field_errors(r)
    assert set(errors) == {"code", "channels", "prior_uplift"}
    assert "less than or equal to 1" in errors["prior_uplift"]
    assert 'value="bad code!"' in page_text(r)
    assert _offers(db) == {}


def test_duplicate_code_is_shown_on_the_code_field(client, db, login):
    _, token = login("marketing")
    assert client.post("/admin/offers/new", data={**_offer_form(), "csrf_token": token}).status_code == 302
    r = client.post("/admin/offers/new", data={**_offer_form(name="Second"), "csrf_token": token})
    assert r.status_code == 409
    assert "NIGHT_DATA" in _field_errors(r)["code"]
    assert _offers(db)["NIGHT_DATA"].name == "Night data pack"


def test_edit_and_deactivate_are_audited_with_before_and_after(client, db, login):
    user, token = login("marketing")
    client.post("/admin/offers/new", data={**_offer_form(), "csrf_token": token})
    form = page_text(client.get("/admin/offers/NIGHT_DATA/edit"))
    assert 'value="Night data pack"' in form and '"night_data_share"' in form and "readonly" in form
    r = client.post(
        "/admin/offers/NIGHT_DATA/edit",
        data={**_offer_form(code="IGNORED", name="Night data pack XL", channels=["app"]), "csrf_token": token},
    )
    assert r.status_code == 302
    r = client.post("/admin/offers/NIGHT_DATA/deactivate", data={"csrf_token": token})
    assert r.status_code == 302
    offers = _offers(db)
    assert set(offers) == {"NIGHT_DATA"}  # the read-only code field cannot rename the offer
    offer = offers["NIGHT_DATA"]
    assert (offer.name, offer.channels, offer.active) == ("Night data pack XL", ["app"], False)
    rows = db.scalars(select(AuditEntry).where(AuditEntry.entity_key == "NIGHT_DATA").order_by(AuditEntry.id)).all()
    assert [(a.action, a.actor) for a in rows] == [
        (action, f"user:{user.email}") for action in ("create", "update", "deactivate")
    ]
    assert (rows[1].before["name"], rows[1].after["name"]) == ("Night data pack", "Night data pack XL")
    audit_page = page_text(client.get("/admin/audit"))
    assert audit_page.count(f"user:{user.email}") >= 3 and "<details>" in audit_page


def test_invalid_edit_keeps_the_stored_offer(client, db, login):
    _, token = login("admin")
    client.post("/admin/offers/new", data={**_offer_form(), "csrf_token": token})
    r = client.post(
        "/admin/offers/NIGHT_DATA/edit",
        data={**_offer_form(eligibility='{"$or": {"a": 1}}', name="Changed"), "csrf_token": token},
    )
    assert r.status_code == 400
    assert _field_errors(r)["eligibility"] == "$or needs a list of conditions (at $.eligibility.$or)"
    assert 'value="Changed"' in page_text(r)
    assert _offers(db)["NIGHT_DATA"].name == "Night data pack"


# --- tiers, overview, error pages ----------------------------------------------------------


def _value_tiers(db) -> None:
    create_config(
        db,
        catalogue.TIER_SCHEMES,
        schemas.TierSchemeIn(code="value", name="Value tiers", is_primary=True),
        actor="test",
    )
    for rank, (code, rule) in enumerate(
        (("vip", {"arpu": {"$gte": 100}}), ("growth", {"arpu": {"$gte": 30}}), ("basic", {})), start=1
    ):
        create_config(
            db,
            catalogue.TIERS,
            schemas.TierIn(code=code, scheme_code="value", name=code.title(), rank=rank, rule=rule),
            actor="test",
        )
    db.commit()


def test_tiers_page_lists_rules_in_rank_order_and_previews_a_profile(client, db, login):
    _value_tiers(db)
    _, token = login("analyst")
    page = page_text(client.get("/admin/tiers"))
    assert page.index("<code>vip</code>") < page.index("<code>growth</code>") < page.index("<code>basic</code>")
    assert '"$gte": 100' in page
    r = client.post("/admin/tiers", data={"profile": '{"arpu": 45}', "csrf_token": token})
    assert r.status_code == 200
    result = page_text(r).split('data-testid="tier-result"')[1]
    assert "<strong>growth</strong>" in result
    r = client.post("/admin/tiers", data={"profile": '["arpu", 45]', "csrf_token": token})
    assert r.status_code == 400
    assert _field_errors(r)["profile"] == 'Must be a JSON object, e.g. {"tenure_months": {"$gte": 36}}'
    assert '["arpu", 45]' in page_text(r)


def test_overview_counts_offers_tiers_and_budgets(client, db, login):
    _value_tiers(db)
    create_config(
        db,
        catalogue.OFFERS,
        schemas.OfferIn(code="CARE_SMS", name="Care SMS", unit_cost=0.05, channels=["sms"]),
        actor="test",
    )
    create_config(
        db, catalogue.BUDGETS, schemas.BudgetIn(code="Q4", name="Retention fund", cap_amount=25000), actor="test"
    )
    db.commit()
    login("marketing")
    body = page_text(client.get("/admin/"))
    assert 'data-testid="active-offers">1<' in body
    assert "Retention fund" in body and "25,000.00 EUR" in body
    assert '<code>value</code> <span class="badge">primary</span>' in body
    assert "Recent changes" in body and "tier" in body


def test_unknown_pages_and_offers_get_html_404_pages(client, login):
    login("marketing")
    for path in ("/admin/no-such-page", "/admin/offers/NOPE/edit"):
        r = client.get(path)
        assert r.status_code == 404 and r.content_type.startswith("text/html"), path
        assert "Not found" in page_text(r)


def test_admin_pages_send_security_headers(client, login):
    login("analyst")
    r = client.get("/admin/")
    assert "default-src 'none'" in r.headers["Content-Security-Policy"]
    assert r.headers["X-Frame-Options"] == "DENY" and r.headers["Cache-Control"] == "no-store"
    assert client.get("/admin/static/admin.css").status_code == 200


# --- risk levels -----------------------------------------------------------------------------------

RISK_FORM = {
    "yellow_churn_score": "0.35",
    "red_churn_score": "0.65",
    "inactive_months": "2",
    "consecutive_downgrades": "3",
    "unresolved_complaints": "1",
    "complaint_surge_90d": "3",
}


def test_marketing_sets_the_risk_levels_and_they_are_audited(client, db, login):
    from offers.models import RiskLevelPolicy

    user, token = login("marketing")
    page = page_text(client.get("/admin/risk-levels"))
    assert "the playbook's thresholds (no risk policy is active)" in page and 'value="0.4"' in page
    r = client.post("/admin/risk-levels", data={**RISK_FORM, "csrf_token": token})
    assert r.status_code == 302 and r.headers["Location"] == "/admin/risk-levels"
    db.expire_all()
    [policy] = db.scalars(select(RiskLevelPolicy)).all()
    assert (policy.code, policy.active, policy.yellow_churn_score, policy.inactive_months) == ("custom", True, 0.35, 2)
    page = page_text(client.get("/admin/risk-levels"))
    assert "Risk levels saved" in page
    assert "risk policy <code>custom</code>" in page and 'value="0.35"' in page
    # a second save edits the same policy
    assert (
        client.post("/admin/risk-levels", data={**RISK_FORM, "red_churn_score": "0.8", "csrf_token": token}).status_code
        == 302
    )
    db.expire_all()
    assert [p.red_churn_score for p in db.scalars(select(RiskLevelPolicy))] == [0.8]
    audit = db.scalars(select(AuditEntry).where(AuditEntry.entity_type == "risk_policy")).all()
    assert [(a.actor, a.action) for a in audit] == [(f"user:{user.email}", "create"), (f"user:{user.email}", "update")]


def test_bad_risk_levels_keep_the_input_and_name_the_field(client, db, login):
    from offers.models import RiskLevelPolicy

    _, token = login("marketing")
    r = client.post("/admin/risk-levels", data={**RISK_FORM, "inactive_months": "two", "csrf_token": token})
    assert r.status_code == 400 and _field_errors(r) == {"inactive_months": "must be a whole number"}
    assert 'value="two"' in page_text(r)
    crossed = client.post("/admin/risk-levels", data={**RISK_FORM, "yellow_churn_score": "0.9", "csrf_token": token})
    assert crossed.status_code == 400 and "yellow_churn_score must not be above red_churn_score" in page_text(crossed)
    high = client.post("/admin/risk-levels", data={**RISK_FORM, "red_churn_score": "1.5", "csrf_token": token})
    assert high.status_code == 400 and "red_churn_score" in _field_errors(high)
    assert db.scalars(select(RiskLevelPolicy)).all() == []


def test_analysts_see_the_risk_levels_read_only(client, db, login):
    _, token = login("analyst")
    page = page_text(client.get("/admin/risk-levels"))
    assert "Read-only" in page and "Save risk levels" not in page
    r = client.post("/admin/risk-levels", data={**RISK_FORM, "csrf_token": token})
    assert r.status_code == 403 and "you are logged in as analyst" in page_text(r)
