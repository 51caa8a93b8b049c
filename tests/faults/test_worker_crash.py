"""A worker killed with SIGKILL mid-export: another process finishes the job (SPEC §4)."""

from __future__ import annotations

import time

import pytest

from tests.faults import (
    assert_delivered,
    assert_nothing_left_behind,
    open_uploads,
    owner_of,
    request_audit_export,
    start_workers,
    wait_for_progress,
)
from tests.support.world import wait_for_status

pytestmark = pytest.mark.faults


async def test_export_of_a_killed_worker_is_completed_by_another_after_the_lease(
    pool, settings, s3, smtp_sink, world, processes, worker_env
):
    workers = await start_workers(processes, worker_env, 2, concurrency=1)
    export = await request_audit_export(pool, settings, world)
    progress = await wait_for_progress(pool, export.id)
    assert progress["attempts"] == 1
    victim = owner_of(workers, progress["lease_owner"])
    (survivor,) = [w for w in workers if w is not victim]
    victim.kill()
    killed_at = time.monotonic()
    # Parts were in flight: the file is larger than one part.
    assert open_uploads(s3), "the killed attempt should have left an unfinished upload"

    line = await survivor.wait_for_line(
        lambda rec: rec.get("message") == "export started" and rec.get("attempt") == 2,
        timeout=30,
    )
    reclaimed_after = time.monotonic() - killed_at
    assert line["export_id"] == str(export.id)
    # The job stays with its dead owner until the lease (3 s, renewed every second) ends.
    assert reclaimed_after >= 1.5, reclaimed_after

    done = await wait_for_status(pool, export.id, "COMPLETED", "FAILED", timeout=60)
    finished_after = time.monotonic() - killed_at
    assert done["attempts"] == 2
    await assert_delivered(pool, s3, smtp_sink, export)
    await assert_nothing_left_behind(pool, s3)
    assert await survivor.terminate() == 0
    print(
        f"\nkill -9 at {progress['rows_written']} rows: reclaimed after {reclaimed_after:.1f}s, "
        f"completed {finished_after:.1f}s after the kill "
        f"({done['row_count']} rows, {done['byte_size'] / 2**20:.1f} MiB, attempts 2)"
    )
