"""SIGTERM during an export: finish within the grace, or hand the job back at once."""

from __future__ import annotations

import signal
import time

import pytest

from tests.faults import (
    assert_delivered,
    assert_nothing_left_behind,
    owner_of,
    request_audit_export,
    start_workers,
    wait_for_progress,
)
from tests.support.world import export_status, wait_for_status

pytestmark = pytest.mark.faults


async def test_sigterm_lets_a_running_export_finish_within_the_grace(
    pool, settings, s3, smtp_sink, world, processes, worker_env
):
    # A second worker stays up to send the ready email if the first leaves before mailing.
    workers = await start_workers(processes, worker_env, 2, concurrency=1)
    export = await request_audit_export(pool, settings, world)
    progress = await wait_for_progress(pool, export.id)
    stopping = owner_of(workers, progress["lease_owner"])
    stopping.send(signal.SIGTERM)
    signaled_at = time.monotonic()
    assert await stopping.wait_exit(timeout=60) == 0
    exited_after = time.monotonic() - signaled_at

    row = await export_status(pool, export.id)
    assert row["status"] == "COMPLETED", row["status"]
    assert row["attempts"] == 1
    assert "export completed" in stopping.messages()
    await assert_delivered(pool, s3, smtp_sink, export)
    await assert_nothing_left_behind(pool, s3)
    print(f"\nSIGTERM, grace 30s: export finished, exit 0 after {exited_after:.1f}s")


async def test_sigterm_with_no_grace_hands_the_export_back_to_another_worker(
    pool, settings, s3, smtp_sink, world, processes, worker_env
):
    env = {**worker_env, "LOGEXPORT_SHUTDOWN_GRACE": "0s"}
    workers = await start_workers(processes, env, 2, concurrency=1)
    export = await request_audit_export(pool, settings, world)
    progress = await wait_for_progress(pool, export.id)
    stopping = owner_of(workers, progress["lease_owner"])
    (other,) = [w for w in workers if w is not stopping]
    stopping.send(signal.SIGTERM)
    signaled_at = time.monotonic()
    assert await stopping.wait_exit(timeout=30) == 0
    exited_after = time.monotonic() - signaled_at
    assert "export handed back" in stopping.messages()

    # Handed back at once (not after the lease), and the attempt did not count.
    line = await other.wait_for_line(lambda rec: rec.get("message") == "export started", timeout=30)
    picked_up_after = time.monotonic() - signaled_at
    assert line["export_id"] == str(export.id)
    assert line["attempt"] == 1
    done = await wait_for_status(pool, export.id, "COMPLETED", "FAILED", timeout=60)
    assert done["attempts"] == 1
    await assert_delivered(pool, s3, smtp_sink, export)
    await assert_nothing_left_behind(pool, s3)
    assert await other.terminate() == 0
    print(
        f"\nSIGTERM, grace 0s: exit 0 after {exited_after:.1f}s, picked up by the other worker "
        f"{picked_up_after:.1f}s after the signal, completed with attempts 1"
    )
