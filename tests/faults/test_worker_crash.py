"""A worker that dies or freezes mid-export: another process finishes the job.

A worker killed with SIGKILL lets go of its liveness lock with its connection, so its export
is claimed again within seconds, whatever the lease. A worker that is only frozen (SIGSTOP:
its connections stay open) keeps the export until its lease runs out, and then, woken, finds
it gone and steps back without writing anything.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

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
from tests.support.throttle import ThrottledRelay
from tests.support.world import eventually, export_status, wait_for_status

pytestmark = pytest.mark.faults

# The defaults a fresh installation runs with.
DEFAULT_LEASE = 60.0
RECLAIM_DEADLINE = 5.0


@pytest.fixture
def slower_s3(s3) -> Iterator[ThrottledRelay]:
    """3 MB/s: the 22 MiB file takes about 8 s to upload, time enough to kill its writer
    before the first heartbeat at the default lease has even stored progress."""
    relay = ThrottledRelay(s3.server.port, 3_000_000).start()
    try:
        yield relay
    finally:
        relay.stop()


async def test_export_of_a_killed_worker_is_claimed_again_within_seconds_at_default_settings(
    pool, settings, s3, smtp_sink, world, processes, worker_env, slower_s3
):
    env = {
        key: value
        for key, value in worker_env.items()
        if key
        not in (
            "LOGEXPORT_WORKER_LEASE",
            "LOGEXPORT_WORKER_POLL_INTERVAL",
            "LOGEXPORT_WORKER_RETRY_BASE",
        )
    }
    env["LOGEXPORT_S3_ENDPOINT_URL"] = slower_s3.endpoint_url
    workers = await start_workers(processes, env, 2, concurrency=1)
    export = await request_audit_export(pool, settings, world)

    async def uploading() -> dict[str, object] | None:
        row = await export_status(pool, export.id)
        return row if row["status"] == "PROCESSING" and open_uploads(s3) else None

    running = await eventually(uploading, timeout=30, interval=0.02, what="the upload to start")
    assert running["attempts"] == 1
    lease_left = (running["lease_expires_at"] - running["updated_at"]).total_seconds()
    assert lease_left > DEFAULT_LEASE - 5, "the workers should run with the default lease"
    victim = owner_of(workers, running["lease_owner"])
    (survivor,) = [w for w in workers if w is not victim]
    victim.kill()
    killed_at = time.monotonic()
    assert open_uploads(s3), "the killed attempt should have left an unfinished upload"

    # Long enough to see the old behaviour (reclaim at lease expiry) fail with its figure.
    line = await survivor.wait_for_line(
        lambda rec: rec.get("message") == "export started" and rec.get("attempt") == 2,
        timeout=DEFAULT_LEASE + 30,
    )
    reclaimed_after = time.monotonic() - killed_at
    assert line["export_id"] == str(export.id)
    assert reclaimed_after < RECLAIM_DEADLINE, f"reclaimed {reclaimed_after:.1f}s after the kill"

    done = await wait_for_status(pool, export.id, "COMPLETED", "FAILED", timeout=90)
    finished_after = time.monotonic() - killed_at
    assert done["attempts"] == 2
    await assert_delivered(pool, s3, smtp_sink, export)
    await assert_nothing_left_behind(pool, s3)
    assert await survivor.terminate() == 0
    print(
        f"\nkill -9 mid-upload at the default lease ({DEFAULT_LEASE:.0f}s): reclaimed after "
        f"{reclaimed_after:.1f}s, completed {finished_after:.1f}s after the kill "
        f"({done['row_count']} rows, {done['byte_size'] / 2**20:.1f} MiB, attempts 2)"
    )


async def test_a_frozen_worker_keeps_its_export_until_the_lease_ends_then_steps_back(
    pool, settings, s3, smtp_sink, world, processes, worker_env
):
    """The frozen worker's connection, and so its liveness lock, stays open: only the lease
    (3 s here, renewed every second) frees the export."""
    workers = await start_workers(processes, worker_env, 2, concurrency=1)
    export = await request_audit_export(pool, settings, world)
    progress = await wait_for_progress(pool, export.id)
    assert progress["attempts"] == 1
    frozen = owner_of(workers, progress["lease_owner"])
    (survivor,) = [w for w in workers if w is not frozen]
    frozen.send(signal.SIGSTOP)
    stopped_at = time.monotonic()
    try:
        line = await survivor.wait_for_line(
            lambda rec: rec.get("message") == "export started" and rec.get("attempt") == 2,
            timeout=30,
        )
        reclaimed_after = time.monotonic() - stopped_at
        assert line["export_id"] == str(export.id)
        # Not taken while the lease ran (at least two of its three seconds were left).
        assert reclaimed_after >= 1.5, reclaimed_after
        done = await wait_for_status(pool, export.id, "COMPLETED", "FAILED", timeout=60)
        assert done["attempts"] == 2
        assert done["lease_owner"] is None
    finally:
        frozen.send(signal.SIGCONT)

    # Woken, the frozen worker finds the export no longer its own and writes nothing.
    await frozen.wait_for_line("lease lost; upload aborted", timeout=30)
    after = await export_status(pool, export.id)
    assert (after["status"], after["attempts"], after["sha256"]) == (
        "COMPLETED",
        2,
        done["sha256"],
    )
    await assert_delivered(pool, s3, smtp_sink, export)
    await assert_nothing_left_behind(pool, s3)
    assert await frozen.terminate() == 0
    assert await survivor.terminate() == 0
    print(f"\nSIGSTOP mid-export at a 3s lease: reclaimed after {reclaimed_after:.1f}s")
