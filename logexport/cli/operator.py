"""Operator commands: ``migrate`` and ``admin …``.

They talk to the database named by ``LOGEXPORT_DATABASE_URL``. Output meant for scripts
(new ids, the one-time API token) goes to stdout alone on its line; everything a person
reads goes to stderr. The database layer is imported when a command runs, not when its
help is shown.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, TypeVar
from uuid import UUID

import click

from logexport.actions import Role
from logexport.cli.common import load_settings, run
from logexport.config import parse_duration
from logexport.errors import NotFound
from logexport.timeutil import format_rfc3339, utc_now

if TYPE_CHECKING:
    import asyncpg

    from logexport import identity

T = TypeVar("T")


def _with_database(work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    from logexport import db

    settings = load_settings("database_url")

    async def main() -> T:
        conn = await db.connect(settings.require("database_url"))
        try:
            return await work(conn)
        finally:
            await conn.close()

    return run(main())


async def _user(conn: asyncpg.Connection, email: str) -> identity.User:
    from logexport import identity

    user = await identity.get_user_by_email(conn, email)
    if user is None:
        raise NotFound(f"no user has the email {email}")
    return user


def _info(message: str) -> None:
    click.echo(message, err=True)


class _Duration(click.ParamType[timedelta]):
    name = "DURATION"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> timedelta:
        if isinstance(value, timedelta):
            return value
        try:
            seconds = parse_duration(str(value))
        except ValueError as exc:
            self.fail(f"{value!r}: {exc}", param, ctx)
        if seconds <= 0:
            self.fail("must be greater than zero", param, ctx)
        return timedelta(seconds=seconds)


_ROLE = click.Choice([r.value for r in Role], case_sensitive=False)


@click.command("migrate")
def migrate() -> None:
    """Apply pending database migrations (safe to run concurrently)."""
    from logexport import db

    settings = load_settings("database_url")
    applied = run(db.migrate(settings.require("database_url")))
    _info(f"applied {', '.join(applied)}" if applied else "the database is up to date")


@click.group("admin")
def admin() -> None:
    """Manage organizations, users, memberships and API keys; load synthetic data."""


@admin.command("create-organization")
@click.argument("name")
def create_organization(name: str) -> None:
    """Create an organization and print its id."""
    from logexport import identity

    org = _with_database(lambda conn: identity.create_organization(conn, name))
    click.echo(org.id)
    _info(f"created organization {org.name!r}")


@admin.command("create-user")
@click.argument("email")
@click.option("--name", "full_name", required=True, help="The user's full name.")
def create_user(email: str, full_name: str) -> None:
    """Create a user and print their id."""
    from logexport import identity

    user = _with_database(lambda conn: identity.create_user(conn, email, full_name))
    click.echo(user.id)
    _info(f"created user {user.email}")


@admin.command("add-member")
@click.argument("organization_id", metavar="ORG_ID", type=click.UUID)
@click.argument("email")
@click.option("--role", required=True, type=_ROLE, help="OWNER, ADMIN or VIEWER.")
def add_member(organization_id: UUID, email: str, role: str) -> None:
    """Give a user a role in an organization."""
    from logexport import identity

    _change_membership(identity.add_member, organization_id, email, role)


@admin.command("set-role")
@click.argument("organization_id", metavar="ORG_ID", type=click.UUID)
@click.argument("email")
@click.option("--role", required=True, type=_ROLE, help="OWNER, ADMIN or VIEWER.")
def set_role(organization_id: UUID, email: str, role: str) -> None:
    """Change a member's role."""
    from logexport import identity

    _change_membership(identity.set_role, organization_id, email, role)


def _change_membership(
    change: Callable[[asyncpg.Connection, UUID, UUID, str], Awaitable[identity.Membership]],
    organization_id: UUID,
    email: str,
    role: str,
) -> None:
    async def work(conn: asyncpg.Connection) -> identity.Membership:
        user = await _user(conn, email)
        return await change(conn, organization_id, user.id, role)

    membership = _with_database(work)
    _info(f"{email} is now {membership.role} of {organization_id}")


@admin.command("remove-member")
@click.argument("organization_id", metavar="ORG_ID", type=click.UUID)
@click.argument("email")
def remove_member(organization_id: UUID, email: str) -> None:
    """Remove a user from an organization."""
    from logexport import identity

    async def work(conn: asyncpg.Connection) -> identity.Membership:
        user = await _user(conn, email)
        return await identity.remove_member(conn, organization_id, user.id)

    _with_database(work)
    _info(f"{email} is no longer a member of {organization_id}")


@admin.command("create-api-key")
@click.argument("email")
@click.option("--name", required=True, help="What the key is for, e.g. 'CI export job'.")
@click.option("--expires-in", type=_Duration(), help="Lifetime such as 90d or 12h (default: none).")
def create_api_key(email: str, name: str, expires_in: timedelta | None) -> None:
    """Create an API key for a user and print its token (shown only this once)."""
    from logexport import identity

    async def work(conn: asyncpg.Connection) -> tuple[identity.ApiKey, str]:
        user = await _user(conn, email)
        return await identity.create_api_key(conn, user.id, name, expires_in)

    key, token = _with_database(work)
    expiry = format_rfc3339(key.expires_at) if key.expires_at else "never"
    _info(f"API key {key.id} for {email} (expires: {expiry}); the token below is shown once:")
    click.echo(token)


@admin.command("list-api-keys")
@click.argument("email")
def list_api_keys(email: str) -> None:
    """List a user's API keys (never their tokens)."""
    from logexport import identity

    async def work(conn: asyncpg.Connection) -> list[identity.ApiKey]:
        user = await _user(conn, email)
        return await identity.list_api_keys(conn, user.id)

    keys = _with_database(work)
    now = utc_now()

    def when(value: datetime | None) -> str:
        return format_rfc3339(value) if value is not None else "-"

    click.echo("ID\tNAME\tSTATUS\tCREATED\tEXPIRES\tLAST USED")
    for key in keys:
        status = "revoked" if key.revoked_at else "active" if key.is_active(now) else "expired"
        click.echo(
            f"{key.id}\t{key.name}\t{status}\t{when(key.created_at)}\t{when(key.expires_at)}"
            f"\t{when(key.last_used_at)}"
        )


@admin.command("revoke-api-key")
@click.argument("key_id", metavar="KEY_ID", type=click.UUID)
def revoke_api_key(key_id: UUID) -> None:
    """Revoke an API key; requests and console sessions using it stop at once."""
    from logexport import identity

    key = _with_database(lambda conn: identity.revoke_api_key(conn, key_id))
    _info(f"revoked API key {key.id} ({key.name})")


@admin.command("sign-out-everywhere")
@click.argument("email")
def sign_out_everywhere(email: str) -> None:
    """End every console session of a user (their API keys keep working)."""
    # Imported here: the session store sits in the web package (Starlette), which the other
    # operator commands, `migrate` first, do not need.
    from logexport.web import sessions

    async def work(conn: asyncpg.Connection) -> int:
        return await sessions.end_user_sessions(conn, (await _user(conn, email)).id)

    _info(f"ended {_with_database(work)} console session(s) of {email}")


@admin.command("seed")
@click.argument("organization_id", metavar="ORG_ID", type=click.UUID)
@click.option("--audit-entries", type=click.IntRange(min=0), required=True,
              help="How many audit log entries to add.")  # fmt: skip
@click.option("--scim-events", type=click.IntRange(min=0), required=True,
              help="How many SCIM events to add.")  # fmt: skip
@click.option("--days", type=click.IntRange(min=1, max=3650), default=30, show_default=True,
              help="Spread the rows over this many days up to now.")  # fmt: skip
@click.option("--rng-seed", type=int, default=0, show_default=True,
              help="The same seed gives the same content.")  # fmt: skip
def seed_command(
    organization_id: UUID, audit_entries: int, scim_events: int, days: int, rng_seed: int
) -> None:
    """Load synthetic audit log entries and SCIM events into an organization."""
    from logexport import identity
    from logexport.seed import seed

    async def work(conn: asyncpg.Connection) -> tuple[int, int]:
        if await identity.get_organization(conn, organization_id) is None:
            raise NotFound(f"organization {organization_id} not found")
        end = utc_now()
        async with conn.transaction():
            return await seed(
                conn,
                organization_id,
                audit_entries=audit_entries,
                scim_events=scim_events,
                start=end - timedelta(days=days),
                end=end,
                rng_seed=rng_seed,
            )

    started = time.monotonic()
    audit, scim = _with_database(work)
    _info(
        f"seeded {audit} audit log entries and {scim} SCIM events "
        f"in {time.monotonic() - started:.1f}s"
    )
