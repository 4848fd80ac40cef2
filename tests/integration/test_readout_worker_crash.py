"""A real ``carepilot-worker`` process whose work horse is killed with SIGKILL mid-readout:
rq retries the job, and there is exactly one readout and at most one promotion.

The worker is another process, so it cannot see the per-test rolled-back transaction: this
test builds its own database (a PostgreSQL database beside the test one, or a SQLite file),
migrates it with Alembic, commits its data there, and drops it afterwards.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta

import pytest
from rq.job import Job
from sqlalchemy import func, select, update

from experiments import schemas
from experiments.jobs import enqueue_readout
from experiments.models import Experiment, Promotion, Readout
from experiments.service import create_experiment, transition_experiment
from infra.db import Database, session_scope, utcnow
from infra.redis_conn import embedded_redis_url
from infra.settings import PROJECT_ROOT
from offers.models import Offer
from tests.databases import database_url, throwaway_database
from tests.integration.readout_data import KEY, LENIENT_POLICY, OFFER, populate, winning_cells

pytestmark = pytest.mark.heavy

WAIT_S = 180


@pytest.fixture()
def worker_database(settings, tmp_path):
    """A fresh, migrated database of the configured kind for the worker process; dropped afterwards."""
    with throwaway_database(settings, "worker_crash", tmp_path) as database:
        yield database


def _seed(database: Database) -> None:
    """A pilot whose credit arm clearly wins, policy mode auto."""
    now = utcnow()
    with session_scope(database.sessionmaker) as session:
        session.add(
            Offer(
                code=OFFER["code"],
                name=OFFER["name"],
                unit_cost=OFFER["unit_cost"],
                channels=OFFER["channels"],
                eligibility={},
            )
        )
        session.flush()
        body = schemas.ExperimentIn.model_validate(
            {
                "key": KEY,
                "name": "crash test",
                "coverage": 0.5,
                "promotion_policy": LENIENT_POLICY,
                "arms": [{"key": "control"}, {"key": "credit", "offer_code": OFFER["code"]}],
            }
        )
        create_experiment(session, body, actor="test")
        experiment = transition_experiment(session, KEY, "pilot", actor="test")
        session.execute(
            update(Experiment).where(Experiment.id == experiment.id).values(started_at=now - timedelta(days=45))
        )
        session.refresh(experiment)
        populate(session, experiment, winning_cells(1000), now=now)


def _wait_for(predicate, what: str, timeout_s: float = WAIT_S):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def test_a_readout_killed_mid_run_is_retried_and_stored_once(settings, redis, worker_database):
    _seed(worker_database)
    redis_url = settings.redis_url or embedded_redis_url(settings.instance_dir)
    env = {
        **os.environ,
        "DATABASE_URL": database_url(worker_database),
        "REDIS_URL": redis_url,
        "CAREPILOT_INSTANCE_DIR": str(settings.instance_dir),
        "CAREPILOT_LOG_LEVEL": "WARNING",
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "carepilot.worker", "--no-cron"],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        cutoff = utcnow().replace(microsecond=0)
        job, created = enqueue_readout(redis, KEY, cutoff)
        assert created

        def horse_in_the_sampler() -> int | None:
            meta = job.get_meta(refresh=True)
            return meta.get("pid") if meta.get("stage") == "hierarchical" else None

        horse = _wait_for(horse_in_the_sampler, "the readout to reach the hierarchical model")
        assert horse != worker.pid
        os.kill(horse, signal.SIGKILL)

        def finished() -> bool:
            status = Job.fetch(job.id, connection=redis).get_status(refresh=True)
            assert status != "failed", "the job failed instead of being retried"
            return status == "finished"

        _wait_for(finished, "the retried readout to finish")
        done = Job.fetch(job.id, connection=redis)
        assert done.retries_left == 2  # of 3: the killed run used one
        result = done.return_value()
        assert result is not None
        assert result["new"] is True and result["promoted"] is True
        with worker_database.sessionmaker() as session:
            assert session.scalar(select(func.count()).select_from(Readout)) == 1
            assert session.scalar(select(func.count()).select_from(Promotion)) == 1
            assert session.scalar(select(Experiment.status)) == "rollout"
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
