"""The database going away: requests get a 503 they may retry (an HTML page in the admin UI),
never a 500; the decision store's own pool neither answers a 500 when every connection is busy
nor fails a request per stale connection after a server restart."""

from __future__ import annotations

from contextlib import ExitStack

import psycopg
import pytest
from sqlalchemy.orm import sessionmaker

from decisioning.schemas import DecisionIn
from decisioning.service import new_contact
from decisioning.store import StoreUnavailable
from infra.auth import forget_cached_keys
from infra.db import get_database, make_engine
from tests.integration.admin_forms import log_in_through_the_form

UNREACHABLE = ["postgresql+psycopg://postgres@127.0.0.1:1/nowhere", "sqlite:////nonexistent-carepilot-dir/carepilot.db"]


@pytest.fixture()
def database_down(app, db):
    """Call it with a URL to point the app's sessions at a database that cannot be reached (the
    ``db`` fixture points them back at the end)."""
    engines = []

    def down(url: str) -> None:
        engines.append(make_engine(url))
        forget_cached_keys()  # each key must be looked up in the database
        get_database(app).sessionmaker.configure(bind=engines[-1])

    yield down
    for engine in engines:
        engine.dispose()


@pytest.mark.parametrize("unreachable", UNREACHABLE)
def test_an_api_call_while_the_database_is_down_is_a_503(client, auth, database_down, unreachable):
    database_down(unreachable)
    r = client.get("/api/v1/offers", headers=auth["marketing"])
    assert r.status_code == 503, r.get_data(as_text=True)
    assert r.json["error"]["code"] == "database_unavailable" and r.headers["Retry-After"] == "1"


@pytest.mark.parametrize("unreachable", UNREACHABLE)
def test_an_admin_page_while_the_database_is_down_is_a_503_page(client, db, password, database_down, unreachable):
    log_in_through_the_form(client, db, "marketing", password)
    database_down(unreachable)
    page = client.get("/admin/offers")
    assert page.status_code == 503 and "Database unavailable" in page.get_data(as_text=True)
    assert page.mimetype == "text/html"


def _postgres_only(settings) -> None:
    if settings.is_sqlite:
        pytest.skip("the decision store's own pool is PostgreSQL's")


def _contact() -> list:
    return [new_contact(0, "key:test", DecisionIn(subscriber_id="s-1", channel="sms"))]


def test_a_decision_store_with_every_connection_busy_is_unavailable_not_an_error(settings, monkeypatch):
    from decisioning import store_pg

    _postgres_only(settings)
    monkeypatch.setattr(store_pg, "POOL_TIMEOUT_S", 0.2)
    engine = make_engine(settings.database_url)
    store = store_pg.PostgresStore(sessionmaker(bind=engine))
    try:
        with ExitStack() as held:
            for _ in range(20):  # the pool's 10 and its overflow's 10
                held.enter_context(store.connect())
            with pytest.raises(StoreUnavailable):  # was sqlalchemy's TimeoutError: a 500
                held.enter_context(store.connect())
    finally:
        engine.dispose()


def test_after_a_database_restart_one_decision_fails_not_one_per_pooled_connection(settings):
    """Terminated backends (what a restart or failover does to a pool): the first use of a dead
    connection fails (503) and empties the pool, so the next decision gets a fresh connection."""
    from decisioning.store_pg import PostgresStore

    _postgres_only(settings)
    engine = make_engine(settings.database_url)
    store = PostgresStore(sessionmaker(bind=engine))
    try:
        pids = []
        with ExitStack() as held:  # three connections in the pool
            for _ in range(3):
                db = held.enter_context(store.connect())
                pids.append(db._execute("SELECT pg_backend_pid()", {})[0][0])
        conninfo = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(conninfo, autocommit=True) as admin:
            for pid in pids:
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(StoreUnavailable), store.connect() as db:
            db.read(_contact(), {})
        outcomes = []
        for _ in range(2):
            with store.connect() as db:
                outcomes.append(db.read(_contact(), {}))
        assert outcomes == [{}, {}]  # no stale connection left to fail another request
    finally:
        engine.dispose()
