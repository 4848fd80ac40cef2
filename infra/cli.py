"""``flask --app wsgi <command>``: users, API keys and the demo data."""

from __future__ import annotations

import getpass

import click
from flask import Flask
from sqlalchemy import select

from infra.auth import create_api_key, create_user, revoke_api_key
from infra.auth_models import CHANNELS, ROLES, User
from infra.db import get_database, session_scope
from infra.errors import ApiError


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
                user = create_user(s, email=email, role=role, password=password, name=name,
                                   actor=cli_actor())
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
    @click.argument("key_id", type=int)
    def revoke_api_key_command(key_id: int) -> None:
        """Revoke an API key by id; calls with it get 401 from now on."""
        try:
            with session_scope(get_database(app).sessionmaker) as s:
                revoke_api_key(s, key_id, actor=cli_actor())
                click.echo(f"revoked key {key_id}")
        except ApiError as exc:
            raise click.ClickException(exc.message) from None
