"""Streamed bulk import of subscriber profiles from CSV or JSON lines, through the import
pipeline (``infra.bulk_import``): rows read by ``offers.subscriber_parsing``, tiered with the
tier rules as they are when the import starts, written by ``offers.subscriber_writing``.

Writing. On PostgreSQL each batch travels as one JSON array in one ``INSERT … SELECT …
ON CONFLICT (id) DO UPDATE``, sent without waiting, so the server upserts batch N while
Python parses batch N+1. In ``bench/subscriber_import.py`` this beat COPY into a staging
table (inline, or from a writer thread that then waits for the GIL the parser holds) and a
Core executemany: COPY costs the server less per row, but the parser is the bottleneck, and
the pipelined statement needs no thread and no temporary table. Elsewhere (SQLite) each batch
is one Core ``INSERT … ON CONFLICT DO UPDATE`` executemany.

Duplicate ids: the last row wins — within a batch by replacing the earlier row, across
batches because batches are written and committed in order.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from functools import partial

from sqlalchemy.orm import Session, sessionmaker

from infra.bulk_import import BulkImport, ImportFormat, ImportReport, Reject, run_import
from infra.db import utcnow
from offers.repository import load_tier_assigner
from offers.subscriber_parsing import SubscriberRow, SubscriberRowParser
from offers.subscriber_writing import PostgresProfileBatches, TieredProfile, write_tiered_profiles
from offers.tiering import TierAssigner


class _Tiering:
    """The resolver of a batch of profiles: each gets its tiers from one assigner."""

    def __init__(self, assigner: TierAssigner) -> None:
        self._assign = assigner.assign

    def resolve(self, session: Session, rows: list[tuple[int, SubscriberRow]], reject: Reject) -> list[TieredProfile]:
        """Every row, tiered (tier rules refuse no profile)."""
        assign = self._assign
        return [TieredProfile(sid, attributes, assign(attributes)) for _, (sid, attributes) in rows]


def _last_per_id(profiles: list[TieredProfile]) -> Collection[TieredProfile]:
    return {profile.subscriber_id: profile for profile in profiles}.values()


def import_subscribers(
    session_factory: sessionmaker[Session],
    lines: Iterable[str],
    fmt: ImportFormat,
    *,
    batch_rows: int,
    max_listed_errors: int,
    actor: str,
) -> ImportReport:
    """Upsert every good row of ``lines`` (CSV with a header row, or JSON lines), tiered with
    the tier rules as they are when the import starts; report the bad ones by line number
    (``infra.bulk_import.run_import``; audit entity "subscribers").

    Raises BadRequest for an empty body or a bad CSV header (nothing is written then), and
    PayloadTooLarge when a LineReader passes its byte limit (the rows before it are kept and
    audited; the error's details carry the report).
    """
    with session_factory() as session:
        assigner = load_tier_assigner(session)
    updated_at = utcnow()
    kind = BulkImport(
        entity_type="subscribers",
        parser=SubscriberRowParser(),
        resolve=_Tiering(assigner).resolve,
        keep_latest=_last_per_id,
        write_rows=partial(write_tiered_profiles, updated_at=updated_at),
        postgres_statement=PostgresProfileBatches(updated_at).statement,
    )
    return run_import(
        session_factory, lines, fmt, kind, batch_rows=batch_rows, max_listed_errors=max_listed_errors, actor=actor
    )
