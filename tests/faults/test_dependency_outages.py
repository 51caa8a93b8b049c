"""PostgreSQL and S3 going away and coming back under running workers."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.faults import (
    assert_delivered,
    assert_nothing_left_behind,
    request_audit_export,
    start_workers,
    wait_for_progress,
)
from tests.support.processes import ServiceProcess
from tests.support.world import wait_for_status

pytestmark = pytest.mark.faults


def _count(worker: ServiceProcess, message: str) -> int:
    return worker.messages().count(message)


@pytest.fixture
def cluster(pg_cluster):
    if pg_cluster is None:
        pytest.skip("needs the private PostgreSQL cluster of this test run")
    return pg_cluster


async def _restart_postgres(cluster, pool, down_for: float = 1.0) -> float:
    started = time.monotonic()
    await asyncio.to_thread(cluster.stop)
    await asyncio.sleep(down_for)
    await asyncio.to_thread(cluster.start)
    # The test's own connections died with the server.
    await pool.expire_connections()
    return time.monotonic() - started


async def test_idle_workers_process_new_requests_after_postgres_restarts(
    pool, settings, s3, smtp_sink, world, processes, worker_env, cluster
):
    (worker,) = await start_workers(processes, worker_env, 1)
    outage = await _restart_postgres(cluster, pool)
    await worker.wait_for_line("listener connection lost; reconnecting", timeout=30)
    await worker.wait_for_line(lambda _: _count(worker, "listener connected") >= 2, timeout=60)
    requested_at = time.monotonic()
    export = await request_audit_export(
        pool, settings, world, from_time="2026-01-01T00:00:00Z", to_time="2026-01-02T00:00:00Z"
    )
    done = await wait_for_status(pool, export.id, "COMPLETED", "FAILED", timeout=60)
    took = time.monotonic() - requested_at
    assert done["attempts"] == 1
    await assert_delivered(pool, s3, smtp_sink, export)
    await assert_nothing_left_behind(pool, s3)
    assert await worker.terminate() == 0
    print(f"\npostgres restart while idle ({outage:.1f}s down): next export done in {took:.1f}s")


async def test_export_interrupted_by_a_postgres_restart_completes_on_a_later_attempt(
    pool, settings, s3, smtp_sink, world, processes, worker_env, cluster
):
    workers = await start_workers(processes, worker_env, 2, concurrency=1)
    export = await request_audit_export(pool, settings, world)
    progress = await wait_for_progress(pool, export.id)
    restarted_at = time.monotonic()
    outage = await _restart_postgres(cluster, pool)
    done = await wait_for_status(pool, export.id, "COMPLETED", "FAILED", timeout=90)
    took = time.monotonic() - restarted_at
    # Whether the outage hit the snapshot read (a later attempt) or only the heartbeat during
    # the upload (the lease outlives a short outage: the same attempt), the export arrives
    # whole and once.
    assert done["status"] == "COMPLETED", (done["error_code"], done["error_message"])
    await assert_delivered(pool, s3, smtp_sink, export)
    await assert_nothing_left_behind(pool, s3)
    for worker in workers:
        assert await worker.terminate() == 0
    print(
        f"\npostgres restart mid-export at {progress['rows_written']} rows ({outage:.1f}s down): "
        f"completed {took:.1f}s later, attempts {done['attempts']}"
    )


async def test_export_interrupted_by_an_s3_outage_completes_on_retry(
    pool, settings, s3, smtp_sink, world, processes, worker_env
):
    # Slower, longer retries than the other tests: a restarting moto takes seconds to answer.
    env = {**worker_env, "LOGEXPORT_WORKER_RETRY_BASE": "1s", "LOGEXPORT_WORKER_MAX_ATTEMPTS": "8"}
    (worker,) = await start_workers(processes, env, 1)
    export = await request_audit_export(pool, settings, world)
    progress = await wait_for_progress(pool, export.id)
    stopped_at = time.monotonic()
    await asyncio.to_thread(s3.server.stop)
    await worker.wait_for_line(
        lambda rec: (
            rec.get("message") == "export attempt failed" and rec.get("code") == "STORAGE_ERROR"
        ),
        timeout=60,
    )
    await asyncio.to_thread(s3.server.start)
    # moto keeps nothing across a restart: the bucket comes back empty.
    await asyncio.to_thread(s3.server.create_bucket, s3.bucket)
    outage = time.monotonic() - stopped_at
    done = await wait_for_status(pool, export.id, "COMPLETED", "FAILED", timeout=90)
    took = time.monotonic() - stopped_at
    assert done["status"] == "COMPLETED", (done["error_code"], done["error_message"])
    assert done["attempts"] >= 2
    await assert_delivered(pool, s3, smtp_sink, export)
    await assert_nothing_left_behind(pool, s3)
    assert await worker.terminate() == 0
    print(
        f"\nS3 down mid-upload at {progress['rows_written']} rows ({outage:.1f}s): completed "
        f"{took:.1f}s after the outage began, attempts {done['attempts']}"
    )
