"""The worker on real Postgres, S3 (moto) and SMTP: claiming, waking, the requester
re-check, cancel and expiry."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any
from uuid import UUID

import asyncpg
import httpx
import pytest_asyncio
from starlette.applications import Starlette

from logexport import db, identity
from logexport.config import Settings
from logexport.db import q
from logexport.entries import AuditLogEntryInput, record_audit_log_entries
from logexport.exports import downloads
from logexport.exports.jobs import liveness_key
from logexport.exports.models import ExportKind, LogExport
from logexport.exports.requests import cancel_export
from logexport.exports.storage import storage_from_settings
from logexport.exports.worker import Worker
from logexport.policy import Role
from logexport.web.download import download_routes
from tests.support.exports import request_export
from tests.support.world import (
    Person,
    World,
    build_world,
    eventually,
    export_status,
    wait_for_status,
)

START = datetime(2026, 1, 1, tzinfo=UTC)


@pytest_asyncio.fixture(loop_scope="session")
async def world(pool: asyncpg.Pool) -> World:
    return await build_world(pool)


async def seed(pool: asyncpg.Pool, organization_id: UUID, count: int) -> None:
    entries = [
        AuditLogEntryInput(
            organization_id=organization_id,
            action="user.login",
            actor_type="USER",
            actor_id=f"u{i}",
            created_at=START + timedelta(seconds=i),
            metadata={"n": i},
        )
        for i in range(count)
    ]
    async with pool.acquire() as conn:
        await record_audit_log_entries(conn, entries)


async def request(
    pool: asyncpg.Pool, settings: Settings, person: Person, org: UUID, **args: Any
) -> LogExport:
    return await request_export(
        pool,
        settings,
        person.principal,
        ExportKind.AUDIT_LOG,
        organization_id=org,
        from_time="2026-01-01T00:00:00Z",
        to_time="2026-02-01T00:00:00Z",
        **args,
    )


def text_body(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None
    content: str = part.get_content()
    return content


def emails_about(smtp_sink: Any, export_id: UUID) -> list[EmailMessage]:
    return [m for m in smtp_sink.messages() if str(export_id) in text_body(m)]


async def fetch(pool: asyncpg.Pool, query: str, *args: Any) -> list[asyncpg.Record]:
    async with pool.acquire() as conn:
        return await conn.fetch(query, *args)


async def bucket_keys(s3: Any) -> list[str]:
    keys: list[str] = await asyncio.to_thread(s3.keys)
    return keys


async def emailed(pool: asyncpg.Pool, export_id: UUID) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        row = await export_status(pool, export_id)
        return row if row["emailed_at"] is not None else None

    return await eventually(probe, what="the ready email to be sent")


# ------------------------------------------------------------------------------ claiming


async def test_two_workers_never_process_one_job_and_respect_the_running_cap(
    pool, settings, s3, world
):
    settings = settings.derive(max_active_exports_per_org=10, max_running_exports_per_org=2)
    orgs = [(world.organization_id, world.admin), (world.other_organization_id, world.outsider)]
    for org, _ in orgs:
        await seed(pool, org, 3000)
    exports = [
        await request(pool, settings, person, org, idempotency_key=f"job-{i}")
        for i in range(8)
        for org, person in orgs
    ]
    owners: dict[UUID, set[str]] = defaultdict(set)
    most_running: dict[UUID, int] = defaultdict(int)
    stop_sampling = asyncio.Event()

    async def sample() -> None:
        async with pool.acquire() as conn:
            while not stop_sampling.is_set():
                for row in await conn.fetch(
                    "SELECT id, organization_id, lease_owner FROM log_exports "
                    "WHERE status = 'PROCESSING'"
                ):
                    owners[row["id"]].add(row["lease_owner"])
                for row in await conn.fetch(
                    "SELECT organization_id, count(*) AS n FROM log_exports "
                    "WHERE status = 'PROCESSING' GROUP BY organization_id"
                ):
                    org = row["organization_id"]
                    most_running[org] = max(most_running[org], row["n"])
                await asyncio.sleep(0.005)

    sampler = asyncio.create_task(sample())
    first = Worker(settings, concurrency=3, worker_id="worker-a", retry_base=0.1)
    second = Worker(settings, concurrency=3, worker_id="worker-b", retry_base=0.1)
    async with first, second:
        for export in exports:
            done = await wait_for_status(pool, export.id, "COMPLETED", "FAILED", timeout=60)
            assert done["status"] == "COMPLETED", done["error_message"]
    stop_sampling.set()
    await sampler

    rows = await fetch(pool, "SELECT attempts, row_count FROM log_exports")
    assert [(r["attempts"], r["row_count"]) for r in rows] == [(1, 3000)] * len(exports)
    objects = await fetch(
        pool, "SELECT export_id, count(*) AS n FROM log_export_objects GROUP BY 1"
    )
    assert sorted(r["n"] for r in objects) == [1] * len(exports)
    assert all(len(seen) == 1 for seen in owners.values()), owners
    assert owners, "the sampler never saw a running export"
    assert max(most_running.values()) <= 2, most_running
    finished = sum(
        float(line.rsplit(" ", 1)[1])
        for worker in (first, second)
        for line in worker.metrics.render()
        if line.startswith('logexport_exports_finished_total{outcome="completed"}')
    )
    assert finished == len(exports)


# ------------------------------------------------------------------------------ waking


async def listener_pids(pool: asyncpg.Pool) -> list[int]:
    """Listener sessions: each holds its worker's liveness lock (an advisory lock on one
    bigint key) for as long as it is connected."""
    rows = await fetch(
        pool,
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1 AND granted"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    return [r["pid"] for r in rows]


async def picked_up_within(pool: asyncpg.Pool, export_id: UUID, seconds: float) -> float:
    started = time.monotonic()
    await wait_for_status(pool, export_id, "PROCESSING", "COMPLETED", timeout=seconds)
    return time.monotonic() - started


async def test_notify_wakes_an_idle_worker_long_before_the_poll_and_survives_a_lost_listener(
    pool, settings, s3, world
):
    settings = settings.derive(worker_poll_interval=30.0)
    async with Worker(settings, retry_base=0.1) as worker:
        [pid] = await eventually(lambda: listener_pids(pool), timeout=10, what="a LISTEN session")
        assert worker.listener_connected
        # Let the claim pass that follows start-up finish, so only a notification can wake it.
        await asyncio.sleep(0.5)
        first = await request(pool, settings, world.admin, world.organization_id)
        assert await picked_up_within(pool, first.id, 2.0) < 2.0

        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT pg_terminate_backend($1)", pid)

        async def new_listener() -> list[int]:
            pids = await listener_pids(pool)
            return [p for p in pids if p != pid] if worker.listener_connected else []

        await eventually(new_listener, timeout=10, what="the listener to reconnect")
        await asyncio.sleep(0.5)
        second = await request(pool, settings, world.owner, world.organization_id)
        assert await picked_up_within(pool, second.id, 2.0) < 2.0


async def test_the_listener_connection_is_a_keepalive_connection(settings, s3, monkeypatch):
    """The listener holds the liveness lock: its server must notice a vanished peer soon."""
    opened: list[bool] = []
    connect = db.connect

    async def recording(dsn: str, *, keepalive: bool = False) -> asyncpg.Connection:
        opened.append(keepalive)
        return await connect(dsn, keepalive=keepalive)

    monkeypatch.setattr(db, "connect", recording)
    async with Worker(settings, retry_base=0.1) as worker:
        await eventually(lambda: asyncio.sleep(0, worker.listener_connected), what="the listener")
    assert opened == [True]


async def test_poll_only_mode_claims_without_a_listener(pool, settings, s3, world):
    settings = settings.derive(worker_poll_only=True, worker_poll_interval=0.3)
    async with Worker(settings, retry_base=0.1) as worker:
        export = await request(pool, settings, world.admin, world.organization_id)
        done = await wait_for_status(pool, export.id, "COMPLETED", "FAILED", timeout=10)
        assert done["status"] == "COMPLETED"
        assert not worker.listener_connected
        assert await listener_pids(pool) == []


# ------------------------------------------------------------------------------ liveness


async def claim_for(
    pool: asyncpg.Pool, settings: Settings, worker_id: str, lock_key: int | None
) -> LogExport | None:
    """One claim by a worker that holds the liveness lock ``lock_key`` (None: holds none)."""
    worker = Worker(settings, pool=pool, worker_id=worker_id)
    worker.lock_key = lock_key
    return await worker.claim_once()


async def test_export_is_claimable_at_once_when_its_worker_lets_go_of_its_lock(
    pool, settings, s3, world
):
    settings = settings.derive(worker_lease=60.0)
    export = await request(pool, settings, world.admin, world.organization_id)
    key = liveness_key("worker-a")
    lock_connection = await db.connect(settings.database_url)
    try:
        assert await lock_connection.fetchval(q("take_liveness_lock"), key)
        claimed = await claim_for(pool, settings, "worker-a", key)
        assert claimed is not None and claimed.id == export.id
        # Alive (its lock is held) and within its lease: nobody else may take it.
        assert await claim_for(pool, settings, "worker-b", liveness_key("worker-b")) is None
        # Another session cannot take the same key either: a colliding key is refused.
        other = await db.connect(settings.database_url)
        try:
            assert not await other.fetchval(q("take_liveness_lock"), key)
        finally:
            await other.close()
    finally:
        await lock_connection.close()
    closed_at = time.monotonic()

    # The server dropped the lock with the connection: claimable long before the lease ends.
    reclaimed = await eventually(
        lambda: claim_for(pool, settings, "worker-b", None), timeout=5, what="the reclaim"
    )
    assert time.monotonic() - closed_at < 5
    assert reclaimed.id == export.id
    row = await export_status(pool, export.id)
    assert (row["lease_owner"], row["attempts"], row["lease_lock_key"]) == ("worker-b", 2, None)
    assert row["lease_expires_at"] > datetime.now(UTC) + timedelta(seconds=50)


async def test_without_a_liveness_lock_only_the_lease_frees_an_export(pool, settings, s3, world):
    """Poll-only workers (behind a transaction-pooling PgBouncer) record no lock key."""
    settings = settings.derive(worker_lease=60.0)
    export = await request(pool, settings, world.admin, world.organization_id)
    assert await claim_for(pool, settings, "poll-only", None) is not None
    assert await claim_for(pool, settings, "worker-b", None) is None
    await fetch(pool, "UPDATE log_exports SET lease_expires_at = now() - interval '1 second'")
    reclaimed = await claim_for(pool, settings, "worker-b", None)
    assert reclaimed is not None and reclaimed.id == export.id
    assert reclaimed.attempts == 2


async def test_a_hung_worker_still_holding_its_lock_loses_the_export_when_the_lease_ends(
    pool, settings, s3, world
):
    settings = settings.derive(worker_lease=60.0)
    export = await request(pool, settings, world.admin, world.organization_id)
    key = liveness_key("hung")
    lock_connection = await db.connect(settings.database_url)
    try:
        assert await lock_connection.fetchval(q("take_liveness_lock"), key)
        assert await claim_for(pool, settings, "hung", key) is not None
        assert await claim_for(pool, settings, "worker-b", None) is None
        await fetch(pool, "UPDATE log_exports SET lease_expires_at = now() - interval '1 second'")
        reclaimed = await claim_for(pool, settings, "worker-b", None)
        assert reclaimed is not None and reclaimed.id == export.id
    finally:
        await lock_connection.close()


async def test_a_worker_whose_key_is_taken_draws_another_and_never_shares_a_lock(
    pool, settings, s3, world
):
    squatter = await db.connect(settings.database_url)
    try:
        assert await squatter.fetchval(q("take_liveness_lock"), liveness_key("worker-a"))
        async with Worker(settings, worker_id="worker-a", retry_base=0.1) as worker:
            await eventually(
                lambda: asyncio.sleep(0, worker.lock_key is not None), what="the liveness lock"
            )
            assert worker.lock_key == liveness_key("worker-a", 1)
            assert len(await listener_pids(pool)) == 2
            export = await request(pool, settings, world.admin, world.organization_id)
            done = await wait_for_status(pool, export.id, "COMPLETED", "FAILED")
            assert (done["status"], done["attempts"]) == ("COMPLETED", 1)
    finally:
        await squatter.close()


async def test_a_running_worker_holds_its_liveness_lock_and_records_it_on_its_export(
    pool, settings, s3, world
):
    await seed(pool, world.organization_id, 20)
    async with Worker(settings, worker_id="worker-a", retry_base=0.1) as worker:
        await eventually(
            lambda: asyncio.sleep(0, worker.lock_key is not None), what="the liveness lock"
        )
        assert worker.lock_key == liveness_key("worker-a")
        [holder] = await listener_pids(pool)
        export = await request(pool, settings, world.admin, world.organization_id)
        done = await wait_for_status(pool, export.id, "COMPLETED")
        assert done["lease_lock_key"] is None
        # The listener reconnects and takes its lock again.
        await fetch(pool, "SELECT pg_terminate_backend($1)", holder)
        await eventually(
            lambda: asyncio.sleep(0, worker.lock_key is not None and worker.listener_connected),
            what="the lock to be taken again",
        )

        async def new_holder() -> list[int]:
            return [pid for pid in await listener_pids(pool) if pid != holder]

        await eventually(new_holder, what="the new lock holder")


# ------------------------------------------------------------------------------ requester


async def test_export_whose_requester_lost_the_permission_fails_without_email(
    pool, settings, s3, smtp_sink, world
):
    await seed(pool, world.organization_id, 10)
    export = await request(pool, settings, world.admin, world.organization_id)
    async with pool.acquire() as conn:
        await identity.set_role(conn, world.organization_id, world.admin.user_id, Role.VIEWER)
    async with Worker(settings, retry_base=0.1) as worker:
        failed = await wait_for_status(pool, export.id, "FAILED", "COMPLETED")
        assert failed["status"] == "FAILED"
        assert failed["error_code"] == "REQUESTER_NOT_AUTHORIZED"
        assert failed["attempts"] == 1
        assert failed["email_run_after"] is None
        assert await worker.send_due_emails() == 0
    assert emails_about(smtp_sink, export.id) == []
    assert await bucket_keys(s3) == []
    [entry] = await fetch(
        pool, "SELECT * FROM audit_log_entries WHERE action = 'iam:log-export:fail'"
    )
    assert entry["actor_type"] == "SYSTEM"
    assert entry["resource_type"] == "LogExport"
    assert entry["resource_id"] == str(export.id)
    assert entry["metadata"]["error_code"] == "REQUESTER_NOT_AUTHORIZED"
    # No retry: it stays failed.
    assert (await export_status(pool, export.id))["attempts"] == 1


# ------------------------------------------------------------------------------ links


@pytest_asyncio.fixture(loop_scope="session")
async def browser(settings: Settings, pool: asyncpg.Pool) -> AsyncIterator[httpx.AsyncClient]:
    async with storage_from_settings(settings) as storage:
        app = Starlette(routes=download_routes())
        app.state.settings, app.state.pool, app.state.storage = settings, pool, storage
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url=settings.base_url
        ) as client:
            yield client


async def link_for(smtp_sink: Any, export_id: UUID) -> str:
    message = await smtp_sink.wait_for(lambda m: str(export_id) in text_body(m), timeout=20)
    body = text_body(message)
    start = body.index("http://")
    return body[start:].split()[0]


async def test_canceling_a_completed_export_deletes_its_object_and_kills_its_links(
    pool, settings, s3, smtp_sink, world, browser
):
    await seed(pool, world.organization_id, 20)
    export = await request(pool, settings, world.admin, world.organization_id)
    async with Worker(settings, retry_base=0.1, sweep_interval=3600) as worker:
        await wait_for_status(pool, export.id, "COMPLETED")
        link = await link_for(smtp_sink, export.id)
        assert (await browser.get(link)).status_code == 200
        [stored] = await fetch(pool, "SELECT storage_key FROM log_exports")
        file_key = f"exports/{stored['storage_key']}"
        assert sorted(await bucket_keys(s3)) == [file_key, file_key + ".manifest.json"]

        canceled = await cancel_export(pool, world.owner.principal, export.id)
        assert canceled.status.value == "CANCELED"
        for response in (
            await browser.get(link),
            await browser.post(
                link.split("?")[0],
                data={"token": link.split("token=")[1]},
                headers={"Origin": settings.base_url},
            ),
        ):
            assert response.status_code == 410
            assert "canceled" in response.text
        await worker.sweep(settle=0)
        assert await bucket_keys(s3) == []
        [swept] = await fetch(pool, "SELECT deleted_at FROM log_export_objects")
        assert swept["deleted_at"] is not None
        # The file is revoked, never the manifest record.
        [kept] = await fetch(pool, "SELECT manifest, manifest_sequence FROM log_exports")
        assert kept["manifest"] is not None and kept["manifest_sequence"] == 1


async def test_export_expires_after_the_link_ttl_and_its_object_is_deleted(
    pool, settings, s3, smtp_sink, world, browser
):
    settings = settings.derive(link_ttl=1.0)
    await seed(pool, world.organization_id, 20)
    export = await request(pool, settings, world.admin, world.organization_id)
    async with Worker(settings, retry_base=0.1, sweep_interval=0.2):
        done = await wait_for_status(pool, export.id, "COMPLETED", "EXPIRED")
        expired = await wait_for_status(pool, export.id, "EXPIRED", timeout=10)
        assert expired["expires_at"] <= datetime.now(UTC)
        assert done["storage_key"] is not None

        async def bucket_empty() -> bool:
            return await bucket_keys(s3) == []

        await eventually(bucket_empty, timeout=10, what="the expired object to be deleted")
    async with pool.acquire() as conn:
        token = await downloads.issue_download_token(
            conn,
            export_id=export.id,
            user_id=world.admin.user_id,
            purpose="EMAIL",
            expires_at=expired["expires_at"],
        )
    response = await browser.get(f"/exports/{export.id}/download", params={"token": token})
    assert response.status_code == 410
    assert "expired" in response.text
