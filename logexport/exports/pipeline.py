"""Snapshot cursor → encoder → (gzip) → storage writer.

Three stages run side by side so that the database, the encoder and the hashing /
compression never wait on each other:

    fetch   the server-side cursor, one batch ahead of the encoder (the next ``FETCH`` is
            on the wire while the current batch is being encoded);
    encode  rows → bytes, on the event loop;
    store   gzip + SHA-256 in a thread (both release the GIL on large buffers), then the
            storage writer, whose bounded parts in flight push back on everything above.

Every queue is bounded by the bytes it holds, and a batch by its size as well as by its
row count, so memory stays flat whatever the row count and however large the rows.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from operator import itemgetter
from typing import Any, Generic, TypeVar

import asyncpg

from logexport.db import q
from logexport.exports.encoders import FIELD_SEPARATOR, AmbiguousRows, Gzip, make_encoder
from logexport.exports.models import Compression
from logexport.exports.requests import ExportInput
from logexport.exports.storage import ObjectWriter
from logexport.kinds import LOG_KINDS

BATCH_ROWS = 2000
# A batch is also cut to about this many bytes, from the size of the rows read so far:
# SCIM events with 64 KiB bodies would otherwise make a 2,000-row batch over 100 MiB.
BATCH_BYTES = 4 * 1024 * 1024
# Bytes waiting between two stages (fetched rows, encoded bytes); past it the stage
# before waits, and the database with it.
QUEUE_BYTES = 8 * 1024 * 1024
# The first batch is small: until rows have been seen, their size is unknown.
_FIRST_BATCH_ROWS = 64
# zlib level 3 takes half the CPU of the default level 6 on export lines (2.1 to 3.9 against
# 4.4 to 8.2 µs a row) for files 13 to 21 % larger; gzip is the costliest stage of an export.
GZIP_LEVEL = 3
_DONE = None

_Item = TypeVar("_Item")


@dataclass
class Progress:
    rows: int = 0
    bytes: int = 0
    started: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class ExportResult:
    row_count: int
    byte_size: int
    sha256: str
    snapshot_at: datetime
    # ``(created_at, id)`` of the first and last rows as the file holds them; None when empty.
    first_row: tuple[str, str] | None = None
    last_row: tuple[str, str] | None = None


class _ByteQueue(Generic[_Item]):
    """A FIFO bounded by the total size of what it holds; one item larger than the bound
    still goes through, alone. ``None`` ends the stream."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._items: deque[tuple[_Item | None, int]] = deque()
        self._size = 0
        self._changed = asyncio.Condition()

    async def put(self, item: _Item | None, size: int = 0) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self._size < self._limit)
            self._items.append((item, size))
            self._size += size
            self._changed.notify_all()

    async def get(self) -> _Item | None:
        async with self._changed:
            await self._changed.wait_for(lambda: bool(self._items))
            item, size = self._items.popleft()
            self._size -= size
            self._changed.notify_all()
            return item


def _batch_bytes(rows: Sequence[Sequence[Any]], columns: int) -> int:
    """The bytes of a batch's packed and JSON values (all but the NULL mask)."""
    return sum(sum(map(len, map(itemgetter(i), rows))) for i in range(columns))


def _row_mark(row: Sequence[Any]) -> tuple[str, str]:
    """``(created_at, id)`` of a packed row: its first two fields."""
    row_id, created_at, _ = bytes(row[0]).split(FIELD_SEPARATOR, 2)
    return created_at.decode(), row_id.decode()


def export_query(request: ExportInput) -> tuple[str, list[Any], str]:
    """The kind's named query and its parameters (filters apply in SQL), and the query
    that reads rows' exact fields when a packed row cannot be split."""
    kind = LOG_KINDS[request.kind]
    chosen = request.filter if request.filter is not None else kind.filter_type()
    params = [request.organization_id, request.from_time, request.to_time, *chosen.sql_args()]
    return q(kind.export_query), params, q(kind.exact_query)


class _Sink:
    """Compression and hashing of the stored bytes, run off the event loop."""

    def __init__(self, gzip: bool) -> None:
        self._gzip = Gzip(GZIP_LEVEL) if gzip else None
        self._hash = hashlib.sha256()
        self.size = 0

    def feed(self, data: bytes) -> bytes:
        if self._gzip is not None:
            data = self._gzip.compress(data)
        self._hash.update(data)
        self.size += len(data)
        return data

    def finish(self) -> bytes:
        tail = self._gzip.flush() if self._gzip is not None else b""
        self._hash.update(tail)
        self.size += len(tail)
        return tail

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()


_executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="logexport-sink")


async def run_export(
    conn: asyncpg.Connection,
    request: ExportInput,
    writer: ObjectWriter,
    *,
    progress: Progress | None = None,
    on_snapshot: Callable[[datetime], Awaitable[None]] | None = None,
    batch_rows: int = BATCH_ROWS,
) -> ExportResult:
    """Stream one export from a consistent snapshot into ``writer``.

    The caller owns ``writer``: it completes it on success and aborts it on failure.
    """
    progress = progress or Progress()
    encoder = make_encoder(
        request.kind,
        request.format,
        organization_id=request.organization_id,
        csv_bom=request.csv_bom,
    )
    sink = _Sink(request.compression is Compression.GZIP)
    loop = asyncio.get_running_loop()
    query, params, exact_query = export_query(request)

    async with conn.transaction(isolation="repeatable_read", readonly=True):
        # The first statement takes the snapshot; its time is what the file holds.
        snapshot_at: datetime = await conn.fetchval(q("snapshot_time"))
        if on_snapshot is not None:
            await on_snapshot(snapshot_at)
        cursor = await conn.cursor(query, *params)

        fetched: _ByteQueue[Sequence[Any]] = _ByteQueue(QUEUE_BYTES)
        encoded: _ByteQueue[bytes] = _ByteQueue(QUEUE_BYTES)

        # The cursor and the occasional exact read share the connection: one at a time.
        connection_turn = asyncio.Lock()

        async def read_exact(ids: list[str]) -> dict[str, tuple[str | None, ...]]:
            async with connection_turn:
                records = await conn.fetch(exact_query, ids, request.organization_id)
            return {r[0]: tuple(r) for r in records}

        async def fetch() -> None:
            want = min(batch_rows, _FIRST_BATCH_ROWS)
            while True:
                async with connection_turn:
                    rows = await cursor.fetch(want)
                if not rows:
                    break
                size = _batch_bytes(rows, len(rows[0]) - 1)
                await fetched.put(rows, size)
                if len(rows) < want:
                    break
                want = max(1, min(batch_rows, BATCH_BYTES * len(rows) // max(size, 1)))
            await fetched.put(_DONE)

        marks: list[tuple[str, str]] = []

        async def encode() -> None:
            header = encoder.header()
            if header:
                await encoded.put(header, len(header))
            while (rows := await fetched.get()) is not _DONE:
                try:
                    data = encoder.encode(rows)
                except AmbiguousRows as ambiguous:
                    exact = await read_exact(ambiguous.ids)
                    data = encoder.encode(rows, exact)
                progress.rows += len(rows)
                if not marks:
                    marks.append(_row_mark(rows[0]))
                marks[1:] = [_row_mark(rows[-1])]
                await encoded.put(data, len(data))
                # Let the fetch stage read the batch that has arrived and send the next
                # FETCH before encoding on: otherwise the database waits on us.
                await asyncio.sleep(0)
            await encoded.put(_DONE)

        async def store() -> None:
            while (data := await encoded.get()) is not _DONE:
                out = await loop.run_in_executor(_executor, sink.feed, data)
                if out:
                    await writer.write(out)
                progress.bytes = sink.size
            tail = await loop.run_in_executor(_executor, sink.finish)
            if tail:
                await writer.write(tail)
            progress.bytes = sink.size

        async with asyncio.TaskGroup() as group:
            group.create_task(fetch())
            group.create_task(encode())
            group.create_task(store())

    return ExportResult(
        row_count=progress.rows,
        byte_size=sink.size,
        sha256=sink.sha256,
        snapshot_at=snapshot_at,
        first_row=marks[0] if marks else None,
        last_row=marks[-1] if marks else None,
    )
