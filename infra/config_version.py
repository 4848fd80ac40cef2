"""The configuration version: a generation in the database and a counter in Redis, both moved
on by every audited config change.

Decision processes keep a compiled config snapshot and rebuild it only when the config
moves (DESIGN §4: never per request). Every config change writes an audit row in its
transaction (``infra.audit.record_audit`` marks the session), and:

* the generation (``config_generation``, one row) is incremented in that same transaction, as
  its last statement, so it commits with the change or not at all. Every decision reads it
  with the profiles (no extra round trip) and rebuilds when it moved: a change reaches every
  process's next decision even when Redis could not announce it. The snapshot carries it as
  its ``version``, which each decision row records;
* after that transaction commits, the Redis counter is moved on — after, so a process that
  sees it move and rebuilds reads the committed change. It lets a process rebuild before its
  database read (the contact windows and spend it read from Redis then match the new
  snapshot); if Redis cannot be reached the bump is lost and the generation catches it.
"""

from __future__ import annotations

import logging
import secrets
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import redis
from sqlalchemy import BigInteger, SmallInteger, event, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from infra.db import Base, UtcDateTime, matched_rows, utcnow

CONFIG_VERSION_KEY = "cp:config_version"
CONFIG_EPOCH_KEY = "cp:config_epoch"
CHANGED_FLAG = "carepilot.config_changed"
BUMP_STEP_RANGE = 1 << 20  # steps of 1 .. 2**20: about 2**43 changes before the counter's 2**63
log = logging.getLogger("carepilot.config")

_redis_source: list[Callable[[], Any]] = []


def use_redis(source: Callable[[], Any]) -> None:
    """Where to bump the counter: a callable returning this process's Redis client."""
    _redis_source[:] = [source]


class ConfigGeneration(Base):
    """One row (id 1): the configuration's generation, moved on by every audited change."""

    __tablename__ = "config_generation"
    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    generation: Mapped[int] = mapped_column(BigInteger)
    changed_at: Mapped[datetime] = mapped_column(UtcDateTime(timezone=True))


def mark_changed(session: Session) -> None:
    """Note that ``session``'s transaction changes configuration: the generation moves on as
    it commits, and the Redis counter after."""
    session.info[CHANGED_FLAG] = True


def read_generation(session: Session) -> int:
    """The committed configuration generation (0 if the row is missing)."""
    return session.scalar(select(ConfigGeneration.generation).where(ConfigGeneration.id == 1)) or 0


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


@event.listens_for(Session, "before_commit")
def _before_commit(session: Session) -> None:
    # after the flush of the change (the update autoflushes), as the transaction's last
    # statement: the row is locked only while committing, so a change holding it never waits
    # for another lock and concurrent changes cannot deadlock on it. Not on a savepoint's
    # release: once per transaction.
    if session.info.get(CHANGED_FLAG) and not session.in_nested_transaction():
        moved = session.execute(
            update(ConfigGeneration)
            .where(ConfigGeneration.id == 1)
            .values(generation=ConfigGeneration.generation + 1, changed_at=utcnow())
        )
        if matched_rows(moved) != 1:
            log.error(
                "the config_generation row is missing (run the migrations): decisions see this change "
                "only through Redis, or when their snapshot reaches its age limit"
            )


# A savepoint's release or rollback (SQLAlchemy signals both like a transaction's) must leave
# the flag for the transaction's own commit: else the generation would not move, and Redis
# would be told before the change is committed.
@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    if session.in_nested_transaction():
        return
    if not session.info.pop(CHANGED_FLAG, False) or not _redis_source:
        return
    try:
        bump(_redis_source[0]())
    except (redis.RedisError, OSError) as exc:  # readers see the change by its generation
        log.warning("config version not bumped (Redis unavailable: %s)", exc)


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    if not session.in_nested_transaction():  # a savepoint's rollback may leave earlier changes
        session.info.pop(CHANGED_FLAG, None)
