"""The configuration version: a counter in Redis moved on after every audited write commits.

Decision processes keep a compiled config snapshot and rebuild it only when this counter
moves (DESIGN §4: never per request). Every config change writes an audit row in its
transaction (``infra.audit.record_audit`` marks the session), and after that transaction
commits the counter is incremented — after, so a process that sees the new version and
rebuilds reads the committed change.

If Redis cannot be reached at that moment the bump is lost, so readers also rebuild when their
snapshot is older than ``MAX_SNAPSHOT_AGE_S`` (see ``decisioning.snapshot_cache``).
"""

from __future__ import annotations

import logging
import secrets
import uuid
from collections.abc import Callable
from typing import Any

import redis
from sqlalchemy import event
from sqlalchemy.orm import Session

CONFIG_VERSION_KEY = "cp:config_version"
CONFIG_EPOCH_KEY = "cp:config_epoch"
CHANGED_FLAG = "carepilot.config_changed"
BUMP_FAILED_FLAG = "carepilot.config_bump_failed"
BUMP_STEP_RANGE = 1 << 20  # steps of 1 .. 2**20: about 2**43 changes before the counter's 2**63
log = logging.getLogger("carepilot.config")

_redis_source: list[Callable[[], Any]] = []


def use_redis(source: Callable[[], Any]) -> None:
    """Where to bump the counter: a callable returning this process's Redis client."""
    _redis_source[:] = [source]


def mark_changed(session: Session) -> None:
    """Note that ``session``'s transaction changes configuration (bumped when it commits)."""
    session.info[CHANGED_FLAG] = True


def read_version(client: Any) -> tuple[str, int]:
    """(epoch, counter). The counter starts at 0; the epoch is a random token set once per Redis
    dataset, so a Redis that lost its data (counter back to 0) is never mistaken for the
    configuration a snapshot was built from."""
    return parse_version(client, client.mget(CONFIG_EPOCH_KEY, CONFIG_VERSION_KEY))


def parse_version(client: Any, reply: list[Any]) -> tuple[str, int]:
    """(epoch, counter) from a reply to ``MGET CONFIG_EPOCH_KEY CONFIG_VERSION_KEY`` (callers may
    pipeline it with other commands); sets the epoch first if this dataset has none."""
    epoch, value = reply
    if epoch is None:
        client.set(CONFIG_EPOCH_KEY, uuid.uuid4().hex, nx=True)
        epoch, value = client.mget(CONFIG_EPOCH_KEY, CONFIG_VERSION_KEY)
    return epoch.decode() if isinstance(epoch, bytes) else str(epoch), int(value) if value is not None else 0


def bump(client: Any) -> int:
    """Move the version on by a random step. A Redis that came back from a lagging replica or
    an older snapshot keeps its epoch but not its latest counter: a step of 1 would land the
    next change on a version some process already holds, which would then never load it."""
    return int(client.incrby(CONFIG_VERSION_KEY, 1 + secrets.randbelow(BUMP_STEP_RANGE)))


def bump_failed(session: Session) -> bool:
    """Whether the change ``session`` committed last could not be announced (Redis down):
    decisions then pick it up only when their snapshot reaches its maximum age."""
    return bool(session.info.pop(BUMP_FAILED_FLAG, False))


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    if not session.info.pop(CHANGED_FLAG, False) or not _redis_source:
        return
    try:
        bump(_redis_source[0]())
    except (redis.RedisError, OSError) as exc:  # readers fall back to the snapshot's maximum age
        session.info[BUMP_FAILED_FLAG] = True
        log.warning("config version not bumped (Redis unavailable: %s)", exc)


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(CHANGED_FLAG, None)
