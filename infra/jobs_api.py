"""Job status for the UI and scripts: ``GET /api/v1/jobs/<id>``."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

import redis
from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue
from pydantic import Field
from redis.exceptions import RedisError
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from infra.auth import CONFIG_READERS, require_user
from infra.errors import ApiError, NotFound
from infra.openapi import ResponseModel, api_doc
from infra.queues import job_json
from infra.redis_conn import get_redis

bp = Blueprint("jobs_api", __name__, url_prefix="/api/v1")
JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,200}$")  # what rq accepts as a job id


class JobOut(ResponseModel):
    """A background job (rq); finished jobs are kept for a day."""

    id: str
    status: Literal[tuple(status.value for status in JobStatus)]  # type: ignore[valid-type]  # rq's statuses, read at import
    meta: dict[str, Any] = Field(description="progress the job reports, e.g. {stage, share}")
    enqueued_at: datetime | None
    ended_at: datetime | None
    result: Any = Field(description="the job's return value once finished, else null")
    error: str | None = Field(description="the traceback when the job failed, else null")


class JobAccepted(ResponseModel):
    """The job was queued (created) or an identical one is already waiting or running."""

    job: JobOut
    created: bool


class QueueUnavailable(ApiError):
    status, code = 503, "queue_unavailable"


def redis_or_503() -> redis.Redis:
    """The Redis client, or a clear 503 when it cannot be reached."""
    client = get_redis()
    try:
        client.ping()
    except RedisError:
        raise QueueUnavailable("the job queue (Redis) is unreachable; try again shortly") from None
    return client


@bp.get("/jobs/<job_id>")
@api_doc(
    "The status of a background job",
    path={"job_id": Annotated[str, Field(pattern=JOB_ID.pattern)]},
    responses={200: JobOut},
    errors={503: None},
)
@require_user(*CONFIG_READERS)
def job_status(job_id: str) -> ResponseReturnValue:
    if not JOB_ID.match(job_id):
        raise NotFound(f"no job {job_id!r}", code="job_not_found")
    try:
        job = Job.fetch(job_id, connection=redis_or_503())
    except NoSuchJobError:
        raise NotFound(f"no job {job_id!r} (finished jobs are kept for a day)", code="job_not_found") from None
    return jsonify(job_json(job))
