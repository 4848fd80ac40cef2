"""The one place jobs are enqueued: explicit connection, deterministic ids, unique, retried."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis
from rq import Queue, Retry
from rq.exceptions import DuplicateJobError
from rq.job import Job

QUEUE_NAMES = ("readouts", "default")


def get_queue(connection: redis.Redis, name: str = "default") -> Queue:
    if name not in QUEUE_NAMES:
        raise ValueError(f"unknown queue {name!r}")
    return Queue(name, connection=connection)


def enqueue_unique(
    connection: redis.Redis,
    func: Callable[..., Any],
    *,
    job_id: str,
    queue: str = "default",
    timeout_s: int = 600,
    retries: int = 3,
    kwargs: dict[str, Any] | None = None,
) -> tuple[Job, bool]:
    """Enqueue ``func`` under ``job_id`` unless a job with that id is already waiting or running.

    Returns (job, created). A finished job with the same id is replaced, so a periodic job
    can run again; a queued or running one is returned as is (no double work).
    """
    q = get_queue(connection, queue)
    existing = Job.fetch(job_id, connection=connection) if _exists(connection, job_id) else None
    if existing is not None and existing.get_status(refresh=True) in ("finished", "failed", "stopped", "canceled"):
        existing.delete()
        existing = None
    if existing is not None:
        return existing, False
    try:
        job = q.enqueue_call(
            func,
            kwargs=kwargs or {},
            job_id=job_id,
            unique=True,
            timeout=timeout_s,
            retry=Retry(max=retries, interval=[10, 60, 300][:retries]),
            result_ttl=86_400,
            failure_ttl=7 * 86_400,
        )
        return job, True
    except DuplicateJobError:  # another process won the race: same job, still one run
        return Job.fetch(job_id, connection=connection), False


def _exists(connection: redis.Redis, job_id: str) -> bool:
    return bool(connection.exists(Job.key_for(job_id)))


def job_json(job: Job) -> dict[str, Any]:
    status = job.get_status(refresh=True)
    latest = job.latest_result() if status == "failed" else None
    return {
        "id": job.id,
        "status": str(getattr(status, "value", status)),
        "meta": job.get_meta(refresh=True),
        "enqueued_at": job.enqueued_at.isoformat() if job.enqueued_at else None,
        "ended_at": job.ended_at.isoformat() if job.ended_at else None,
        "result": job.return_value() if status == "finished" else None,
        "error": latest.exc_string if latest else None,
    }
