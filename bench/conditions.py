"""Benchmark for the foundation issue: condition evaluation and subscriber import.

Prints one JSON object:
  us_per_eval             µs per eligibility-condition evaluation (30-offer catalogue, varied profiles)
  growthbook_us_per_eval  the growthbook package's own evaluator on the same data (null if absent)
  imports_rows_per_s      1M-row CSV subscriber import into PostgreSQL (BENCH_ROWS to change)

    .venv/bin/python bench/conditions.py
Env: BENCH_PG_URL (admin connection, default postgresql://postgres@127.0.0.1:5432/postgres),
BENCH_ROWS (default 1000000), BENCH_SKIP_IMPORT=1 to time conditions only.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.conditions_eval import measure_us_per_eval


def main() -> None:
    result = measure_us_per_eval()
    if os.environ.get("BENCH_SKIP_IMPORT") != "1":
        from bench.subscriber_import import measure_import

        url = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
        imported = measure_import(url, rows=int(os.environ.get("BENCH_ROWS", "1000000")))
        result.update(
            {
                "imports_rows_per_s": imported["imports_rows_per_s"],
                "import_rows": imported["rows"],
                "import_seconds": imported["seconds"],
                "import_peak_rss_mb": imported["peak_rss_mb"],
            }
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
