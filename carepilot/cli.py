"""``flask --app wsgi <command>``: users, API keys, the demo data, imports and readouts."""

from __future__ import annotations

import functools
import getpass
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import click
from flask import Flask
from sqlalchemy import select

from infra.auth import create_api_key, create_user, revoke_api_key
from infra.auth_models import CHANNELS, ROLES, User
from infra.db import get_database, session_scope
from infra.errors import ApiError

if TYPE_CHECKING:
    from infra.bulk_import import ImportReport


def cli_actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no login name in some containers
        return "cli"


def register_cli(app: Flask) -> None:
    """Attach the project's commands to ``app.cli``."""

    @app.cli.command("create-user")
    @click.option("--email", required=True)
    @click.option("--role", type=click.Choice(ROLES), required=True)
    @click.option("--name", default="")
    @click.password_option(help="At least 10 characters; prompted for when omitted.")
    def create_user_command(email: str, role: str, name: str, password: str) -> None:
        """Create a user who can log in to the admin UI and API."""
        try:
            with session_scope(get_database(app).sessionmaker) as s:
                user = create_user(s, email=email, role=role, password=password, name=name, actor=cli_actor())
                click.echo(f"created {user.role} {user.email} (id {user.id})")
        except ApiError as exc:
            raise click.ClickException(exc.message) from None

    @app.cli.command("create-api-key")
    @click.option("--name", required=True, help="What the key is for, e.g. 'SMS gateway prod'.")
    @click.option("--channel", type=click.Choice(CHANNELS), help="A channel key (decision endpoints).")
    @click.option("--user", "user_email", help="A personal key acting with this user's role.")
    def create_api_key_command(name: str, channel: str | None, user_email: str | None) -> None:
        """Create an API key and print it once (only its hash is stored)."""
        if (channel is None) == (user_email is None):
            raise click.UsageError("give exactly one of --channel or --user")
        try:
            with session_scope(get_database(app).sessionmaker) as s:
                user = None
                if user_email:
                    user = s.scalar(select(User).where(User.email == user_email.strip().lower()))
                    if user is None:
                        raise click.ClickException(f"no user {user_email}")
                key, raw = create_api_key(s, name=name, channel=channel, user=user, actor=cli_actor())
                click.echo(f"key id {key.id} ({key.kind}); store it now, it is not shown again:")
                click.echo(raw)
        except ApiError as exc:
            raise click.ClickException(exc.message) from None

    @app.cli.command("revoke-api-key")
    @click.argument("key_id", type=click.IntRange(1, 2**63 - 1))
    def revoke_api_key_command(key_id: int) -> None:
        """Revoke an API key by id; calls with it get 401 from now on."""
        try:
            with session_scope(get_database(app).sessionmaker) as s:
                revoke_api_key(s, key_id, actor=cli_actor())
                click.echo(f"revoked key {key_id}")
        except ApiError as exc:
            raise click.ClickException(exc.message) from None

    @app.cli.command("seed-demo")
    def seed_demo_command() -> None:
        """Seed the demo catalogue, users, channel keys and subscribers (idempotent)."""
        from offers.demo_seed import seed_demo

        settings = app.config["CAREPILOT_SETTINGS"]
        with session_scope(get_database(app).sessionmaker) as s:
            report = seed_demo(s, password=settings.demo_password, actor=cli_actor())
        created = {k: v for k, v in vars(report).items() if k != "channel_keys"}
        click.echo("demo seeded; created this run: " + ", ".join(f"{k} {v}" for k, v in created.items()))
        for channel, key in report.channel_keys.items():
            click.echo(f"{channel} channel key (shown once): {key}")

    @app.cli.command("retier")
    def retier_command() -> None:
        """Recompute every subscriber's tier now (the worker also runs this monthly)."""
        from offers.subscribers_service import retier_all

        result = retier_all(get_database(app).sessionmaker)
        click.echo(f"scanned {result['scanned']}, changed {result['changed']}: {result['by_tier']}")

    @app.cli.command("readout")
    @click.argument("experiment_key")
    @click.option("--at", "at", default=None, help="Data cutoff, ISO-8601 with offset (default: now).")
    def readout_command(experiment_key: str, at: str | None) -> None:
        """Compute one experiment readout now, in this process, and print its summary."""
        import json

        from experiments.jobs import run_readout
        from experiments.readouts import parse_at
        from infra.db import utcnow

        try:
            cutoff = parse_at(at) or utcnow().replace(microsecond=0)
            summary = run_readout(
                get_database(app).sessionmaker,
                experiment_key,
                cutoff,
                progress=lambda stage, share: click.echo(f"{share:4.0%} {stage}", err=True),
            )
        except ApiError as exc:
            raise click.ClickException(exc.message) from None
        click.echo(json.dumps(summary, indent=2))

    @app.cli.command("reconcile-ledger")
    @click.option(
        "--grace-s",
        type=click.FloatRange(min=0),
        default=None,
        help="Seconds to wait for decisions in flight before summing (default: the job's). "
        "0 only when nothing decides against this Redis.",
    )
    def reconcile_ledger_command(grace_s: float | None) -> None:
        """Rebuild the Redis budget counters and contact windows from the decisions table (paid
        actions are held back until it is done)."""
        from decisioning.jobs import REBUILD_GRACE_S, RebuildSuperseded, reconcile_ledger
        from infra.redis_conn import app_redis

        try:
            summary = reconcile_ledger(
                get_database(app).sessionmaker, app_redis(app), grace_s=REBUILD_GRACE_S if grace_s is None else grace_s
            )
        except RebuildSuperseded as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(
            f"rebuilt {summary['budgets']} budget counter(s) and {summary['contact_windows']} "
            f"contact window(s): {summary['spent']}"
        )

    @app.cli.command("import-subscribers")
    @_import_file_arguments
    def import_subscribers_command(path: str, fmt: str | None) -> None:
        """Import subscriber profiles from a CSV or JSON-lines file, with a progress bar."""
        from offers.subscriber_import import import_subscribers

        _import_file(app, path, fmt, import_subscribers)

    @app.cli.command("import-outcomes")
    @_import_file_arguments
    def import_outcomes_command(path: str, fmt: str | None) -> None:
        """Import experiment outcomes (billing feeds) from a CSV or JSON-lines file, with a
        progress bar."""
        from decisioning.repository import decision_exposures
        from experiments.outcomes import import_outcomes

        _import_file(app, path, fmt, functools.partial(import_outcomes, decision_exposures=decision_exposures))


F = TypeVar("F", bound=Callable[..., None])


def _import_file_arguments(command: F) -> F:
    """What every file-import command takes: the file's path and ``--format``."""
    command = click.option(
        "--format",
        "fmt",
        type=click.Choice(["csv", "jsonl"]),
        help="Default: from the file name (.csv, else JSON lines).",
    )(command)
    return click.argument("path", type=click.Path(exists=True, dir_okay=False))(command)


def _import_file(app: Flask, path: str, fmt: str | None, importer: Callable[..., ImportReport]) -> None:
    """Stream ``path`` through a bulk importer (``import_subscribers``, ``import_outcomes``)
    with a progress bar, then print the report (the first 50 bad rows by line)."""
    import os

    from infra.bulk_import.source import file_lines, format_of_file

    settings = app.config["CAREPILOT_SETTINGS"]
    with (
        click.progressbar(length=os.path.getsize(path), label="importing", show_pos=False) as bar,
        file_lines(path, max_bytes=settings.max_import_bytes, on_read=bar.update) as lines,
    ):
        try:
            report = importer(
                get_database(app).sessionmaker,
                lines,
                fmt or format_of_file(path),
                batch_rows=settings.import_batch_rows,
                max_listed_errors=settings.max_listed_import_errors,
                actor=cli_actor(),
            )
        except ApiError as exc:
            raise click.ClickException(exc.message) from None
    result = report.as_json()
    click.echo(f"accepted {result['accepted']}, rejected {result['rejected_count']}")
    for bad in result["rejected"][:50]:
        click.echo(f"  line {bad['line']}: {bad['error']}")
    if result["rejected_count"] > 50:
        click.echo(f"  … {result['rejected_count'] - 50} more")
