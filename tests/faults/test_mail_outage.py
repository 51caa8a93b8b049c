"""An SMTP server refusing mail: the ready email is retried, the export stays done."""

from __future__ import annotations

import time

import pytest

from tests.faults import (
    assert_delivered,
    assert_nothing_left_behind,
    ready_emails,
    request_audit_export,
    start_workers,
)
from tests.support.world import eventually, export_status, wait_for_status

pytestmark = pytest.mark.faults


async def test_refused_ready_email_is_retried_without_touching_the_export(
    pool, settings, s3, smtp_sink, world, processes, worker_env
):
    (worker,) = await start_workers(processes, worker_env, 1)
    smtp_sink.fail_next(3)
    export = await request_audit_export(
        pool, settings, world, from_time="2026-01-01T00:00:00Z", to_time="2026-01-02T00:00:00Z"
    )
    await wait_for_status(pool, export.id, "COMPLETED", "FAILED", timeout=60)
    completed_at = time.monotonic()
    statuses: set[str] = set()

    async def emailed():
        row = await export_status(pool, export.id)
        statuses.add(row["status"])
        return row if row["emailed_at"] is not None else None

    row = await eventually(emailed, timeout=60, interval=0.02, what="the ready email")
    mailed_after = time.monotonic() - completed_at
    assert statuses == {"COMPLETED"}
    assert row["attempts"] == 1
    assert row["email_attempts"] == 4  # three refusals, then accepted
    assert len([m for m in worker.messages() if m == "email failed; will retry"]) == 3
    await assert_delivered(pool, s3, smtp_sink, export)
    assert len(ready_emails(smtp_sink, export.id)) == 1
    await assert_nothing_left_behind(pool, s3)
    print(f"\nSMTP 451 x3: ready email sent {mailed_after:.1f}s after COMPLETED, attempts 1")
