"""Shared driver of the streamed-import benchmarks (``subscriber_import``, ``ingest_outcomes``).

Both write a seeded synthetic CSV to a temporary file (``write_csv``), time the real import
path over it — a ``LineReader`` over the file, as the HTTP handler runs it (``time_import``)
— check that every bad row was reported and every good one stored (``check_import``), and
take the same command line (``import_arguments``); ``process_cpu_s`` reads where the CPU time
went, from a process's ``/proc/<pid>/stat``.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Iterable
from itertools import islice
from pathlib import Path

from bench._pg import DEFAULT_ADMIN_URL
from infra.bulk_import import ImportReport, LineReader

BATCH_ROWS = 5_000
BAD_ROW_EVERY = 10_000  # real feeds have the odd broken row; the import must report, not stop
_LINES_PER_WRITE = 10_000


def import_arguments(description: str, database: str) -> argparse.Namespace:
    """The command line of an import benchmark: the admin URL, ``--rows`` (default
    ``BENCH_ROWS``, else 1,000,000), ``--batch-rows`` and ``--database``."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "admin_url",
        nargs="?",
        default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_ADMIN_URL),
        help="a PostgreSQL server URL whose user may create databases (default: %(default)s)",
    )
    rows = int(os.environ.get("BENCH_ROWS", "1000000"))
    parser.add_argument("--rows", type=int, default=rows, help="rows to import (default: %(default)s)")
    parser.add_argument("--batch-rows", type=int, default=BATCH_ROWS, help="rows per batch (default: %(default)s)")
    parser.add_argument(
        "--database",
        default=database,
        help="the throwaway database: dropped if it exists, created, dropped again (default: %(default)s)",
    )
    return parser.parse_args()


def write_csv(path: Path, header: str, lines: Iterable[str]) -> int:
    """Write ``header`` and ``lines`` (each ending in CRLF) to ``path``, streamed in slices so
    the file is never held in memory; returns its size in bytes."""
    lines = iter(lines)
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write(header)
        while chunk := "".join(islice(lines, _LINES_PER_WRITE)):
            out.write(chunk)
    return path.stat().st_size


def time_import(csv_path: Path, run_import: Callable[[LineReader], ImportReport]) -> tuple[ImportReport, float, float]:
    """Run ``run_import`` over a ``LineReader`` of the file, as the HTTP handler reads a body;
    returns the report, the wall seconds and this process's CPU seconds it took."""
    size_bytes = csv_path.stat().st_size
    with csv_path.open("rb", buffering=0) as stream:
        started, cpu_started = time.perf_counter(), time.process_time()
        report = run_import(LineReader(stream, max_bytes=size_bytes + 1))
        return report, time.perf_counter() - started, time.process_time() - cpu_started


def check_import(report: ImportReport, stored: int | None, rows: int) -> None:
    """Raise unless every ``BAD_ROW_EVERY``-th row of ``rows`` was rejected and the others stored."""
    expected_bad = rows // BAD_ROW_EVERY
    if report.rejected_count != expected_bad or stored != rows - expected_bad:
        raise RuntimeError(
            f"import is wrong: {stored} stored, {report.rejected_count} rejected "
            f"of {rows} (expected {expected_bad} rejected)"
        )


def process_cpu_s(stat: str) -> tuple[str, float]:
    """The command name and the CPU seconds used so far (utime + stime) of a process, from the
    text of its ``/proc/<pid>/stat``; IndexError or ValueError if the text is not one."""
    head, _, rest = stat.rpartition(") ")  # the name, in parentheses, may itself hold ") "
    fields = rest.split()
    return head.partition(" (")[2], (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
