"""Subscriber profiles: upserts with tiers computed at write time, and re-tiering the base.

A profile's tiers (one per active scheme, plus the primary scheme's tier in ``tier``) are
computed when it is written, so the decision hot path and reports read them from the row.
When tier rules change, ``retier_all`` recomputes them for the whole base.

Writes are SQLAlchemy Core upserts (``INSERT … ON CONFLICT (id) DO UPDATE``, see
``offers.subscriber_writing``), so concurrent writers of the same id cannot collide and
batches build no ORM objects. ``upsert_profile`` and ``upsert_profiles`` take a session and
never commit, like every service. ``retier_all`` (and the bulk import in
``offers.subscriber_import``) take a session *factory* and commit per batch instead: they
walk a whole base, and one transaction per million rows would hold its locks and undo for
minutes and lose everything on one failure.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, cast

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.orm import Session, sessionmaker

from infra.db import utcnow
from infra.errors import NotFound
from offers.models import Subscriber
from offers.repository import load_tier_assigner
from offers.subscriber_attributes import ProfileError, coerce_profile, validate_subscriber_id
from offers.subscriber_writing import ProfileRow, profile_row, write_profiles
from offers.tiering import TierAssigner

SUBSCRIBERS = cast(Table, Subscriber.__table__)  # declarative maps a Table; its base types it FromClause
_UPSERT_CHUNK_ROWS = 5_000


def prepare_row(attributes: dict[str, Any], assigner: TierAssigner) -> ProfileRow:
    """The row for validated ``attributes``, tiered by ``assigner``."""
    return profile_row(attributes, assigner.assign(attributes))


def profile_json(subscriber: Subscriber) -> dict[str, Any]:
    """A stored profile as the API returns it."""
    return {
        "subscriber_id": subscriber.id,
        "attributes": subscriber.attributes,
        "tier": subscriber.tier,
        "tiers": subscriber.tiers,
        "arpu": subscriber.arpu,
        "ltv": subscriber.ltv,
        "updated_at": subscriber.updated_at.isoformat(),
    }


def get_profile(session: Session, subscriber_id: str) -> Subscriber:
    """The stored profile, or NotFound."""
    subscriber = session.get(Subscriber, subscriber_id)
    if subscriber is None:
        raise NotFound(f"no subscriber {subscriber_id!r}", code="subscriber_not_found")
    return subscriber


def upsert_profile(
    session: Session, subscriber_id: str, attributes: Mapping[str, Any], assigner: TierAssigner
) -> Subscriber:
    """Create or replace one profile from JSON-typed ``attributes`` and compute its tiers.

    Raises ProfileError for a bad id or attribute. Does not commit.
    """
    sid = validate_subscriber_id(subscriber_id)
    row = prepare_row(coerce_profile(attributes, "json"), assigner)
    write_profiles(session, {sid: row}, utcnow())
    subscriber = session.get(Subscriber, sid, populate_existing=True)
    assert subscriber is not None  # just written, in this transaction
    return subscriber


def upsert_profiles(session: Session, rows: Iterable[tuple[str, Mapping[str, Any]]], assigner: TierAssigner) -> int:
    """Create or replace many profiles (JSON-typed attributes) in batched upserts; a repeated
    id keeps its last attributes. Returns the number of rows written.

    Validates every row first and raises ProfileError, naming the subscriber, before writing
    a batch with a bad row in it. Does not commit: the caller's transaction holds them all.
    For files of untrusted rows use ``offers.subscriber_import``, which reports bad rows
    instead of refusing the lot.
    """
    written = 0
    batch: dict[str, ProfileRow] = {}
    now = utcnow()
    for subscriber_id, attributes in rows:
        try:
            sid = validate_subscriber_id(subscriber_id)
            batch[sid] = prepare_row(coerce_profile(attributes, "json"), assigner)
        except ProfileError as exc:
            raise ProfileError(f"subscriber {subscriber_id!r}: {exc.message}", exc.attribute) from None
        if len(batch) >= _UPSERT_CHUNK_ROWS:
            write_profiles(session, batch, now)
            written += len(batch)
            batch = {}
    write_profiles(session, batch, now)
    return written + len(batch)


def retier_all(session_factory: sessionmaker[Session], *, batch_rows: int = 5_000) -> dict[str, Any]:
    """Recompute every profile's tiers with the current tier rules; write only the changes.

    Walks the base in id order (keyset pagination, so each page is an index range scan and
    memory stays flat), one committed transaction per page. A row rewritten by an import
    while its page was being tiered is left alone: it already carries fresh tiers (the
    update matches on the ``updated_at`` that was read).

    Returns ``{"scanned", "changed", "by_tier", "untiered"}``, ``by_tier`` counting every
    scanned profile by its primary tier after the run.
    """
    if batch_rows < 1:
        raise ValueError("batch_rows must be at least 1")
    with session_factory() as session:
        assigner = load_tier_assigner(session)
    columns = (
        SUBSCRIBERS.c.id,
        SUBSCRIBERS.c.attributes,
        SUBSCRIBERS.c.tier,
        SUBSCRIBERS.c.tiers,
        SUBSCRIBERS.c.updated_at,
    )
    write = (
        update(SUBSCRIBERS)
        .where(SUBSCRIBERS.c.id == bindparam("b_id"), SUBSCRIBERS.c.updated_at == bindparam("b_seen_at"))
        .values(tier=bindparam("b_tier"), tiers=bindparam("b_tiers"), updated_at=bindparam("b_updated_at"))
    )
    scanned = changed = 0
    by_tier: Counter[str | None] = Counter()
    last_id: str | None = None
    while True:
        with session_factory() as session:
            page = select(*columns).order_by(SUBSCRIBERS.c.id).limit(batch_rows)
            if last_id is not None:
                page = page.where(SUBSCRIBERS.c.id > last_id)
            rows = session.execute(page).all()
            if not rows:
                break
            now = utcnow()
            changes = []
            for sid, attributes, tier, tiers, seen_at in rows:
                result = assigner.assign(attributes)
                by_tier[result.tier] += 1
                if result.tier != tier or result.by_scheme != tiers:
                    changes.append(
                        {
                            "b_id": sid,
                            "b_seen_at": seen_at,
                            "b_tier": result.tier,
                            "b_tiers": result.by_scheme,
                            "b_updated_at": now,
                        }
                    )
            if changes:
                outcome = session.connection().execute(write, changes)
                changed += outcome.rowcount if session.get_bind().dialect.supports_sane_multi_rowcount else len(changes)
            session.commit()
            scanned += len(rows)
            last_id = rows[-1][0]
    untiered = by_tier.pop(None, 0)
    return {"scanned": scanned, "changed": changed, "by_tier": dict(sorted(by_tier.items())), "untiered": untiered}
