"""Fixtures for the browser tests: a live server on its own SQLite file, and a real Chromium.

The live server is the real app (``create_app``) served by Werkzeug in a background thread,
on a database migrated with Alembic and seeded with two users and a little catalogue, so
the pages a person sees are the pages the tests drive.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from werkzeug.serving import make_server

from carepilot.app import create_app
from infra.auth import create_user
from infra.db import Database, get_database, session_scope
from infra.settings import Settings
from offers import catalogue, schemas
from offers.config_service import create_config
from offers.models import Subscriber
from tests.databases import alembic_config

CHROMIUM = Path("/usr/bin/chromium")
# every browser test module's marks: its kind, and a skip that says how to get the browser
BROWSER_TESTS = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason=f"{CHROMIUM} is not installed; install it with `apt-get install chromium` (CI does)",
    ),
]
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PASSWORD = "browser-test-password"
SEED_ACTOR = "test:browser-seed"


@dataclass(frozen=True)
class LiveServer:
    url: str
    emails: dict[str, str]  # role -> email of a user with that role
    password: str


def _seed(session) -> dict[str, str]:
    """Users per role plus a small catalogue, so the overview has something to show."""
    emails = {}
    for role in ("admin", "marketing", "analyst"):
        emails[role] = create_user(
            session, email=f"{role}@browser.test", role=role, password=PASSWORD, name=role.title(), actor=SEED_ACTOR
        ).email
    create_config(
        session,
        catalogue.TIER_SCHEMES,
        schemas.TierSchemeIn(code="value", name="Value tiers", is_primary=True),
        actor=SEED_ACTOR,
    )
    tiers: tuple[tuple[str, dict[str, Any]], ...] = (
        ("vip", {"arpu": {"$gte": 100}}),
        ("value", {"arpu": {"$gte": 60}}),
        ("growth", {"arpu": {"$gte": 30}}),
        ("basic", {}),
    )
    for rank, (code, rule) in enumerate(tiers, start=1):
        create_config(
            session,
            catalogue.TIERS,
            schemas.TierIn(code=code, scheme_code="value", name=code.title(), rank=rank, rule=rule),
            actor=SEED_ACTOR,
        )
    create_config(
        session,
        catalogue.OFFERS,
        schemas.OfferIn(
            code="CARE_SMS",
            name="Care SMS",
            unit_cost=0.05,
            channels=["sms"],
            eligibility={"churn_score": {"$gte": 0.3}},
            prior_uplift=0.01,
        ),
        actor=SEED_ACTOR,
    )
    create_config(
        session,
        catalogue.BUDGETS,
        schemas.BudgetIn(code="retention-fund", name="Retention fund (1.5% of revenue)", cap_share_of_revenue=0.015),
        actor=SEED_ACTOR,
    )
    for i, (tier, arpu) in enumerate([("basic", 20.0)] * 5 + [("growth", 40.0)] * 3 + [("vip", 150.0)] * 2):
        session.add(
            Subscriber(
                id=f"s-{i}", attributes={"arpu": arpu}, tier=tier, tiers={"value": tier}, arpu=arpu, ltv=arpu * 24
            )
        )
    return emails


@contextmanager
def live_app(instance: Path, name: str) -> Iterator[tuple[str, Database]]:
    """The real app on a migrated SQLite file of its own in ``instance``, served by Werkzeug in
    a background thread: (its URL, its database)."""
    settings = Settings(
        database_url=f"sqlite:///{instance / 'browser.db'}",
        instance_dir=instance,
        secret_key="browser-test-secret",
        log_level="WARNING",
    )
    app = create_app(settings)
    database = get_database(app)
    with database.engine.begin() as conn:
        command.upgrade(alembic_config(conn), "head")
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name=name, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", database
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()
        database.engine.dispose()


@contextmanager
def browser_tab(chromium: Any, base_url: str) -> Iterator[Any]:
    """A fresh browser context (no cookies) and a tab in it, pointed at ``base_url``."""
    context = chromium.new_context(base_url=base_url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(10_000)
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_app(tmp_path_factory.mktemp("browser-instance"), "admin-ui-live-server") as (url, database):
        with session_scope(database.sessionmaker) as session:
            emails = _seed(session)
        yield LiveServer(url=url, emails=emails, password=PASSWORD)


@pytest.fixture(scope="session")
def chromium():
    """One headless Chromium for the run (the system's, never a downloaded one)."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture()
def page(chromium, live_server):
    """A fresh browser tab (no cookies) per test, pointed at the live server."""
    with browser_tab(chromium, live_server.url) as tab:
        yield tab
