"""The log streams migration: transaction ids on the entry tables without rewriting them,
and the constraints that back the delivery guarantee."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from logexport import db
from tests.support.migrations import migrate_through


async def test_transaction_ids_are_added_without_rewriting_the_entry_tables(
    empty_database_url: str,
) -> None:
    """A volatile default on ADD COLUMN would rewrite every row under an exclusive lock: the
    tables keep their files, old rows keep NULL, new rows get their transaction's id."""
    await migrate_through(empty_database_url, "0006_manifests")
    conn = await asyncpg.connect(empty_database_url)
    try:
        org = await conn.fetchval("INSERT INTO organizations (name) VALUES ('Old') RETURNING id")
        await conn.execute(
            "INSERT INTO audit_log_entries (organization_id, actor_type, action)"
            " SELECT $1, 'SYSTEM', 'old.entry' FROM generate_series(1, 100)",
            org,
        )
        await conn.execute(
            "INSERT INTO scim_events (organization_id, method, path, status_code)"
            " VALUES ($1, 'GET', '/Users', 200)",
            org,
        )
        files = "SELECT pg_relation_filenode($1::regclass)"
        before = [await conn.fetchval(files, t) for t in ("audit_log_entries", "scim_events")]

        assert "0007_log_streams" in await db.migrate(empty_database_url)

        after = [await conn.fetchval(files, t) for t in ("audit_log_entries", "scim_events")]
        assert after == before
        assert (
            await conn.fetchval("SELECT count(*) FROM audit_log_entries WHERE xid IS NULL") == 100
        )
        assert await conn.fetchval("SELECT count(*) FROM scim_events WHERE xid IS NULL") == 1
        async with conn.transaction():
            written = await conn.fetchval(
                "INSERT INTO audit_log_entries (organization_id, actor_type, action)"
                " VALUES ($1, 'SYSTEM', 'new.entry') RETURNING xid",
                org,
            )
            assert written == await conn.fetchval("SELECT pg_current_xact_id()")
    finally:
        await conn.close()


async def test_a_stream_has_one_delivery_per_sequence_and_at_most_one_waiting(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        org = await conn.fetchval("INSERT INTO organizations (name) VALUES ('S') RETURNING id")
        stream = uuid.uuid4()
        await conn.execute(
            "INSERT INTO log_streams (id, organization_id, kind, destination_type, destination,"
            " interval_seconds) VALUES ($1, $2, 'AUDIT_LOG', 'HTTPS', '{}', 60)",
            stream,
            org,
        )
        insert = (
            "INSERT INTO log_stream_deliveries (id, stream_id, organization_id, sequence, test,"
            " status) VALUES ($1, $2, $3, $4, $5, $6)"
        )
        await conn.execute(insert, uuid.uuid4(), stream, org, 1, False, "DELIVERED")
        await conn.execute(insert, uuid.uuid4(), stream, org, 2, False, "PENDING")
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute(insert, uuid.uuid4(), stream, org, 2, False, "DELIVERED")
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute(insert, uuid.uuid4(), stream, org, 3, False, "PENDING")
        # A test delivery has no sequence and stands outside the chain.
        await conn.execute(insert, uuid.uuid4(), stream, org, None, True, "PENDING")
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(insert, uuid.uuid4(), stream, org, None, False, "PENDING")
