"""Users, roles and API keys (tables ``users`` and ``api_keys``)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from infra.db import Base, UtcDateTime, utcnow

ROLES = ("admin", "marketing", "analyst")
CHANNELS = ("sms", "app", "call_centre", "retail")
KEY_KINDS = ("channel", "user")


class User(Base):
    __tablename__ = "users"
    __table_args__ = (CheckConstraint("role IN ('admin', 'marketing', 'analyst')", name="role"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    role: Mapped[str] = mapped_column(String(20))
    password_hash: Mapped[str] = mapped_column(String(200))
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class ApiKey(Base):
    """A bearer key, stored as a SHA-256 hash. A channel key may call only channel endpoints;
    a user key acts with its user's role."""

    __tablename__ = "api_keys"
    __table_args__ = (
        CheckConstraint("kind IN ('channel', 'user')", name="kind"),
        CheckConstraint(
            "(kind = 'channel' AND channel IS NOT NULL AND user_id IS NULL) OR "
            "(kind = 'user' AND user_id IS NOT NULL AND channel IS NULL)",
            name="owner",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(10))
    channel: Mapped[str | None] = mapped_column(String(20))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_by: Mapped[str] = mapped_column(String(300), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
