"""Liveness and readiness probes."""

from __future__ import annotations

from typing import Literal

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue
from pydantic import Field
from sqlalchemy import text

from infra.db import get_database
from infra.openapi import ResponseModel, api_doc
from infra.redis_conn import get_redis

bp = Blueprint("health", __name__)


class LiveOut(ResponseModel):
    status: Literal["ok"]


class ReadyOut(ResponseModel):
    """Whether the database and Redis answer."""

    status: Literal["ready", "not_ready"]
    checks: dict[str, str] = Field(description='{"database": "ok" | "error: <kind>", "redis": …}')


@bp.get("/healthz")
@api_doc("Liveness probe", responses={200: LiveOut}, public=True, tags=("service",))
def healthz() -> ResponseReturnValue:
    """The process is up (no dependencies checked)."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
@api_doc("Readiness probe", responses={200: ReadyOut, 503: ReadyOut}, public=True, tags=("service",))
def readyz() -> ResponseReturnValue:
    """The database and Redis answer; 503 naming the one that does not."""
    checks: dict[str, str] = {}
    try:
        with get_database().engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # any driver error means "not ready", never a crash
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        get_redis().ping()
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"error: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    return jsonify({"status": "ready" if ready else "not_ready", "checks": checks}), 200 if ready else 503
