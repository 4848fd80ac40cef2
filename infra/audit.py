"""The append-only audit log: who changed what, before and after, when.

``record_audit`` adds the row to the caller's session, so it commits (or rolls back) in the
same transaction as the change it describes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Index, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from infra.config_version import mark_changed
from infra.db import Base, JsonType, UtcDateTime, utcnow


class AuditEntry(Base):
    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_entity", "entity_type", "entity_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    occurred_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(300))
    action: Mapped[str] = mapped_column(String(40))
    entity_type: Mapped[str] = mapped_column(String(60))
    entity_key: Mapped[str] = mapped_column(String(200))
    before: Mapped[Any] = mapped_column(JsonType, nullable=True)
    after: Mapped[Any] = mapped_column(JsonType, nullable=True)


def record_audit(
    session: Session,
    *,
    actor: str,
    action: str,
    entity_type: str,
    entity_key: str,
    before: Any = None,
    after: Any = None,
) -> AuditEntry:
    """Append one audit row to ``session`` (committed with the change by the caller); the
    config generation and version move when that transaction commits (``infra.config_version``)."""
    mark_changed(session)
    entry = AuditEntry(
        actor=actor, action=action, entity_type=entity_type, entity_key=str(entity_key), before=before, after=after
    )
    session.add(entry)
    return entry


def list_audit(
    session: Session,
    *,
    entity_type: str | None = None,
    entity_key: str | None = None,
    limit: int = 100,
    before_id: int | None = None,
) -> list[AuditEntry]:
    """Newest first; page with ``before_id``."""
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if entity_type:
        query = query.where(AuditEntry.entity_type == entity_type)
    if entity_key:
        query = query.where(AuditEntry.entity_key == entity_key)
    if before_id:
        query = query.where(AuditEntry.id < before_id)
    return list(session.scalars(query))


def audit_json(entry: AuditEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "occurred_at": entry.occurred_at.isoformat(),
        "actor": entry.actor,
        "action": entry.action,
        "entity_type": entry.entity_type,
        "entity_key": entry.entity_key,
        "before": entry.before,
        "after": entry.after,
    }
