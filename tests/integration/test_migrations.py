"""Migrations build the documented schema, once, even when started concurrently."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from logexport import db
from logexport.redaction import redact_scim_body
from tests.support.migrations import migrate_through
from tests.support.scim_bodies import collect, filler, planted_bodies

EXPECTED_TABLES = {
    "organizations",
    "users",
    "memberships",
    "api_keys",
    "audit_log_entries",
    "scim_events",
    "log_exports",
    "log_export_objects",
    "log_export_download_tokens",
    "console_sessions",
    "logexport_migrations",
}

ALL_VERSIONS = [version for version, _ in db.migration_files()]


async def _tables(conn: asyncpg.Connection) -> set[str]:
    rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
    return {r["tablename"] for r in rows}


async def _index_columns(conn: asyncpg.Connection, table: str) -> list[list[str]]:
    rows = await conn.fetch(
        """
        SELECT array_agg(a.attname ORDER BY k.ordinality) AS columns
        FROM pg_index i
        CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ordinality)
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
        WHERE i.indrelid = $1::regclass
        GROUP BY i.indexrelid
        """,
        table,
    )
    return [list(r["columns"]) for r in rows]


async def test_migrate_on_a_fresh_database_creates_every_table(empty_database_url: str) -> None:
    applied = await db.migrate(empty_database_url)

    assert applied == ALL_VERSIONS
    conn = await db.connect(empty_database_url)
    try:
        assert EXPECTED_TABLES <= await _tables(conn)
        assert await db.pending_migrations(conn) == []
    finally:
        await conn.close()


async def test_second_migrate_is_a_no_op(empty_database_url: str) -> None:
    await db.migrate(empty_database_url)

    assert await db.migrate(empty_database_url) == []
    conn = await db.connect(empty_database_url)
    try:
        count = await conn.fetchval("SELECT count(*) FROM logexport_migrations")
    finally:
        await conn.close()
    assert count == len(ALL_VERSIONS)


async def test_concurrent_migrations_apply_each_version_once(empty_database_url: str) -> None:
    results = await asyncio.gather(*(db.migrate(empty_database_url) for _ in range(3)))

    # Exactly one caller applied everything; the others found nothing left to do.
    assert sorted(results, key=len) == [[], [], ALL_VERSIONS]
    conn = await db.connect(empty_database_url)
    try:
        rows = await conn.fetch("SELECT version FROM logexport_migrations ORDER BY version")
    finally:
        await conn.close()
    assert [r["version"] for r in rows] == ALL_VERSIONS


async def test_unmigrated_database_reports_every_migration_pending(
    empty_database_url: str,
) -> None:
    conn = await db.connect(empty_database_url)
    try:
        assert await db.pending_migrations(conn) == ALL_VERSIONS
    finally:
        await conn.close()


@pytest.mark.parametrize("table", ["audit_log_entries", "scim_events", "log_exports"])
async def test_listing_index_on_organization_time_and_id_exists(
    pool: asyncpg.Pool, table: str
) -> None:
    async with pool.acquire() as conn:
        indexes = await _index_columns(conn, table)

    assert ["organization_id", "created_at", "id"] in indexes


async def _organization_and_user(conn: asyncpg.Connection) -> tuple[uuid.UUID, uuid.UUID]:
    org_id = await conn.fetchval("INSERT INTO organizations (name) VALUES ('Acme') RETURNING id")
    user_id = await conn.fetchval(
        "INSERT INTO users (email, full_name) VALUES ('ada@example.test', 'Ada') RETURNING id"
    )
    return org_id, user_id


async def test_membership_role_outside_owner_admin_viewer_is_rejected(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        org_id, user_id = await _organization_and_user(conn)
        insert = "INSERT INTO memberships (organization_id, user_id, role) VALUES ($1, $2, $3)"

        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(insert, org_id, user_id, "SUPERUSER")
        await conn.execute(insert, org_id, user_id, "VIEWER")

        assert await conn.fetchval("SELECT role FROM memberships") == "VIEWER"


async def test_export_status_outside_the_lifecycle_is_rejected(pool: asyncpg.Pool) -> None:
    now = datetime.now(UTC)
    async with pool.acquire() as conn:
        org_id, user_id = await _organization_and_user(conn)
        insert = """
            INSERT INTO log_exports
                (organization_id, kind, status, from_time, to_time, requested_by)
            VALUES ($1, 'AUDIT_LOG', $2, $3, $4, $5)
        """

        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(insert, org_id, "DONE", now - timedelta(days=1), now, user_id)
        await conn.execute(insert, org_id, "PENDING", now - timedelta(days=1), now, user_id)

        assert await conn.fetchval("SELECT count(*) FROM log_exports") == 1


async def test_users_email_is_unique_regardless_of_case(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await _organization_and_user(conn)

        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute("INSERT INTO users (email) VALUES ('ADA@Example.TEST')")


async def test_each_test_database_starts_empty_and_migrated(database_url: str) -> None:
    conn = await db.connect(database_url)
    try:
        assert await db.pending_migrations(conn) == []
        assert await conn.fetchval("SELECT count(*) FROM organizations") == 0
    finally:
        await conn.close()


# ---------------------------------------------------------------------------- data migrations


ISSUE_BODIES = [
    {"Operations": [{"op": "replace", "path": "password", "Value": "pw-issue-1"}]},
    {"Operations": [{"op": "replace", "Path": "password", "value": "pw-issue-2"}]},
    {"Operations": [{"Op": "replace", "Value": {"PassWord": "pw-issue-3"}}]},
    {
        "Operations": [
            {
                "method": "PATCH",
                "path": "/Users/1",
                "data": {
                    "Operations": [
                        {
                            "OP": "add",
                            "PATH": "urn:ietf:params:scim:schemas:core:2.0:User:Password",
                            "VALUE": "pw-issue-4",
                        }
                    ]
                },
            }
        ]
    },
]


async def test_stored_scim_passwords_are_redacted_by_the_data_migration(
    empty_database_url: str,
) -> None:
    planted = [*collect(planted_bodies(), 60)]
    secrets = [p.password for p in planted] + [f"pw-issue-{i}" for i in range(1, 5)]
    requests = [p.body for p in planted] + ISSUE_BODIES
    # Responses too, and bodies the migration must leave alone.
    responses = [{"id": str(i), "password": f"pw-response-{i}"} for i in range(len(requests))]
    secrets += [f"pw-response-{i}" for i in range(len(requests))]
    harmless = [*collect(filler, 20), None, {"passwordHint": "kept", "pa": "ssword"}]
    await migrate_through(empty_database_url, "0001_initial")
    conn = await asyncpg.connect(empty_database_url)
    try:
        org_id = await conn.fetchval(
            "INSERT INTO organizations (name) VALUES ('Acme') RETURNING id"
        )
        insert = (
            "INSERT INTO scim_events (organization_id, method, path, status_code, request_body,"
            " response_body) VALUES ($1, 'PATCH', $2, 200, $3::jsonb, $4::jsonb)"
        )
        rows = [(r, s) for r, s in zip(requests, responses)] + [(h, None) for h in harmless]
        for i, (request, response) in enumerate(rows):
            await conn.execute(insert, org_id, f"/{i}", _json(request), _json(response))
        untouched_before = await conn.fetch(
            "SELECT path, xmin::text AS xmin FROM scim_events WHERE request_body::text"
            " NOT ILIKE '%password%' AND response_body IS NULL ORDER BY path"
        )
        stored_text = await conn.fetchval("SELECT string_agg(t::text, ' ') FROM scim_events t")
        assert all(secret in stored_text for secret in secrets), "the bodies hold the secrets"

        applied = await db.migrate(empty_database_url)

        assert "0002_redact_scim_secrets" in applied
        stored = await conn.fetch(
            "SELECT path, request_body::text AS request, response_body::text AS response"
            " FROM scim_events"
        )
        after_text = await conn.fetchval("SELECT string_agg(t::text, ' ') FROM scim_events t")
        untouched_after = await conn.fetch(
            "SELECT path, xmin::text AS xmin FROM scim_events WHERE request_body::text"
            " NOT ILIKE '%password%' AND response_body IS NULL ORDER BY path"
        )
        leftover = await conn.fetchval(
            "SELECT count(*) FROM pg_proc WHERE proname LIKE 'logexport_%scim%'"
        )
    finally:
        await conn.close()
    assert [s for s in secrets if s in after_text] == []
    by_path = {row["path"]: row for row in stored}
    # The SQL rules and the Python rules agree on every body.
    for i, (request, response) in enumerate(rows):
        row = by_path[f"/{i}"]
        expected_request = redact_scim_body(request, method="PATCH", path="/Users")
        expected_response = redact_scim_body(response, method="PATCH", path="/Users")
        assert _loads(row["request"]) == expected_request, request
        assert _loads(row["response"]) == expected_response, response
    assert untouched_after == untouched_before  # rows without a password are not rewritten
    assert leftover == 0


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False)


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)
