"""The application factory: the only place that wires the web app together."""

from __future__ import annotations

import logging
import time
import uuid

from flask import Flask, Response, g, request
from flask.json.provider import DefaultJSONProvider
from flask.typing import ResponseReturnValue
from sqlalchemy.exc import IntegrityError

from infra.db import Database
from infra.errors import error_response, register_error_handlers
from infra.logging_setup import configure_logging
from infra.settings import Settings

log = logging.getLogger("carepilot.http")


def create_app(settings: Settings | None = None) -> Flask:
    """Build the app from ``settings`` (default: ``Settings.from_env()``)."""
    settings = settings or Settings.from_env()
    configure_logging(settings.log_level, settings.log_format)
    app = Flask("carepilot", template_folder=None)
    app.config.update(
        SECRET_KEY=settings.secret_key,
        CAREPILOT_SETTINGS=settings,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.session_cookie_secure,
        JSON_SORT_KEYS=False,
    )
    assert isinstance(app.json, DefaultJSONProvider)  # Flask's own provider, which has sort_keys
    app.json.sort_keys = False
    Database(settings.database_url).init_app(app)
    app.extensions["carepilot.redis"] = None  # connected on first use (infra.redis_conn.get_redis)
    from infra import config_version
    from infra.redis_conn import app_redis

    config_version.use_redis(lambda: app_redis(app))
    register_error_handlers(app)

    @app.errorhandler(IntegrityError)
    def _integrity(exc: IntegrityError) -> ResponseReturnValue:
        # A unique or foreign-key rule the service's own checks could not see (a race).
        session = g.get("db_session")
        if session is not None:
            session.rollback()
        return error_response(409, "conflict", "the change conflicts with existing data; reload and retry")

    _register_blueprints(app)
    _register_request_logging(app)
    from carepilot.cli import register_cli

    register_cli(app)
    return app


def _register_blueprints(app: Flask) -> None:
    from admin_ui import experiments_views, views  # noqa: F401  (their pages attach to admin_bp)
    from admin_ui.blueprint import bp as admin_bp
    from decisioning.api import bp as decisions_bp
    from decisioning.repository import decision_exposures
    from experiments.api import bp as experiments_bp
    from experiments.outcomes_api import bp as outcomes_bp
    from experiments.outcomes_api import use_decision_exposures
    from experiments.readout_api import bp as readout_bp
    from infra.auth_api import bp as auth_bp
    from infra.docs_api import bp as docs_bp
    from infra.health import bp as health_bp
    from infra.jobs_api import bp as jobs_bp
    from offers.api import bp as offers_bp
    from offers.subscribers_api import bp as subscribers_bp

    for bp in (
        health_bp,
        auth_bp,
        jobs_bp,
        offers_bp,
        subscribers_bp,
        experiments_bp,
        outcomes_bp,
        readout_bp,
        decisions_bp,
        docs_bp,
        admin_bp,
    ):
        app.register_blueprint(bp)
    use_decision_exposures(app, decision_exposures)


def _register_request_logging(app: Flask) -> None:
    @app.before_request
    def _start() -> ResponseReturnValue | None:
        if "\x00" in request.path:  # no key holds NUL, and PostgreSQL refuses it as a parameter
            return error_response(404, "not_found", "no such resource (the path contains a NUL character)")
        g.request_id = request.headers.get("X-Request-Id") or uuid.uuid4().hex
        g.started_s = time.perf_counter()
        return None

    @app.after_request
    def _finish(response: Response) -> Response:
        response.headers["X-Request-Id"] = g.get("request_id", "")
        if request.path not in ("/healthz", "/readyz"):
            duration_ms = round((time.perf_counter() - g.get("started_s", time.perf_counter())) * 1000, 2)
            log.info(
                "%s %s %s",
                request.method,
                request.path,
                response.status_code,
                extra={
                    "request_id": g.get("request_id"),
                    "method": request.method,
                    "path": request.path,
                    "status": response.status_code,
                    "duration_ms": duration_ms,
                },
            )
        return response
