"""Authentication and authorisation.

Two kinds of caller:
- people (roles admin, marketing, analyst) — by the admin UI's session cookie (unsafe methods
  then need the CSRF token) or by a personal bearer key that acts with their role;
- channels (sms, app, call_centre, retail) — by a channel bearer key, valid on channel
  endpoints only.

Keys are random 256-bit tokens, so a SHA-256 digest is a safe and fast way to store them
(slow password hashes are for low-entropy secrets: passwords use argon2).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import g, request, session
from sqlalchemy import select
from sqlalchemy.orm import Session

from infra.audit import record_audit
from infra.auth_models import CHANNELS, ROLES, ApiKey, User
from infra.db import db_session, utcnow
from infra.errors import BadRequest, Conflict, Forbidden, NotFound, Unauthorized

_hasher = PasswordHasher()
KEY_PREFIX = "cpk_"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CONFIG_WRITERS = ("admin", "marketing")
CONFIG_READERS = ROLES

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user (with a role) or a channel."""

    kind: str  # "user" | "channel"
    name: str
    role: str | None = None
    channel: str | None = None
    user_id: int | None = None
    key_id: int | None = None

    @property
    def actor(self) -> str:
        """How the audit log names this caller."""
        if self.kind == "channel":
            return f"channel:{self.channel} (key {self.key_id})"
        return f"user:{self.name}"


# --- passwords and keys ---------------------------------------------------------------


def use_password_hasher(hasher: PasswordHasher) -> None:
    """Hash new passwords with ``hasher`` in this process, in place of argon2-cffi's defaults
    (RFC 9106's low-memory profile). Each hash stores its own parameters, so passwords hashed
    before still verify. The test suite uses a cheap profile; production keeps the default."""
    global _hasher
    _hasher = hasher


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def digest_key(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


def create_user(session: Session, *, email: str, role: str, password: str, name: str = "", actor: str) -> User:
    """Add a user (audited). Raises Conflict if the email is taken."""
    email = email.strip().lower()
    if role not in ROLES:
        raise BadRequest(f"role must be one of {', '.join(ROLES)}", code="invalid_role")
    if "@" not in email:
        raise BadRequest("email must be an email address", code="invalid_email")
    if len(password) < 10:
        raise BadRequest("password must have at least 10 characters", code="weak_password")
    if session.scalar(select(User.id).where(User.email == email)) is not None:
        raise Conflict(f"a user with email {email} exists", code="user_exists")
    user = User(email=email, name=name, role=role, password_hash=hash_password(password))
    session.add(user)
    session.flush()
    record_audit(
        session,
        actor=actor,
        action="create",
        entity_type="user",
        entity_key=email,
        after={"email": email, "name": name, "role": role},
    )
    return user


def create_api_key(
    session: Session, *, name: str, actor: str, channel: str | None = None, user: User | None = None
) -> tuple[ApiKey, str]:
    """Create a key and return it with its secret, which is shown this once and never stored."""
    if (channel is None) == (user is None):
        raise BadRequest("a key belongs to exactly one channel or one user", code="invalid_key_owner")
    if channel is not None and channel not in CHANNELS:
        raise BadRequest(f"channel must be one of {', '.join(CHANNELS)}", code="invalid_channel")
    raw = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(
        name=name,
        kind="channel" if channel else "user",
        channel=channel,
        user_id=user.id if user else None,
        prefix=raw[:12],
        key_hash=digest_key(raw),
        created_by=actor,
    )
    session.add(key)
    session.flush()
    record_audit(
        session, actor=actor, action="create", entity_type="api_key", entity_key=str(key.id), after=api_key_json(key)
    )
    return key, raw


def revoke_api_key(session: Session, key_id: int, *, actor: str) -> ApiKey:
    key = session.get(ApiKey, key_id)
    if key is None:
        raise NotFound(f"no API key {key_id}")
    if key.revoked_at is None:
        before = api_key_json(key)
        key.revoked_at = utcnow()
        forget_cached_keys()
        record_audit(
            session,
            actor=actor,
            action="revoke",
            entity_type="api_key",
            entity_key=str(key.id),
            before=before,
            after=api_key_json(key),
        )
    return key


def api_key_json(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "name": key.name,
        "kind": key.kind,
        "channel": key.channel,
        "user_id": key.user_id,
        "prefix": key.prefix,
        "created_by": key.created_by,
        "created_at": key.created_at.isoformat() if key.created_at else None,
        "revoked_at": key.revoked_at.isoformat() if key.revoked_at else None,
    }


def user_json(user: User) -> dict[str, Any]:
    return {"id": user.id, "email": user.email, "name": user.name, "role": user.role, "active": user.active}


def authenticate_password(session: Session, email: str, password: str) -> User | None:
    user = session.scalar(select(User).where(User.email == email.strip().lower()))
    if user is None or not user.active:
        _hasher.hash(password)  # spend the same time as a real check: no user enumeration
        return None
    return user if verify_password(user.password_hash, password) else None


# --- resolving the caller -------------------------------------------------------------

# Channel keys call the decision API thousands of times a second: each process remembers a
# valid channel key for a few seconds instead of reading it per request. A revocation takes
# effect at once in the process that revoked it and within CHANNEL_KEY_CACHE_S everywhere else.
CHANNEL_KEY_CACHE_S = 5.0
_channel_keys: dict[str, tuple[float, Principal]] = {}


def forget_cached_keys() -> None:
    _channel_keys.clear()


def _principal_from_bearer(header: str) -> Principal:
    scheme, _, raw = header.partition(" ")
    if scheme.lower() != "bearer" or not raw.strip():
        raise Unauthorized("use 'Authorization: Bearer <key>'", code="invalid_authorization")
    digest = digest_key(raw.strip())
    cached = _channel_keys.get(digest)
    if cached is not None and cached[0] > time.monotonic():
        return cached[1]
    key = db_session().scalar(select(ApiKey).where(ApiKey.key_hash == digest))
    if key is None or key.revoked_at is not None:
        _channel_keys.pop(digest, None)
        raise Unauthorized("the API key is unknown or revoked", code="invalid_api_key")
    if key.kind == "channel":
        principal = Principal(kind="channel", name=key.name, channel=key.channel, key_id=key.id)
        if len(_channel_keys) > 10_000:  # bounded: unknown keys are never cached, this is a safety net
            _channel_keys.clear()
        _channel_keys[digest] = (time.monotonic() + CHANNEL_KEY_CACHE_S, principal)
        return principal
    user = db_session().get(User, key.user_id)
    if user is None or not user.active:
        raise Unauthorized("the key's user is deactivated", code="invalid_api_key")
    return Principal(kind="user", name=user.email, role=user.role, user_id=user.id, key_id=key.id)


def session_user() -> User | None:
    """The logged-in, still active user of this browser session, or None."""
    user_id = session.get("user_id")
    if user_id is None:
        return None
    user = db_session().get(User, user_id)
    if user is None or not user.active:
        session.clear()  # deactivated since login: the session ends now
        return None
    return user


def _principal_from_session() -> Principal | None:
    user = session_user()
    if user is None:
        return None
    if request.method not in SAFE_METHODS:
        check_csrf(request.headers.get(CSRF_HEADER) or request.form.get("csrf_token"))
    return Principal(kind="user", name=user.email, role=user.role, user_id=user.id)


def current_principal() -> Principal:
    """The authenticated caller of this request, or 401."""
    if "principal" not in g:
        header = request.headers.get("Authorization")
        principal = _principal_from_bearer(header) if header else _principal_from_session()
        if principal is None:
            raise Unauthorized(
                "authentication required: a bearer API key or an admin login", code="authentication_required"
            )
        g.principal = principal
    return g.principal


def csrf_token() -> str:
    """The session's CSRF token (created on first use); forms and the UI's fetches send it."""
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]


def check_csrf(sent: str | None) -> None:
    expected = session.get("csrf")
    if not sent or not expected or not hmac.compare_digest(sent, expected):
        raise Forbidden("missing or wrong CSRF token", code="csrf_failed")


def require_user(*roles: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorator: the caller must be a person with one of ``roles``. Channel keys get 403."""
    allowed = frozenset(roles)

    def decorate(view: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(view)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            principal = current_principal()
            if principal.kind != "user":
                raise Forbidden("a channel key cannot call this endpoint", code="wrong_key_kind")
            if principal.role not in allowed:
                raise Forbidden(
                    f"this needs the role {' or '.join(sorted(allowed))}; you are {principal.role}",
                    code="role_forbidden",
                )
            return view(*args, **kwargs)

        return wrapper

    return decorate


def require_channel_or_user(*roles: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorator for channel endpoints: any channel key, or a person with one of ``roles``."""
    allowed = frozenset(roles)

    def decorate(view: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(view)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            principal = current_principal()
            if principal.kind == "user" and principal.role not in allowed:
                raise Forbidden(
                    f"this needs a channel key or the role {' or '.join(sorted(allowed))}", code="role_forbidden"
                )
            return view(*args, **kwargs)

        return wrapper

    return decorate
