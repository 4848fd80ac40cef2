"""What a bulk import did: its report (rows accepted, rows rejected by line, counts) and the
one audit row that records it."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from infra.audit import record_audit
from infra.bulk_import.formats import ImportFormat

log = logging.getLogger(__name__)


@dataclass
class ImportReport:
    """What an import did: rows accepted, rows rejected (the first ``max_listed`` by line)."""

    import_id: str
    format: ImportFormat
    max_listed: int
    accepted: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)
    rejected_count: int = 0
    written: int = 0  # rows committed: accepted minus duplicates within a batch
    batches: int = 0  # batches committed
    bytes_read: int = 0
    stopped: str | None = None  # why the import ended before the end of the body, if it did

    def reject(self, line: int, error: str) -> None:
        self.rejected_count += 1
        if len(self.rejected) < self.max_listed:
            self.rejected.append({"line": line, "error": error})

    @property
    def rejected_truncated(self) -> bool:
        return self.rejected_count > len(self.rejected)

    def counts(self) -> dict[str, Any]:
        """The audit row's ``after``: counts only, never the rows."""
        return {
            "format": self.format,
            "accepted": self.accepted,
            "rejected_count": self.rejected_count,
            "written": self.written,
            "batches": self.batches,
            "bytes_read": self.bytes_read,
            "stopped": self.stopped,
        }

    def as_json(self) -> dict[str, Any]:
        return {
            "import_id": self.import_id,
            "format": self.format,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "rejected_count": self.rejected_count,
            "rejected_truncated": self.rejected_truncated,
        }


def audit_import(
    session_factory: sessionmaker[Session],
    report: ImportReport,
    actor: str,
    entity_type: str,
    *,
    best_effort: bool = False,
) -> None:
    """The import's one audit row (action "import", counts only), in its own transaction
    (the batches are committed). ``best_effort`` logs instead of raising, for the audit of an
    import that is failing anyway."""
    try:
        with session_factory() as session:
            record_audit(
                session,
                actor=actor,
                action="import",
                entity_type=entity_type,
                entity_key=report.import_id,
                after=report.counts(),
            )
            session.commit()
    except Exception:
        if not best_effort:
            raise
        log.exception("could not audit the partial import %s", report.import_id)
