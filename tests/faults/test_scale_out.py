"""Four worker processes, 200 exports from 20 organizations (scale-out, fairness)."""

from __future__ import annotations

import asyncio
import itertools
import json
import statistics
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from logexport import identity
from logexport.policy import Role
from tests.faults import open_uploads, ready_emails_by_export, start_workers
from tests.support.world import eventually

pytestmark = pytest.mark.faults

ORGS = 20
EXPORTS_PER_ORG = 10
ROWS_PER_ORG = 300
DAY = datetime(2026, 3, 1, tzinfo=UTC)

_ROWS_SQL = """
INSERT INTO audit_log_entries (organization_id, created_at, actor_type, actor_id, action)
SELECT $1::uuid, $2::timestamptz + make_interval(secs => i), 'USER', 'usr_' || i, 'user.login'
FROM generate_series(0, $3::int - 1) AS i
"""

# Each organization's ten jobs are queued back to back, oldest first: a claim order that
# ignored the running cap would serve the first organization's backlog before the others.
_JOB_SQL = """
INSERT INTO log_exports (organization_id, kind, from_time, to_time, requested_by,
                         created_at, run_after)
VALUES ($1, 'AUDIT_LOG', $2, $3, $4, clock_timestamp(), clock_timestamp())
RETURNING id
"""


async def _queue_jobs(pool) -> dict[UUID, UUID]:
    orgs = {}
    async with pool.acquire() as conn:
        for n in range(ORGS):
            org = await identity.create_organization(conn, f"Tenant {n:02d}")
            user = await identity.create_user(conn, f"admin{n}@tenant{n}.test", f"Admin {n}")
            await identity.add_member(conn, org.id, user.id, Role.ADMIN)
            await conn.execute(_ROWS_SQL, org.id, DAY, ROWS_PER_ORG)
            orgs[org.id] = user.id
        async with conn.transaction():
            for org_id, user_id in orgs.items():
                for _ in range(EXPORTS_PER_ORG):
                    await conn.fetchval(_JOB_SQL, org_id, DAY, DAY.replace(day=2), user_id)
            await conn.execute("SELECT pg_notify('logexport_jobs', '')")
    return orgs


async def test_many_workers_export_each_job_once_and_keep_tenants_fair(
    pool, settings, s3, smtp_sink, processes, worker_env, request
):
    workers = await start_workers(
        processes, {**worker_env, "LOGEXPORT_MAX_RUNNING_EXPORTS_PER_ORG": "1"}, 4, concurrency=2
    )
    violations: list[tuple[float, list[dict[str, Any]]]] = []
    max_running_overall = 0
    samples = 0
    done = asyncio.Event()

    async def sample_running_cap() -> None:
        nonlocal max_running_overall, samples
        async with pool.acquire() as conn:
            while not done.is_set():
                rows = await conn.fetch(
                    "SELECT organization_id, count(*) AS n FROM log_exports"
                    " WHERE status = 'PROCESSING' GROUP BY organization_id"
                )
                samples += 1
                max_running_overall = max(max_running_overall, sum(r["n"] for r in rows))
                over = [dict(r) for r in rows if r["n"] > 1]
                if over:
                    violations.append((time.monotonic(), over))
                await asyncio.sleep(0.02)

    sampler = asyncio.create_task(sample_running_cap())
    started = time.monotonic()
    orgs = await _queue_jobs(pool)
    total = ORGS * EXPORTS_PER_ORG

    async def all_finished() -> bool:
        async with pool.acquire() as conn:
            left = await conn.fetchval(
                "SELECT count(*) FROM log_exports WHERE status NOT IN ('COMPLETED', 'FAILED')"
            )
        return bool(left == 0)

    try:
        await eventually(all_finished, timeout=150, interval=0.2, what="every export finished")
    finally:
        done.set()
        await sampler
    elapsed = time.monotonic() - started

    async with pool.acquire() as conn:
        rows = [dict(r) for r in await conn.fetch("SELECT * FROM log_exports")]
        objects = Counter(
            r["export_id"] for r in await conn.fetch("SELECT export_id FROM log_export_objects")
        )
    assert len(rows) == total
    assert {r["status"] for r in rows} == {"COMPLETED"}
    # Exactly once: one attempt, one object written, one commit logged across all processes.
    assert {r["attempts"] for r in rows} == {1}
    assert all(objects[r["id"]] == 1 for r in rows)
    assert {r["row_count"] for r in rows} == {ROWS_PER_ORG}
    commits = Counter(
        line["export_id"]
        for worker in workers
        for line in worker.lines()
        if line.get("message") == "export completed"
    )
    assert commits == Counter({str(r["id"]): 1 for r in rows})
    assert all(w.alive() for w in workers)

    # The running cap held at every sample, and per organization no two runs overlapped.
    assert samples > 50
    assert not violations, violations[:5]
    by_org: dict[UUID, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_org[r["organization_id"]].append(r)
    for runs in by_org.values():
        runs.sort(key=lambda r: r["started_at"])
        for earlier, later in itertools.pairwise(runs):
            assert later["started_at"] >= earlier["completed_at"], (earlier["id"], later["id"])

    async def mailed() -> bool:
        counts = ready_emails_by_export(smtp_sink)
        return all(str(r["id"]) in counts for r in rows)

    await eventually(mailed, timeout=60, interval=0.25, what="every ready email")
    counts = ready_emails_by_export(smtp_sink)
    assert all(counts[str(r["id"])] == 1 for r in rows)
    assert not open_uploads(s3)
    per_worker = Counter(w.name for w in workers for m in w.messages() if m == "export completed")

    # Fairness: how long each organization's jobs waited between request and start.
    waits = {
        str(org_id): sorted((r["started_at"] - r["created_at"]).total_seconds() for r in runs)
        for org_id, runs in by_org.items()
    }
    first_starts = sorted(values[0] for values in waits.values())
    report: dict[str, Any] = {
        "workers": len(workers),
        "concurrency_per_worker": 2,
        "organizations": ORGS,
        "exports": total,
        "rows_per_export": ROWS_PER_ORG,
        "elapsed_seconds": round(elapsed, 2),
        "exports_per_second": round(total / elapsed, 1),
        "running_cap_samples": samples,
        "running_cap_violations": len(violations),
        "max_running_at_once": max_running_overall,
        "exports_per_worker": dict(sorted(per_worker.items())),
        "first_start_wait_seconds": {
            "min": round(first_starts[0], 3),
            "median": round(statistics.median(first_starts), 3),
            "max": round(first_starts[-1], 3),
        },
        "wait_seconds_by_organization": {
            org: {
                "min": round(v[0], 3),
                "median": round(statistics.median(v), 3),
                "max": round(v[-1], 3),
            }
            for org, v in sorted(waits.items(), key=lambda kv: kv[1][0])
        },
    }
    out = Path(request.config.rootpath) / "test-output" / "scale_out.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nscale-out: {total} exports in {elapsed:.1f}s by {dict(per_worker)}")
    print(
        f"running-cap samples {samples}, violations {len(violations)}, "
        f"max running {max_running_overall}"
    )
    print("wait (started_at - created_at) per organization, seconds: min / median / max")
    for org, v in report["wait_seconds_by_organization"].items():
        print(f"  {org[:8]}  {v['min']:6.2f} / {v['median']:6.2f} / {v['max']:6.2f}")
    # The organization served least recently goes first (one tenant cannot starve
    # others): every organization's first export starts before any organization's second.
    first_start = {org_id: min(r["started_at"] for r in by_org[org_id]) for org_id in orgs}
    second_start = {org_id: sorted(r["started_at"] for r in by_org[org_id])[1] for org_id in orgs}
    assert max(first_start.values()) < min(second_start.values())
    assert first_starts[-1] < elapsed
    assert len(orgs) == ORGS
