"""Log streams in tests: stream rows inserted directly, entries written, and what a receiver
got checked the way a customer would (signature, manifest, chain, rows)."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg

from logexport import manifests
from logexport.config import Settings
from logexport.kinds import ExportKind
from logexport.streams.loop import StreamLoop
from logexport.streams.models import DestinationType, LogStream, StreamState
from logexport.streams.secrets import seal
from logexport.streams.store import insert_stream
from tests.support.keys import TEST_SIGNING_KEY
from tests.support.receiver import Received, Receiver
from tests.support.world import eventually

ENTRY_SQL = """
INSERT INTO audit_log_entries (organization_id, created_at, actor_type, actor_id, action,
                               resource_type, resource_id, metadata)
SELECT $1::uuid, COALESCE($3::timestamptz, now()), 'USER', 'usr_' || i, $4, 'Document',
       'doc_' || i, jsonb_build_object('n', i, 'note', $5::text)
FROM generate_series(1, $2::int) AS i
RETURNING id
"""


async def create_stream(
    conn: asyncpg.Connection,
    *,
    secret_key: str,
    organization_id: UUID,
    url: str,
    secret: str,
    interval_seconds: int = 1,
    start_at: datetime | None = None,
    filter: dict[str, Any] | None = None,
) -> LogStream:
    stream_id = uuid.uuid4()
    return await insert_stream(
        conn,
        stream_id=stream_id,
        organization_id=organization_id,
        kind="AUDIT_LOG",
        destination_type="HTTPS",
        destination={"url": url},
        secret=seal(secret_key, stream_id, {"secret": secret}),
        interval_seconds=interval_seconds,
        filter=filter,
        start_at=start_at,
        created_by=None,
    )


def unsaved_stream(
    stream_id: UUID,
    organization_id: UUID,
    destination_type: DestinationType,
    destination: dict[str, Any],
    secret: bytes | None,
) -> LogStream:
    """An audit log stream that was never stored, as a destination sees it: active, due now,
    nothing delivered yet."""
    now = datetime.now(UTC)
    return LogStream(
        id=stream_id,
        organization_id=organization_id,
        kind=ExportKind.AUDIT_LOG,
        destination_type=destination_type,
        destination=destination,
        secret=secret,
        interval_seconds=60,
        filter=None,
        state=StreamState.ACTIVE,
        last_error=None,
        next_run_at=now,
        start_at=now,
        horizon=None,
        range_end=None,
        cursor_created_at=None,
        cursor_id=None,
        last_sequence=0,
        last_manifest_sha256=None,
        failures=0,
        lease_owner=None,
        lease_expires_at=None,
        lease_attempt=0,
        lease_lock_key=None,
        created_by=None,
        created_at=now,
        updated_at=now,
        deleted_at=None,
    )


@contextlib.asynccontextmanager
async def running_stream_loop(
    settings: Settings, pool: asyncpg.Pool, worker_id: str
) -> AsyncIterator[StreamLoop]:
    """The stream loop as a worker runs it, polling every 0.1 s, stopped on leaving."""
    loop = StreamLoop(settings, pool, worker_id=worker_id, poll_interval=0.1)
    stopping = False
    task = asyncio.get_running_loop().create_task(loop.run(lambda: stopping))
    try:
        yield loop
    finally:
        stopping = True
        await asyncio.wait_for(task, 10)


async def write_entries(
    conn: asyncpg.Connection,
    organization_id: UUID,
    count: int,
    *,
    created_at: datetime | None = None,
    action: str = "user.login",
    note: str = "",
) -> list[UUID]:
    return [
        r["id"]
        for r in await conn.fetch(ENTRY_SQL, organization_id, count, created_at, action, note)
    ]


def distinct_deliveries(received: list[Received]) -> dict[int, Received]:
    """One accepted request per sequence; a sequence seen again must be the same delivery
    (same id, same bytes): a retry after a crash, never a second delivery."""
    by_sequence: dict[int, list[Received]] = defaultdict(list)
    for r in received:
        if 200 <= r.answered < 300:
            by_sequence[r.sequence].append(r)
    out: dict[int, Received] = {}
    for sequence, copies in by_sequence.items():
        first = copies[0]
        for other in copies[1:]:
            assert other.delivery_id == first.delivery_id, f"sequence {sequence} has two ids"
            assert other.body == first.body, f"sequence {sequence} came with two bodies"
        out[sequence] = first
    return out


def check_chain(deliveries: dict[int, Received], stream_id: UUID) -> list[dict[str, Any]]:
    """Sequences 1..n with no gap; each body verified offline against its signed manifest;
    each manifest linked to the previous one. The rows, in delivery order."""
    keys = {
        manifests.key_id(k.public_key()): k.public_key()
        for k in [manifests.parse_signing_key(TEST_SIGNING_KEY)]
    }
    assert sorted(deliveries) == list(range(1, len(deliveries) + 1)), sorted(deliveries)
    rows: list[dict[str, Any]] = []
    previous: str | None = None
    for sequence in sorted(deliveries):
        received = deliveries[sequence]
        assert received.signature_ok, f"sequence {sequence}: HMAC signature does not match"
        assert received.headers["content-type"] == "application/x-ndjson"
        assert received.headers["content-encoding"] == "gzip"
        envelope = received.envelope()
        manifest = envelope["manifest"]
        assert manifest["stream_id"] == str(stream_id)
        assert "export_id" not in manifest
        assert manifest["sequence"] == sequence
        assert manifest["previous_manifest_sha256"] == previous
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / manifest["file_name"]
            path.write_bytes(received.body)
            summary = manifests.verify_file(path, envelope, keys, workers=1)
        assert summary.row_count == manifest["row_count"] == len(received.rows())
        previous = manifests.manifest_sha256(manifest)
        rows.extend(received.rows())
    return rows


async def chained_row_ids(
    http: Receiver,
    path: str,
    stream_id: UUID,
    count: int,
    *,
    timeout: float = 30,
    interval: float = 0.1,
) -> list[str]:
    """The ids of the rows delivered at ``path``, once at least ``count`` have arrived in a
    chain that checks (see ``check_chain``)."""

    async def probe() -> list[str] | None:
        rows = check_chain(distinct_deliveries(http.received(path)), stream_id)
        return [r["id"] for r in rows] if len(rows) >= count else None

    return await eventually(
        probe, timeout=timeout, interval=interval, what=f"{count} rows at {path}"
    )
