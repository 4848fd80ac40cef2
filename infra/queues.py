"""The one place jobs are enqueued (explicit connection, deterministic ids, unique, retried) and
the worker class that runs them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis
from rq import Queue, Retry, SimpleWorker, Worker
from rq.exceptions import DuplicateJobError
from rq.job import Job
from rq.worker.base import BaseWorker

QUEUE_NAMES = ("readouts", "default")


class PromptShutdown(BaseWorker):
    """An rq worker whose shutdown does not hang on its command channel.

    rq's listener for worker commands waits up to 60 s per read. At shutdown rq unsubscribes,
    then waits for the listener to end; when the listener has already read the unsubscribe
    reply, it is back in a 60 s wait, and the worker's exit waits with it (a race a busy
    machine loses often). This listener wakes every second, so the exit waits a second at most.
    """

    LISTENER_WAKE_S = 1.0

    def subscribe(self) -> None:
        self.log.info("Worker %s: subscribing to channel %s", self.name, self.pubsub_channel_name)
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        listener = self.pubsub.run_in_thread(
            sleep_time=self.LISTENER_WAKE_S, daemon=True, exception_handler=self._pubsub_exception_handler
        )
        self.pubsub_thread = listener  # type: ignore[assignment]  # rq declares it only as None


class QueueWorker(PromptShutdown, Worker):
    """The worker of ``carepilot-worker``: each job in a forked work horse."""


class InProcessQueueWorker(PromptShutdown, SimpleWorker):
    """A worker that runs each job inside its own process, without forking a work horse."""


def run_queued_jobs_here(connection: redis.Redis) -> None:
    """Run every job queued now in this process, then return."""
    InProcessQueueWorker(list(QUEUE_NAMES), connection=connection).work(burst=True)


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
