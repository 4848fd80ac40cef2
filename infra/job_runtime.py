"""What a job needs outside a web request: settings and a session factory per process.

RQ runs each job in a forked work horse; an engine inherited across fork would share sockets
with the parent, so the factory is rebuilt whenever the process id changes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import redis
from rq import get_current_job
from sqlalchemy.orm import Session, sessionmaker

from infra import config_version
from infra.db import Database
from infra.redis_conn import connect_redis
from infra.settings import Settings


@dataclass
class _ProcessDatabase:
    database: Database
    pid: int


_current: list[_ProcessDatabase] = []  # at most one: this process's


def job_sessionmaker() -> sessionmaker[Session]:
    """A session factory for this process (built on first use, rebuilt after a fork)."""
    if not _current or _current[0].pid != os.getpid():
        settings = Settings.from_env()
        _current[:] = [_ProcessDatabase(Database(settings.database_url), os.getpid())]
        # audited writes of jobs (promotion, ROI alarm) move the config version too
        config_version.use_redis(_lazy_redis(settings))
    return _current[0].database.sessionmaker


def current_job_connection() -> redis.Redis:
    """The Redis connection of the RQ job being run (for a job that enqueues others)."""
    job = get_current_job()
    assert job is not None  # only job entry points call this, and RQ runs them inside their job
    return job.connection


def bind_job_database(database: Database) -> None:
    """Make jobs in this process use ``database`` (tests and the in-process burst worker)."""
    _current[:] = [_ProcessDatabase(database, os.getpid())]


def _lazy_redis(settings: Settings) -> Callable[[], redis.Redis]:
    """A callable that connects to Redis on first call and then returns the same client."""
    clients: list[redis.Redis] = []

    def client() -> redis.Redis:
        if not clients:
            clients.append(connect_redis(settings))
        return clients[0]

    return client
