"""What a job needs outside a web request: settings and a session factory per process.

RQ runs each job in a forked work horse; an engine inherited across fork would share sockets
with the parent, so the factory is rebuilt whenever the process id changes.
"""

from __future__ import annotations

import os

from sqlalchemy.orm import sessionmaker

from infra.db import Database
from infra.settings import Settings

_state: dict[str, object] = {}


def job_sessionmaker() -> sessionmaker:
    """A session factory for this process (built on first use, rebuilt after a fork)."""
    if _state.get("pid") != os.getpid():
        _state["db"] = Database(Settings.from_env().database_url)
        _state["pid"] = os.getpid()
    return _state["db"].sessionmaker  # type: ignore[union-attr]


def bind_job_database(database: Database) -> None:
    """Make jobs in this process use ``database`` (tests and the in-process burst worker)."""
    _state["db"] = database
    _state["pid"] = os.getpid()
