"""Benchmark: streamed CSV import of subscriber profiles into PostgreSQL.

``measure_import(database_url, rows)`` builds a throwaway database (``carepilot_bench_import``,
see ``_pg``), seeds two tier schemes (the brief's value tiers and its ARPU/need/loyalty
segments), writes a seeded synthetic CSV of ``rows`` profiles to a temporary file (streamed,
never held in memory), and times the real import path — ``LineReader`` over the file plus
``import_subscribers`` — as the HTTP handler runs it.

Goal: ≥ 50,000 rows/s for 1,000,000 rows with flat memory (peak RSS independent of ``rows``).

    python bench/subscriber_import.py                  # 1,000,000 rows, local PostgreSQL
    python bench/subscriber_import.py --rows 100000 --database bench_import_ci postgresql://postgres@db:5432/postgres
    python bench/subscriber_import.py --help

``BENCH_ROWS`` and ``BENCH_DATABASE_URL`` set the defaults of ``--rows`` and the admin URL.
"""

from __future__ import annotations

import json
import os
import random
import sys
import tempfile
from datetime import UTC, date, datetime, timedelta
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
from bench._pg import DEFAULT_ADMIN_URL, migrated_database, peak_rss_mb
from offers.models import Subscriber, Tier, TierScheme
from offers.subscriber_import import import_subscribers

BENCH_DATABASE = "carepilot_bench_import"
SEED = 20_240_601

COLUMNS = (
    "subscriber_id",
    "arpu",
    "ltv",
    "tenure_months",
    "complaints_90d",
    "unresolved_complaints",
    "night_data_share",
    "downgrades_3m",
    "inactive_months",
    "churn_score",
    "arpu_change_3m",
    "data_usage_gb",
    "has_broadband",
    "broadband_tenure_months",
    "birthday",
    "join_date",
    "lifecycle_stage",
    "region",
    "plan",
)

TIER_SCHEMES: tuple[dict[str, Any], ...] = (
    {
        "code": "value",
        "name": "Value tiers",
        "is_primary": True,
        "tiers": (
            ("vip", {"arpu": {"$gte": 90}}),
            ("value", {"arpu": {"$gte": 50}}),
            ("growth", {"arpu": {"$gte": 30}, "tenure_months": {"$gte": 6}}),
            ("basic", {}),
        ),
    },
    {
        "code": "segment",
        "name": "ARPU / need / loyalty segments",
        "is_primary": False,
        "tiers": (
            ("at-risk", {"arpu_change_3m": {"$lte": -0.15}, "complaints_90d": {"$gte": 2}}),
            ("strategic", {"arpu": {"$gte": 80}, "data_usage_gb": {"$gte": 20}, "tenure_months": {"$gte": 24}}),
            ("potential", {"arpu": {"$gte": 35}}),
            ("mass", {}),
        ),
    },
)
_REGIONS = ("Shanghai", "Beijing", "Guangzhou", "Shenzhen", "Hangzhou", "Chengdu", "Wuhan", "Nanjing")
_PLANS = ("basic-19", "plus-39", "unlimited-69", "family-99")
_STAGES = ("onboarding", "growth", "maturity", "decline")


def write_synthetic_csv(path: Path, rows: int, seed: int = SEED) -> int:
    """Write ``rows`` seeded synthetic profiles (plus a header) to ``path``; returns bytes."""
    rng = random.Random(seed)
    today = date(2025, 6, 1)
    lines = (
        f"s{index:08d},not-a-number,,,,,,,,,,,,,,,,,\r\n"
        if index % BAD_ROW_EVERY == BAD_ROW_EVERY - 1
        else _profile_line(rng, index, today)
        for index in range(rows)
    )
    return write_csv(path, ",".join(COLUMNS) + "\r\n", lines)


def _profile_line(rng: random.Random, index: int, today: date) -> str:
    value = rng.gauss(0.0, 1.0)
    tenure = min(180, int(rng.expovariate(1 / 34)))
    arpu = round(min(400.0, 30.0 * 2.718281828 ** (0.62 * value)), 2)
    complaints = rng.choices((0, 1, 2, 3), weights=(80, 14, 5, 1))[0]
    has_broadband = rng.random() < 0.45
    born = date(1950, 1, 1) + timedelta(days=rng.randint(0, 20_800))
    joined = datetime(2025, 6, 1, tzinfo=UTC) - timedelta(days=tenure * 30.44 + rng.uniform(0, 30))
    return (
        ",".join(
            (
                f"s{index:08d}",
                f"{arpu}",
                f"{round(arpu * rng.uniform(10, 60), 2)}",
                str(tenure),
                str(complaints),
                "1" if complaints and rng.random() < 0.3 else "0",
                f"{round(rng.betavariate(2, 9), 3)}",
                str(rng.choices((0, 1, 2), weights=(92, 6, 2))[0]),
                "0" if rng.random() < 0.95 else "1",
                f"{round(rng.random() * 0.6, 3)}",
                f"{round(rng.gauss(0.01, 0.08), 3)}",
                f"{round(rng.lognormvariate(2.0, 0.7), 1)}",
                "true" if has_broadband else "false",
                str(rng.randint(1, 96)) if has_broadband else "",
                born.isoformat(),
                joined.replace(microsecond=0).isoformat().replace("+00:00", "Z"),
                rng.choice(_STAGES),
                rng.choice(_REGIONS),
                rng.choice(_PLANS),
            )
        )
        + "\r\n"
    )


def _seed_tiers(engine: Engine) -> None:
    """The tier schemes of ``TIER_SCHEMES``, which the import tiers every profile with."""
    with sessionmaker(bind=engine)() as session:
        for scheme in TIER_SCHEMES:
            session.add(TierScheme(code=scheme["code"], name=scheme["name"], is_primary=scheme["is_primary"]))
            session.flush()
            for rank, (code, rule) in enumerate(scheme["tiers"], 1):
                session.add(Tier(code=code, scheme_code=scheme["code"], name=code.title(), rank=rank, rule=rule))
        session.commit()


def _backend_cpu_s(pid: int | None) -> float | None:
    """CPU seconds used so far by a PostgreSQL backend process, when the server runs on this
    host (read from /proc); None otherwise."""
    try:
        return process_cpu_s(Path(f"/proc/{pid}/stat").read_text())[1]
    except (OSError, IndexError, ValueError):
        return None


def measure_import(
    database_url: str = DEFAULT_ADMIN_URL,
    rows: int = 1_000_000,
    batch_rows: int = BATCH_ROWS,
    database: str = BENCH_DATABASE,
) -> dict[str, Any]:
    """Import ``rows`` synthetic profiles as CSV into a fresh PostgreSQL database ``database``
    and report ``{"imports_rows_per_s", "rows", "seconds", "peak_rss_mb", ...}``."""
    with migrated_database(database_url, database) as engine:
        _seed_tiers(engine)
        with tempfile.TemporaryDirectory(prefix="carepilot-bench-") as folder:
            csv_path = Path(folder) / "subscribers.csv"
            size_bytes = write_synthetic_csv(csv_path, rows)
            rss_before_mb = peak_rss_mb()
            factory = sessionmaker(bind=engine, expire_on_commit=False)
            with engine.connect() as conn:  # the pooled connection the import will reuse
                backend_pid = conn.scalar(text("SELECT pg_backend_pid()"))
            backend_cpu_before = _backend_cpu_s(backend_pid)
            report, seconds, python_cpu_s = time_import(
                csv_path,
                lambda lines: import_subscribers(
                    factory, lines, "csv", batch_rows=batch_rows, max_listed_errors=100, actor="bench"
                ),
            )
            backend_cpu_after = _backend_cpu_s(backend_pid)
        with engine.connect() as conn:
            stored = conn.scalar(select(func.count()).select_from(Subscriber))
            tiers = dict(conn.execute(select(Subscriber.tier, func.count()).group_by(Subscriber.tier)).all())
    check_import(report, stored, rows)
    return {
        "imports_rows_per_s": round(rows / seconds, 1),
        "rows": rows,
        "seconds": round(seconds, 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "rss_before_import_mb": round(rss_before_mb, 1),
        "csv_mb": round(size_bytes / 1e6, 1),
        # where the time goes: CPU of this process and of the PostgreSQL backend it talked to
        "python_cpu_s": round(python_cpu_s, 2),
        "postgres_backend_cpu_s": (
            round(backend_cpu_after - backend_cpu_before, 2)
            if backend_cpu_before is not None and backend_cpu_after is not None
            else None
        ),
        "cpu_count": os.cpu_count(),
        "accepted": report.accepted,
        "rejected": report.rejected_count,
        "batch_rows": batch_rows,
        "batches": report.batches,
        "tier_counts": {str(k): v for k, v in sorted(tiers.items(), key=lambda kv: str(kv[0]))},
    }


def main() -> None:
    args = import_arguments(__doc__ or "", BENCH_DATABASE)
    print(json.dumps(measure_import(args.admin_url, args.rows, args.batch_rows, args.database), indent=2))


if __name__ == "__main__":
    main()
