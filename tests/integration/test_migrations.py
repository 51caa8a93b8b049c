"""Migrations build the schema SPEC §2 describes, once, even when started concurrently."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from logexport import db

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
