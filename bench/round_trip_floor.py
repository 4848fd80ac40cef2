"""The ceiling the decision flow's round trips put on this machine, with no decision made.

A decision costs four round trips (DESIGN §4: a Redis read of contact windows and spend, a
database read of the profile, a Redis reservation, a database write). This serves an endpoint
that makes exactly those four and nothing else (no auth, no validation, no decision core, one
contact per request, no batching), under the same gunicorn (2 workers × ``make run``'s
threads), load generator (``bench/decision_latency.py``: 2 processes × 4 threads, persistent
connections) and loopback PostgreSQL and Redis, next to a trivial ``/healthz`` of the same app
in the same run. What the floor cannot reach, a real decision cannot either, unless concurrent
contacts share round trips (``decisioning.batcher``).

Prints one JSON object: trivial_per_s, floor_per_s, floor_share (floor ÷ trivial),
floor_p50_ms, floor_p99_ms, and the whole machine's busy CPU per request of each
(cpu_ms_per_floor_request, cpu_ms_per_trivial), ``runs`` times over (one object per run).

    .venv/bin/python bench/round_trip_floor.py
Env: BENCH_SECONDS (default 10 per phase), BENCH_RUNS (default 2), BENCH_REDIS_URL (default
redis://127.0.0.1:6379/11; flushed), FLOOR_DATABASE_URL and FLOOR_REDIS_URL (set for the
gunicorn workers by this script).
"""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

import orjson
import psycopg
import redis
from flask import Flask, Response, request

DATABASE = "carepilot_bench_floor"
SUBSCRIBERS = 2_000  # the demo's, so the load generator's ids are found
RESERVE_SCRIPT = "return redis.call('incrbyfloat', KEYS[1], ARGV[1])"

app = Flask(__name__)
_local = threading.local()


def _clients() -> tuple[psycopg.Connection[Any], redis.Redis]:
    """This worker thread's database connection (autocommit: each statement its own
    transaction, as the decision store's) and the process's Redis client."""
    if getattr(_local, "db", None) is None:
        _local.db = psycopg.connect(os.environ["FLOOR_DATABASE_URL"], autocommit=True)
    if app.extensions.get("floor_redis") is None:
        client = redis.Redis.from_url(os.environ["FLOOR_REDIS_URL"])
        app.extensions["floor_reserve_sha"] = client.script_load(RESERVE_SCRIPT)
        app.extensions["floor_redis"] = client
    return _local.db, app.extensions["floor_redis"]


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/api/v1/decisions")
def four_round_trips() -> Response:
    body = orjson.loads(request.get_data())
    subscriber_id = body["subscriber_id"]
    db, r = _clients()
    preflight = r.pipeline(transaction=False)  # 1: config version, contact window, spend
    preflight.mget("cp:config:version", "cp:ledger:rebuilt_at", "cp:budget:spent")
    preflight.zcard(f"cp:contacts:{subscriber_id}:{body['channel']}")
    preflight.execute()
    db.execute("SELECT attributes::text FROM subscribers WHERE id = %s", (subscriber_id,)).fetchone()  # 2
    r.evalsha(app.extensions["floor_reserve_sha"], 1, "cp:budget:spent", 1)  # 3: the reservation script
    db.execute(
        "INSERT INTO decisions (request_id, response) VALUES (%s, %s)",  # 4: the row, committed
        (body["request_id"], orjson.dumps(body).decode()),
    )
    return Response(orjson.dumps({"degraded": False, "action": None}), mimetype="application/json")


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench import decision_latency as load
    from bench._pg import admin_url_argument, drop_database, fresh_database, postgres_admin_url

    seconds = float(os.environ.get("BENCH_SECONDS", "10"))
    runs = int(os.environ.get("BENCH_RUNS", "2"))
    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/11")
    admin_url = postgres_admin_url(admin_url_argument())
    url = fresh_database(admin_url, DATABASE).replace("postgresql+psycopg://", "postgresql://")
    redis.Redis.from_url(redis_url).flushdb()
    try:
        with psycopg.connect(url, autocommit=True) as db:
            db.execute("CREATE TABLE subscribers (id text PRIMARY KEY, attributes jsonb NOT NULL)")
            db.execute(
                "INSERT INTO subscribers SELECT %s || lpad(g::text, 5, '0'), '{\"arpu\": 30.0}' "
                "FROM generate_series(0, %s - 1) AS g",
                (load.DEMO_ID_PREFIX, SUBSCRIBERS),
            )
            db.execute(
                "CREATE TABLE decisions (id bigserial PRIMARY KEY, request_id text UNIQUE NOT NULL, "
                "response json NOT NULL, created_at timestamptz NOT NULL DEFAULT now())"
            )
        env = {**os.environ, "FLOOR_DATABASE_URL": url, "FLOOR_REDIS_URL": redis_url}
        with load.gunicorn_serving("bench.round_trip_floor:app", env, ready_path="/healthz") as port:
            keys = {"sms": "unused", "app": "unused"}
            load._load(port, "/api/v1/decisions", keys, 2)  # warm: connections, the script cache
            for _ in range(runs):
                trivial = load._load(port, "/healthz", keys, seconds)
                floor = load._load(port, "/api/v1/decisions", keys, seconds)
                print(
                    json.dumps(
                        {
                            "trivial_per_s": round(trivial["per_s"]),
                            "floor_per_s": round(floor["per_s"]),
                            "floor_share": round(floor["per_s"] / trivial["per_s"], 3),
                            "floor_p50_ms": round(floor["p50_ms"], 2),
                            "floor_p99_ms": round(floor["p99_ms"], 2),
                            "cpu_ms_per_floor_request": round(floor["cpu_ms"], 3),
                            "cpu_ms_per_trivial": round(trivial["cpu_ms"], 3),
                            "cores": os.cpu_count(),
                            "concurrency": load.CONCURRENCY_PROCESSES * load.CONCURRENCY_THREADS,
                            "gunicorn_workers": load.GUNICORN_WORKERS,
                            "gunicorn_threads": load.THREADS,
                        }
                    ),
                    flush=True,
                )
    finally:
        drop_database(admin_url, DATABASE)


if __name__ == "__main__":
    main()
