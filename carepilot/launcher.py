"""``make run`` (console script ``carepilot-run``): everything a newcomer needs, in one process tree.

1. read the settings (a bad one stops here with a clear message);
2. start the embedded Redis server when ``REDIS_URL`` is unset;
3. migrate the database to the latest revision, seed the demo (idempotent) and rebuild the
   budget ledger in Redis if Redis lost it (paid actions wait for it: ``decisioning.jobs``);
4. start the web server (gunicorn) and one RQ worker with its scheduler, sharing that Redis;
5. print the URL and the demo login; stop everything cleanly on Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from types import FrameType

from alembic import command
from alembic.config import Config

from infra.settings import PROJECT_ROOT, Settings, SettingsError


def migrate(settings: Settings) -> None:
    cfg = Config(str(PROJECT_ROOT / "alembic.ini"))
    cfg.set_main_option("sqlalchemy.url", settings.database_url.replace("%", "%%"))
    command.upgrade(cfg, "head")


def seed(settings: Settings) -> dict[str, str]:
    """Seed the demo catalogue and users; returns channel keys created on this run."""
    from infra.db import Database, session_scope
    from offers.demo_seed import seed_demo

    database = Database(settings.database_url)
    with session_scope(database.sessionmaker) as session:
        report = seed_demo(session, password=settings.demo_password, actor="make run (demo seed)")
    database.engine.dispose()
    return report.channel_keys


def rebuild_ledger_if_needed(settings: Settings, embedded: bool) -> None:
    """Rebuild the budget counters when Redis has no ready mark (a new or emptied Redis), so paid
    actions are possible from the first request. Without a wait for decisions in flight only
    on the embedded server, which nothing else can reach; a shared one waits the usual grace."""
    from decisioning.jobs import REBUILD_GRACE_S, RebuildSuperseded, reconcile_ledger
    from decisioning.ledger import BudgetLedger, LedgerUnavailable
    from infra.db import Database
    from infra.redis_conn import connect_redis

    client = connect_redis(settings)
    try:
        if BudgetLedger(client).is_ready():
            return
        print("rebuilding the budget ledger in Redis from the decisions table…", flush=True)
        database = Database(settings.database_url)
        try:
            reconcile_ledger(database.sessionmaker, client, grace_s=0 if embedded else REBUILD_GRACE_S)
        finally:
            database.engine.dispose()
    except (LedgerUnavailable, RebuildSuperseded) as exc:  # the workers' cron tick rebuilds it
        print(
            f"the budget ledger is not rebuilt yet ({exc}); paid actions wait for the workers' reconcile",
            file=sys.stderr,
            flush=True,
        )
    finally:
        client.close()


def _banner(settings: Settings, channel_keys: dict[str, str]) -> str:
    url = f"http://{settings.host}:{settings.port}"
    lines = [
        "",
        "carepilot is running",
        f"  admin UI   {url}/admin/        API docs: README.md#api",
        f"  readiness  {url}/readyz",
        f"  login      marketing@carepilot.demo / {settings.demo_password}",
        "             (also admin@carepilot.demo and analyst@carepilot.demo, same password)",
        f"  database   {settings.database_url}",
        f"  redis      {settings.redis_url or 'embedded'}",
    ]
    for channel, key in channel_keys.items():
        lines.append(f"  {channel} channel key (shown once): {key}")
    lines.append("  stop with Ctrl-C")
    return "\n".join(lines)


def main() -> None:
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        sys.exit(f"carepilot-run: {exc}")
    env = dict(os.environ)
    embedded = not settings.redis_url
    if embedded:
        from infra.redis_conn import embedded_redis_url, stop_embedded_redis

        env["REDIS_URL"] = embedded_redis_url(settings.instance_dir)
        settings = Settings.from_env(env)
    env.setdefault("CAREPILOT_INSTANCE_DIR", str(settings.instance_dir))

    print("migrating the database…", flush=True)
    migrate(settings)
    print("seeding the demo data…", flush=True)
    channel_keys = seed(settings)
    rebuild_ledger_if_needed(settings, embedded=embedded)

    web = [
        sys.executable,
        "-m",
        "gunicorn",
        "--workers",
        str(settings.web_workers),
        "--threads",
        str(settings.web_threads),
        "--bind",
        f"{settings.host}:{settings.port}",
        "--access-logfile",
        "-",
        "--graceful-timeout",
        "5",
        "wsgi:app",
    ]
    worker = [sys.executable, "-m", "carepilot.worker"]
    # (module name, process): the name is what a message about the child calls it
    children = [(command[2], subprocess.Popen(command, cwd=PROJECT_ROOT, env=env)) for command in (web, worker)]
    stopping = False

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(_banner(settings, channel_keys), flush=True)
    exit_code = 0
    try:
        while not stopping:
            for name, child in children:
                if child.poll() is not None:
                    print(
                        f"carepilot-run: {name} exited with {child.returncode}; stopping",
                        file=sys.stderr,
                        flush=True,
                    )
                    exit_code, stopping = 1, True
            time.sleep(0.5)
    finally:
        for _, child in children:
            if child.poll() is None:
                child.terminate()
        for _, child in children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
        if embedded:
            stop_embedded_redis()
    sys.exit(exit_code)


if __name__ == "__main__":
    main()
