"""The stream and delivery records as every layer sees them."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

import asyncpg

from logexport.kinds import ExportKind

__all__ = [
    "DeliveryStatus",
    "DestinationType",
    "ExportKind",
    "LogStream",
    "StreamDelivery",
    "StreamState",
]


class StreamState(StrEnum):
    ACTIVE = "ACTIVE"
    PAUSED = "PAUSED"
    FAILING = "FAILING"


class DestinationType(StrEnum):
    HTTPS = "HTTPS"
    S3 = "S3"


class DeliveryStatus(StrEnum):
    PENDING = "PENDING"
    DELIVERED = "DELIVERED"
    FAILED = "FAILED"


@dataclass(frozen=True)
class LogStream:
    """A row of ``log_streams``. ``destination`` holds the non-secret parts only; ``secret``
    is the sealed blob (see ``logexport.streams.secrets``), never shown."""

    id: UUID
    organization_id: UUID
    kind: ExportKind
    destination_type: DestinationType
    destination: dict[str, Any]
    secret: bytes | None
    interval_seconds: int
    filter: dict[str, Any] | None
    state: StreamState
    last_error: str | None
    next_run_at: datetime
    start_at: datetime
    # Transaction-id checkpoint (xid8, as an int): every row below it has been delivered.
    horizon: int | None
    # A range being delivered in several parts: its end and the last row delivered in it.
    range_end: int | None
    cursor_created_at: datetime | None
    cursor_id: UUID | None
    last_sequence: int
    last_manifest_sha256: str | None
    failures: int
    lease_owner: str | None
    lease_expires_at: datetime | None
    lease_attempt: int
    lease_lock_key: int | None
    created_by: UUID | None
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None

    @classmethod
    def from_record(cls, record: asyncpg.Record) -> LogStream:
        values = {f.name: record[f.name] for f in fields(cls)}
        values["kind"] = ExportKind(values["kind"])
        values["destination_type"] = DestinationType(values["destination_type"])
        values["state"] = StreamState(values["state"])
        for name in ("horizon", "range_end"):
            values[name] = _xid(values[name])
        return cls(**values)

    @property
    def url(self) -> str | None:
        """The HTTPS destination's URL (None for S3)."""
        url = self.destination.get("url")
        return str(url) if url is not None else None


@dataclass(frozen=True)
class StreamDelivery:
    """A row of ``log_stream_deliveries``: one numbered delivery of a stream's rows (or a
    test delivery, ``sequence`` None and no rows)."""

    id: UUID
    stream_id: UUID
    organization_id: UUID
    sequence: int | None
    test: bool
    status: DeliveryStatus
    xid_from: int | None
    xid_to: int | None
    after_created_at: datetime | None
    after_id: UUID | None
    last_created_at: datetime | None
    last_id: UUID | None
    completes_range: bool
    row_count: int
    byte_size: int
    sha256: str | None
    manifest: str | None
    manifest_sha256: str | None
    attempts: int
    error: str | None
    delivered_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_record(cls, record: asyncpg.Record) -> StreamDelivery:
        values = {f.name: record[f.name] for f in fields(cls)}
        values["status"] = DeliveryStatus(values["status"])
        for name in ("xid_from", "xid_to"):
            values[name] = _xid(values[name])
        return cls(**values)


def _xid(value: object) -> int | None:
    """An ``xid8`` as read back (an int, or its text when the driver has no codec)."""
    if value is None:
        return None
    return int(str(value))
