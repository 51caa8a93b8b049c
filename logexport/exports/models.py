"""The export record as every layer sees it."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

import asyncpg

from logexport.kinds import ExportKind

# ``ExportKind`` lives with the kinds table, which the remote client loads without this
# module; it is offered here with the rest of the export record's types.
__all__ = ["Compression", "ExportFormat", "ExportKind", "ExportStatus", "LogExport"]


class ExportStatus(StrEnum):
    PENDING = "PENDING"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    EXPIRED = "EXPIRED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"


class ExportFormat(StrEnum):
    JSONL = "JSONL"
    CSV = "CSV"


class Compression(StrEnum):
    NONE = "NONE"
    GZIP = "GZIP"


@dataclass(frozen=True)
class LogExport:
    id: UUID
    organization_id: UUID
    kind: ExportKind
    status: ExportStatus
    from_time: datetime
    to_time: datetime
    format: ExportFormat
    compression: Compression
    csv_bom: bool
    filter: dict[str, Any]
    requested_by: UUID
    api_key_id: UUID | None
    idempotency_key: str | None
    request_hash: str | None
    attempts: int
    run_after: datetime
    lease_owner: str | None
    lease_expires_at: datetime | None
    rows_written: int
    storage_key: str | None
    file_name: str | None
    content_type: str | None
    byte_size: int | None
    row_count: int | None
    sha256: str | None
    snapshot_at: datetime | None
    started_at: datetime | None
    completed_at: datetime | None
    emailed_at: datetime | None
    email_attempts: int
    email_run_after: datetime | None
    expires_at: datetime | None
    finished_at: datetime | None
    error_code: str | None
    error_message: str | None
    created_at: datetime
    updated_at: datetime
    # The signed manifest envelope (JSON text, as stored beside the file), its place in the
    # organization's chain for this kind, and the SHA-256 of its canonical manifest bytes.
    manifest: str | None = None
    manifest_sequence: int | None = None
    manifest_sha256: str | None = None
    manifest_stored_at: datetime | None = None

    @classmethod
    def from_record(cls, record: asyncpg.Record) -> LogExport:
        values = {f.name: record[f.name] for f in fields(cls)}
        values["kind"] = ExportKind(values["kind"])
        values["status"] = ExportStatus(values["status"])
        values["format"] = ExportFormat(values["format"])
        values["compression"] = Compression(values["compression"])
        return cls(**values)

    @property
    def is_active(self) -> bool:
        return self.status in (ExportStatus.PENDING, ExportStatus.PROCESSING)
