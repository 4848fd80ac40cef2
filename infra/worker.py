"""The worker entry point (``carepilot-worker``): one RQ worker with its scheduler.

It preloads the numeric stack once in the parent so every forked work horse starts warm,
and makes sure no database connection crosses the fork.
"""

from __future__ import annotations

import logging
import sys

from rq import Worker

from infra.logging_setup import configure_logging
from infra.queues import QUEUE_NAMES
from infra.redis_conn import connect_redis
from infra.settings import Settings, SettingsError

log = logging.getLogger("carepilot.worker")


def preload() -> None:
    """Import the heavy libraries and configure mappers before forking work horses."""
    import numpy  # noqa: F401
    import scipy.stats  # noqa: F401
    from sqlalchemy.orm import configure_mappers

    import infra.all_models  # noqa: F401

    configure_mappers()


def main() -> None:
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        sys.exit(f"carepilot-worker: {exc}")
    configure_logging(settings.log_level, settings.log_format)
    preload()
    connection = connect_redis(settings)
    worker = Worker(list(QUEUE_NAMES), connection=connection)
    log.info("worker %s listening on %s", worker.name, ", ".join(QUEUE_NAMES))
    worker.work(with_scheduler=True, logging_level=settings.log_level)


if __name__ == "__main__":
    main()
