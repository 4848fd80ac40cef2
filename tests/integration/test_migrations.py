"""Migrations: one head, a clean upgrade/downgrade/upgrade round trip, and models that match."""

from __future__ import annotations

import uuid

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url

from carepilot.model_registry import metadata
from infra.db import make_engine
from tests.databases import alembic_config, drop_postgres_database, recreate_postgres_database


def test_single_head():
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    assert len(heads) == 1, f"migrations have several heads: {heads}"


@pytest.fixture(params=["sqlite", "postgresql"])
def scratch_url(request, tmp_path, settings):
    """An empty database of each kind (PostgreSQL only when the run is configured for it)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrations.db'}"
        return
    if settings.is_sqlite:
        pytest.skip("PostgreSQL round trip runs when DATABASE_URL points at PostgreSQL (CI does)")
    url = make_url(settings.database_url).set(database=f"carepilot_mig_{uuid.uuid4().hex[:8]}")
    scratch = url.render_as_string(hide_password=False)
    recreate_postgres_database(scratch)
    yield scratch
    drop_postgres_database(scratch)


def _run(url: str, *steps: tuple[str, str]) -> None:
    engine = make_engine(url)
    for action, target in steps:
        with engine.begin() as conn:
            getattr(command, action)(alembic_config(conn), target)
    engine.dispose()


def test_upgrade_downgrade_upgrade_round_trip(scratch_url):
    _run(scratch_url, ("upgrade", "head"))
    engine = make_engine(scratch_url)
    assert set(metadata.tables) <= set(inspect(engine).get_table_names())
    engine.dispose()

    _run(scratch_url, ("downgrade", "base"))
    engine = make_engine(scratch_url)
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    engine.dispose()

    _run(scratch_url, ("upgrade", "head"))


def test_models_match_migrations(scratch_url):
    _run(scratch_url, ("upgrade", "head"))
    engine = make_engine(scratch_url)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, metadata)
    engine.dispose()
    assert diff == [], f"models and migrations disagree; run alembic revision --autogenerate: {diff}"


def test_audit_log_is_append_only_on_postgresql(db, settings):
    if settings.is_sqlite:
        pytest.skip("the append-only trigger is a PostgreSQL feature")
    from sqlalchemy.exc import DBAPIError

    from infra.audit import record_audit

    record_audit(db, actor="test", action="create", entity_type="offer", entity_key="X")
    db.flush()
    with pytest.raises(DBAPIError, match="append-only"), db.begin_nested():
        db.execute(text("UPDATE audit_log SET actor = 'someone else'"))
