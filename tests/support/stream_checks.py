"""Log streams in tests: stream rows inserted directly, entries written, and what a receiver
got checked the way a customer would (signature, manifest, chain, rows)."""

from __future__ import annotations

import tempfile
import uuid
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg

from logexport import manifests
from logexport.streams.models import LogStream
from logexport.streams.secrets import seal
from logexport.streams.store import insert_stream
from tests.support.keys import TEST_SIGNING_KEY
from tests.support.receiver import Received

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
