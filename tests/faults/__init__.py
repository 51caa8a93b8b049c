"""Fault tests: real worker processes against real Postgres, S3 and SMTP.

The checks below are what every fault test asserts once the dust settles: the export is
delivered whole, exactly once, and nothing is left behind.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import tempfile
import time
from datetime import datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg

from devtools.services import SmtpSink
from logexport import manifests
from logexport.config import Settings
from logexport.exports.models import ExportKind, LogExport
from tests.support.exports import request_export
from tests.support.keys import TEST_SIGNING_KEY
from tests.support.world import World, eventually, export_status

KEY = manifests.parse_signing_key(TEST_SIGNING_KEY)


async def request_audit_export(
    pool: asyncpg.Pool,
    settings: Settings,
    world: World,
    *,
    from_time: str = "2026-01-01T00:00:00Z",
    to_time: str = "2026-01-13T00:00:00Z",
) -> LogExport:
    """A JSONL export by the admin: 50k rows with metadata, over 20 MiB, several parts."""
    return await request_export(
        pool,
        settings,
        world.admin.principal,
        ExportKind.AUDIT_LOG,
        organization_id=world.organization_id,
        from_time=from_time,
        to_time=to_time,
    )


async def rows_in_range(pool: asyncpg.Pool, export: LogExport) -> int:
    async with pool.acquire() as conn:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM audit_log_entries"
            " WHERE organization_id = $1 AND created_at >= $2 AND created_at < $3",
            export.organization_id,
            export.from_time,
            export.to_time,
        )
    return count


async def wait_for_progress(
    pool: asyncpg.Pool, export_id: UUID, *, min_rows: int = 1, timeout: float = 30.0
) -> dict[str, Any]:
    """The export's row once it is PROCESSING and a heartbeat has stored progress."""

    async def probe() -> dict[str, Any] | None:
        row = await export_status(pool, export_id)
        assert row["status"] in ("PENDING", "PROCESSING"), row["status"]
        if row["status"] == "PROCESSING" and row["rows_written"] >= min_rows:
            return row
        return None

    return await eventually(probe, timeout=timeout, interval=0.02, what="export progress")


def ready_emails(smtp_sink: SmtpSink, export_id: UUID) -> list[EmailMessage]:
    return [
        m
        for m in smtp_sink.messages()
        if "is ready" in str(m["Subject"]) and f"Export ID: {export_id}" in _text(m)
    ]


def ready_emails_by_export(smtp_sink: SmtpSink) -> dict[str, int]:
    """How many ready emails each export id got (one pass over the mailbox)."""
    counts: dict[str, int] = {}
    for message in smtp_sink.messages():
        if "is ready" not in str(message["Subject"]):
            continue
        for line in _text(message).splitlines():
            if line.startswith("Export ID: "):
                key = line.removeprefix("Export ID: ").strip()
                counts[key] = counts.get(key, 0) + 1
    return counts


def failure_emails(smtp_sink: SmtpSink, export_id: UUID) -> list[EmailMessage]:
    return [
        m
        for m in smtp_sink.messages()
        if "is ready" not in str(m["Subject"]) and str(export_id) in _text(m)
    ]


def _text(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    return str(part.get_content()) if part is not None else ""


def open_uploads(s3: Any) -> list[dict[str, Any]]:
    uploads: list[dict[str, Any]] = (
        s3.client().list_multipart_uploads(Bucket=s3.bucket).get("Uploads", [])
    )
    return uploads


async def assert_delivered(
    pool: asyncpg.Pool, s3: Any, smtp_sink: SmtpSink, export: LogExport, *, timeout: float = 20.0
) -> dict[str, Any]:
    """COMPLETED, the stored file whole and matching its recorded SHA-256 and its signed
    manifest, one ready email."""
    row = await export_status(pool, export.id)
    assert row["status"] == "COMPLETED", (row["status"], row["error_code"], row["error_message"])
    expected = await rows_in_range(pool, export)
    body = await asyncio.to_thread(s3.get, f"exports/{row['storage_key']}")
    assert hashlib.sha256(body).hexdigest() == row["sha256"]
    assert len(body) == row["byte_size"]
    lines = body.decode().splitlines()
    assert len(lines) == expected == row["row_count"]
    ids = [json.loads(line)["id"] for line in lines]
    assert len(set(ids)) == expected, "a row appears twice in the file"
    assert json.loads(lines[0])["metadata"] is not None
    await asyncio.to_thread(_verify_manifest, body, row)
    await eventually(
        lambda: _true(ready_emails(smtp_sink, export.id)), timeout=timeout, what="ready email"
    )
    await eventually(lambda: _emailed(pool, export.id), timeout=timeout, what="emailed_at recorded")
    assert len(ready_emails(smtp_sink, export.id)) == 1
    return row


def _verify_manifest(body: bytes, row: dict[str, Any]) -> None:
    """The file checked offline against the manifest recorded in its commit."""
    keys = {manifests.key_id(KEY.public_key()): KEY.public_key()}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / row["file_name"]
        path.write_bytes(body)
        manifests.verify_file(path, json.loads(row["manifest"]), keys)


async def _true(value: Any) -> Any:
    return value


async def _emailed(pool: asyncpg.Pool, export_id: UUID) -> datetime | None:
    value: datetime | None = (await export_status(pool, export_id))["emailed_at"]
    return value


async def assert_nothing_left_behind(
    pool: asyncpg.Pool, s3: Any, *, timeout: float = 30.0
) -> float:
    """No open multipart upload (the sweeper may need a pass), no PROCESSING job without a live
    lease, no stored object that no commit adopted. Returns how long the cleanup took."""
    started = time.monotonic()
    await eventually(
        lambda: _true(not open_uploads(s3) or None),
        timeout=timeout,
        interval=0.2,
        what="open multipart uploads to be aborted",
    )
    async with pool.acquire() as conn:
        stale = await conn.fetch(
            "SELECT id, lease_owner, lease_expires_at FROM log_exports"
            " WHERE status = 'PROCESSING'"
            " AND (lease_expires_at IS NULL OR lease_expires_at <= now())"
        )
        # A completed export's file, and the copy of its signed manifest beside it.
        adopted = {
            f"exports/{r['storage_key']}{suffix}"
            for r in await conn.fetch(
                "SELECT storage_key FROM log_exports WHERE status = 'COMPLETED'"
            )
            for suffix in ("", ".manifest.json")
        }
    assert not stale, f"PROCESSING without a live lease: {stale}"

    async def only_adopted() -> bool:
        keys = set(await asyncio.to_thread(s3.keys, "exports/"))
        return keys <= adopted

    await eventually(only_adopted, timeout=timeout, interval=0.2, what="unadopted objects removed")
    return time.monotonic() - started


def owner_of(processes: list[Any], lease_owner: str) -> Any:
    """The process holding a lease: owners are ``host:pid:suffix``."""
    pid = int(lease_owner.split(":")[1])
    for process in processes:
        if process.pid == pid:
            return process
    raise AssertionError(f"no process of this test holds the lease {lease_owner}")


async def start_workers(processes: Any, env: dict[str, str], count: int, **kw: Any) -> list[Any]:
    """``count`` worker processes, started together, each listening when this returns."""
    started = [processes.worker(f"worker-{i + 1}", env, **kw) for i in range(count)]
    for process in started:
        await process.wait_for_line("listener connected", timeout=60)
    return started
