"""The one reading of a ``datetime`` as an instant: a naive one is UTC.

Profiles, snapshots and callers hand over naive and aware datetimes alike; every pure core
compares them as UTC instants. It lives here, not in ``infra``, because the pure cores
(``offers.derived_attributes``, ``decisioning.snapshot``, ``decisioning.core``) may not
import ``infra`` and ``offers`` is the lowest package they all may import.
"""

from __future__ import annotations

from datetime import UTC, datetime


def as_utc(moment: datetime) -> datetime:
    """``moment`` as an aware UTC datetime; a naive ``moment`` is taken to be UTC already."""
    if moment.tzinfo is None or moment.tzinfo.utcoffset(moment) is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)
