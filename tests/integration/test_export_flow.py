"""An export from request to email, through real Postgres, S3 (moto) and SMTP."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta

import pytest

from logexport.entries import AuditLogEntryInput, record_audit_log_entries
from logexport.exports.models import ExportFormat, ExportKind
from logexport.exports.pipeline import run_export
from logexport.exports.requests import ExportInput
from logexport.exports.worker import Worker
from tests.support.exports import request_export
from tests.support.world import build_world, wait_for_status

START = datetime(2026, 1, 1, tzinfo=UTC)


async def test_audit_log_export_is_uploaded_and_mailed(pool, settings, s3, smtp_sink):
    world = await build_world(pool)
    entries = [
        AuditLogEntryInput(
            organization_id=world.organization_id,
            action="user.login",
            actor_type="USER",
            actor_id=f"u{i}",
            actor_email=f"user{i}@acme.test",
            created_at=START + timedelta(minutes=i),
            ip_address="203.0.113.5",
            metadata={"n": i},
        )
        for i in range(500)
    ]
    async with pool.acquire() as conn:
        await record_audit_log_entries(conn, entries)
    export = await request_export(
        pool,
        settings,
        world.admin.principal,
        ExportKind.AUDIT_LOG,
        organization_id=world.organization_id,
        from_time="2026-01-01T00:00:00Z",
        to_time="2026-01-01T05:00:00Z",
    )
    async with Worker(settings, retry_base=0.1):
        done = await wait_for_status(pool, export.id, "COMPLETED", "FAILED")
        assert done["status"] == "COMPLETED", done["error_message"]
        message = await smtp_sink.wait_for(
            lambda m: m["To"] and "adam.admin@acme.test" in m["To"], timeout=20
        )
    assert message["Subject"] == "Your audit log export is ready"
    assert done["row_count"] == 300
    body = s3.get(f"exports/{done['storage_key']}")
    lines = body.decode().splitlines()
    assert len(lines) == 300
    first = json.loads(lines[0])
    assert first["created_at"] == "2026-01-01T00:00:00.000000Z"
    assert first["ip_address"] == "203.0.113.5"
    assert first["metadata"] == {"n": 0}


class _Collect:
    """An object writer that keeps the bytes (the pipeline's storage end, in memory)."""

    def __init__(self) -> None:
        self.data = bytearray()

    async def write(self, data: bytes) -> None:
        self.data += data


@pytest.mark.parametrize("format", ["JSONL", "CSV"])
async def test_values_holding_separator_and_control_characters_are_exported_exactly(pool, format):
    world = await build_world(pool)
    tricky = {
        "actor_name": "Mallory\x1f\x1e Unit\u2028Sep",
        "user_agent": 'curl\x1f"8"\\x\x00'.replace("\x00", "\x01"),
        "resource_id": "\x1f",
    }
    plain = {
        "actor_name": "Ada",
        "user_agent": "Mozilla/5.0 (X11, like Gecko)",
        "resource_id": None,
    }
    async with pool.acquire() as conn:
        for offset, values in enumerate([plain, tricky, plain]):
            await record_audit_log_entries(
                conn,
                [
                    AuditLogEntryInput(
                        organization_id=world.organization_id,
                        action="user.login",
                        actor_type="USER",
                        created_at=START + timedelta(seconds=offset),
                        **values,
                    )
                ],
            )
        spec = ExportInput(
            organization_id=world.organization_id,
            kind=ExportKind.AUDIT_LOG,
            from_time=START,
            to_time=START + timedelta(hours=1),
            format=ExportFormat(format),
        )
        sink = _Collect()
        result = await run_export(conn, spec, sink)
    assert result.row_count == 3
    text = bytes(sink.data).decode()
    if format == "JSONL":
        rows = [json.loads(line) for line in text.split("\n") if line]
    else:
        [header, *cells] = list(csv.reader(io.StringIO(text, newline="")))
        rows = [dict(zip(header, c, strict=True)) for c in cells]
    for key, value in tricky.items():
        assert rows[1][key] == value
    assert rows[0]["actor_name"] == rows[2]["actor_name"] == "Ada"
    assert rows[0]["resource_id"] == ("" if format == "CSV" else None)
    # The manifest's first and last rows are the file's, as written.
    assert result.first_row == (rows[0]["created_at"], rows[0]["id"])
    assert result.last_row == (rows[2]["created_at"], rows[2]["id"])
