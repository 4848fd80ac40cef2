"""The admin UI in a real Chromium (Playwright) against a live server: log in through the
form, see who you are, create an offer, see an inline condition error, log out."""

from __future__ import annotations

import re

import pytest

from tests.browser.conftest import BROWSER_TESTS

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")
expect = sync_api.expect

pytestmark = BROWSER_TESTS


def _log_in(page, email: str, password: str) -> None:
    page.goto("/admin/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


def test_login_shows_who_is_logged_in_and_the_overview(page, live_server, tmp_path):
    email = live_server.emails["marketing"]
    page.goto("/admin/offers")
    expect(page).to_have_url(re.compile(r"/admin/login\?next=/admin/offers$"))
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(live_server.password)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(re.compile(r"/admin/offers$"))  # back where the user was going

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Overview").click()
    expect(page).to_have_url(re.compile(r"/admin/$"))
    expect(page.get_by_test_id("current-user")).to_have_text(email)
    expect(page.get_by_test_id("current-role")).to_have_text("marketing")
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    expect(page.get_by_test_id("active-offers")).to_have_text(re.compile(r"^\d+$"))
    expect(page.get_by_role("cell", name="Retention fund (1.5% of revenue)")).to_be_visible()
    # For people to look at: kept in pytest's tmp dir whatever the pixels say.
    shot = tmp_path / "admin-overview.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 0


def test_wrong_password_shows_the_error_and_keeps_the_email(page, live_server):
    email = live_server.emails["analyst"]
    _log_in(page, email, "not the password")
    expect(page.get_by_test_id("login-error")).to_have_text("Wrong email or password.")
    expect(page.get_by_label("Email")).to_have_value(email)
    expect(page.get_by_label("Password")).to_have_value("")
    page.goto("/admin/")
    expect(page).to_have_url(re.compile(r"/admin/login"))  # still logged out


def test_marketing_creates_an_offer_and_sees_it_in_the_table(page, live_server):
    _log_in(page, live_server.emails["marketing"], live_server.password)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Offers").click()
    page.get_by_role("link", name="New offer").click()
    page.get_by_label("Code").fill("GIGABIT_UPGRADE")
    page.get_by_label("Name").fill("Gigabit broadband upgrade")
    page.get_by_label("Unit cost").fill("12.5")
    page.get_by_label("app").check()
    page.get_by_label("call_centre").check()
    page.get_by_label("Eligibility (condition JSON)").fill('{"broadband_tenure_months": {"$gt": 36}}')
    page.get_by_role("button", name="Create offer").click()

    expect(page).to_have_url(re.compile(r"/admin/offers$"))
    expect(page.get_by_role("status")).to_have_text("Offer GIGABIT_UPGRADE created.")
    row = page.locator("#offer-GIGABIT_UPGRADE")
    expect(row).to_contain_text("Gigabit broadband upgrade")
    expect(row).to_contain_text("12.50 EUR")
    expect(row).to_contain_text("call_centre")
    expect(row).to_contain_text('"$gt": 36')

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Audit log").click()
    expect(page.get_by_role("row").filter(has_text="GIGABIT_UPGRADE").first).to_contain_text(
        f"user:{live_server.emails['marketing']}"
    )


def test_invalid_condition_is_shown_inline_and_the_input_is_kept(page, live_server):
    _log_in(page, live_server.emails["admin"], live_server.password)
    page.goto("/admin/offers/new")
    typed = '{"tenure_months": {"$gtee": 36}}'
    page.get_by_label("Code").fill("BROKEN_OFFER")
    page.get_by_label("Name").fill("Broken offer")
    page.get_by_label("Unit cost").fill("1")
    page.get_by_label("sms").check()
    page.get_by_label("Eligibility (condition JSON)").fill(typed)
    page.get_by_role("button", name="Create offer").click()

    expect(page.get_by_test_id("error-eligibility")).to_have_text(
        "unknown operator $gtee (at $.eligibility.tenure_months.$gtee)"
    )
    expect(page.get_by_label("Eligibility (condition JSON)")).to_have_value(typed)
    expect(page.get_by_label("Name")).to_have_value("Broken offer")
    expect(page.get_by_label("sms")).to_be_checked()
    page.goto("/admin/offers")
    expect(page.locator("#offer-BROKEN_OFFER")).to_have_count(0)


def test_analyst_sees_offers_read_only(page, live_server):
    _log_in(page, live_server.emails["analyst"], live_server.password)
    page.goto("/admin/offers")
    expect(page.locator("#offer-CARE_SMS")).to_be_visible()
    expect(page.get_by_role("link", name="New offer")).to_have_count(0)
    expect(page.get_by_role("button", name="Deactivate")).to_have_count(0)
    page.goto("/admin/offers/new")
    expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()


def test_logout_ends_the_session(page, live_server):
    _log_in(page, live_server.emails["marketing"], live_server.password)
    expect(page.get_by_test_id("current-user")).to_be_visible()
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/admin/login$"))
    expect(page.get_by_role("status")).to_have_text("You are logged out.")
    page.goto("/admin/offers")
    expect(page).to_have_url(re.compile(r"/admin/login\?next="))
    expect(page.get_by_test_id("current-user")).to_have_count(0)


def test_marketing_changes_a_risk_threshold_and_a_bad_one_is_shown_inline(page, live_server):
    _log_in(page, live_server.emails["marketing"], live_server.password)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Risk levels").click()
    page.get_by_label("Yellow from churn score").fill("0.9")  # above red: refused, input kept
    page.get_by_role("button", name="Save risk levels").click()
    expect(page.get_by_test_id("error-form")).to_have_text("yellow_churn_score must not be above red_churn_score")
    expect(page.get_by_label("Yellow from churn score")).to_have_value("0.9")

    page.get_by_label("Yellow from churn score").fill("0.35")
    page.get_by_label("Inactive months").fill("2")
    page.get_by_role("button", name="Save risk levels").click()
    expect(page.get_by_role("status")).to_have_text("Risk levels saved: the next decisions use them.")
    expect(page.get_by_label("Yellow from churn score")).to_have_value("0.35")
    expect(page.get_by_label("Inactive months")).to_have_value("2")
