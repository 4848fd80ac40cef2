"""Benchmark: streamed CSV import of experiment outcomes into PostgreSQL.

``measure_ingest(database_url, rows)`` builds a throwaway database (``carepilot_bench_outcomes``,
see ``_pg``) with a running experiment and its exposures, inserted server-side
(``generate_series``: one exposure per four outcome rows), writes a seeded synthetic CSV of
``rows`` outcomes to a temporary file (streamed, never held in memory) in a realistic order —
one pass per outcome type, subscribers shuffled within each pass, as billing and channel
feeds arrive — and times the real import path — ``LineReader`` over the file plus
``import_outcomes`` — as the HTTP handler runs it. Every 10,000th row is bad (an unknown
subscriber or a revenue without a value) and must be reported, not stop the import.

Goal: ≥ 50,000 rows/s for 1,000,000 rows with flat memory (peak RSS independent of ``rows``).

    python bench/ingest_outcomes.py                  # 1,000,000 rows, local PostgreSQL
    python bench/ingest_outcomes.py --rows 200000 --database bench_outcomes_ci postgresql://postgres@db:5432/postgres
    python bench/ingest_outcomes.py --help

``BENCH_ROWS`` and ``BENCH_DATABASE_URL`` set the defaults of ``--rows`` and the admin URL.
"""

from __future__ import annotations

import json
import os
import random
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import sessionmaker

from bench._import import (
    BAD_ROW_EVERY,
    BATCH_ROWS,
    check_import,
    import_arguments,
    process_cpu_s,
    time_import,
    write_csv,
)
from bench._pg import (
    DEFAULT_ADMIN_URL,
    create_running_experiment,
    insert_exposures,
    migrated_database,
    peak_rss_mb,
)
from decisioning.repository import decision_exposures
from experiments.models import Outcome
from experiments.outcomes import import_outcomes

BENCH_DATABASE = "carepilot_bench_outcomes"
SEED = 20_240_602
EXPERIMENT_KEY = "care-sms-bench"
ROWS_PER_EXPOSURE = 4  # delivered, accepted or declined, retained at day 30 or churned, revenue
EXPOSED_AT = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)


def _expose(engine: Engine, exposures: int) -> None:
    """A running experiment and its ``exposures`` (s00000000, s00000001, …)."""
    experiment_id = create_running_experiment(engine, EXPERIMENT_KEY, EXPOSED_AT)
    with engine.begin() as conn:  # one server-side statement: the exposures are setup, not measured
        insert_exposures(
            conn,
            experiment_id,
            exposures,
            id_digits=8,
            tiers=("basic", "growth", "value", "vip"),
            first_exposed_at=":exposed_at + (g % 1440) * interval '1 minute'",
            exposed_at=EXPOSED_AT,
        )
        conn.execute(text("ANALYZE assignments"))


def write_synthetic_csv(path: Path, rows: int, exposures: int, seed: int = SEED) -> int:
    """Write ``rows`` seeded outcomes (plus a header) to ``path``; returns its size in bytes."""
    header = "experiment,subscriber_id,type,value,occurred_at,day_n\r\n"
    return write_csv(path, header, _outcome_lines(random.Random(seed), rows, exposures))


def _outcome_lines(rng: random.Random, rows: int, exposures: int) -> Iterator[str]:
    day = timedelta(days=1)
    written = 0
    for kind in range(ROWS_PER_EXPOSURE):
        order = list(range(exposures))
        rng.shuffle(order)
        for index in order:
            if written >= rows:
                return
            written += 1
            sid = f"s{index:08d}"
            exposed = EXPOSED_AT + timedelta(minutes=index % 1440)
            if written % BAD_ROW_EVERY == 0:
                yield (
                    f"{EXPERIMENT_KEY},x{index:08d},delivered,,{_iso(exposed + day)},\r\n"
                    if written % (2 * BAD_ROW_EVERY)
                    else f"{EXPERIMENT_KEY},{sid},revenue,,{_iso(exposed + day)},\r\n"
                )
            elif kind == 0:
                yield f"{EXPERIMENT_KEY},{sid},delivered,,{_iso(exposed + timedelta(minutes=2))},\r\n"
            elif kind == 1:
                answer = "accepted" if rng.random() < 0.3 else "declined"
                yield f"{EXPERIMENT_KEY},{sid},{answer},,{_iso(exposed + timedelta(hours=5))},\r\n"
            elif kind == 2:
                if rng.random() < 0.12:
                    churn_day = rng.randint(1, 30)
                    yield f"{EXPERIMENT_KEY},{sid},churned,,{_iso(exposed + churn_day * day)},\r\n"
                else:
                    yield f"{EXPERIMENT_KEY},{sid},retained,,{_iso(exposed + 30 * day)},30\r\n"
            else:
                revenue = round(rng.lognormvariate(3.3, 0.5), 2)
                yield f"{EXPERIMENT_KEY},{sid},revenue,{revenue},{_iso(exposed + 31 * day)},\r\n"


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _postgres_cpu_s() -> float | None:
    """CPU seconds used so far by every PostgreSQL server process on this host (backends, WAL
    and background writers), read from /proc; None when the server runs elsewhere."""
    total, found = 0.0, False
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            name, cpu_s = process_cpu_s(stat.read_text())
        except (OSError, IndexError, ValueError):
            continue
        if name == "postgres":
            total += cpu_s
            found = True
    return total if found else None


def _host_busy_cpu_s() -> float:
    """CPU seconds every process on this host has used so far (all but idle and I/O wait),
    from /proc/stat: what is not this process or PostgreSQL is other load on the machine."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(
        int, Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    )
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def measure_ingest(
    database_url: str = DEFAULT_ADMIN_URL,
    rows: int = 1_000_000,
    batch_rows: int = BATCH_ROWS,
    database: str = BENCH_DATABASE,
) -> dict[str, Any]:
    """Import ``rows`` synthetic outcomes as CSV into a fresh database ``database`` on
    ``database_url``'s PostgreSQL server and report ``{"rows", "rows_per_s", "peak_rss_mb", ...}``."""
    exposures = -(-rows // ROWS_PER_EXPOSURE)
    with migrated_database(database_url, database) as engine:
        _expose(engine, exposures)
        with tempfile.TemporaryDirectory(prefix="carepilot-bench-") as folder:
            csv_path = Path(folder) / "outcomes.csv"
            size_bytes = write_synthetic_csv(csv_path, rows, exposures)
            rss_before_mb = peak_rss_mb()
            factory = sessionmaker(bind=engine, expire_on_commit=False)
            postgres_cpu_before, host_cpu_before = _postgres_cpu_s(), _host_busy_cpu_s()
            report, seconds, python_cpu_s = time_import(
                csv_path,
                lambda lines: import_outcomes(
                    factory,
                    lines,
                    "csv",
                    batch_rows=batch_rows,
                    max_listed_errors=100,
                    actor="bench",
                    decision_exposures=decision_exposures,
                ),
            )
            postgres_cpu_after, host_cpu_after = _postgres_cpu_s(), _host_busy_cpu_s()
        with engine.connect() as conn:
            stored = conn.scalar(select(func.count()).select_from(Outcome))
    postgres_cpu_s = (
        round(postgres_cpu_after - postgres_cpu_before, 2)
        if postgres_cpu_before is not None and postgres_cpu_after is not None
        else None
    )
    check_import(report, stored, rows)
    return {
        "rows": rows,
        "rows_per_s": round(rows / seconds, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "seconds": round(seconds, 3),
        "rss_before_import_mb": round(rss_before_mb, 1),
        "csv_mb": round(size_bytes / 1e6, 1),
        "exposures": exposures,
        # where the time goes: CPU of this process, of the PostgreSQL server (all its processes)
        # and of everything else on the host (other load makes rows_per_s vary between runs)
        "python_cpu_s": round(python_cpu_s, 2),
        "postgres_cpu_s": postgres_cpu_s,
        "other_cpu_s": (
            round(host_cpu_after - host_cpu_before - python_cpu_s - postgres_cpu_s, 2)
            if postgres_cpu_s is not None
            else None
        ),
        "cpu_count": os.cpu_count(),
        "accepted": report.accepted,
        "rejected": report.rejected_count,
        "written": report.written,
        "batch_rows": batch_rows,
        "batches": report.batches,
    }


def main() -> None:
    args = import_arguments(__doc__ or "", BENCH_DATABASE)
    print(json.dumps(measure_ingest(args.admin_url, args.rows, args.batch_rows, args.database), indent=2))


if __name__ == "__main__":
    main()
