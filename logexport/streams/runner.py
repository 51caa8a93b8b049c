"""One run of a log stream: deliver every row between its checkpoint and a snapshot.

A run reads one REPEATABLE READ snapshot and takes its ``xmin``: every transaction with a
smaller id has ended, committed or not, so the rows with ``horizon <= xid < xmin`` are a set
that no later commit can add to. Those rows, in ``(created_at, id)`` order, go out in
bounded deliveries. Each delivery is first *recorded*: numbered (the stream's next
sequence), linked into the stream's manifest chain, signed, and given bounds that select
exactly its rows again (the transaction-id range and the ``(created_at, id)`` of the row
before its first and of its last). Only then is it sent, and the commit that marks it
DELIVERED also moves the checkpoint past its rows. A run that dies anywhere in between
leaves the delivery PENDING; the next run sends it again first, with the same id, sequence,
body and manifest. So no sequence is skipped or given twice, and no row is skipped.

A row written by a transaction still open at the snapshot has an id at or above ``xmin``:
it belongs to a later range, whatever its ``created_at``, and is delivered by the run after
the transaction ends.

The first range of a stream starts at the beginning: rows written before transaction ids
were recorded (NULL) are included, bounded below by the stream's ``start_at``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import asyncpg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from logexport import manifests
from logexport.config import ConfigError, Settings
from logexport.db import q
from logexport.exports.encoders import FIELD_SEPARATOR, AmbiguousRows, Gzip, JsonlEncoder
from logexport.exports.jobs import retry_delay
from logexport.kinds import LOG_KINDS, ExportKind
from logexport.metrics import WorkerMetrics
from logexport.signing import signing_key
from logexport.streams.destinations import (
    Delivery,
    DeliveryFailed,
    Destination,
    delivery_file_name,
    open_destination,
)
from logexport.streams.models import LogStream, StreamDelivery, StreamState
from logexport.streams.store import NewDelivery, StreamFence, StreamGone, StreamStore

log = logging.getLogger("logexport.streams")


class _AttemptFailed(DeliveryFailed):
    """A destination's refusal of one numbered delivery, which the failure's log line names."""

    def __init__(self, failed: DeliveryFailed, delivery: StreamDelivery) -> None:
        super().__init__(failed.message, retryable=failed.retryable)
        self.delivery = delivery


# The named queries of a range's rows, per kind: (first range, later ranges).
_ROW_QUERIES = {
    ExportKind.AUDIT_LOG: ("stream_audit_log_rows_first", "stream_audit_log_rows"),
    ExportKind.SCIM_EVENT: ("stream_scim_event_rows_first", "stream_scim_event_rows"),
}
_FETCH_ROWS = 1000
# The longest one delivery may take at the destination, whatever its own timeouts allow (a
# server that answers a byte a minute must not hold the stream forever).
DELIVERY_TIMEOUT = 300.0
# Fixed, not shared with exports: a delivery sent again after a crash is compressed again
# and must come out byte for byte as recorded in its signed manifest.
GZIP_LEVEL = 6
_ONE_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True)
class Body:
    """A delivery's rows, encoded and compressed."""

    data: bytes
    row_count: int
    sha256: str
    first: tuple[str, str] | None
    last: tuple[str, str] | None
    created: list[float]
    more: bool


@dataclass(frozen=True)
class RunResult:
    """What one run did: deliveries sent and rows in them, and the error that ended it."""

    deliveries: int = 0
    rows: int = 0
    error: str | None = None


def _mark(packed: bytes) -> tuple[str, str]:
    """``(created_at, id)`` of a packed row, as text."""
    row_id, created_at, _ = packed.split(FIELD_SEPARATOR, 2)
    return created_at.decode(), row_id.decode()


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def _row_params(
    stream: LogStream,
    *,
    xid_from: int | None,
    xid_to: int,
    after: tuple[datetime, UUID] | None,
    last: tuple[datetime, UUID] | None,
    limit: int,
    filter: dict[str, Any] | None = None,
) -> tuple[str, list[Any]]:
    """The query of a range's rows and its parameters; ``filter`` replaces the stream's."""
    kind = LOG_KINDS[stream.kind]
    chosen = kind.filter_type.parse(filter if filter is not None else stream.filter)
    first_query, later_query = _ROW_QUERIES[stream.kind]
    after_at, after_id = after if after is not None else (None, None)
    last_at, last_id = last if last is not None else (None, None)
    params = [
        stream.organization_id,
        stream.start_at,
        xid_from,
        xid_to,
        after_at,
        after_id,
        last_at,
        last_id,
        *chosen.sql_args(),
        limit,
    ]
    return q(first_query if xid_from is None else later_query), params


async def _read_body(
    conn: asyncpg.Connection,
    stream: LogStream,
    query: str,
    params: list[Any],
    *,
    max_rows: int,
    max_bytes: int,
) -> Body:
    """Encode rows as a JSONL export does, until ``max_rows`` rows or ``max_bytes`` bytes
    (at least one row); ``more`` tells whether rows were left for a next delivery."""
    encoder = JsonlEncoder(stream.kind, str(stream.organization_id))
    exact_query = q(LOG_KINDS[stream.kind].exact_query)
    lines: list[bytes] = []
    created: list[float] = []
    size = 0
    first: tuple[str, str] | None = None
    last: tuple[str, str] | None = None
    more = False
    cursor = await conn.cursor(query, *params)
    while not more:
        rows: Sequence[Any] = await cursor.fetch(_FETCH_ROWS)
        if not rows:
            break
        try:
            data = encoder.encode(rows)
        except AmbiguousRows as ambiguous:
            records = await conn.fetch(exact_query, ambiguous.ids, stream.organization_id)
            data = encoder.encode(rows, {r[0]: tuple(r) for r in records})
        # JSON strings escape every newline: each line is one row.
        encoded = data.split(b"\n")
        for row, line in zip(rows, encoded, strict=False):
            if len(lines) >= max_rows or (lines and size + len(line) + 1 > max_bytes):
                more = True
                break
            lines.append(line + b"\n")
            size += len(line) + 1
            mark = _mark(bytes(row[0]))
            first = first or mark
            last = mark
            created.append(_instant(mark[0]).timestamp())
    raw = b"".join(lines)
    gzip = Gzip(level=GZIP_LEVEL)
    body = gzip.compress(raw) + gzip.flush()
    return Body(
        data=body,
        row_count=len(lines),
        sha256=hashlib.sha256(body).hexdigest(),
        first=first,
        last=last,
        created=created,
        more=more,
    )


def _recorded_filter(delivery: StreamDelivery) -> dict[str, Any]:
    assert delivery.manifest is not None
    recorded: dict[str, Any] = json.loads(delivery.manifest)["manifest"]["filter"] or {}
    return recorded


class StreamRunner:
    """Runs claimed streams: plans, records, sends and commits their deliveries."""

    def __init__(
        self,
        settings: Settings,
        store: StreamStore,
        *,
        snapshot_pool: asyncpg.Pool,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.snapshot_pool = snapshot_pool
        self.metrics = metrics or WorkerMetrics()
        self.lease = settings.worker_lease

    @functools.cached_property
    def _signing_key(self) -> Ed25519PrivateKey:
        """Parsed once, on the first delivery: the setting does not change while running."""
        return signing_key(self.settings)

    # ------------------------------------------------------------------ a run

    async def run(
        self,
        stream: LogStream,
        *,
        lock_key: Callable[[], int | None] = lambda: None,
        destination: Destination | None = None,
    ) -> RunResult:
        """Deliver what is due for ``stream`` (claimed by this worker), then release it."""
        fence = StreamFence.of(stream)
        spawn = asyncio.get_running_loop().create_task
        heartbeat = spawn(self._heartbeat(fence, lock_key))
        work = spawn(self._deliver_all(stream, fence, destination))
        deliveries = rows = 0
        try:
            done, _ = await asyncio.wait({work, heartbeat}, return_when=asyncio.FIRST_COMPLETED)
            if work not in done:
                # The heartbeat ended first: the lease is lost, nothing more may be written.
                work.cancel()
                with contextlib.suppress(BaseException):
                    await work
                return RunResult(error="lease lost")
            deliveries, rows = work.result()
        except StreamGone:
            log.info("stream run lost its lease", extra={"stream_id": str(stream.id)})
            return RunResult(deliveries, rows, error="lease lost")
        except ConfigError as missing:
            # A setting the delivery needs (the signing key) is missing: say which.
            await self._fail(stream, fence, str(missing))
            return RunResult(deliveries, rows, error=str(missing))
        except DeliveryFailed as failed:
            self.metrics.stream_deliveries.inc(outcome="failed")
            attempted = failed.delivery if isinstance(failed, _AttemptFailed) else None
            await self._fail(stream, fence, failed.message, attempted)
            return RunResult(deliveries, rows, error=failed.message)
        except asyncio.CancelledError:
            # Shutting down: hand the stream back at once (its PENDING delivery stays).
            work.cancel()
            with contextlib.suppress(BaseException):
                await work
            with contextlib.suppress(Exception):
                await asyncio.shield(self.store.hand_back(fence))
            raise
        except Exception as exc:
            log.exception("stream run failed", extra={"stream_id": str(stream.id)})
            message = f"internal error ({type(exc).__name__})"
            with contextlib.suppress(Exception):
                await self._fail(stream, fence, message)
            return RunResult(deliveries, rows, error=message)
        finally:
            heartbeat.cancel()
            with contextlib.suppress(BaseException):
                await heartbeat
        await self.store.release(fence, next_run_in=float(stream.interval_seconds))
        return RunResult(deliveries, rows)

    async def _fail(
        self,
        stream: LogStream,
        fence: StreamFence,
        message: str,
        delivery: StreamDelivery | None = None,
    ) -> None:
        try:
            current = await self.store.current(fence)
        except StreamGone:
            # Another run holds the stream now (or it was deleted): it records its own errors.
            return
        delay = retry_delay(
            current.failures + 1, self.settings.worker_retry_base, self.settings.stream_retry_cap
        )
        await self.store.fail(fence, retry_in=delay, error=message)
        # Enough to find the stream, its owner and the numbered delivery the destination
        # refused without opening the database.
        where: dict[str, object] = {
            "organization_id": str(stream.organization_id),
            "stream_id": str(stream.id),
        }
        if delivery is not None:
            where.update(delivery_id=str(delivery.id), sequence=delivery.sequence)
        log.warning(
            "stream delivery failed",
            extra={**where, "error": message, "retry_in": round(delay, 2)},
        )

    async def _heartbeat(self, fence: StreamFence, lock_key: Callable[[], int | None]) -> None:
        """Renew the lease, with the worker's liveness lock key of the moment (it changes
        when the worker's lock connection is replaced)."""
        every = max(self.lease / 3, 0.05)
        while True:
            await asyncio.sleep(every)
            try:
                await self.store.heartbeat(fence, lease=self.lease, lock_key=lock_key())
            except StreamGone:
                return
            except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError):
                # The next beat may get through; the lease has time left.
                continue

    async def _deliver_all(
        self, stream: LogStream, fence: StreamFence, destination: Destination | None
    ) -> tuple[int, int]:
        deliveries = rows = 0
        destination = destination or open_destination(stream, self.settings)
        while True:
            pending = await self.store.pending_delivery(stream.id)
            fresh_xmin: int | None = None
            if pending is not None:
                body = await self._rebuild(stream, pending)
            else:
                planned = await self._plan(stream, fence)
                if planned is None:
                    break
                pending, body, fresh_xmin = planned
                if pending is None:
                    # An empty range: the checkpoint moved, and there is nothing to send.
                    break
            try:
                async with asyncio.timeout(DELIVERY_TIMEOUT):
                    await destination.deliver(self._delivery(stream, pending, body))
            except TimeoutError:
                failed = DeliveryFailed(
                    f"the destination did not take the delivery within {DELIVERY_TIMEOUT:.0f} s"
                )
                await self.store.delivery_failed(pending.id, failed.message)
                raise _AttemptFailed(failed, pending) from None
            except DeliveryFailed as failed:
                await self.store.delivery_failed(pending.id, failed.message)
                raise _AttemptFailed(failed, pending) from None
            stream = await self.store.mark_delivered(fence, pending, lease=self.lease)
            delivered_at = time.time()
            deliveries += 1
            rows += body.row_count
            log.info(
                "stream delivery sent",
                extra={
                    "stream_id": str(stream.id),
                    "delivery_id": str(pending.id),
                    "sequence": pending.sequence,
                    "rows": body.row_count,
                },
            )
            self.metrics.stream_deliveries.inc(outcome="delivered")
            self.metrics.stream_rows_delivered.inc(body.row_count)
            for created in body.created:
                self.metrics.stream_lag.observe(max(0.0, delivered_at - created))
            if stream.state is StreamState.PAUSED:
                break
            # A range this run's own snapshot opened, now done: the next run takes the rest.
            if pending.completes_range and fresh_xmin is not None and fresh_xmin == pending.xid_to:
                break
        return deliveries, rows

    # ------------------------------------------------------------------ planning

    async def _plan(
        self, stream: LogStream, fence: StreamFence
    ) -> tuple[StreamDelivery | None, Body, int | None] | None:
        """Read the next delivery's rows in a snapshot and record it PENDING.

        Returns None when nothing is due; ``(None, body, xmin)`` when an empty range only
        moved the checkpoint; else the recorded delivery, its body, and the snapshot's xmin
        when this plan opened a new range (None when it continued an open one).
        """
        stream = await self.store.current(fence)
        async with self.snapshot_pool.acquire() as conn:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                snapshot = await conn.fetchrow(q("snapshot_horizon"))
                xmin: int = int(snapshot["xmin"])
                snapshot_at: datetime = snapshot["at"]
                if stream.range_end is not None:
                    xid_to, opened = stream.range_end, None
                    after = (
                        (stream.cursor_created_at, stream.cursor_id)
                        if stream.cursor_created_at is not None and stream.cursor_id is not None
                        else None
                    )
                else:
                    if stream.horizon is not None and stream.horizon >= xmin:
                        return None
                    xid_to, opened, after = xmin, xmin, None
                query, params = _row_params(
                    stream,
                    xid_from=stream.horizon,
                    xid_to=xid_to,
                    after=after,
                    last=None,
                    limit=self.settings.stream_max_rows + 1,
                )
                body = await _read_body(
                    conn,
                    stream,
                    query,
                    params,
                    max_rows=self.settings.stream_max_rows,
                    max_bytes=self.settings.stream_max_bytes,
                )
        if body.row_count == 0:
            await self.store.skip_empty_range(fence, xid_to, lease=self.lease)
            return (None, body, opened)
        assert body.first is not None and body.last is not None
        delivery_id = uuid4()
        created_at = datetime.now(UTC)
        sequence = stream.last_sequence + 1
        key = self._signing_key
        manifest = manifests.build_manifest(
            organization_id=str(stream.organization_id),
            kind=stream.kind.value,
            from_time=body.first[0],
            to_time=_instant(body.last[0]) + _ONE_MICROSECOND,
            filter=LOG_KINDS[stream.kind].filter_type.parse(stream.filter).to_json(),
            format="JSONL",
            compression="GZIP",
            file_name=delivery_file_name(stream.organization_id, sequence),
            row_count=body.row_count,
            byte_size=len(body.data),
            sha256=body.sha256,
            snapshot_at=snapshot_at,
            first_row=manifests.RowMark(*body.first),
            last_row=manifests.RowMark(*body.last),
            sequence=sequence,
            previous_manifest_sha256=stream.last_manifest_sha256,
            key_id=manifests.key_id(key.public_key()),
            stream_id=str(stream.id),
        )
        envelope = manifests.sign_manifest(manifest, key)
        recorded = await self.store.record_delivery(
            fence,
            stream,
            NewDelivery(
                id=delivery_id,
                xid_from=stream.horizon,
                xid_to=xid_to,
                after=after,
                last=(_instant(body.last[0]), UUID(body.last[1])),
                completes_range=not body.more,
                row_count=body.row_count,
                byte_size=len(body.data),
                sha256=body.sha256,
                manifest=manifests.envelope_bytes(envelope).decode(),
                manifest_sha256=manifests.manifest_sha256(manifest),
                created_at=created_at,
            ),
        )
        return recorded, body, opened

    async def _rebuild(self, stream: LogStream, pending: StreamDelivery) -> Body:
        """The body of a recorded delivery, read again by its bounds: the same rows, so the
        same bytes (checked against the recorded SHA-256)."""
        assert pending.xid_to is not None
        assert pending.last_created_at is not None and pending.last_id is not None
        after = (
            (pending.after_created_at, pending.after_id)
            if pending.after_created_at is not None and pending.after_id is not None
            else None
        )
        query, params = _row_params(
            stream,
            xid_from=pending.xid_from,
            xid_to=pending.xid_to,
            after=after,
            last=(pending.last_created_at, pending.last_id),
            limit=pending.row_count + 1,
            # The filter it was recorded with: an owner may have changed the stream's since.
            filter=_recorded_filter(pending),
        )
        async with self.snapshot_pool.acquire() as conn:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                body = await _read_body(
                    conn,
                    stream,
                    query,
                    params,
                    max_rows=pending.row_count + 1,
                    max_bytes=1 << 62,
                )
        if body.row_count != pending.row_count or body.sha256 != pending.sha256:
            raise DeliveryFailed(
                f"delivery {pending.sequence} could not be rebuilt: its rows changed "
                f"({body.row_count} rows now, {pending.row_count} recorded)",
                retryable=False,
            )
        return body

    def _delivery(self, stream: LogStream, pending: StreamDelivery, body: Body) -> Delivery:
        return Delivery(
            id=pending.id,
            stream_id=stream.id,
            organization_id=stream.organization_id,
            kind=stream.kind,
            sequence=pending.sequence,
            body=body.data,
            row_count=body.row_count,
            manifest=pending.manifest.encode() if pending.manifest is not None else None,
            created_at=pending.created_at,
        )
