"""The worker entry point (``carepilot-worker``): one RQ worker with its scheduler, and
rq's cron scheduler (``carepilot.cron``) in a child process for the periodic jobs.

It preloads the numeric stack (numpy, scipy, PyMC) once in the parent so every forked work
horse starts warm, and makes sure no database connection crosses the fork: jobs build their
engine in the work horse (``infra.job_runtime``). ``--no-cron`` leaves the schedule to
another host (any number may run it: the ticks only enqueue under deterministic ids).
"""

from __future__ import annotations

import logging
import multiprocessing
import sys

from infra.logging_setup import configure_logging
from infra.queues import QUEUE_NAMES, QueueWorker
from infra.redis_conn import connect_redis
from infra.settings import Settings, SettingsError

log = logging.getLogger("carepilot.worker")


def preload() -> None:
    """Import the heavy libraries and configure mappers before forking work horses."""
    import numpy  # noqa: F401
    import pymc  # noqa: F401  (seconds to import: once here, not in every job)
    import scipy.stats  # noqa: F401
    from sqlalchemy.orm import configure_mappers

    import carepilot.model_registry  # noqa: F401

    configure_mappers()


def main() -> None:
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        sys.exit(f"carepilot-worker: {exc}")
    configure_logging(settings.log_level, settings.log_format)
    preload()
    cron = None
    if "--no-cron" not in sys.argv[1:]:
        from carepilot.cron import run_cron

        cron = multiprocessing.get_context("fork").Process(target=run_cron, name="carepilot-cron", daemon=True)
        cron.start()
    connection = connect_redis(settings)
    worker = QueueWorker(list(QUEUE_NAMES), connection=connection)
    log.info("worker %s listening on %s", worker.name, ", ".join(QUEUE_NAMES))
    try:
        worker.work(with_scheduler=True, logging_level=settings.log_level)
    finally:
        if cron is not None:
            cron.terminate()
            cron.join(timeout=10)


if __name__ == "__main__":
    main()
