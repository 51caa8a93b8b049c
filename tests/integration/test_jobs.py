"""The job store on real PostgreSQL: each transition of an export's job row, and what a
fenced write says when the attempt no longer holds the job."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg
import pytest
import pytest_asyncio

from logexport import db, manifests
from logexport.config import Settings
from logexport.exports.jobs import (
    Fence,
    GoneReason,
    JobGone,
    JobStore,
    SignedManifest,
    StoredFile,
    abandoned_export_exists,
    liveness_key,
    take_liveness_lock,
)
from logexport.exports.models import ExportKind, LogExport
from logexport.exports.requests import cancel_export
from logexport.exports.sealing import sign_export_manifest
from tests.support.exports import request_export
from tests.support.keys import TEST_SIGNING_KEY
from tests.support.world import World, build_world, eventually, export_status

LEASE = 30.0


@pytest_asyncio.fixture(loop_scope="session")
async def world(pool: asyncpg.Pool) -> World:
    return await build_world(pool)


@pytest.fixture
def store(pool: asyncpg.Pool) -> JobStore:
    return JobStore(pool)


async def new_export(pool: asyncpg.Pool, settings: Settings, world: World) -> LogExport:
    return await request_export(
        pool,
        settings,
        world.admin.principal,
        ExportKind.AUDIT_LOG,
        organization_id=world.organization_id,
        from_time="2026-01-01T00:00:00Z",
        to_time="2026-02-01T00:00:00Z",
    )


async def claimed(
    store: JobStore, worker_id: str = "worker-a", lock_key: int | None = None
) -> tuple[LogExport, Fence]:
    claim = await store.claim(worker_id, lease=LEASE, per_org_cap=5, lock_key=lock_key)
    assert claim is not None
    export = claim.export
    return export, Fence(export.id, worker_id, export.attempts)


async def execute(pool: asyncpg.Pool, query: str, *args: Any) -> None:
    async with pool.acquire() as conn:
        await conn.execute(query, *args)


async def lease_runs_out(pool: asyncpg.Pool, export_id: UUID) -> None:
    await execute(
        pool,
        "UPDATE log_exports SET lease_expires_at = now() - interval '1 second' WHERE id = $1",
        export_id,
    )


def a_file(key: str) -> StoredFile:
    return StoredFile(key, "audit.jsonl", "application/x-ndjson", 10, 2, "ab" * 32)


async def allow(_conn: asyncpg.Connection) -> None:
    return None


KEY = manifests.parse_signing_key(TEST_SIGNING_KEY)


def sign(export: LogExport, sequence: int, previous: str | None) -> SignedManifest:
    return sign_export_manifest(
        export,
        sequence=sequence,
        previous_sha256=previous,
        snapshot_at=datetime(2026, 2, 1, tzinfo=UTC),
        first_row=("2026-01-01T00:00:00.000000Z", "a"),
        last_row=("2026-01-01T00:00:01.000000Z", "b"),
        key=KEY,
    )


# ------------------------------------------------------------------------------ claiming


async def test_claim_takes_the_job_under_a_lease(pool, settings, world, store):
    requested = await new_export(pool, settings, world)
    export, fence = await claimed(store)
    assert export.id == requested.id
    assert export.attempts == 1
    row = await export_status(pool, export.id)
    assert (row["status"], row["lease_owner"], row["lease_lock_key"]) == (
        "PROCESSING",
        "worker-a",
        None,
    )
    assert await store.claim("worker-b", lease=LEASE, per_org_cap=5, lock_key=None) is None
    assert await store.why_gone(fence) is None


async def test_a_job_whose_lease_ran_out_is_claimed_again_as_a_new_attempt(
    pool, settings, world, store
):
    await new_export(pool, settings, world)
    export, first = await claimed(store)
    await lease_runs_out(pool, export.id)
    again, second = await claimed(store, "worker-b")
    assert (again.id, second.attempt) == (export.id, 2)
    assert await store.why_gone(first) is GoneReason.LEASE_LOST
    assert await store.why_gone(second) is None


async def chain_heads(pool: asyncpg.Pool) -> list[tuple[Any, ...]]:
    async with pool.acquire() as conn:
        records = await conn.fetch(
            "SELECT organization_id, kind, last_sequence, last_manifest_sha256"
            " FROM manifest_chains ORDER BY 1, 2"
        )
    return [tuple(r) for r in records]


# ------------------------------------------------------------------------------ fence refusals


Write = Callable[[JobStore, Fence], Awaitable[object]]
FENCED_WRITES: dict[str, Write] = {
    "heartbeat": lambda store, fence: store.heartbeat(fence, lease=LEASE, rows=1, lock_key=None),
    "record_object_key": lambda store, fence: store.record_object_key(
        fence, f"{fence.export_id}/k"
    ),
    "complete": lambda store, fence: store.complete(
        fence, a_file(f"{fence.export_id}/k"), link_ttl=60, before_commit=allow, sign=sign
    ),
}


@pytest.fixture(params=list(FENCED_WRITES))
def fenced_write(request: pytest.FixtureRequest) -> Write:
    return FENCED_WRITES[str(request.param)]


async def test_a_fenced_write_after_a_cancel_is_refused_as_canceled(
    pool, settings, world, store, fenced_write
):
    await new_export(pool, settings, world)
    export, fence = await claimed(store)
    await cancel_export(pool, world.admin.principal, export.id)
    with pytest.raises(JobGone) as refused:
        await fenced_write(store, fence)
    assert refused.value.reason is GoneReason.CANCELED
    row = await export_status(pool, export.id)
    assert row["status"] == "CANCELED"
    assert (row["storage_key"], row["manifest"]) == (None, None)
    assert await chain_heads(pool) == []


async def test_a_fenced_write_after_another_worker_took_over_is_refused_as_lease_lost(
    pool, settings, world, store, fenced_write
):
    await new_export(pool, settings, world)
    export, fence = await claimed(store)
    await lease_runs_out(pool, export.id)
    await claimed(store, "worker-b")
    with pytest.raises(JobGone) as refused:
        await fenced_write(store, fence)
    assert refused.value.reason is GoneReason.LEASE_LOST
    row = await export_status(pool, export.id)
    assert (row["status"], row["lease_owner"], row["attempts"]) == ("PROCESSING", "worker-b", 2)
    assert await chain_heads(pool) == []


async def test_a_fence_for_an_export_that_does_not_exist_counts_as_lease_lost(store):
    fence = Fence(UUID(int=1), "worker-a", 1)
    assert await store.why_gone(fence) is GoneReason.LEASE_LOST
    assert (await store.gone(fence)).reason is GoneReason.LEASE_LOST


async def test_writes_that_end_an_attempt_change_nothing_once_it_is_gone(
    pool, settings, world, store
):
    await new_export(pool, settings, world)
    export, fence = await claimed(store)
    await cancel_export(pool, world.admin.principal, export.id)
    before = await export_status(pool, export.id)
    assert await store.fail(fence, code="X", message="x", email=True) is None
    await store.retry(fence, delay=0, code="X", message="x")
    await store.hand_back(fence)
    await store.set_snapshot_time(fence, before["created_at"])
    assert await export_status(pool, export.id) == before


# ------------------------------------------------------------------------------ transitions


async def test_heartbeat_renews_the_lease_and_stores_progress_and_the_lock_key(
    pool, settings, world, store
):
    await new_export(pool, settings, world)
    export, fence = await claimed(store, lock_key=7)
    before = await export_status(pool, export.id)
    await store.heartbeat(fence, lease=LEASE * 2, rows=123, lock_key=8)
    after = await export_status(pool, export.id)
    assert after["lease_expires_at"] > before["lease_expires_at"]
    assert (after["rows_written"], after["lease_lock_key"]) == (123, 8)


async def test_complete_adopts_the_file_and_makes_the_ready_email_due(pool, settings, world, store):
    await new_export(pool, settings, world)
    export, fence = await claimed(store)
    key = f"{export.id}/attempt-1-abcd1234/audit.jsonl"
    await store.record_object_key(fence, key)
    done = await store.complete(fence, a_file(key), link_ttl=3600, before_commit=allow, sign=sign)
    assert done.status.value == "COMPLETED"
    row = await export_status(pool, export.id)
    assert (row["storage_key"], row["row_count"], row["lease_owner"]) == (key, 2, None)
    assert row["email_run_after"] is not None
    assert await store.unadopted_objects(10, 0) == []
    [due] = await store.claim_due_emails(10, 120)
    assert due.id == export.id


async def test_complete_commits_nothing_when_the_check_before_it_refuses(
    pool, settings, world, store
):
    await new_export(pool, settings, world)
    export, fence = await claimed(store)

    async def refuse(conn: asyncpg.Connection) -> None:
        await conn.execute("UPDATE log_exports SET rows_written = 99 WHERE id = $1", export.id)
        raise PermissionError("no longer allowed")

    with pytest.raises(PermissionError):
        await store.complete(fence, a_file("k"), link_ttl=60, before_commit=refuse, sign=sign)
    row = await export_status(pool, export.id)
    assert (row["status"], row["rows_written"], row["storage_key"]) == ("PROCESSING", 0, None)
    assert await store.why_gone(fence) is None


async def test_complete_signs_a_manifest_numbered_next_in_the_chain(pool, settings, world, store):
    done = []
    for _ in range(2):
        await new_export(pool, settings, world)
        export, fence = await claimed(store)
        key = f"{export.id}/attempt-1-abcd1234/audit.jsonl"
        done.append(
            await store.complete(fence, a_file(key), link_ttl=3600, before_commit=allow, sign=sign)
        )
    first, second = done
    keys = {manifests.key_id(KEY.public_key()): KEY.public_key()}
    stated = [manifests.verify_envelope(json.loads(e.manifest or ""), keys) for e in done]
    assert [e.manifest_sequence for e in done] == [m["sequence"] for m in stated] == [1, 2]
    assert stated[0]["previous_manifest_sha256"] is None
    assert stated[1]["previous_manifest_sha256"] == first.manifest_sha256
    assert [manifests.manifest_sha256(m) for m in stated] == [e.manifest_sha256 for e in done]
    assert stated[1] == {
        "version": 1,
        "export_id": str(second.id),
        "organization_id": str(world.organization_id),
        "kind": "AUDIT_LOG",
        "from_time": "2026-01-01T00:00:00.000000Z",
        "to_time": "2026-02-01T00:00:00.000000Z",
        "filter": second.filter,
        "format": "JSONL",
        "compression": "NONE",
        "file_name": "audit.jsonl",
        "row_count": 2,
        "byte_size": 10,
        "sha256": "ab" * 32,
        "snapshot_at": "2026-02-01T00:00:00.000000Z",
        "first_row": {"created_at": "2026-01-01T00:00:00.000000Z", "id": "a"},
        "last_row": {"created_at": "2026-01-01T00:00:01.000000Z", "id": "b"},
        "sequence": 2,
        "previous_manifest_sha256": first.manifest_sha256,
        "key_id": manifests.key_id(KEY.public_key()),
    }
    assert await chain_heads(pool) == [
        (world.organization_id, "AUDIT_LOG", 2, second.manifest_sha256)
    ]
    # The copy beside the file is the worker's to write, after the commit.
    assert (await export_status(pool, second.id))["manifest_stored_at"] is None


async def test_a_failure_while_signing_commits_nothing_and_takes_no_number(
    pool, settings, world, store
):
    await new_export(pool, settings, world)
    export, fence = await claimed(store)

    def broken(*_: Any) -> SignedManifest:
        raise RuntimeError("the key is unusable")

    with pytest.raises(RuntimeError):
        await store.complete(fence, a_file("k"), link_ttl=60, before_commit=allow, sign=broken)
    row = await export_status(pool, export.id)
    assert (row["status"], row["storage_key"], row["manifest"]) == ("PROCESSING", None, None)
    assert await chain_heads(pool) == []
    done = await store.complete(fence, a_file("k"), link_ttl=60, before_commit=allow, sign=sign)
    assert done.manifest_sequence == 1


async def test_fail_is_final_audited_and_emails_only_when_asked(pool, settings, world, store):
    for email in (True, False):
        await new_export(pool, settings, world)
        export, fence = await claimed(store)
        failed = await store.fail(fence, code="STORAGE_ERROR", message="no", email=email)
        assert failed is not None and failed.status.value == "FAILED"
        row = await export_status(pool, export.id)
        assert (row["error_code"], row["lease_owner"]) == ("STORAGE_ERROR", None)
        assert (row["email_run_after"] is not None) is email
    async with pool.acquire() as conn:
        audited = await conn.fetchval(
            "SELECT count(*) FROM audit_log_entries WHERE action = 'iam:log-export:fail'"
        )
    assert audited == 2


async def test_retry_counts_the_attempt_and_hand_back_does_not(pool, settings, world, store):
    await new_export(pool, settings, world)
    export, fence = await claimed(store)
    await store.retry(fence, delay=0, code="DATABASE_ERROR", message="later")
    row = await export_status(pool, export.id)
    assert (row["status"], row["attempts"], row["error_code"]) == ("PENDING", 1, "DATABASE_ERROR")

    again, fence = await claimed(store)
    assert again.attempts == 2
    await store.hand_back(fence)
    row = await export_status(pool, export.id)
    assert (row["status"], row["attempts"], row["lease_owner"]) == ("PENDING", 1, None)


# ------------------------------------------------------------------------------ emails


async def test_an_email_is_leased_then_retried_marked_sent_or_dropped(pool, settings, world, store):
    exports = []
    for _ in range(3):
        await new_export(pool, settings, world)
        export, fence = await claimed(store)
        await store.fail(fence, code="X", message="x", email=True)
        exports.append(export.id)
    due = await store.claim_due_emails(10, 120)
    assert sorted(e.id for e in due) == sorted(exports)
    assert all(e.email_attempts == 1 for e in due)
    # Leased: no other worker gets them meanwhile.
    assert await store.claim_due_emails(10, 120) == []

    sent, retried, dropped = exports
    await store.mark_emailed(sent)
    await store.retry_email(retried, 0)
    await store.drop_email(dropped)
    [again] = await store.claim_due_emails(10, 120)
    assert (again.id, again.email_attempts) == (retried, 2)
    assert (await export_status(pool, sent))["emailed_at"] is not None
    assert (await export_status(pool, dropped))["email_run_after"] is None


# ------------------------------------------------------------------------------ sweeping


async def test_expire_and_the_objects_no_commit_adopted(pool, settings, world, store):
    await new_export(pool, settings, world)
    export, fence = await claimed(store)
    stale, kept = f"{export.id}/attempt-1-a/audit.jsonl", f"{export.id}/attempt-1-b/audit.jsonl"
    await store.record_object_key(fence, stale)
    await store.record_object_key(fence, kept)
    # A live attempt's objects are its own to finish.
    assert await store.unadopted_objects(10, 0) == []
    await store.complete(fence, a_file(kept), link_ttl=3600, before_commit=allow, sign=sign)
    [orphan] = await store.unadopted_objects(10, 0)
    assert (orphan.storage_key, orphan.export_id, orphan.settled) == (stale, export.id, True)
    [not_yet] = await store.unadopted_objects(10, 3600)
    assert not not_yet.settled
    await store.mark_object_deleted(stale)
    assert await store.unadopted_objects(10, 0) == []

    assert await store.expire_exports() == []
    await execute(
        pool, "UPDATE log_exports SET expires_at = now() - interval '1 s' WHERE id = $1", export.id
    )
    assert await store.expire_exports() == [(export.id, world.organization_id)]
    assert (await export_status(pool, export.id))["status"] == "EXPIRED"


# ------------------------------------------------------------------------------ liveness


async def test_an_export_whose_workers_lock_is_gone_is_abandoned(
    pool, settings, world, store, database_url
):
    key = liveness_key("worker-a")
    holder = await asyncpg.connect(database_url)
    try:
        assert await take_liveness_lock(holder, key)
        async with pool.acquire() as conn:
            assert not await take_liveness_lock(conn, key)
            await new_export(pool, settings, world)
            export, _ = await claimed(store, lock_key=key)
            assert (await export_status(pool, export.id))["lease_lock_key"] == key
            # Its worker is alive: nothing to claim.
            assert await store.claim("worker-b", lease=LEASE, per_org_cap=5, lock_key=None) is None
            assert not await abandoned_export_exists(conn)
            await holder.close()
            # The server drops the lock when the closed session's backend has exited.
            await eventually(lambda: abandoned_export_exists(conn), what="the lock to go")
        again, _ = await claimed(store, "worker-b")
        assert (again.id, again.attempts) == (export.id, 2)
    finally:
        holder.terminate()


async def test_a_keepalive_connection_notices_a_vanished_peer_within_about_25_s(database_url):
    plain = await db.connect(database_url)
    kept = await db.connect(database_url, keepalive=True)
    try:
        assert await plain.fetchval("SHOW tcp_user_timeout") == "0"
        assert await kept.fetchval("SHOW tcp_user_timeout") == "25000"
        assert await kept.fetchval("SHOW tcp_keepalives_idle") == "10"
        assert await kept.fetchval("SHOW tcp_keepalives_interval") == "5"
        assert await kept.fetchval("SHOW tcp_keepalives_count") == "3"
        # Still a logexport connection: its session settings apply as well.
        assert await kept.fetchval("SHOW TimeZone") == "UTC"
    finally:
        await plain.close()
        await kept.close()
