"""RQ entry points for the analysis: plain functions over keys, safe to run twice.

``readout_job`` computes one readout (experiment, data cutoff) and applies what it allows
(auto promotion, the ROI alarm). The numbers are computed in a read-only session first and
written in a second, short transaction — the sampler may take seconds and should not hold a
write transaction open — whose insert-if-absent makes a rerun (a retry after a crash, or the
same job enqueued twice) store nothing new and promote nothing twice.

``schedule_readouts_job`` (every minute, from the cron scheduler) enqueues each running
experiment's readout when its interval comes round; ``monthly_retier_job`` enqueues the
monthly re-tiering. Both enqueue under deterministic job ids, so several schedulers (one per
worker host) still run each readout once.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime
from typing import Any

import redis
from rq import get_current_job
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from experiments.models import RUNNING_STATUSES, Experiment, Readout
from experiments.promotion import check_roi_alarm, promote
from experiments.promotion_policy import promotion_policy_from_json
from experiments.readouts import MODEL_VERSION, compute_results, readout_cutoff, store_readout
from experiments.service import get_experiment
from infra.config_version import mark_changed
from infra.db import session_scope, utcnow
from infra.job_runtime import current_job_connection, job_sessionmaker
from infra.queues import enqueue_unique
from offers.jobs import RETIER_JOB_ID, retier_subscribers_job

log = logging.getLogger("carepilot.readouts")
READOUT_TIMEOUT_S = 900
SYSTEM_ACTOR = "system:readout"


def readout_job_id(experiment_key: str, data_cutoff: datetime) -> str:
    """``readout-<key>-<cutoff>``; a dot (allowed in keys, not in rq job ids) becomes ``_2e``."""
    key = experiment_key.replace("_", "__").replace(".", "_2e")  # stays injective
    return f"readout-{key}-{data_cutoff.strftime('%Y%m%dT%H%M%SZ')}"


def run_readout(
    factory: sessionmaker[Session], experiment_key: str, data_cutoff: datetime, progress: Any = None
) -> dict[str, Any]:
    """Compute and store the readout of ``experiment_key`` as of ``data_cutoff``, then promote
    (policy mode ``auto``) or raise the ROI alarm as it says. Returns a summary."""
    report = progress or (lambda stage, share: None)
    with factory() as session:
        experiment = get_experiment(session, experiment_key)
        exists = session.scalar(
            select(Readout.id).where(
                Readout.experiment_id == experiment.id,
                Readout.data_cutoff == data_cutoff,
                Readout.model_version == MODEL_VERSION,
            )
        )
        if exists is not None:
            report("done", 1.0)
            return {"experiment": experiment_key, "readout_id": exists, "new": False, "promoted": False, "alert": False}
        results, digest = compute_results(session, experiment, data_cutoff, progress=report)
    report("storing", 0.95)
    with session_scope(factory) as session:
        experiment = get_experiment(session, experiment_key, for_update=True)
        readout, new = store_readout(session, experiment, data_cutoff, results, digest)
        if new and experiment.status == "rollout":
            # a rolled-out winner's latest readout is the uplift arbitration uses for its offer
            # (decisioning.snapshot_cache): the decisions' snapshots must be rebuilt
            mark_changed(session)
        promoted = alert = None
        if new:
            policy = promotion_policy_from_json(experiment.promotion_policy)
            if policy.mode == "auto" and readout.eligible and experiment.status == "pilot":
                promoted = promote(session, experiment, readout, mode="auto", actor=SYSTEM_ACTOR)
            alert = check_roi_alarm(session, experiment, readout)
        summary = {
            "experiment": experiment_key,
            "readout_id": readout.id,
            "new": new,
            "eligible": readout.eligible,
            "blocked_by": readout.results["promotion"]["blocked_by"],
            "promoted": promoted is not None,
            "alert": alert is not None,
        }
    report("done", 1.0)
    log.info("readout %s", summary)
    return summary


def _job_progress(stage: str, share: float) -> None:
    job = get_current_job()
    if job is not None:
        # the pid says which work horse runs it (operators, and the crash test, look for it)
        job.meta.update({"stage": stage, "progress": round(share, 2), "pid": os.getpid()})
        job.save_meta()


def readout_job(experiment_key: str, data_cutoff: str) -> dict[str, Any]:
    """RQ entry point: one readout (``data_cutoff`` ISO-8601 UTC)."""
    return run_readout(job_sessionmaker(), experiment_key, datetime.fromisoformat(data_cutoff), progress=_job_progress)


def enqueue_readout(connection: redis.Redis, experiment_key: str, data_cutoff: datetime) -> tuple[Any, bool]:
    """Enqueue the readout of ``experiment_key`` at ``data_cutoff`` once (deterministic id)."""
    return enqueue_unique(
        connection,
        readout_job,
        job_id=readout_job_id(experiment_key, data_cutoff),
        queue="readouts",
        timeout_s=READOUT_TIMEOUT_S,
        kwargs={"experiment_key": experiment_key, "data_cutoff": data_cutoff.isoformat()},
    )


def due_readouts(factory: sessionmaker[Session], now: datetime) -> list[tuple[str, datetime]]:
    """(experiment key, cutoff) for every running experiment whose current interval has no
    readout yet."""
    due = []
    with factory() as session:
        for experiment in session.scalars(select(Experiment).where(Experiment.status.in_(RUNNING_STATUSES))):
            cutoff = readout_cutoff(now, experiment.readout_interval_minutes)
            done = session.scalar(
                select(Readout.id).where(
                    Readout.experiment_id == experiment.id,
                    Readout.data_cutoff == cutoff,
                    Readout.model_version == MODEL_VERSION,
                )
            )
            if done is None:
                due.append((experiment.key, cutoff))
    return due


def schedule_readouts_job() -> list[str]:
    """Cron tick: enqueue the readouts that are due; returns their job ids."""
    connection = current_job_connection()
    ids = []
    for key, cutoff in due_readouts(job_sessionmaker(), utcnow()):
        job, _ = enqueue_readout(connection, key, cutoff)
        ids.append(job.id)
    return ids


def monthly_retier_job() -> str:
    """Cron tick (the 1st of each month): enqueue this month's re-tiering once."""
    connection = current_job_connection()
    job, _ = enqueue_unique(
        connection, retier_subscribers_job, job_id=f"{RETIER_JOB_ID}-{utcnow().strftime('%Y-%m')}", timeout_s=3600
    )
    return job.id
