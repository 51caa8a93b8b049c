"""The stream store: every read and change of a stream's delivery state, each a named call.

The delivery loop decides *when* a stream runs; this module is the only place that knows
*how* its rows change, with the SQL of ``sql/queries/streams.sql``.

A run holds the stream under a lease, renewed while it works. Every write about a running
stream is fenced by ``(lease_owner, lease_attempt)``: when the row no longer matches (the
lease ran out and went to another worker, or the stream was deleted) the write changes
nothing and raises ``StreamGone``, so a run that lost its stream stops without a trace.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from logexport.db import q
from logexport.streams.models import LogStream, StreamDelivery


class StreamGone(Exception):
    """A fenced write found the stream no longer this run's."""


@dataclass(frozen=True)
class StreamFence:
    """Who may write a stream's delivery state: this worker, for this run."""

    stream_id: UUID
    owner: str
    attempt: int

    @property
    def args(self) -> tuple[UUID, str, int]:
        return (self.stream_id, self.owner, self.attempt)

    @classmethod
    def of(cls, stream: LogStream) -> StreamFence:
        assert stream.lease_owner is not None, "the stream is not leased"
        return cls(stream.id, stream.lease_owner, stream.lease_attempt)


@dataclass(frozen=True)
class NewDelivery:
    """A delivery about to be recorded: its id, its rows' bounds and what it carries."""

    id: UUID
    xid_from: int | None
    xid_to: int
    after: tuple[datetime, UUID] | None
    last: tuple[datetime, UUID]
    completes_range: bool
    row_count: int
    byte_size: int
    sha256: str
    manifest: str
    manifest_sha256: str
    created_at: datetime


class StreamStore:
    """Stream-row transitions and reads over a pool; each call takes its own connection."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    # ------------------------------------------------------------------ running streams

    async def claim(
        self, worker_id: str, *, lease: float, lock_key: int | None
    ) -> LogStream | None:
        """Lease the next due stream for ``worker_id``, or None when none is due."""
        async with self.pool.acquire() as conn:
            record = await conn.fetchrow(q("claim_stream"), worker_id, lease, lock_key)
        return LogStream.from_record(record) if record is not None else None

    async def heartbeat(self, fence: StreamFence, *, lease: float, lock_key: int | None) -> None:
        async with self.pool.acquire() as conn:
            alive = await conn.fetchval(q("stream_heartbeat"), *fence.args, lease, lock_key)
        if alive is None:
            raise StreamGone()

    async def current(self, fence: StreamFence) -> LogStream:
        """The stream as it is now, while this run still holds it."""
        async with self.pool.acquire() as conn:
            record = await conn.fetchrow(q("get_fenced_stream"), *fence.args)
        if record is None:
            raise StreamGone()
        return LogStream.from_record(record)

    async def pending_delivery(self, stream_id: UUID) -> StreamDelivery | None:
        """The delivery recorded and not yet delivered, which must go out before any other."""
        async with self.pool.acquire() as conn:
            record = await conn.fetchrow(q("pending_delivery"), stream_id)
        return StreamDelivery.from_record(record) if record is not None else None

    async def record_delivery(
        self, fence: StreamFence, stream: LogStream, new: NewDelivery
    ) -> StreamDelivery:
        """Number ``new`` as the stream's next delivery, link it into the chain and record it
        PENDING, in one commit. ``stream`` is the chain head the manifest was built from."""
        sequence = stream.last_sequence + 1
        async with self.pool.acquire() as conn, conn.transaction():
            taken = await conn.fetchval(
                q("take_sequence"), *fence.args, stream.last_sequence, new.manifest_sha256
            )
            if taken is None:
                raise StreamGone()
            assert taken == sequence
            after_at, after_id = new.after if new.after is not None else (None, None)
            record = await conn.fetchrow(
                q("insert_delivery"),
                new.id,
                stream.id,
                stream.organization_id,
                sequence,
                False,
                new.xid_from,
                new.xid_to,
                after_at,
                after_id,
                new.last[0],
                new.last[1],
                new.completes_range,
                new.row_count,
                new.byte_size,
                new.sha256,
                new.manifest,
                new.manifest_sha256,
                new.created_at,
            )
        return StreamDelivery.from_record(record)

    async def skip_empty_range(self, fence: StreamFence, xid_to: int, *, lease: float) -> LogStream:
        """A range with no rows to deliver: the checkpoint moves to its end directly."""
        async with self.pool.acquire() as conn:
            record = await conn.fetchrow(
                q("advance_checkpoint"), *fence.args, xid_to, None, None, True, lease
            )
        if record is None:
            raise StreamGone()
        return LogStream.from_record(record)

    async def mark_delivered(
        self, fence: StreamFence, delivery: StreamDelivery, *, lease: float
    ) -> LogStream:
        """Mark ``delivery`` DELIVERED and move the checkpoint past its rows, in one commit."""
        assert delivery.xid_to is not None
        async with self.pool.acquire() as conn, conn.transaction():
            record = await conn.fetchrow(
                q("advance_checkpoint"),
                *fence.args,
                delivery.xid_to,
                delivery.last_created_at,
                delivery.last_id,
                delivery.completes_range,
                lease,
            )
            if record is None:
                raise StreamGone()
            delivered = await conn.fetchval(q("mark_delivered"), delivery.id)
            if delivered is None:
                # Another run delivered it meanwhile: nothing of this run may commit.
                raise StreamGone()
        return LogStream.from_record(record)

    async def delivery_failed(self, delivery_id: UUID, error: str) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute(q("delivery_attempt_failed"), delivery_id, error)

    async def release(self, fence: StreamFence, *, next_run_in: float) -> LogStream | None:
        """The run is over and went well: ACTIVE (unless paused), next run after ``next_run_in``."""
        async with self.pool.acquire() as conn:
            record = await conn.fetchrow(q("release_stream"), *fence.args, next_run_in)
        return LogStream.from_record(record) if record is not None else None

    async def hand_back(self, fence: StreamFence) -> None:
        """Stopping mid-run: due again at once, its state and last error as they were."""
        async with self.pool.acquire() as conn:
            await conn.execute(q("hand_back_stream"), *fence.args)

    async def fail(self, fence: StreamFence, *, retry_in: float, error: str) -> LogStream | None:
        """The destination failed: FAILING with ``error``, tried again after ``retry_in``."""
        async with self.pool.acquire() as conn:
            record = await conn.fetchrow(q("fail_stream"), *fence.args, retry_in, error)
        return LogStream.from_record(record) if record is not None else None


async def insert_stream(
    conn: asyncpg.Connection,
    *,
    stream_id: UUID,
    organization_id: UUID,
    kind: str,
    destination_type: str,
    destination: dict[str, Any],
    secret: bytes | None,
    interval_seconds: int,
    filter: dict[str, Any] | None,
    start_at: datetime | None,
    created_by: UUID | None,
) -> LogStream:
    """Insert a new ACTIVE stream, due at once; ``start_at`` None means now."""
    record = await conn.fetchrow(
        q("insert_log_stream"),
        stream_id,
        organization_id,
        kind,
        destination_type,
        destination,
        secret,
        interval_seconds,
        filter,
        start_at,
        created_by,
    )
    return LogStream.from_record(record)
