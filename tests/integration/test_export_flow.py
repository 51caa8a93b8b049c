"""An export from request to email, through real Postgres, S3 (moto) and SMTP."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from logexport.entries import AuditLogEntryInput, record_audit_log_entries
from logexport.exports.models import ExportKind
from logexport.exports.requests import request_export
from logexport.exports.worker import Worker
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
