"""``run_export`` against real PostgreSQL: its files pass the offline verifier as written,
hold exactly the rows in ``(created_at, id)`` order, and large rows keep memory flat."""

from __future__ import annotations

import asyncio
import csv
import gzip
import io
import json
import tracemalloc
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from logexport import manifests
from logexport.entries import (
    AuditLogEntryInput,
    ScimEventInput,
    record_audit_log_entries,
    record_scim_events,
)
from logexport.exports import pipeline
from logexport.exports.models import Compression, ExportFormat, ExportKind
from logexport.exports.pipeline import ExportResult, run_export
from logexport.exports.requests import ExportInput
from tests.support.world import build_world

START = datetime(2026, 1, 1, tzinfo=UTC)
END = START + timedelta(days=1)
# More rows than the first (small) fetch and than one full batch.
ROWS = 4500
AWKWARD = [
    '=HYPERLINK("http://x","y")',
    "-1+1",
    " |pipe",
    "Mallory\x1f Unit",
    'quote " and back\\slash',
    "tab\tnew\nline\rcr",
    "\u2028 line separator, café",
    "\x01control",
]


class _Discard:
    """A storage end that keeps nothing, so that memory measured is the pipeline's."""

    async def write(self, data: bytes) -> None:
        pass


class _Collect:
    """The pipeline's storage end, in memory."""

    def __init__(self) -> None:
        self.data = bytearray()

    async def write(self, data: bytes) -> None:
        self.data += data


def _entries(organization_id: uuid.UUID) -> list[AuditLogEntryInput]:
    entries = []
    for i in range(ROWS):
        odd = AWKWARD[i % len(AWKWARD)] if i % 7 == 3 else None
        entries.append(
            AuditLogEntryInput(
                organization_id=organization_id,
                action="user.login",
                actor_type="USER",
                actor_id=None if i % 5 == 0 else f"usr_{i}",
                actor_name=odd or f"User {i}",
                user_agent=odd,
                # Pairs share a timestamp: the id orders them.
                created_at=START + timedelta(seconds=i // 2),
                ip_address="203.0.113.5" if i % 2 else None,
                metadata={"n": i, "note": odd or "a, b", "nested": {"k": [1, "x"]}},
            )
        )
    return entries


def _signed(
    path: Path, result: ExportResult, spec: ExportInput, key: Ed25519PrivateKey
) -> dict[str, Any]:
    mark = manifests.RowMark
    manifest = manifests.build_manifest(
        export_id=str(uuid.uuid4()),
        organization_id=str(spec.organization_id),
        kind=spec.kind.value,
        from_time=spec.from_time,
        to_time=spec.to_time,
        filter=None,
        format=spec.format.value,
        compression=spec.compression.value,
        file_name=path.name,
        row_count=result.row_count,
        byte_size=result.byte_size,
        sha256=result.sha256,
        snapshot_at=result.snapshot_at,
        first_row=mark(*result.first_row) if result.first_row else None,
        last_row=mark(*result.last_row) if result.last_row else None,
        sequence=1,
        previous_manifest_sha256=None,
        key_id=manifests.key_id(key.public_key()),
    )
    return manifests.sign_manifest(manifest, key)


def _rows(data: bytes, format: str, compression: str) -> list[dict[str, Any]]:
    if compression == "GZIP":
        data = gzip.decompress(data)
    if format == "JSONL":
        return [json.loads(line) for line in data.decode().split("\n") if line]
    [header, *cells] = list(csv.reader(io.StringIO(data.decode(), newline="")))
    return [dict(zip(header, c, strict=True)) for c in cells]


@pytest.mark.parametrize("compression", ["NONE", "GZIP"])
@pytest.mark.parametrize("format", ["JSONL", "CSV"])
async def test_files_pass_the_offline_verifier_and_hold_every_row_in_order(
    pool: asyncpg.Pool, tmp_path: Path, format: str, compression: str
) -> None:
    world = await build_world(pool)
    async with pool.acquire() as conn:
        await record_audit_log_entries(conn, _entries(world.organization_id))
        expected = await conn.fetch(
            "SELECT id::text, actor_name FROM audit_log_entries WHERE organization_id = $1 "
            "ORDER BY created_at, id",
            world.organization_id,
        )
        spec = ExportInput(
            organization_id=world.organization_id,
            kind=ExportKind.AUDIT_LOG,
            from_time=START,
            to_time=END,
            format=ExportFormat(format),
            compression=Compression(compression),
        )
        sink = _Collect()
        result = await run_export(conn, spec, sink)

    suffix = ".jsonl" if format == "JSONL" else ".csv"
    path = tmp_path / ("export" + suffix + (".gz" if compression == "GZIP" else ""))
    path.write_bytes(sink.data)
    key = Ed25519PrivateKey.generate()
    envelope = _signed(path, result, spec, key)
    summary = manifests.verify_file(
        path, envelope, {manifests.key_id(key.public_key()): key.public_key()}, workers=1
    )
    assert summary.row_count == result.row_count == ROWS

    rows = _rows(bytes(sink.data), format, compression)
    assert [r["id"] for r in rows] == [r["id"] for r in expected]
    names = [r["actor_name"] for r in rows]
    if format == "CSV":
        names = [n[1:] if n.startswith("'") and n[1:] in AWKWARD else n for n in names]
    assert names == [r["actor_name"] for r in expected]


async def _large_scim_events(pool: asyncpg.Pool) -> ExportInput:
    """300 events of about 96 KiB each (29 MB of JSONL), and their export."""
    world = await build_world(pool)
    body = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "members": []}
    body["members"] = [{"value": f"{i:040d}", "display": "x" * 200} for i in range(200)]
    events = [
        ScimEventInput(
            organization_id=world.organization_id,
            method="PATCH",
            path="/Groups/1",
            status_code=200,
            request_body=body,
            response_body=body,
            created_at=START + timedelta(minutes=4 * i),  # spread over the day
        )
        for i in range(300)
    ]
    async with pool.acquire() as conn:
        await record_scim_events(conn, events)
    return ExportInput(
        organization_id=world.organization_id,
        kind=ExportKind.SCIM_EVENT,
        from_time=START,
        to_time=END,
        format=ExportFormat.JSONL,
    )


async def test_rows_of_large_scim_bodies_are_read_a_few_at_a_time(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    """A batch is cut by bytes, not only by rows: 300 events of about 96 KiB each (29 MB in
    all, fewer rows than one batch) never sit in memory all at once."""
    spec = await _large_scim_events(pool)
    async with pool.acquire() as conn:
        tracemalloc.start()
        try:
            result = await run_export(conn, spec, _Discard())
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert result.row_count == 300
    assert result.byte_size > 25_000_000
    print(f"peak {peak / 2**20:.1f} MiB for {result.byte_size / 2**20:.1f} MiB of rows")
    assert peak < 24 * 2**20, f"peak {peak / 2**20:.0f} MiB"


class _SlowDiscard:
    """A storage end slower than reading, so that every queue before it fills."""

    async def write(self, data: bytes) -> None:
        await asyncio.sleep(0.005)


async def test_slices_read_ahead_within_their_bound(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through two connections reading slices of 15 MB ahead of a slow writer, what is held
    is bounded by the queues (here 1 + 2 + 1 MiB, and a chunk in hand at each stage), not by
    the size of a slice."""
    monkeypatch.setattr(pipeline, "QUEUE_BYTES", 2**20)
    monkeypatch.setattr(pipeline, "READ_AHEAD_BYTES", 2 * 2**20)
    monkeypatch.setattr(pipeline, "SLICE_ROWS", 150)
    planned: list[int] = []
    plan_slices = pipeline.plan_slices

    async def counted(*args: Any) -> list[tuple[datetime, datetime]]:
        slices = await plan_slices(*args)
        planned.append(len(slices))
        return slices

    monkeypatch.setattr(pipeline, "plan_slices", counted)
    spec = await _large_scim_events(pool)
    async with pool.acquire() as conn, pool.acquire() as helper:
        await conn.execute("ANALYZE scim_events")  # slices follow the planner's estimate
        tracemalloc.start()
        try:
            result = await run_export(conn, spec, _SlowDiscard(), helpers=[helper])
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert result.row_count == 300
    assert planned == [2], planned
    print(f"peak {peak / 2**20:.1f} MiB for {result.byte_size / 2**20:.1f} MiB of rows")
    # Reading the second slice whole instead holds about 21 MiB.
    assert peak < 17 * 2**20, f"peak {peak / 2**20:.0f} MiB"
