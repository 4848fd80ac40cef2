"""Writing subscriber profiles: an upsert by id where the new row replaces the stored one —
as one executemany on any dialect, or as one PostgreSQL statement per bulk batch.

A profile's row carries its tiers (one per active scheme, plus the primary scheme's tier in
``tier``) and its ARPU and LTV copied out of the attributes, so the decision hot path and
reports read them from columns.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping
from datetime import datetime
from typing import Any, NamedTuple

import orjson
from sqlalchemy import Connection
from sqlalchemy.orm import Session

from infra.bulk_import import PostgresStatement
from infra.sql_dialect import upsert
from offers.models import Subscriber
from offers.tiering import TierResult

SUBSCRIBERS = Subscriber.__table__


class ProfileRow(NamedTuple):
    """One profile ready to write: validated attributes and the columns computed from them."""

    attributes: dict[str, Any]
    tier: str | None
    tiers: dict[str, str | None]
    arpu: float | None
    ltv: float | None


def _money(value: Any) -> float | None:
    return float(value) if type(value) in (int, float) else None


def profile_row(attributes: dict[str, Any], tiers: TierResult) -> ProfileRow:
    """The row for validated ``attributes`` and their tiers, with ARPU and LTV copied out."""
    return ProfileRow(
        attributes, tiers.tier, tiers.by_scheme, _money(attributes.get("arpu")), _money(attributes.get("ltv"))
    )


_REPLACED_ON_UPSERT = ("attributes", "tier", "tiers", "arpu", "ltv", "updated_at")


def write_profiles(connection: Connection | Session, rows: Mapping[str, ProfileRow], updated_at: datetime) -> None:
    """Upsert ``rows`` (id → row; ids unique, as one statement may not touch a row twice)
    in one executemany. Attributes are replaced, not merged. Never commits."""
    if not rows:
        return
    params = [
        {
            "id": sid,
            "attributes": row.attributes,
            "tier": row.tier,
            "tiers": row.tiers,
            "arpu": row.arpu,
            "ltv": row.ltv,
            "updated_at": updated_at,
        }
        for sid, row in rows.items()
    ]
    connection.execute(upsert(connection, SUBSCRIBERS, [SUBSCRIBERS.c.id], _REPLACED_ON_UPSERT), params)


class TieredProfile(NamedTuple):
    """A bulk row resolved: the subscriber id, the storable attributes and their tiers."""

    subscriber_id: str
    attributes: dict[str, Any]
    tiers: TierResult


def write_tiered_profiles(session: Session, profiles: Collection[TieredProfile], updated_at: datetime) -> None:
    """Upsert ``profiles`` (ids unique) in one executemany (``write_profiles``). Never commits."""
    write_profiles(session, {p.subscriber_id: profile_row(p.attributes, p.tiers) for p in profiles}, updated_at)


def _compact_json_encoder() -> Callable[[Any], str]:
    """Compact JSON text of one profile. orjson is several times faster than the standard
    library here, where encoding is a large share of the import's Python time; the standard
    encoder stays as the fallback for values orjson refuses (integers beyond 64 bits in
    free-form JSON attributes)."""
    fallback = json.JSONEncoder(separators=(",", ":"), check_circular=False).encode

    def encode(obj: Any) -> str:
        try:
            return orjson.dumps(obj).decode()
        except orjson.JSONEncodeError:
            return fallback(obj)

    return encode


_json_text = json.encoder.encode_basestring_ascii  # a str as a JSON string literal (C)

# One statement per batch: the batch is one JSON array of [id, attributes, tier, tiers] rows
# that PostgreSQL unpacks. ARPU and LTV are read back out of the (validated) attributes.
_UPSERT_BATCH = b"""
INSERT INTO subscribers (id, attributes, tier, tiers, arpu, ltv, updated_at)
SELECT r->>0, r->1, r->>2, r->3, (r->1->>'arpu')::float8, (r->1->>'ltv')::float8, $2::timestamptz
FROM jsonb_array_elements($1::jsonb) AS r
ON CONFLICT (id) DO UPDATE SET attributes = excluded.attributes, tier = excluded.tier,
    tiers = excluded.tiers, arpu = excluded.arpu, ltv = excluded.ltv, updated_at = excluded.updated_at
"""


class PostgresProfileBatches:
    """Bulk batches of profiles as one PostgreSQL statement each: the rows as one JSON array."""

    def __init__(self, updated_at: datetime) -> None:
        self._updated_at = updated_at.isoformat().encode()
        self._encode = _compact_json_encoder()
        self._tiers_json: dict[tuple[str | None, ...], str] = {}

    def _row_json(self, profile: TieredProfile) -> str:
        sid, attributes, tiers = profile
        # One import has one assigner, so every row lists the same schemes in the same order.
        key = tuple(tiers.by_scheme.values())
        tail = self._tiers_json.get(key)
        if tail is None:
            tail = self._tiers_json[key] = self._encode([tiers.tier, tiers.by_scheme])[1:]
        return f"[{_json_text(sid)},{self._encode(attributes)},{tail}"

    def statement(self, profiles: Collection[TieredProfile]) -> PostgresStatement:
        """The upsert of ``profiles`` (ids unique)."""
        payload = "[" + ",".join(map(self._row_json, profiles)) + "]"
        return PostgresStatement(_UPSERT_BATCH, [payload.encode(), self._updated_at])
