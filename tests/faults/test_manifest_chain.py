"""Four worker processes completing thirty exports of one organization at once: each kind's
manifests form one gap-free chain that ``logexport verify --chain`` accepts, and every file
verifies against its manifest with the published keys."""

from __future__ import annotations

import asyncio
import json
import os
from datetime import timedelta
from typing import Any
from uuid import UUID

import pytest

from logexport import manifests
from tests.faults import start_workers
from tests.faults.conftest import SEED_START
from tests.support.cli import run_logexport
from tests.support.keys import TEST_SIGNING_KEY
from tests.support.world import eventually

pytestmark = pytest.mark.faults

AUDIT_EXPORTS = 24
SCIM_EXPORTS = 6

_SCIM_ROWS = """
INSERT INTO scim_events (organization_id, created_at, method, path, status_code, user_name)
SELECT $1::uuid, $2::timestamptz + make_interval(secs => i * 10), 'PATCH', '/Users/u' || i,
       200, 'user' || i || '@acme.test'
FROM generate_series(0, 999) AS i
"""
_JOB_SQL = """
INSERT INTO log_exports (organization_id, kind, from_time, to_time, requested_by, format,
                         compression, created_at, run_after)
VALUES ($1, $2, $3, $4, $5, $6, $7, clock_timestamp(), clock_timestamp())
RETURNING id
"""


async def _queue(pool: Any, world: Any) -> dict[str, list[UUID]]:
    jobs: dict[str, list[UUID]] = {"AUDIT_LOG": [], "SCIM_EVENT": []}
    async with pool.acquire() as conn:
        await conn.execute(_SCIM_ROWS, world.organization_id, SEED_START)
        async with conn.transaction():
            for kind, count in (("AUDIT_LOG", AUDIT_EXPORTS), ("SCIM_EVENT", SCIM_EXPORTS)):
                for n in range(count):
                    export_id = await conn.fetchval(
                        _JOB_SQL,
                        world.organization_id,
                        kind,
                        SEED_START + timedelta(hours=n),
                        SEED_START + timedelta(hours=n + 2),
                        world.admin.user_id,
                        ("JSONL", "CSV")[n % 2],
                        ("NONE", "GZIP")[n // 2 % 2],
                    )
                    jobs[kind].append(export_id)
            await conn.execute("SELECT pg_notify('logexport_jobs', '')")
    return jobs


async def test_four_worker_processes_build_gap_free_chains_that_verify(
    pool, s3, processes, worker_env, world, tmp_path
):
    env = {**worker_env, "LOGEXPORT_MAX_RUNNING_EXPORTS_PER_ORG": "16"}
    workers = await start_workers(processes, env, 4, concurrency=4)
    jobs = await _queue(pool, world)
    every = [*jobs["AUDIT_LOG"], *jobs["SCIM_EVENT"]]

    async def all_stored() -> list[Any] | None:
        async with pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT * FROM log_exports WHERE id = ANY($1) AND manifest_stored_at IS NOT NULL",
                every,
            )
        return rows if len(rows) == len(every) else None

    rows = await eventually(all_stored, timeout=180, interval=0.5, what="every manifest stored")
    completing = [w for w in workers if "export completed" in w.messages()]
    assert len(completing) >= 2, "the completions should be spread over several processes"

    keys_file = tmp_path / "keys.json"
    public = manifests.parse_signing_key(TEST_SIGNING_KEY).public_key()
    keys_file.write_text(json.dumps(manifests.jwks([public])))
    keys = manifests.load_jwks(keys_file.read_text())
    for kind, ids in jobs.items():
        chain = sorted((r for r in rows if r["id"] in ids), key=lambda r: r["manifest_sequence"])
        assert [r["manifest_sequence"] for r in chain] == list(range(1, len(ids) + 1))
        folder = tmp_path / kind
        folder.mkdir()
        for row in chain:
            key = f"exports/{row['storage_key']}"
            name = f"{row['manifest_sequence']:03d}-{row['file_name']}"
            file = folder / name
            file.write_bytes(await asyncio.to_thread(s3.get, key))
            copy = folder / manifests.manifest_name(name)
            copy.write_bytes(await asyncio.to_thread(s3.get, key + manifests.MANIFEST_SUFFIX))
            assert copy.read_text() == row["manifest"]
            summary = manifests.verify_file(file, manifests.read_envelope(copy), keys)
            assert summary.row_count == row["row_count"]
            file.rename(tmp_path / name)
        # The auditor's own command, on the folder of manifests.
        result = await run_logexport(
            "verify", "--chain", str(folder), "--keys", str(keys_file), env=_clean_env(), timeout=60
        )
        assert result.code == 0, result.stderr
        assert f"{len(ids)} manifests from sequence 1 to {len(ids)}" in result.stdout
    async with pool.acquire() as conn:
        heads = await conn.fetch("SELECT kind, last_sequence FROM manifest_chains")
    assert {r["kind"]: r["last_sequence"] for r in heads} == {
        "AUDIT_LOG": AUDIT_EXPORTS,
        "SCIM_EVENT": SCIM_EXPORTS,
    }


def _clean_env() -> dict[str, str]:
    """An auditor's environment: no ``LOGEXPORT_*`` setting at all."""
    return {k: v for k, v in os.environ.items() if not k.startswith("LOGEXPORT_")}
