"""The readout pages in a real Chromium (Playwright): an analyst opens an experiment with a
readout and sees the retention chart (inline SVG), the per-arm table, the per-tier small
multiples and the promotion verdict — and no buttons.

The shared ``live_server`` has no experiments, so this module runs its own live server on its
own SQLite file, seeded like the shared one plus a pilot with data and one stored readout
(computed by the real readout job function).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
from sqlalchemy import update

from experiments import schemas as experiment_schemas
from experiments.jobs import run_readout
from experiments.models import Experiment
from experiments.service import create_experiment, get_experiment, transition_experiment
from infra.db import session_scope, utcnow
from offers import catalogue
from offers import schemas as offer_schemas
from offers.config_service import create_config
from tests.browser.conftest import BROWSER_TESTS, PASSWORD, SEED_ACTOR, _seed, browser_tab, live_app
from tests.integration.readout_data import KEY, OFFER, experiment_body, populate, winning_cells

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")
expect = sync_api.expect

pytestmark = [*BROWSER_TESTS, pytest.mark.heavy]


@dataclass(frozen=True)
class ReadoutServer:
    url: str
    emails: dict[str, str]
    readout: dict  # the summary run_readout returned


def _seed_pilot_with_readout(factory) -> dict:
    now = utcnow()
    with session_scope(factory) as session:
        create_config(session, catalogue.OFFERS, offer_schemas.OfferIn(**OFFER), actor=SEED_ACTOR)
        body = experiment_body(
            promotion_policy={"min_exposures_per_arm": 100, "min_runtime_days": 30, "mode": "approve"}
        )
        create_experiment(
            session, experiment_schemas.ExperimentIn.model_validate_json(json.dumps(body)), actor=SEED_ACTOR
        )
        experiment = transition_experiment(session, KEY, "pilot", actor=SEED_ACTOR)
        started = now - timedelta(days=45)
        session.execute(update(Experiment).where(Experiment.id == experiment.id).values(started_at=started))
        for phase in experiment.phases:
            phase.started_at = started
        session.flush()
        populate(session, get_experiment(session, KEY), winning_cells(400), now=now)
    return run_readout(factory, KEY, now.replace(microsecond=0))


@pytest.fixture(scope="module")
def readout_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReadoutServer]:
    with live_app(tmp_path_factory.mktemp("browser-readouts"), "admin-readouts-live-server") as (url, database):
        with session_scope(database.sessionmaker) as session:
            emails = _seed(session)
        summary = _seed_pilot_with_readout(database.sessionmaker)
        yield ReadoutServer(url=url, emails=emails, readout=summary)


@pytest.fixture()
def readout_page(chromium, readout_server):
    with browser_tab(chromium, readout_server.url) as tab:
        yield tab


def test_analyst_sees_the_readout_chart_and_table(readout_page, readout_server, tmp_path):
    page = readout_page
    page.goto("/admin/experiments")
    page.get_by_label("Email").fill(readout_server.emails["analyst"])
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(re.compile(r"/admin/experiments$"))

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Experiments").click()
    row = page.locator(f"#experiment-{KEY}")
    expect(row).to_contain_text("Bill credit vs no care")
    expect(row).to_contain_text("pilot")
    row.get_by_role("link", name=KEY).click()
    expect(page).to_have_url(re.compile(rf"/admin/experiments/{KEY}$"))
    expect(page.get_by_role("heading", name=re.compile("Bill credit vs no care"))).to_be_visible()

    # the chart: an inline SVG with one group per arm, drawn (it has a size on screen)
    chart = page.get_by_test_id("chart-all-arms").locator("svg")
    expect(chart).to_be_visible()
    expect(chart.locator("g.arm")).to_have_count(2)
    expect(chart.locator("circle.mean")).to_have_count(2)
    expect(chart.locator("line.reference")).to_have_count(1)
    box = chart.bounding_box()
    assert box is not None and box["width"] > 300 and box["height"] > 60
    # the CSP lets the stylesheet colour it: the mean dots are not black (SVG's default fill)
    fill = chart.locator("circle.mean").last.evaluate("el => getComputedStyle(el).fill")
    assert fill not in ("rgb(0, 0, 0)", "black", ""), fill

    table = page.get_by_test_id("arms-readout")
    expect(table).to_be_visible()
    expect(table.locator("tbody tr")).to_have_count(2)
    credit = table.locator('tr[data-arm="credit"]')
    expect(credit).to_contain_text(re.compile(r"\d+\.\d% to \d+\.\d%"))  # the retention interval
    expect(credit).to_contain_text(re.compile(r"\+\d+\.\d pp"))  # the uplift vs control
    expect(table.locator('tr[data-arm="control"]')).to_contain_text("baseline")

    tiers = page.get_by_test_id("tiers")
    expect(tiers.locator("svg.interval-chart")).to_have_count(2)
    expect(page.get_by_test_id("promotion-verdict")).to_contain_text("Promotion:")
    expect(page.get_by_test_id("csv-link")).to_have_attribute("href", f"/api/v1/experiments/{KEY}/readout.csv")
    # analysts read; they get no buttons
    expect(page.get_by_role("button", name="Approve promotion")).to_have_count(0)
    expect(page.get_by_role("button", name="Run readout now")).to_have_count(0)

    shot = tmp_path / "admin-readout.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 0
