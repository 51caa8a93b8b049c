"""The operator commands as an operator runs them: ``logexport`` subprocesses on a real database."""

from __future__ import annotations

import os
import uuid

import pytest

from logexport import db, identity, policy
from logexport.policy import Role
from tests.support.cli import Result, run_logexport, settings_env

TIMEOUT = 120


async def logexport(*args: str, database_url: str | None) -> Result:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")}
    if database_url is not None:
        env["LOGEXPORT_DATABASE_URL"] = database_url
    return await run_logexport(*args, env=env, timeout=TIMEOUT)


async def ok(*args: str, database_url: str) -> Result:
    result = await logexport(*args, database_url=database_url)
    assert result.code == 0, result.stderr
    return result


async def test_migrate_applies_the_schema_once(empty_database_url):
    first = await ok("migrate", database_url=empty_database_url)
    assert "0001_initial" in first.stderr
    second = await ok("migrate", database_url=empty_database_url)
    assert "up to date" in second.stderr
    conn = await db.connect(empty_database_url)
    try:
        assert await db.pending_migrations(conn) == []
    finally:
        await conn.close()


async def test_operator_sets_up_an_organization_and_a_working_api_key(database_url, pool):
    org_id = uuid.UUID(
        (
            await ok("admin", "create-organization", "Acme Corp", database_url=database_url)
        ).stdout.strip()
    )
    user_id = uuid.UUID(
        (
            await ok(
                "admin",
                "create-user",
                "Ada@Example.com",
                "--name",
                "Ada Lovelace",
                database_url=database_url,
            )
        ).stdout.strip()
    )
    await ok(
        "admin",
        "add-member",
        str(org_id),
        "ada@example.com",
        "--role",
        "admin",
        database_url=database_url,
    )

    created = await ok(
        "admin",
        "create-api-key",
        "ada@example.com",
        "--name",
        "CI",
        "--expires-in",
        "30d",
        database_url=database_url,
    )
    token = created.stdout.strip()
    assert created.stdout == token + "\n", "the token is alone on stdout"
    assert token.startswith("lex_")
    assert token not in created.stderr

    async with pool.acquire() as conn:
        principal = await identity.authenticate(conn, token)
        assert principal is not None and principal.user_id == user_id
        assert await policy.role_of(conn, org_id, user_id) is Role.ADMIN
        [key] = await identity.list_api_keys(conn, user_id)
        assert key.expires_at is not None

    listed = await ok("admin", "list-api-keys", "ada@example.com", database_url=database_url)
    assert str(key.id) in listed.stdout and "active" in listed.stdout
    assert token not in listed.stdout

    await ok(
        "admin",
        "set-role",
        str(org_id),
        "ada@example.com",
        "--role",
        "VIEWER",
        database_url=database_url,
    )
    async with pool.acquire() as conn:
        assert await policy.role_of(conn, org_id, user_id) is Role.VIEWER

    await ok("admin", "revoke-api-key", str(key.id), database_url=database_url)
    async with pool.acquire() as conn:
        assert await identity.authenticate(conn, token) is None
    listed = await ok("admin", "list-api-keys", "ada@example.com", database_url=database_url)
    assert "revoked" in listed.stdout

    await ok("admin", "remove-member", str(org_id), "ada@example.com", database_url=database_url)
    async with pool.acquire() as conn:
        assert await policy.role_of(conn, org_id, user_id) is None


async def test_seed_loads_synthetic_rows_with_redacted_passwords(database_url, pool):
    async with pool.acquire() as conn:
        org = await identity.create_organization(conn, "Acme")
    result = await ok(
        "admin",
        "seed",
        str(org.id),
        "--audit-entries",
        "3000",
        "--scim-events",
        "2000",
        "--days",
        "7",
        database_url=database_url,
    )
    assert "seeded 3000 audit log entries and 2000 SCIM events" in result.stderr
    async with pool.acquire() as conn:
        stats = await conn.fetchrow(
            """
            SELECT count(*) AS n,
                   count(DISTINCT action) AS actions,
                   count(DISTINCT actor_type) AS actor_types,
                   count(*) FILTER (WHERE family(ip_address) = 6) AS v6,
                   count(*) FILTER (WHERE actor_name LIKE '=%') AS hostile,
                   min(created_at) > now() - interval '7 days 1 minute' AS in_range
            FROM audit_log_entries WHERE organization_id = $1
            """,
            org.id,
        )
        assert stats["n"] == 3000
        assert stats["actions"] >= 10 and stats["actor_types"] == 4
        assert stats["v6"] > 0 and stats["hostile"] > 0 and stats["in_range"]
        scim = await conn.fetchrow(
            """
            SELECT count(*) AS n,
                   count(*) FILTER (WHERE status_code >= 400) AS errors,
                   count(*) FILTER (WHERE request_body::text LIKE '%[REDACTED]%') AS redacted,
                   count(*) FILTER (WHERE request_body::text ~ '"Pw-') AS leaked
            FROM scim_events WHERE organization_id = $1
            """,
            org.id,
        )
        assert scim["n"] == 2000 and scim["errors"] > 0
        assert scim["redacted"] > 0 and scim["leaked"] == 0


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("admin", "add-member", "not-a-uuid", "a@example.com", "--role", "ADMIN"), 2, "UUID"),
        (
            ("admin", "add-member", str(uuid.UUID(int=1)), "a@example.com", "--role", "GOD"),
            2,
            "GOD",
        ),
        (
            ("admin", "create-api-key", "nobody@example.com", "--name", "k"),
            1,
            "no user has the email nobody@example.com",
        ),
        (("admin", "create-user", "not-an-email", "--name", "X"), 1, "email"),
        (("admin", "revoke-api-key", str(uuid.UUID(int=7))), 1, "not found"),
        (
            ("admin", "seed", str(uuid.UUID(int=7)), "--audit-entries", "1", "--scim-events", "1"),
            1,
            "not found",
        ),
        (
            ("admin", "create-api-key", "a@example.com", "--name", "k", "--expires-in", "soon"),
            2,
            "soon",
        ),
    ],
)
async def test_mistakes_end_with_one_line_and_the_documented_exit_code(
    database_url, args, code, message
):
    result = await logexport(*args, database_url=database_url)
    assert result.code == code, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    if code == 1:
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")


async def test_missing_or_unreachable_database_is_reported_without_secrets():
    missing = await logexport("admin", "create-organization", "Acme", database_url=None)
    assert missing.code == 2
    assert missing.stderr.strip() == "error: LOGEXPORT_DATABASE_URL is not set"

    malformed = await logexport("migrate", database_url="mysql://u:hunter2@127.0.0.1/x")
    assert malformed.code == 2 and "LOGEXPORT_DATABASE_URL" in malformed.stderr
    assert "hunter2" not in malformed.stderr

    unreachable = await logexport("migrate", database_url="postgresql://u:hunter2@127.0.0.1:1/x")
    assert unreachable.code == 1 and unreachable.stderr.startswith("error: ")
    assert "hunter2" not in unreachable.stderr


async def test_duplicate_membership_is_refused(database_url, pool):
    async with pool.acquire() as conn:
        org = await identity.create_organization(conn, "Acme")
        await identity.create_user(conn, "ada@example.com", "Ada")
    await ok(
        "admin",
        "add-member",
        str(org.id),
        "ada@example.com",
        "--role",
        "OWNER",
        database_url=database_url,
    )
    again = await logexport(
        "admin",
        "add-member",
        str(org.id),
        "ada@example.com",
        "--role",
        "ADMIN",
        database_url=database_url,
    )
    assert again.code == 1 and "already a member" in again.stderr
    async with pool.acquire() as conn:
        role = await conn.fetchval(
            "SELECT role FROM memberships WHERE organization_id = $1", org.id
        )
    assert role == "OWNER"


async def test_the_last_owner_is_neither_demoted_nor_removed(database_url, pool):
    async with pool.acquire() as conn:
        org = await identity.create_organization(conn, "Acme")
        for email in ("ada@example.com", "grace@example.com"):
            await identity.create_user(conn, email, email.split("@")[0].title())
    org_id = str(org.id)
    await ok("admin", "add-member", org_id, "ada@example.com", "--role", "owner",
             database_url=database_url)

    for args, verb in (
        (("set-role", org_id, "ada@example.com", "--role", "admin"), "demote"),
        (("set-role", org_id, "ada@example.com", "--role", "VIEWER"), "demote"),
        (("remove-member", org_id, "ada@example.com"), "remove"),
    ):
        refused = await logexport("admin", *args, database_url=database_url)
        assert refused.code == 1, refused.stderr
        assert refused.stderr == (
            f"error: cannot {verb} the organization's last OWNER: "
            "give another member the OWNER role first\n"
        )
        assert refused.stdout == ""

    async def owners() -> list[str]:
        async with pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT u.email FROM memberships m JOIN users u ON u.id = m.user_id"
                " WHERE m.organization_id = $1 AND m.role = 'OWNER' ORDER BY u.email",
                org.id,
            )
        return [row["email"] for row in rows]

    assert await owners() == ["ada@example.com"]

    # Once someone else is OWNER, the first one may step down and leave.
    await ok("admin", "add-member", org_id, "grace@example.com", "--role", "owner",
             database_url=database_url)
    demoted = await ok("admin", "set-role", org_id, "ada@example.com", "--role", "viewer",
                       database_url=database_url)
    assert "ada@example.com is now VIEWER" in demoted.stderr
    await ok("admin", "remove-member", org_id, "ada@example.com", database_url=database_url)
    assert await owners() == ["grace@example.com"]
    last = await logexport("admin", "remove-member", org_id, "grace@example.com",
                           database_url=database_url)
    assert last.code == 1 and "last OWNER" in last.stderr


async def test_a_database_never_migrated_is_met_with_the_command_that_fixes_it(
    empty_database_url,
):
    result = await logexport(
        "admin", "create-organization", "Acme", database_url=empty_database_url
    )
    assert result.code == 1
    assert result.stderr.strip().splitlines() == [
        'error: database error: relation "organizations" does not exist; '
        "the schema is missing or out of date: run logexport migrate"
    ]


@pytest.mark.parametrize("command", [["serve", "--port", "0"], ["worker"]])
async def test_serve_and_worker_refuse_to_start_on_a_database_never_migrated(
    empty_database_url, settings, command
):
    unmigrated = settings.derive(database_url=empty_database_url)
    env = {"PATH": os.environ.get("PATH", ""), **settings_env(unmigrated)}
    result = await run_logexport(*command, env=env, timeout=TIMEOUT)
    assert result.code == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "error: the database has no logexport tables yet: run logexport migrate"
    )
