"""Benchmark: an experiment's sufficient statistics over 10M outcome rows on PostgreSQL.

``measure_aggregate(database_url, rows)`` builds a throwaway database
(``carepilot_bench_aggregate``, see ``_pg``) and generates the data server-side with
``generate_series``: a running experiment with two arms and a 10% holdout, ``rows / 5``
exposures over four tiers, and five outcomes per exposure (delivered; accepted or declined;
retained at day 30 or churned by then; retained at day 60 or a complaint; revenue). Outcomes
are stored one type after another with the exposures in a scattered order within each, as a
live table fills up — not clustered by exposure, which would flatter an index-ordered plan.
The table's indexes and foreign key are dropped for the load and rebuilt after it, then the
tables are vacuumed and analysed, as autovacuum would have done on a live system.

It then times ``experiments.stats_sql.experiment_stats`` — the code behind
``GET /api/v1/experiments/<key>/stats`` — three times and reports the first (``seconds``) and
the best run, and checks the totals against what was generated.

Goal: ≤ 10 s for 10,000,000 outcome rows.

    python bench/aggregate.py                      # 10,000,000 rows, local PostgreSQL
    BENCH_ROWS=1000000 python bench/aggregate.py postgresql://postgres@db:5432/postgres
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import Engine, text
from sqlalchemy.orm import sessionmaker

from bench._pg import (
    DEFAULT_ADMIN_URL,
    admin_url_argument,
    create_running_experiment,
    insert_exposures,
    migrated_database,
)
from experiments.models import Experiment
from experiments.stats_sql import experiment_stats

BENCH_DATABASE = "carepilot_bench_aggregate"
EXPERIMENT_KEY = "care-sms-bench"
OUTCOMES_PER_EXPOSURE = 5
CUTOFF = datetime(2025, 9, 1, tzinfo=UTC)
FIRST_EXPOSURE = CUTOFF - timedelta(days=120)
EXPOSURE_DAYS = 100  # exposures spread over 100 days: those of the last 30 have not matured yet


def _stride(n: int) -> int:
    """A multiplier coprime with ``n``: ``i * stride % n`` visits 0..n-1 in a scattered order."""
    stride = 7_919
    while math.gcd(stride, n) != 1:
        stride += 2
    return stride


# One INSERT per outcome kind: each visits every exposure once, in a scattered order
_OUTCOME_PASSES = (
    "'delivered', NULL, NULL, a.first_exposed_at + interval '2 minutes'",
    "CASE WHEN a.id % 3 = 0 THEN 'accepted' ELSE 'declined' END, NULL, NULL, a.first_exposed_at + interval '5 hours'",
    "CASE WHEN a.id % 8 = 0 THEN 'churned' ELSE 'retained' END, NULL, "
    "CASE WHEN a.id % 8 = 0 THEN 1 + a.id % 30 ELSE 30 END, "
    "a.first_exposed_at + (CASE WHEN a.id % 8 = 0 THEN 1 + a.id % 30 ELSE 30 END) * interval '1 day'",
    "CASE WHEN a.id % 8 = 0 THEN 'complaint' ELSE 'retained' END, NULL, "
    "CASE WHEN a.id % 8 = 0 THEN NULL ELSE 60 END, a.first_exposed_at + interval '60 days'",
    "'revenue', 10 + (a.id % 97) * 0.5, NULL, a.first_exposed_at + interval '31 days'",
)


def _generate(engine: Engine, exposures: int) -> int:
    """The experiment, ``exposures`` exposures and five outcomes each; returns its id."""
    experiment_id = create_running_experiment(engine, EXPERIMENT_KEY, FIRST_EXPOSURE)
    with engine.begin() as conn:
        insert_exposures(
            conn,
            experiment_id,
            exposures,
            id_digits=9,
            tiers=("basic", "basic", "growth", "value", "vip"),
            first_exposed_at=":first + (g::float8 / :n * :days) * interval '1 day'",
            first=FIRST_EXPOSURE,
            days=EXPOSURE_DAYS,
        )
        # Load without the outcome table's indexes and foreign key, then build them once
        conn.execute(text("ALTER TABLE outcomes DROP CONSTRAINT fk_outcomes_assignment_id_assignments"))
        conn.execute(text("ALTER TABLE outcomes DROP CONSTRAINT uq_outcomes_assignment_id_type_day_key"))
        conn.execute(text("ALTER TABLE outcomes DROP CONSTRAINT pk_outcomes"))
        stride = _stride(exposures)
        for values in _OUTCOME_PASSES:
            conn.execute(
                text(f"""
                INSERT INTO outcomes (assignment_id, type, value, day_n, occurred_at, received_at)
                SELECT a.id, {values}, :cutoff
                FROM generate_series(0, :n - 1) AS g
                JOIN assignments a ON a.id = 1 + (g::bigint * :stride) % :n"""),
                {"n": exposures, "stride": stride, "cutoff": CUTOFF},
            )
        conn.execute(text("ALTER TABLE outcomes ADD CONSTRAINT pk_outcomes PRIMARY KEY (id)"))
        conn.execute(
            text(
                "ALTER TABLE outcomes ADD CONSTRAINT uq_outcomes_assignment_id_type_day_key "
                "UNIQUE (assignment_id, type, day_key)"
            )
        )
        conn.execute(
            text(
                "ALTER TABLE outcomes ADD CONSTRAINT fk_outcomes_assignment_id_assignments "
                "FOREIGN KEY (assignment_id) REFERENCES assignments (id) ON DELETE CASCADE"
            )
        )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE assignments"))
        conn.execute(text("VACUUM ANALYZE outcomes"))
    return experiment_id


def measure_aggregate(database_url: str = DEFAULT_ADMIN_URL, rows: int = 10_000_000, runs: int = 3) -> dict[str, Any]:
    """Aggregate ``rows`` outcome rows (``rows / 5`` exposures) and report
    ``{"rows", "seconds", "best_seconds", ...}``."""
    exposures = rows // OUTCOMES_PER_EXPOSURE
    with migrated_database(database_url, BENCH_DATABASE) as engine:
        started = time.perf_counter()
        experiment_id = _generate(engine, exposures)
        generate_s = time.perf_counter() - started
        with engine.connect() as conn:
            stored = conn.scalar(text("SELECT count(*) FROM outcomes"))
        timings = []
        with sessionmaker(bind=engine)() as session:
            experiment = session.get(Experiment, experiment_id)
            assert experiment is not None
            for _ in range(runs):
                started = time.perf_counter()
                stats = experiment_stats(session, experiment, data_cutoff=CUTOFF)
                timings.append(time.perf_counter() - started)
                session.rollback()
    exposed = sum(arm.exposed for arm in stats.arms)
    delivered = sum(arm.delivered for arm in stats.arms)
    if stored != rows or exposed != exposures or delivered != exposures:
        raise RuntimeError(
            f"aggregation is wrong: {stored} rows stored, {exposed} exposed, "
            f"{delivered} delivered (expected {rows}, {exposures}, {exposures})"
        )
    return {
        "rows": rows,
        "seconds": round(timings[0], 3),
        "best_seconds": round(min(timings), 3),
        "runs_s": [round(t, 3) for t in timings],
        "exposures": exposures,
        "cells": sum(len(tier.arms) for tier in stats.tiers),
        "generate_s": round(generate_s, 1),
        "cpu_count": os.cpu_count(),
        "arms": [arm.as_json() for arm in stats.arms],
    }


if __name__ == "__main__":
    print(json.dumps(measure_aggregate(admin_url_argument(), int(os.environ.get("BENCH_ROWS", "10000000"))), indent=2))
