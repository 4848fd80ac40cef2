"""Create, patch, deactivate and list every catalogue kind through one audited path.

Each kind is described once (``ConfigKind``); the service validates a patch by merging it over
the stored row and re-validating the whole object, so cross-field rules hold after every edit.
Services never commit: the caller commits the change and its audit row together.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import InstrumentedAttribute, Session

from infra.audit import record_audit
from infra.errors import BadRequest, Conflict, NotFound, pydantic_details
from infra.http import StrictModel

SchemaT = TypeVar("SchemaT", bound=StrictModel)

# A rule sees (session, validated data of its kind's schema, the stored row or None, actor). It
# raises ApiError to refuse the write, or adjusts related rows (auditing them itself).
RuleFn = Callable[[Session, SchemaT, Any, str], None]


class CatalogueModel(Protocol):
    """A catalogue table's mapped class, as the service uses it: every such table has an id and
    an active flag (cleared by a soft delete), and takes its columns as keyword arguments."""

    # class-level, as queries use them (a type checker matches a protocol's Mapped[] attributes
    # against the instances' plain values, so these are stated as what the class holds)
    id: ClassVar[InstrumentedAttribute[int]]
    active: ClassVar[InstrumentedAttribute[bool]]

    def __init__(self, **values: Any) -> None: ...


@dataclass(frozen=True)
class ConfigKind(Generic[SchemaT]):
    """How one catalogue table is addressed, validated and listed."""

    entity_type: str  # singular, as the audit log names it
    path: str  # URL segment under /api/v1
    model: type[CatalogueModel]
    schema: type[SchemaT]
    key_field: str  # natural key in URLs: "code", "channel" or "id"
    order_by: tuple[str, ...] = ("id",)
    filters: tuple[str, ...] = ()  # columns a list may be filtered by (?column=value)
    rules: tuple[RuleFn[SchemaT], ...] = field(default_factory=tuple)  # database-aware rules

    def key_of(self, entity: Any) -> str:
        return str(getattr(entity, self.key_field))


def entity_json(entity: Any) -> dict[str, Any]:
    """Every column, JSON-safe (money as float, times as ISO-8601)."""
    out: dict[str, Any] = {}
    for column in entity.__table__.columns:
        value = getattr(entity, column.key)
        if isinstance(value, Decimal):
            value = float(value)
        elif isinstance(value, datetime):
            value = value.isoformat()
        out[column.key] = value
    return out


def _editable(kind: ConfigKind[Any], entity: Any) -> dict[str, Any]:
    row = entity_json(entity)
    return {name: row[name] for name in kind.schema.model_fields}


def validate_payload(kind: ConfigKind[Any], payload: dict[str, Any]) -> StrictModel:
    """Strictly validate a whole object (as it would be stored) against the kind's schema."""
    try:
        return kind.schema.model_validate_json(json.dumps(payload), strict=True)
    except ValidationError as exc:
        raise BadRequest(
            f"the {kind.entity_type} is not valid", code="validation_error", details=pydantic_details(exc)
        ) from None


def get_config(session: Session, kind: ConfigKind[Any], key: str | int) -> Any:
    entity = session.scalar(select(kind.model).where(getattr(kind.model, kind.key_field) == key))
    if entity is None:
        raise NotFound(f"no {kind.entity_type} {key!r}", code=f"{kind.entity_type}_not_found")
    return entity


def list_config(
    session: Session, kind: ConfigKind[Any], *, include_inactive: bool = False, filters: dict[str, str] | None = None
) -> list[Any]:
    query = select(kind.model).order_by(*(getattr(kind.model, c) for c in kind.order_by))
    if not include_inactive:
        query = query.where(kind.model.active.is_(True))
    for column, value in (filters or {}).items():
        query = query.where(getattr(kind.model, column) == value)
    return list(session.scalars(query))


def create_config(session: Session, kind: ConfigKind[Any], data: StrictModel, *, actor: str) -> Any:
    """Insert a new row (409 if the key exists) and audit it."""
    values = data.model_dump()
    if kind.key_field != "id":
        key = values[kind.key_field]
        exists = session.scalar(select(kind.model.id).where(getattr(kind.model, kind.key_field) == key))
        if exists is not None:
            raise Conflict(
                f"a {kind.entity_type} {key!r} exists; update it with PATCH", code=f"{kind.entity_type}_exists"
            )
    for rule in kind.rules:
        rule(session, data, None, actor)
    entity = kind.model(**values)
    session.add(entity)
    session.flush()
    _audit(session, kind, entity, "create", actor=actor, after=entity_json(entity))
    return entity


def update_config(session: Session, kind: ConfigKind[Any], key: str | int, patch: dict[str, Any], *, actor: str) -> Any:
    """Apply a partial update; the merged object must still be valid. Audited with before/after."""
    entity = get_config(session, kind, key)
    current = _editable(kind, entity)
    if kind.key_field in patch and patch[kind.key_field] != current.get(kind.key_field, key):
        raise BadRequest(
            f"{kind.key_field} identifies the {kind.entity_type} and cannot change; create a new one instead",
            code="immutable_field",
        )
    data = validate_payload(kind, {**current, **patch})
    for rule in kind.rules:
        rule(session, data, entity, actor)
    before = entity_json(entity)
    for name, value in data.model_dump().items():
        setattr(entity, name, value)
    session.flush()
    after = entity_json(entity)
    if _changed(before, after):
        _audit(session, kind, entity, "update", actor=actor, before=before, after=after)
    return entity


def deactivate_config(session: Session, kind: ConfigKind[Any], key: str | int, *, actor: str) -> Any:
    """Soft delete: the row stays (decisions and the audit log refer to it) but stops applying."""
    entity = get_config(session, kind, key)
    if entity.active:
        before = entity_json(entity)
        entity.active = False
        session.flush()
        _audit(session, kind, entity, "deactivate", actor=actor, before=before, after=entity_json(entity))
    return entity


def _audit(
    session: Session,
    kind: ConfigKind[Any],
    entity: Any,
    action: str,
    *,
    actor: str,
    after: dict[str, Any],
    before: dict[str, Any] | None = None,
) -> None:
    """The audit row of a change to ``entity``, a row of ``kind``."""
    record_audit(
        session,
        actor=actor,
        action=action,
        entity_type=kind.entity_type,
        entity_key=kind.key_of(entity),
        before=before,
        after=after,
    )


def _changed(before: dict[str, Any], after: dict[str, Any]) -> bool:
    ignore = {"updated_at"}
    return any(before[k] != after[k] for k in before if k not in ignore)
