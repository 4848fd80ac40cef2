"""The periodic schedule, run by rq's cron scheduler beside each worker.

Three ticks, all cheap and idempotent: every minute the due readouts are enqueued (each
experiment has its own interval, default hourly, under deterministic job ids) and the budget
ledger is rebuilt from the decisions table if Redis lost its data; on the 1st of each month at
03:00 UTC the re-tiering of the whole base is enqueued.
"""

from __future__ import annotations

import logging
import os
import time

import redis
from rq.cron import CronScheduler

from decisioning.jobs import reconcile_ledger_job
from experiments.jobs import monthly_retier_job, schedule_readouts_job
from infra.logging_setup import configure_logging
from infra.redis_conn import connect_redis
from infra.settings import Settings

READOUT_TICK_S = 60
MONTHLY_RETIER_CRON = "0 3 1 * *"


def build_cron(connection: redis.Redis, log_level: str = "INFO") -> CronScheduler:
    """A cron scheduler with carepilot's periodic jobs registered."""
    cron = CronScheduler(connection=connection, logging_level=log_level)
    cron.register(schedule_readouts_job, queue_name="default", interval=READOUT_TICK_S, job_timeout=120)
    cron.register(reconcile_ledger_job, queue_name="default", interval=READOUT_TICK_S, job_timeout=600)
    cron.register(monthly_retier_job, queue_name="default", cron=MONTHLY_RETIER_CRON, job_timeout=120)
    return cron


def run_cron() -> None:
    """Run the cron loop until SIGTERM/SIGINT (the worker starts it as a child process)."""
    os.environ["TZ"] = "UTC"  # rq reads cron fields in local time; the schedule is in UTC
    time.tzset()
    settings = Settings.from_env()
    configure_logging(settings.log_level, settings.log_format)
    logging.getLogger("carepilot.cron").info("cron scheduler starting")
    build_cron(connect_redis(settings), settings.log_level).start()
