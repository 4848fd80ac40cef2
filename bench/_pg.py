"""Shared set-up of the PostgreSQL benchmarks.

Each benchmark runs in a database of its own on the server named by an admin URL: created
fresh (``fresh_database``) through an AUTOCOMMIT connection, given the project's schema by
its Alembic migrations (``migrate``), and dropped afterwards (``drop_database``);
``migrated_database`` does all three around a ``with`` block. The experiment benchmarks
measure the same running experiment (``create_running_experiment``) and generate its
exposures server-side (``insert_exposures``).
"""

from __future__ import annotations

import os
import re
import resource
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import sessionmaker

from experiments.models import Experiment, ExperimentArm
from infra.db import make_engine
from infra.settings import PROJECT_ROOT, normalise_database_url

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
_DATABASE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")  # interpolated into SQL: plain names only


def admin_url_argument() -> str:
    """The admin URL a benchmark was started with: its first argument, else
    ``BENCH_DATABASE_URL``, else the local server."""
    return sys.argv[1] if len(sys.argv) > 1 else os.environ.get("BENCH_DATABASE_URL", DEFAULT_ADMIN_URL)


def postgres_admin_url(database_url: str) -> str:
    """``database_url`` with the project's driver; exits unless it names a PostgreSQL server."""
    admin_url = normalise_database_url("database_url", database_url)
    if not admin_url.startswith("postgresql"):
        raise SystemExit("this benchmark needs a PostgreSQL server URL")
    return admin_url


def _run_as_admin(admin_url: str, *statements: str) -> None:
    admin = make_engine(admin_url).execution_options(isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            for statement in statements:
                conn.execute(text(statement))
    finally:
        admin.dispose()


def fresh_database(admin_url: str, name: str) -> str:
    """Create database ``name`` on ``admin_url``'s server, dropping any left by an earlier
    run (and its connections); returns its URL."""
    if not _DATABASE_NAME.fullmatch(name):
        raise ValueError(f"not a plain database name: {name!r}")
    _run_as_admin(admin_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"CREATE DATABASE {name}")
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_database(admin_url: str, name: str) -> None:
    """Drop database ``name`` on ``admin_url``'s server, closing its connections."""
    if not _DATABASE_NAME.fullmatch(name):
        raise ValueError(f"not a plain database name: {name!r}")
    _run_as_admin(admin_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def migrate(engine: Engine) -> None:
    """Build the project's schema in ``engine``'s database with its Alembic migrations."""
    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.attributes["configure_logging"] = False
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "head")


@contextmanager
def migrated_database(database_url: str, name: str) -> Iterator[Engine]:
    """An engine on a fresh database ``name`` with the project's schema, on the PostgreSQL
    server of ``database_url``; the database is dropped when the block ends."""
    admin_url = postgres_admin_url(database_url)
    engine = make_engine(fresh_database(admin_url, name))
    try:
        migrate(engine)
        yield engine
    finally:
        engine.dispose()
        drop_database(admin_url, name)


def create_running_experiment(engine: Engine, key: str, started_at: datetime) -> int:
    """A running (pilot) experiment ``key`` with a control and a ``care_sms`` arm and a 10%
    holdout, started at ``started_at``; returns its id."""
    with sessionmaker(bind=engine)() as session:
        experiment = Experiment(
            key=key,
            name="Care SMS",
            status="pilot",
            target={},
            hash_seed=key,
            coverage=1.0,
            holdout_share=0.1,
            guardrails=[],
            promotion_policy={},
            phase=1,
            started_at=started_at,
        )
        experiment.arms = [
            ExperimentArm(key="control", weight=1, is_control=True, position=0),
            ExperimentArm(key="care_sms", weight=1, is_control=False, position=1),
        ]
        session.add(experiment)
        session.commit()
        return experiment.id


def insert_exposures(
    conn: Connection,
    experiment_id: int,
    count: int,
    *,
    id_digits: int,
    tiers: tuple[str, ...],
    first_exposed_at: str,
    **params: object,
) -> None:
    """``count`` exposures of the experiment of ``create_running_experiment``, generated by one
    server-side statement over ``g`` = 0..count-1: subscriber ``'s'`` + ``g`` zero-padded to
    ``id_digits``, every tenth in the holdout and the others alternating between control and
    care_sms, the tiers taken in turn, channel sms, first exposed at the SQL expression
    ``first_exposed_at`` (over ``g``, ``:n`` = count, and the bound ``params``)."""
    tier_array = ", ".join(f"'{tier}'" for tier in tiers)  # the benchmarks' own names, never input
    conn.execute(
        text(f"""
        INSERT INTO assignments (experiment_id, subscriber_id, arm_key, in_holdout, phase, tier,
                                 channel, first_exposed_at)
        SELECT :experiment_id, 's' || lpad(g::text, {id_digits:d}, '0'),
               CASE WHEN g % 10 = 0 THEN NULL WHEN g % 2 = 0 THEN 'control' ELSE 'care_sms' END,
               g % 10 = 0, 1, (ARRAY[{tier_array}])[1 + g % {len(tiers):d}], 'sms',
               {first_exposed_at}
        FROM generate_series(0, :n - 1) AS g"""),
        {"experiment_id": experiment_id, "n": count, **params},
    )


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB
