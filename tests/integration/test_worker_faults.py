"""The worker when things go wrong: S3 failing mid-upload, SMTP refusing, attempts running
out, a worker whose lease expired, cancel while running, and shutdown."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any
from uuid import UUID

import asyncpg
import pytest
import pytest_asyncio

from logexport.config import Settings
from logexport.entries import AuditLogEntryInput, prepare_json, record_audit_log_entries
from logexport.exports.models import ExportKind, LogExport
from logexport.exports.requests import cancel_export
from logexport.exports.storage import MiB, S3Storage, StorageError
from logexport.exports.worker import Worker
from tests.support.exports import request_export
from tests.support.throttle import ThrottledRelay
from tests.support.world import World, build_world, eventually, export_status, wait_for_status

START = datetime(2026, 1, 1, tzinfo=UTC)
Hook = Callable[[], Awaitable[None]]


class HookedS3Storage(S3Storage):
    """The real S3 backend, with a hook run before chosen operations (to stall or fail)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hooks: dict[str, Hook] = {}
        self.refused_keys: set[str] = set()

    async def call(
        self,
        operation: str,
        key: str,
        make_call: Callable[[Any], Awaitable[Any]],
        deadline: float | None = None,
    ) -> Any:
        if key in self.refused_keys:
            raise StorageError(f"S3 {operation} of {key} failed: AccessDenied")
        hook = self.hooks.get(operation)
        if hook is not None:
            await hook()
        return await super().call(operation, key, make_call, deadline)


def stall_first(stalled: asyncio.Event, gate: asyncio.Event) -> Hook:
    """A hook that tells ``stalled`` and waits for ``gate`` the first time it runs."""
    calls = 0

    async def hook() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            stalled.set()
            await gate.wait()

    return hook


def fail_times(count: int | None) -> Hook:
    """A hook that fails like an unreachable store ``count`` times (None: always)."""
    failures = 0

    async def hook() -> None:
        nonlocal failures
        if count is None or failures < count:
            failures += 1
            raise StorageError("S3 injected failure at 10.0.0.1")

    return hook


@pytest_asyncio.fixture(loop_scope="session")
async def world(pool: asyncpg.Pool) -> World:
    return await build_world(pool)


@pytest_asyncio.fixture(loop_scope="session")
async def storage(settings: Settings) -> AsyncIterator[HookedS3Storage]:
    """Smallest parts and one part in flight, so a 12 MB export is a multipart upload whose
    writer waits on the store while the export is still running."""
    async with HookedS3Storage.from_settings(
        settings, part_size=5 * MiB, max_in_flight=1, call_timeout=20
    ) as hooked:
        assert isinstance(hooked, HookedS3Storage)
        yield hooked


async def seed(pool: asyncpg.Pool, world: World, count: int, *, padded: bool = False) -> None:
    """``count`` rows; padded rows are about 1 KiB each, for multipart-sized files."""
    metadata = prepare_json({"pad": "x" * 900} if padded else {"n": 1})
    entries = [
        AuditLogEntryInput(
            organization_id=world.organization_id,
            action="user.login",
            actor_type="USER",
            actor_id=f"u{i}",
            created_at=START + timedelta(seconds=i),
            metadata=metadata,
        )
        for i in range(count)
    ]
    async with pool.acquire() as conn:
        await record_audit_log_entries(conn, entries)


LARGE = 12_000  # about 12 MB of JSONL: three parts of 5 MiB


async def request(pool: asyncpg.Pool, settings: Settings, world: World) -> LogExport:
    return await request_export(
        pool,
        settings,
        world.admin.principal,
        ExportKind.AUDIT_LOG,
        organization_id=world.organization_id,
        from_time="2026-01-01T00:00:00Z",
        to_time="2026-02-01T00:00:00Z",
    )


def text_body(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None
    content: str = part.get_content()
    return content


def emails_about(smtp_sink: Any, export_id: UUID) -> list[EmailMessage]:
    return [m for m in smtp_sink.messages() if str(export_id) in text_body(m)]


async def bucket_keys(s3: Any) -> list[str]:
    keys: list[str] = await asyncio.to_thread(s3.keys)
    return keys


async def open_uploads(s3: Any) -> list[str]:
    def listing() -> list[str]:
        page = s3.client().list_multipart_uploads(Bucket=s3.bucket)
        return [u["Key"] for u in page.get("Uploads", [])]

    return await asyncio.to_thread(listing)


async def emailed(pool: asyncpg.Pool, export_id: UUID) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        row = await export_status(pool, export_id)
        return row if row["emailed_at"] is not None else None

    return await eventually(probe, what="the email to be sent")


async def stored_matches(s3: Any, row: dict[str, Any]) -> None:
    data: bytes = await asyncio.to_thread(s3.get, f"exports/{row['storage_key']}")
    assert hashlib.sha256(data).hexdigest() == row["sha256"]
    assert len(data.splitlines()) == row["row_count"]


# ------------------------------------------------------------------------------ S3


async def test_s3_stopping_mid_upload_fails_the_attempt_quickly_and_the_job_retries(
    pool, settings, s3, world, storage
):
    settings = settings.derive(worker_max_attempts=20)
    await seed(pool, world, LARGE, padded=True)
    export = await request(pool, settings, world)
    stalled, gate = asyncio.Event(), asyncio.Event()
    storage.hooks["UploadPart"] = stall_first(stalled, gate)
    async with Worker(settings, storage=storage, retry_base=0.2):
        await asyncio.wait_for(stalled.wait(), 20)
        assert await open_uploads(s3) != []
        await asyncio.to_thread(s3.server.stop)
        gate.set()
        stopped_at = asyncio.get_running_loop().time()

        async def attempt_failed() -> dict[str, Any] | None:
            row = await export_status(pool, export.id)
            return row if row["error_code"] == "STORAGE_ERROR" else None

        failed = await eventually(attempt_failed, timeout=30, what="the attempt to fail")
        assert asyncio.get_running_loop().time() - stopped_at < 30
        assert failed["status"] in ("PENDING", "PROCESSING")
        assert failed["error_message"] == "The file could not be stored"

        await asyncio.to_thread(s3.server.start)
        await asyncio.to_thread(s3.server.create_bucket, s3.bucket)
        done = await wait_for_status(pool, export.id, "COMPLETED", "FAILED", timeout=60)
        assert done["status"] == "COMPLETED", done["error_message"]
        assert done["attempts"] >= 2
        assert done["row_count"] == LARGE
        assert done["error_code"] is None
    await stored_matches(s3, done)
    assert await open_uploads(s3) == []


async def test_failed_part_upload_aborts_the_multipart_upload_and_the_retry_completes(
    pool, settings, s3, world, storage
):
    await seed(pool, world, LARGE, padded=True)
    export = await request(pool, settings, world)
    storage.hooks["UploadPart"] = fail_times(1)
    async with Worker(settings, storage=storage, retry_base=0.1):
        done = await wait_for_status(pool, export.id, "COMPLETED", "FAILED", timeout=60)
    assert done["status"] == "COMPLETED", done["error_message"]
    assert done["attempts"] == 2
    assert done["storage_key"].startswith(f"{export.id}/attempt-2")
    await stored_matches(s3, done)
    # The first attempt's upload was aborted, not left open with its parts.
    assert await open_uploads(s3) == []
    assert await storage.open_uploads() == []


async def test_attempts_running_out_fail_the_export_with_a_failure_email(
    pool, settings, s3, smtp_sink, world, storage
):
    settings = settings.derive(worker_max_attempts=3)
    await seed(pool, world, 10)
    export = await request(pool, settings, world)
    storage.hooks["PutObject"] = fail_times(None)
    async with Worker(settings, storage=storage, retry_base=0.05):
        failed = await wait_for_status(pool, export.id, "FAILED", "COMPLETED", timeout=30)
        assert failed["status"] == "FAILED"
        assert failed["attempts"] == 3
        assert failed["error_code"] == "STORAGE_ERROR"
        assert "10.0.0.1" not in failed["error_message"]
        assert "injected" not in failed["error_message"]
        message = await smtp_sink.wait_for(
            lambda m: str(export.id) in text_body(m) and "failed" in str(m["Subject"]),
            timeout=20,
        )
    assert message["Subject"] == "Your audit log export failed"
    assert message["To"] and "adam.admin@acme.test" in message["To"]
    assert (await export_status(pool, export.id))["attempts"] == 3
    async with pool.acquire() as conn:
        [entry] = await conn.fetch(
            "SELECT * FROM audit_log_entries WHERE action = 'iam:log-export:fail'"
        )
    assert entry["actor_type"] == "SYSTEM"
    assert entry["resource_id"] == str(export.id)
    assert entry["metadata"]["error_code"] == "STORAGE_ERROR"
    assert entry["metadata"]["attempts"] == 3
    assert await bucket_keys(s3) == []


# ------------------------------------------------------------------------------ SMTP


async def test_smtp_failures_retry_only_the_email(pool, settings, s3, smtp_sink, world):
    await seed(pool, world, 10)
    export = await request(pool, settings, world)
    smtp_sink.fail_next(2)
    async with Worker(settings, retry_base=0.1) as worker:
        done = await wait_for_status(pool, export.id, "COMPLETED", "FAILED")
        assert done["status"] == "COMPLETED"
        sent = await emailed(pool, export.id)
        assert await worker.send_due_emails() == 0
    assert sent["status"] == "COMPLETED"
    assert sent["attempts"] == 1
    assert sent["email_attempts"] == 3
    assert sent["completed_at"] == done["completed_at"]
    assert sent["storage_key"] == done["storage_key"]
    [message] = emails_about(smtp_sink, export.id)
    assert message["Subject"] == "Your audit log export is ready"


# ------------------------------------------------------------------------------ leases


class StaleWorker(Worker):
    """A worker that stops renewing its lease (a paused or partitioned process) and stalls
    after its upload, just before its commit, until ``resume`` is set."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.at_commit = asyncio.Event()
        self.resume = asyncio.Event()
        self._checks = 0

    async def _heartbeat(self, fence: Any, progress: Any) -> None:
        await asyncio.Event().wait()

    async def _requester_may_export(self, conn: asyncpg.Connection, export: LogExport) -> bool:
        self._checks += 1
        if self._checks == 2:  # the re-check before the commit
            self.at_commit.set()
            await self.resume.wait()
        return await super()._requester_may_export(conn, export)


async def test_worker_whose_lease_expired_is_replaced_and_its_object_never_adopted(
    pool, settings, s3, smtp_sink, world
):
    await seed(pool, world, 100)
    export = await request(pool, settings, world)
    stale = StaleWorker(
        settings.derive(worker_lease=1.0), worker_id="stale", retry_base=0.1, sweep_interval=3600
    )
    async with stale:
        await asyncio.wait_for(stale.at_commit.wait(), 20)
        [stale_key] = await bucket_keys(s3)
        assert stale_key.startswith(f"exports/{export.id}/attempt-1")

        async with Worker(settings, worker_id="fresh", retry_base=0.1, sweep_interval=3600) as w:
            done = await wait_for_status(pool, export.id, "COMPLETED", "FAILED")
            assert done["status"] == "COMPLETED"
            assert done["attempts"] == 2
            assert done["storage_key"].startswith(f"{export.id}/attempt-2")
            await emailed(pool, export.id)

            # Nobody adopted the stale upload: the sweeper removes it (the fresh worker's
            # first sweep may already have, since its lease had expired) and marks it done.
            assert await w.sweep(settle=0) == 1
            adopted = f"exports/{done['storage_key']}"
            assert await bucket_keys(s3) == [adopted, adopted + ".manifest.json"]
            async with pool.acquire() as conn:
                swept = await conn.fetchval(
                    "SELECT deleted_at FROM log_export_objects WHERE storage_key = $1",
                    stale_key.removeprefix("exports/"),
                )
            assert swept is not None

            stale.resume.set()
            await eventually(
                lambda: asyncio.sleep(0, not stale.running_exports),
                what="the stale attempt to give up",
            )
            after = await export_status(pool, export.id)
            assert after["status"] == "COMPLETED"
            assert after["storage_key"] == done["storage_key"]
            assert after["sha256"] == done["sha256"]
            assert await w.send_due_emails() == 0
            assert await stale.send_due_emails() == 0
    await stored_matches(s3, after)
    assert await bucket_keys(s3) == [adopted, adopted + ".manifest.json"]
    # The attempt that lost its fence took no number of the chain.
    assert after["manifest_sequence"] == 1
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT last_sequence FROM manifest_chains") == 1
    [message] = emails_about(smtp_sink, export.id)
    assert message["Subject"] == "Your audit log export is ready"


# ------------------------------------------------------------------------------ cancel, stop


async def test_canceling_a_running_export_stops_it_at_the_next_heartbeat(
    pool, settings, s3, smtp_sink, world, storage
):
    settings = settings.derive(worker_lease=1.5)
    await seed(pool, world, LARGE, padded=True)
    export = await request(pool, settings, world)
    stalled, gate = asyncio.Event(), asyncio.Event()
    storage.hooks["UploadPart"] = stall_first(stalled, gate)
    async with Worker(settings, storage=storage, retry_base=0.1) as worker:
        await asyncio.wait_for(stalled.wait(), 20)
        assert (await export_status(pool, export.id))["status"] == "PROCESSING"
        canceled = await cancel_export(pool, world.admin.principal, export.id)
        assert canceled.status.value == "CANCELED"
        await eventually(
            lambda: asyncio.sleep(0, not worker.running_exports),
            timeout=5,
            what="the worker to drop the canceled export",
        )
        assert await worker.send_due_emails() == 0
        row = await export_status(pool, export.id)
    assert row["status"] == "CANCELED"
    assert row["storage_key"] is None
    assert await open_uploads(s3) == []
    assert await bucket_keys(s3) == []
    assert emails_about(smtp_sink, export.id) == []


class GatedHeartbeatWorker(Worker):
    """A worker whose heartbeats wait for ``beat`` (the lease is long enough meanwhile)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.beat = asyncio.Event()

    async def _heartbeat(self, fence: Any, progress: Any) -> None:
        await self.beat.wait()
        await super()._heartbeat(fence, progress)


def finished(worker: Worker, outcome: str) -> float:
    prefix = f'logexport_exports_finished_total{{outcome="{outcome}"}} '
    [line] = [line for line in worker.metrics.render() if line.startswith(prefix)]
    return float(line.removeprefix(prefix))


@pytest.fixture(params=["heartbeat first", "sweeper first"])
def cancel_race(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_canceling_a_slow_running_export_ends_cleanly_with_one_abort(
    pool, settings, s3, smtp_sink, world, caplog, cancel_race
):
    """At the default lease, a cancel during a slow upload ends the attempt as canceled: the
    upload is gone and nothing keeps trying to abort it, whichever of the worker's heartbeat
    and the sweeper (which deletes what a canceled export left) reaches the upload first."""
    caplog.set_level(logging.INFO, logger="logexport")
    await seed(pool, world, LARGE, padded=True)
    export = await request(pool, settings, world)
    aborts: list[str] = []

    async def count_abort() -> None:
        aborts.append("AbortMultipartUpload")

    relay = ThrottledRelay(s3.server.port, 2_000_000).start()  # 12 MB take about 6 s
    slow = settings.derive(s3_endpoint_url=relay.endpoint_url, worker_lease=60.0)
    try:
        async with HookedS3Storage.from_settings(slow, part_size=5 * MiB) as storage:
            assert isinstance(storage, HookedS3Storage)
            storage.hooks["AbortMultipartUpload"] = count_abort
            async with GatedHeartbeatWorker(slow, storage=storage, sweep_interval=3600) as worker:
                if cancel_race == "heartbeat first":
                    worker.beat.set()
                await eventually(lambda: open_uploads(s3), timeout=30, what="the upload")
                canceled = await cancel_export(pool, world.admin.principal, export.id)
                assert canceled.status.value == "CANCELED"
                if cancel_race == "sweeper first":
                    assert await worker.sweep() == 1
                    worker.beat.set()
                await eventually(
                    lambda: asyncio.sleep(0, not worker.running_exports),
                    timeout=10,
                    what="the worker to drop the canceled export",
                )
                assert finished(worker, "canceled") == 1
                assert finished(worker, "lease_lost") == 0
                assert finished(worker, "failed") == 0
                assert await open_uploads(s3) == []
                # The sweeper finds nothing left to abort, and is done with the key for good.
                await worker.sweep(settle=0)
                assert await worker.sweep(settle=0) == 0
                row = await export_status(pool, export.id)
    finally:
        relay.stop()
    assert row["status"] == "CANCELED"
    assert row["storage_key"] is None and row["lease_owner"] is None
    assert await bucket_keys(s3) == []
    assert emails_about(smtp_sink, export.id) == []
    # One abort reached the store (the worker's or the sweeper's, or both when they raced),
    # and no retry of it was ever scheduled.
    assert 1 <= len(aborts) <= 2, aborts
    ours = [r for r in caplog.records if r.name.startswith("logexport")]
    messages = [r.getMessage() for r in ours]
    assert "export canceled; upload aborted" in messages
    assert not [m for m in messages if "lease lost" in m or "retrying" in m], messages
    assert not [r for r in ours if r.levelno >= logging.WARNING], messages


async def test_an_object_the_store_refuses_to_delete_does_not_hold_up_the_sweep(
    pool, settings, s3, world, storage, caplog
):
    keys = []
    for _ in range(2):
        export = await request(pool, settings, world)
        await cancel_export(pool, world.admin.principal, export.id)
        key = f"{export.id}/attempt-1-abcd1234/audit.jsonl"
        await asyncio.to_thread(
            s3.client().put_object, Bucket=s3.bucket, Key=f"exports/{key}", Body=b"{}"
        )
        async with pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO log_export_objects (storage_key, export_id, attempt)"
                " VALUES ($1, $2, 1)",
                key,
                export.id,
            )
        keys.append(key)
    refused = keys[0]
    storage.refused_keys.add(f"exports/{refused}")
    worker = Worker(settings, pool=pool, storage=storage)

    assert await worker.sweep(settle=0) == 2
    assert await bucket_keys(s3) == [f"exports/{refused}"]
    [warning] = [r for r in caplog.records if r.getMessage() == "sweep could not delete an object"]
    assert "AccessDenied" in warning.error

    # Tried again at the next sweep, and done once the store agrees.
    storage.refused_keys.clear()
    assert await worker.sweep(settle=0) == 1
    assert await bucket_keys(s3) == []
    assert await worker.sweep(settle=0) == 0


async def test_shutdown_without_grace_hands_the_running_export_back(
    pool, settings, s3, world, storage
):
    await seed(pool, world, LARGE, padded=True)
    export = await request(pool, settings, world)
    stalled, gate = asyncio.Event(), asyncio.Event()
    storage.hooks["UploadPart"] = stall_first(stalled, gate)
    worker = Worker(settings, storage=storage, retry_base=0.1)
    await worker.start()
    try:
        await asyncio.wait_for(stalled.wait(), 20)
        assert (await export_status(pool, export.id))["attempts"] == 1
    finally:
        await asyncio.wait_for(worker.stop(grace=0), 15)
    row = await export_status(pool, export.id)
    assert row["status"] == "PENDING"
    assert row["attempts"] == 0
    assert row["lease_owner"] is None
    assert row["rows_written"] == 0
    assert row["run_after"] <= datetime.now(UTC)
    assert await open_uploads(s3) == []
    assert await bucket_keys(s3) == []

    # Handed back, it is picked up again and counted as the first attempt.
    storage.hooks.clear()
    async with Worker(settings, storage=storage, retry_base=0.1):
        done = await wait_for_status(pool, export.id, "COMPLETED", "FAILED", timeout=60)
    assert done["status"] == "COMPLETED"
    assert done["attempts"] == 1


class DemotingWorker(Worker):
    """Takes the requester's export permission away while the file is being uploaded, just
    before the worker's own re-check ahead of the commit."""

    def __init__(self, *args: Any, world: World, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.world = world
        self._checks = 0

    async def _requester_may_export(self, conn: asyncpg.Connection, export: LogExport) -> bool:
        self._checks += 1
        if self._checks == 2:
            await conn.execute(
                "UPDATE memberships SET role = 'VIEWER' WHERE user_id = $1",
                self.world.admin.user_id,
            )
        return await super()._requester_may_export(conn, export)


async def test_requester_losing_the_permission_mid_export_fails_it_without_retry_or_email(
    pool, settings, s3, smtp_sink, world
):
    await seed(pool, world, 10)
    export = await request(pool, settings, world)
    async with DemotingWorker(settings, world=world, retry_base=0.05) as worker:

        async def attempt_over() -> dict[str, Any] | None:
            row = await export_status(pool, export.id)
            over = row["status"] in ("FAILED", "COMPLETED") or (
                row["status"] == "PENDING" and row["attempts"] > 0
            )
            return row if over else None

        failed = await eventually(attempt_over, what="the first attempt to end")
        assert failed["status"] == "FAILED", (failed["status"], failed["error_code"])
        assert failed["error_code"] == "REQUESTER_NOT_AUTHORIZED"
        assert failed["attempts"] == 1
        assert failed["storage_key"] is None
        assert await worker.send_due_emails() == 0
        await worker.sweep(settle=0)
    assert emails_about(smtp_sink, export.id) == []
    assert await bucket_keys(s3) == []
    async with pool.acquire() as conn:
        [entry] = await conn.fetch(
            "SELECT * FROM audit_log_entries WHERE action = 'iam:log-export:fail'"
        )
    assert entry["actor_type"] == "SYSTEM"
    assert entry["metadata"]["error_code"] == "REQUESTER_NOT_AUTHORIZED"
