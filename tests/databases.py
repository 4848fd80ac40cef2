"""Databases and Redis databases the tests make for themselves.

- With pytest-xdist, each worker process (``gw0``, ``gw1``…) gets its own PostgreSQL database
  (``<name>_gw0``…) and its own Redis database number, so parallel workers never see each
  other's rows, counters or queues. Without xdist the configured ones are used as they are.
- A test that other processes must open (a forked decision race, a worker subprocess) gets a
  throwaway migrated database of the suite's kind, named after the suite's own.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from infra.db import Database, make_engine
from infra.settings import PROJECT_ROOT, Settings

REDIS_DATABASES = 16  # Redis's default `databases` setting


def alembic_config(connection: object = None) -> Config:
    """The project's Alembic configuration, run on ``connection`` when one is given."""
    cfg = Config(str(PROJECT_ROOT / "alembic.ini"))
    cfg.attributes["configure_logging"] = False
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def xdist_worker() -> str | None:
    """The pytest-xdist worker this process is (``gw0``…), or None outside xdist."""
    return os.environ.get("PYTEST_XDIST_WORKER")


def per_worker_database_url(url: str, worker: str | None) -> str:
    """The PostgreSQL URL this worker uses: the configured database's name + ``_<worker>``."""
    if worker is None:
        return url
    parsed = make_url(url)
    return parsed.set(database=f"{parsed.database}_{worker}").render_as_string(hide_password=False)


def per_worker_redis_url(url: str, worker: str | None) -> str:
    """The Redis URL this worker uses: the configured database number, counting down per worker
    (CI's db 15 → 15, 14 for two workers), so workers share no keys."""
    parts = urlsplit(url)
    if not url or worker is None or parts.scheme not in ("redis", "rediss"):
        return url  # a unix socket names no database: its workers share it
    configured = int(parts.path.strip("/") or 0)
    number = (configured - int(worker.removeprefix("gw"))) % REDIS_DATABASES
    return urlunsplit(parts._replace(path=f"/{number}"))


def _maintenance_engine(url: str) -> Engine:
    admin_url = make_url(url).set(database="postgres").render_as_string(hide_password=False)
    return make_engine(admin_url).execution_options(isolation_level="AUTOCOMMIT")


def recreate_postgres_database(url: str) -> None:
    """Drop (closing its sessions) and create the database ``url`` names."""
    name = make_url(url).database
    admin = _maintenance_engine(url)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()


def drop_postgres_database(url: str) -> None:
    """Drop the database ``url`` names, closing its sessions."""
    admin = _maintenance_engine(url)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'))
    admin.dispose()


def database_url(database: Database) -> str:
    """The URL of ``database``, password included, for another process to open."""
    return database.engine.url.render_as_string(hide_password=False)


@contextmanager
def throwaway_database(settings: Settings, purpose: str, sqlite_dir: Path) -> Iterator[Database]:
    """A fresh, migrated database of the suite's kind that only the caller uses: a SQLite file
    in ``sqlite_dir``, or ``<suite database>_<purpose>`` on PostgreSQL; dropped afterwards."""
    if settings.is_sqlite:
        url = f"sqlite:///{sqlite_dir / f'{purpose}.db'}"
    else:
        suite = make_url(settings.database_url)
        url = suite.set(database=f"{suite.database}_{purpose}").render_as_string(hide_password=False)
        recreate_postgres_database(url)
    database = Database(url)
    try:
        with database.engine.begin() as conn:
            command.upgrade(alembic_config(conn), "head")
        yield database
    finally:
        database.engine.dispose()  # a PostgreSQL store's own pool goes with it
        if not settings.is_sqlite:
            drop_postgres_database(url)
