"""Benchmark for the decision issue: the core in process, and the HTTP API under gunicorn.

Goals: core_us ≤ 50 µs (30 offers, 5 live experiments); under gunicorn (2 workers) with real
Redis and PostgreSQL on loopback at concurrency 8: p99 ≤ 10 ms, ≥ 1,000 decisions/s, decision
throughput ≥ 50% of a trivial endpoint's (``/healthz`` of the same app, same run), and bulk
≥ 20,000 decisions/s.

Setup: a fresh PostgreSQL database (``carepilot_bench_decisions``) migrated with Alembic and
seeded with the demo (16 offers, tiers, tier policies, contact caps, budgets, 2,000
subscribers) plus two running experiments, and 90,000 copies of the demo profiles that the bulk
rounds contact (10,000 distinct subscribers per call, none contacted before, so actions are
reserved as in a real outbound batch); Redis db 13 of the local server (flushed). The load
generator runs in 2 processes × 4 threads on persistent connections (raw sockets: see
``_Connection``); each decision is a new request id for a demo subscriber on its channel's
key, in a time zone where it is midday (outside quiet hours, so actions are chosen and their
cost reserved).

Prints one JSON object: core_us, p50_ms, p99_ms, decisions_per_s, trivial_per_s,
throughput_share (decisions ÷ trivial), bulk_decisions_per_s (one call of 10,000 at a time: a
call is decided by one thread of one worker, so this is what one outbound batch gets),
bulk_concurrent_decisions_per_s (``bulk_concurrent_calls`` calls in flight, one per worker: what
the service gets through), bulk_actions (share of the bulk contacts given an action), degraded
(answers flagged degraded: must be 0), actions (share of
decisions with a paid or free action), and what each phase cost the whole machine in CPU
(``cpu_ms_per_decision``, ``cpu_ms_per_trivial``, ``cpu_ms_per_bulk_decision``,
``cpu_ms_per_bulk_decision_concurrent``: busy CPU time of
every process, this load generator included, per request or contact, from /proc/stat). The
cost is steadier than the rates on a shared machine, and says how far a goal is: on ``cores``
cores, n decisions/s cannot cost more than cores × 1000 / n ms each.
``client_cpu_ms_per_decision`` and ``client_cpu_ms_per_trivial`` are the load generator's own
share of that cost (its processes' CPU time), so the server's is the difference.

    .venv/bin/python bench/decision_latency.py        # local PostgreSQL and Redis
Env: BENCH_SECONDS (default 10 per phase), BENCH_REDIS_URL (default redis://127.0.0.1:6379/13),
BENCH_GUNICORN_THREADS (default: ``make run``'s 4 threads per worker; 1 = sync workers).
"""

from __future__ import annotations

import http.client
import json
import multiprocessing
import os
import resource
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import text, update
from sqlalchemy.orm import sessionmaker

from bench._pg import admin_url_argument, drop_database, fresh_database, migrate, postgres_admin_url
from bench.decision_core import measure as measure_core
from decisioning.jobs import reconcile_ledger
from experiments import schemas
from experiments.service import create_experiment, transition_experiment
from infra.db import make_engine
from infra.settings import PROJECT_ROOT, Settings
from offers.demo_seed import DEMO_ID_PREFIX, DEMO_SUBSCRIBERS, seed_demo
from offers.models import Budget

DATABASE = "carepilot_bench_decisions"
CONCURRENCY_PROCESSES, CONCURRENCY_THREADS = 2, 4
BULK_CONTACTS, BULK_ROUNDS = 10_000, 3
BULK_ID_PREFIX = "bulk-"
# bulk is measured one call at a time, then with this many calls in flight (one per worker,
# as two outbound campaigns sent at once)
BULK_CONCURRENT_CALLS = 2
# contacts come from a time zone where it is about noon, so quiet hours do not turn every
# answer into "no action" and the paid path (reservations) is measured whenever the bench runs
_OFFSET_H = (12 - time.gmtime().tm_hour + 12) % 24 - 12
MIDDAY_ZONE = "UTC" if _OFFSET_H == 0 else f"Etc/GMT{-_OFFSET_H:+d}"  # Etc/GMT signs are inverted
# as `make run` serves the app (CAREPILOT_WEB_WORKERS, CAREPILOT_WEB_THREADS); BENCH_GUNICORN_THREADS=1:
# sync workers
GUNICORN_WORKERS = Settings.web_workers
THREADS = int(os.environ.get("BENCH_GUNICORN_THREADS", str(Settings.web_threads)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _seed(url: str) -> dict[str, str]:
    engine = make_engine(url)
    migrate(engine)
    with sessionmaker(bind=engine)() as session:
        report = seed_demo(session, password="bench-password", actor="bench")
        for key, target in (("care-sms-pilot", {}), ("vip-manager-pilot", {"arpu": {"$gte": 100}})):
            body = schemas.ExperimentIn.model_validate(
                {
                    "key": key,
                    "name": key,
                    "target": target,
                    "coverage": 0.05,
                    "arms": [{"key": "control"}, {"key": "care", "offer_code": "CARE_SMS"}],
                }
            )
            create_experiment(session, body, actor="bench")
            transition_experiment(session, key, "pilot", actor="bench")
        # roomy budgets: the run measures reservations, not a retention fund spent in the warm-up
        session.execute(update(Budget).values(cap_amount=100_000_000, cap_share_of_revenue=None))
        # an outbound batch goes to subscribers nobody contacted yet (the single-decision phase
        # used the demo's 2,000 up to their contact caps): copies of the demo profiles
        session.execute(
            text(
                "INSERT INTO subscribers (id, attributes, tier, tiers, arpu, ltv, updated_at) "
                "SELECT :prefix || lpad(g::text, 6, '0'), s.attributes, s.tier, s.tiers, s.arpu, s.ltv, s.updated_at "
                "FROM generate_series(0, :count - 1) AS g "
                "JOIN subscribers s ON s.id = :demo || lpad((g % :demo_count)::text, 5, '0')"
            ),
            {
                "prefix": BULK_ID_PREFIX,
                "count": BULK_CONTACTS * BULK_ROUNDS * (1 + BULK_CONCURRENT_CALLS),
                "demo": DEMO_ID_PREFIX,
                "demo_count": DEMO_SUBSCRIBERS,
            },
        )
        session.commit()
    engine.dispose()
    return report.channel_keys


@contextmanager
def gunicorn_serving(app: str, env: dict[str, str], ready_path: str = "/readyz") -> Iterator[int]:
    """Serve ``app`` (a gunicorn app such as ``wsgi:app``) with ``GUNICORN_WORKERS`` workers ×
    ``THREADS`` threads on a free loopback port, with ``env`` as its environment; yields the
    port once ``ready_path`` answers, and stops the server when the block ends."""
    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--workers",
            str(GUNICORN_WORKERS),
            "--threads",
            str(THREADS),
            "--bind",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
            app,
        ],
        cwd=PROJECT_ROOT,
        env=env,
    )
    try:
        _wait_ready(port, path=ready_path)
        yield port
    finally:
        server.terminate()
        server.wait(timeout=30)


def _wait_ready(port: int, timeout_s: float = 60, path: str = "/readyz") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("gunicorn did not become ready")


class _Connection:
    """A keep-alive HTTP/1.1 client on one socket, as lean as a load generator should be: the
    machine's two cores are shared with the server, and ``http.client`` (with ``json``) cost
    about 0.38 ms of CPU per decision request, a tenth of the whole machine's cost of a
    decision, where this costs 0.12–0.14 ms."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def request(self, head: bytes, body: bytes = b"") -> tuple[int, bytes]:
        """Send one request (``head``: request line and headers, without Content-Length or
        the blank line) and return (status, body)."""
        self.sock.sendall(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            self.buffer += self._more()
        header, rest = self.buffer[:end] + b"\r\n", self.buffer[end + 4 :]
        length_at = header.lower().find(b"\r\ncontent-length:")
        if length_at < 0:
            raise http.client.HTTPException(f"no Content-Length in {header[:200]!r}")
        length = int(header[length_at + 17 : header.index(b"\r\n", length_at + 2)])
        while len(rest) < length:
            rest += self._more()
        self.buffer = rest[length:]
        return int(header[9:12]), rest[:length]

    def _more(self) -> bytes:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        return chunk

    def close(self) -> None:
        self.sock.close()


def _client_process(port: int, path: str, keys: dict[str, str], seconds: float, proc: int, out: Any) -> None:
    """Threads that send requests back to back for ``seconds``; puts (latencies, degraded,
    acted, the CPU seconds this process used)."""
    channels = sorted(keys)
    latencies: list[float] = []
    flags = {"degraded": 0, "acted": 0}
    lock = threading.Lock()
    trivial_head = f"GET {path} HTTP/1.1\r\nHost: bench\r\n".encode()
    decision_heads = {
        channel: (
            f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {keys[channel]}\r\n"
        ).encode()
        for channel in channels
    }

    def run(thread: int) -> None:
        conn = _Connection(port)
        local, degraded, acted, i = [], 0, 0, 0
        stop_at = time.monotonic() + seconds
        while time.monotonic() < stop_at:
            i += 1
            channel = channels[i % len(channels)]
            if path == "/healthz":
                head, body = trivial_head, b""
            else:
                sid = f"{DEMO_ID_PREFIX}{(proc * 7919 + thread * 104729 + i) % DEMO_SUBSCRIBERS:05d}"
                head = decision_heads[channel]
                body = orjson.dumps(
                    {
                        "subscriber_id": sid,
                        "channel": channel,
                        "context": {"timezone": MIDDAY_ZONE},
                        "request_id": f"b{proc}-{thread}-{i}-{time.time_ns()}",
                    }
                )
            started = time.perf_counter()
            try:
                status, payload = conn.request(head, body)
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = _Connection(port)
                continue
            local.append(time.perf_counter() - started)
            if status != 200:
                raise SystemExit(f"{path} answered {status}: {payload[:300]!r}")
            if path != "/healthz":
                answer = orjson.loads(payload)
                degraded += answer["degraded"]
                acted += answer["action"] is not None
        conn.close()
        with lock:
            latencies.extend(local)
            flags["degraded"] += degraded
            flags["acted"] += acted

    threads = [threading.Thread(target=run, args=(t,)) for t in range(CONCURRENCY_THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out.put((latencies, flags, usage.ru_utime + usage.ru_stime))


def _busy_cpu_s() -> float:
    """CPU seconds the whole machine has spent busy since boot (every process: the app, the
    database, Redis, the load generator, the kernel), from /proc/stat; 0 where there is none."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
    except OSError:
        return 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _load(port: int, path: str, keys: dict[str, str], seconds: float) -> dict[str, Any]:
    busy_before = _busy_cpu_s()
    queue: Any = multiprocessing.get_context("fork").Queue()
    procs = [
        multiprocessing.get_context("fork").Process(target=_client_process, args=(port, path, keys, seconds, p, queue))
        for p in range(CONCURRENCY_PROCESSES)
    ]
    for p in procs:
        p.start()
    results = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    busy_s = _busy_cpu_s() - busy_before
    latencies = sorted(lat for lats, _, _ in results for lat in lats)
    degraded = sum(flags["degraded"] for _, flags, _ in results)
    acted = sum(flags["acted"] for _, flags, _ in results)
    client_s = sum(cpu_s for _, _, cpu_s in results)
    count = max(len(latencies), 1)
    return {
        "per_s": len(latencies) / seconds,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "count": len(latencies),
        "degraded": degraded,
        "acted": acted,
        "cpu_ms": busy_s * 1000 / count,
        "client_cpu_ms": client_s * 1000 / count,
    }


def _bulk_call(port: int, key: str, first: int, round_: int) -> bytes:
    """One POST /decisions/bulk of BULK_CONTACTS sms contacts, subscribers ``first`` onwards;
    returns the answer's body."""
    contacts = [
        {
            "subscriber_id": f"{BULK_ID_PREFIX}{first + i:06d}",
            "channel": "sms",
            "context": {"timezone": MIDDAY_ZONE},
            "request_id": f"bulk-{round_}-{first + i}",
        }
        for i in range(BULK_CONTACTS)
    ]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    conn.request(
        "POST",
        "/api/v1/decisions/bulk",
        body=orjson.dumps({"contacts": contacts}),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
    )
    response = conn.getresponse()
    payload = response.read()
    conn.close()
    if response.status != 200:
        raise SystemExit(f"bulk answered {response.status}: {payload[:300]!r}")
    return payload


def _bulk(
    port: int, keys: dict[str, str], calls: int, first_subscriber: int, rounds: int = BULK_ROUNDS
) -> tuple[float, float, float]:
    """Decisions per second of POST /decisions/bulk with ``calls`` calls of 10,000 sms
    contacts in flight at once (the best of ``rounds`` rounds), the share of contacts given an
    action and the machine's CPU ms per decision in that round. Every call contacts
    subscribers nobody contacted before, numbered from ``first_subscriber``."""
    best, acted, cpu_ms = 0.0, 0.0, 0.0
    for r in range(rounds):
        firsts = [first_subscriber + (r * calls + c) * BULK_CONTACTS for c in range(calls)]
        payloads: list[bytes] = []
        failures: list[BaseException] = []

        def call(
            first: int, r: int = r, payloads: list[bytes] = payloads, failures: list[BaseException] = failures
        ) -> None:
            try:
                payloads.append(_bulk_call(port, keys["sms"], first, r))
            except BaseException as exc:
                failures.append(exc)

        started, busy_before = time.perf_counter(), _busy_cpu_s()
        threads = [threading.Thread(target=call, args=(first,)) for first in firsts]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed, busy_s = time.perf_counter() - started, _busy_cpu_s() - busy_before
        if failures:
            raise SystemExit(f"a bulk call failed: {failures[0]}")
        answers = [a for payload in payloads for a in orjson.loads(payload)["decisions"]]
        if any(reason["code"] in ("deadline", "degraded") for a in answers for reason in a["reasons"]):
            raise SystemExit("bulk answers were cut short (deadline or degraded): the figure would be flattering")
        if len(answers) / elapsed > best:
            best, acted = len(answers) / elapsed, sum(a["action"] is not None for a in answers) / len(answers)
            cpu_ms = busy_s * 1000 / len(answers)
    return best, acted, cpu_ms


def main() -> None:
    seconds = float(os.environ.get("BENCH_SECONDS", "10"))
    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
    admin_url = postgres_admin_url(admin_url_argument())
    core = measure_core(20_000)
    url = fresh_database(admin_url, DATABASE)
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    try:
        keys = _seed(url)
        engine = make_engine(url)  # the ledger of record is empty: mark the emptied counters rebuilt
        reconcile_ledger(sessionmaker(bind=engine), redis.Redis.from_url(redis_url), grace_s=0)
        engine.dispose()
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "REDIS_URL": redis_url,
            "CAREPILOT_LOG_LEVEL": "WARNING",
            "CAREPILOT_DECISION_RATE_LIMIT": "1000000",
        }
        with gunicorn_serving("wsgi:app", env) as port:
            _load(port, "/api/v1/decisions", keys, 2)  # warm: snapshots, connection pools
            trivial = _load(port, "/healthz", keys, seconds)
            decisions = _load(port, "/api/v1/decisions", keys, seconds)
            bulk, bulk_acted, bulk_cpu_ms = _bulk(port, keys, 1, 0)
            concurrent, _, concurrent_cpu_ms = _bulk(port, keys, BULK_CONCURRENT_CALLS, BULK_CONTACTS * BULK_ROUNDS)
    finally:
        drop_database(admin_url, DATABASE)
    print(
        json.dumps(
            {
                "core_us": core["core_us"],
                "p50_ms": round(decisions["p50_ms"], 2),
                "p99_ms": round(decisions["p99_ms"], 2),
                "decisions_per_s": round(decisions["per_s"]),
                "trivial_per_s": round(trivial["per_s"]),
                "throughput_share": round(decisions["per_s"] / trivial["per_s"], 3),
                "bulk_decisions_per_s": round(bulk),
                "bulk_actions": round(bulk_acted, 3),
                "bulk_concurrent_decisions_per_s": round(concurrent),
                "bulk_concurrent_calls": BULK_CONCURRENT_CALLS,
                "decisions": decisions["count"],
                "cpu_ms_per_decision": round(decisions["cpu_ms"], 3),
                "cpu_ms_per_trivial": round(trivial["cpu_ms"], 3),
                "cpu_ms_per_bulk_decision": round(bulk_cpu_ms, 3),
                "cpu_ms_per_bulk_decision_concurrent": round(concurrent_cpu_ms, 3),
                "cores": os.cpu_count(),
                "client_cpu_ms_per_decision": round(decisions["client_cpu_ms"], 3),
                "client_cpu_ms_per_trivial": round(trivial["client_cpu_ms"], 3),
                "degraded": decisions["degraded"],
                "actions": round(decisions["acted"] / max(decisions["count"], 1), 3),
                "concurrency": CONCURRENCY_PROCESSES * CONCURRENCY_THREADS,
                "gunicorn_workers": GUNICORN_WORKERS,
                "gunicorn_threads": THREADS,
            }
        )
    )


if __name__ == "__main__":
    main()
