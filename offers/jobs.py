"""RQ entry points for the catalogue: plain functions over ids, safe to run twice."""

from __future__ import annotations

from typing import Any

from rq import get_current_job

from infra.job_runtime import job_sessionmaker
from offers.subscribers_service import retier_all

RETIER_JOB_ID = "offers-retier-subscribers"


def retier_subscribers_job() -> dict[str, Any]:
    """Recompute every subscriber's tier from the current rules (the monthly re-tiering).

    Re-running it changes nothing: only rows whose tier differs are written.
    """
    job = get_current_job()
    if job is not None:
        job.meta["stage"] = "retiering"
        job.save_meta()
    return retier_all(job_sessionmaker())
