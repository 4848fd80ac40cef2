"""Queries over the decisions table that other packages need, through the composition root."""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import select
from sqlalchemy.orm import Session

from decisioning.models import Decision

_IDS_PER_QUERY = 1000  # keeps the IN list well under every backend's parameter limit


def decision_exposures(session: Session, decision_ids: Collection[str]) -> dict[str, tuple[str | None, str]]:
    """decision id → (experiment key or None, subscriber id), for the decisions that exist.

    Outcomes reported by decision id are resolved through this (``experiments.outcomes``)."""
    found: dict[str, tuple[str | None, str]] = {}
    ids = list(decision_ids)
    for start in range(0, len(ids), _IDS_PER_QUERY):
        rows = session.execute(
            select(Decision.id, Decision.experiment_key, Decision.subscriber_id).where(
                Decision.id.in_(ids[start : start + _IDS_PER_QUERY])
            )
        )
        found.update({decision_id: (key, sid) for decision_id, key, sid in rows})
    return found
