"""Lines written by PostgreSQL → (gzip) → storage writer.

The database writes the file's lines (``sql/migrations/0010_export_lines.sql``); the worker
reads them with ``COPY … TO STDOUT``, which streams with no round trip per batch, joins them
up (``exports/lines.py``) and stores them:

    read    one ``COPY`` per time slice of the export, on one connection or several
            sharing the export's snapshot (``LOGEXPORT_EXPORT_PARALLELISM``): slice *i*
            goes to connection *i mod N*, which reads ahead into the slice's own bounded
            queue while earlier slices are written;
    join    slices in order, each COPY chunk turned into file bytes on the event loop;
    store   gzip + SHA-256 in a thread (both release the GIL on large buffers), then the
            storage writer, whose bounded parts in flight push back on everything above.

Every queue is bounded by the bytes it holds; a full queue stops its reader, and TCP stops
the database behind it, so memory stays flat whatever the row count and however large the
rows. A connection starts its next slice only once its previous one has been written.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from itertools import pairwise
from typing import Any, Generic, TypeVar

import asyncpg

from logexport.db import q
from logexport.exports.encoders import Gzip
from logexport.exports.lines import line_format
from logexport.exports.models import Compression
from logexport.exports.requests import ExportInput
from logexport.exports.storage import ObjectWriter
from logexport.kinds import LOG_KINDS

log = logging.getLogger("logexport.worker")

# Bytes waiting between two stages (the slice being joined, file bytes); past it the stage
# before waits, and the database with it.
QUEUE_BYTES = 8 * 1024 * 1024
# Bytes the slices after the one being joined may hold between them: room for each
# connection to read its next slice whole while the one before it is joined. With room for
# only part of a slice, the connection stops mid-slice and its backend waits; in
# side-by-side runs that made 2-connection exports about 20 % slower.
READ_AHEAD_BYTES = 16 * 1024 * 1024
# An export read by several connections is cut into time slices of about this many rows
# (by the planner's estimate): 4-6 MB of lines on the benchmark's audit shapes, so that a
# slice twice as dense as the average still fits in the read-ahead.
SLICE_ROWS = 7_500
MAX_SLICES = 256
# COPY sends a message per row; they are passed on about this many bytes at a time.
COPY_CHUNK_BYTES = 1024 * 1024
# zlib level 3 takes half the CPU of the default level 6 on export lines (2.1 to 3.9 against
# 4.4 to 8.2 µs a row) for files 13 to 21 % larger; gzip is the costliest stage of an export.
GZIP_LEVEL = 3
_DONE = None
_SNAPSHOT_ID = re.compile(r"[0-9A-F]+-[0-9A-F]+(-[0-9]+)?")

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


class _ReadAhead:
    """The slices' COPY chunks, between the connections reading them and the join, which
    takes the slices in order. The slice being joined holds up to ``QUEUE_BYTES``; the
    slices after it share ``READ_AHEAD_BYTES``, however many connections read them. The
    slice being joined never waits for the others to make room, so reading cannot
    deadlock. ``None`` ends a slice."""

    def __init__(self, slices: int) -> None:
        self._chunks: list[deque[bytes | None]] = [deque() for _ in range(slices)]
        self._sizes = [0] * slices
        self._head = 0  # the slice being joined
        self._ahead = 0  # bytes held by the slices after it
        self._changed = asyncio.Condition()

    def _has_room(self, index: int) -> bool:
        if index == self._head:
            return self._sizes[index] < QUEUE_BYTES
        return self._ahead < READ_AHEAD_BYTES

    async def put(self, index: int, chunk: bytes | None) -> None:
        async with self._changed:
            if chunk is not None:
                await self._changed.wait_for(lambda: self._has_room(index))
                self._sizes[index] += len(chunk)
                if index != self._head:
                    self._ahead += len(chunk)
            self._chunks[index].append(chunk)
            self._changed.notify_all()

    async def get(self) -> bytes | None:
        """The next chunk of the slice being joined; ``None`` once it is done, and the
        next call reads the slice after it."""
        async with self._changed:
            head = self._head
            await self._changed.wait_for(lambda: bool(self._chunks[head]))
            chunk = self._chunks[head].popleft()
            if chunk is None:
                self._head += 1
                if self._head < len(self._sizes):
                    self._ahead -= self._sizes[self._head]
            else:
                self._sizes[head] -= len(chunk)
            self._changed.notify_all()
            return chunk

    async def joined(self, index: int) -> None:
        """Wait until slice ``index`` has been joined whole."""
        async with self._changed:
            await self._changed.wait_for(lambda: self._head > index)


class _Gathered:
    """One COPY's data, passed on to its slice about ``COPY_CHUNK_BYTES`` at a time; COPY
    hands over whole rows, so every piece passed on is whole rows."""

    def __init__(self, read_ahead: _ReadAhead, index: int) -> None:
        self._read_ahead = read_ahead
        self._index = index
        self._parts: list[bytes] = []
        self._size = 0

    async def add(self, data: bytes) -> None:
        self._parts.append(data)
        self._size += len(data)
        if self._size >= COPY_CHUNK_BYTES:
            await self._pass_on()
        elif len(data) < 128 * 1024:
            # Small reads cost a round of the event loop each: let the socket fill up.
            await asyncio.sleep(0.001)

    async def close(self) -> None:
        await self._pass_on()
        await self._read_ahead.put(self._index, _DONE)

    async def _pass_on(self) -> None:
        data = b"".join(self._parts)
        self._parts, self._size = [], 0
        if data:
            await self._read_ahead.put(self._index, data)


def export_query(request: ExportInput, name: str) -> tuple[str, list[Any]]:
    """The named query and its parameters (filters apply in SQL); ``$2`` and ``$3`` are the
    time range, narrowed per slice."""
    kind = LOG_KINDS[request.kind]
    chosen = request.filter if request.filter is not None else kind.filter_type()
    params = [request.organization_id, request.from_time, request.to_time, *chosen.sql_args()]
    # COPY takes the query as a subquery: without the statement's closing semicolon.
    return q(name).rstrip().removesuffix(";"), params


async def plan_slices(
    conn: asyncpg.Connection, query: str, params: list[Any], readers: int
) -> list[tuple[datetime, datetime]]:
    """The export's time range cut into equal spans, about ``SLICE_ROWS`` rows each by the
    planner's estimate; one span when one connection reads, or when the rows are few."""
    start, end = params[1], params[2]
    if readers < 2:
        return [(start, end)]
    # logexport's connections decode JSON (db.init_connection).
    plan = await conn.fetchval("EXPLAIN (FORMAT JSON) " + query, *params)
    count = min(MAX_SLICES, int(plan[0]["Plan"]["Plan Rows"]) // SLICE_ROWS)
    if count < 2:
        return [(start, end)]
    step = (end - start) / count
    bounds = sorted({start, end, *(start + step * i for i in range(1, count))})
    return list(pairwise(bounds))


@contextlib.asynccontextmanager
async def _sharing_snapshot(conn: asyncpg.Connection, snapshot: str) -> AsyncIterator[None]:
    """A read-only transaction on ``conn`` seeing exactly the export's snapshot."""
    if not _SNAPSHOT_ID.fullmatch(snapshot):
        raise ValueError(f"unexpected snapshot id {snapshot!r}")
    transaction = conn.transaction(isolation="repeatable_read", readonly=True)
    await transaction.start()
    try:
        # A utility statement takes no parameters; the id is PostgreSQL's, checked above.
        await conn.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
        await conn.execute(q("export_plan_settings"))
        yield
    finally:
        # Read only: nothing to keep. A helper lost mid-export has no transaction left to
        # end, and its loss is already the export's error.
        lost = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError)
        with contextlib.suppress(*lost):
            await transaction.rollback()


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
    helpers: Sequence[asyncpg.Connection] = (),
) -> ExportResult:
    """Stream one export from a consistent snapshot into ``writer``.

    Every connection is one of logexport's (``db.connect`` or ``db.create_pool``): the
    lines' times are written in its UTC session. ``helpers`` are further connections to
    the same database, idle: they read slices of the export in the snapshot ``conn`` takes.
    The caller owns ``writer``: it completes it on success and aborts it on failure.
    """
    progress = progress or Progress()
    lines = line_format(request.kind, request.format, csv_bom=request.csv_bom)
    sink = _Sink(request.compression is Compression.GZIP)
    loop = asyncio.get_running_loop()
    query, params = export_query(request, lines.query)

    transaction = conn.transaction(isolation="repeatable_read", readonly=True)
    await transaction.start()
    readers = [conn]
    try:
        # The first statement takes the snapshot; its time is what the file holds.
        snapshot_at: datetime = await conn.fetchval(q("snapshot_time"))
        if on_snapshot is not None:
            await on_snapshot(snapshot_at)
        await conn.execute(q("export_plan_settings"))
        slices = await plan_slices(conn, query, params, 1 + len(helpers))
        async with contextlib.AsyncExitStack() as shared:
            if len(slices) > 1 and helpers:
                snapshot = await conn.fetchval(q("export_snapshot"))
                for helper in helpers:
                    try:
                        await shared.enter_async_context(_sharing_snapshot(helper, snapshot))
                    except asyncpg.PostgresError as exc:
                        # A helper on another server (a pool behind a load balancer, say)
                        # cannot see this snapshot: the slices are read without it.
                        log.warning(
                            "a connection could not join the export's snapshot; reading with fewer",
                            extra={"error": type(exc).__name__},
                        )
                        continue
                    readers.append(helper)

            copied = _ReadAhead(len(slices))
            encoded: _ByteQueue[bytes] = _ByteQueue(QUEUE_BYTES)
            marks: list[bytes] = []

            async def read(first: int, reader: asyncpg.Connection) -> None:
                for index in range(first, len(slices), len(readers)):
                    if index >= len(readers):
                        await copied.joined(index - len(readers))
                    gathered = _Gathered(copied, index)
                    start, end = slices[index]
                    await reader.copy_from_query(
                        query,
                        params[0],
                        start,
                        end,
                        *params[3:],
                        output=gathered.add,
                        **lines.copy_options,
                    )
                    await gathered.close()

            async def join() -> None:
                header = lines.header()
                if header:
                    await encoded.put(header, len(header))
                for _ in slices:
                    while (data := await copied.get()) is not _DONE:
                        chunk = lines.chunk(data)
                        progress.rows += chunk.rows
                        if not marks:
                            marks.append(chunk.first)
                        marks[1:] = [chunk.last]
                        await encoded.put(chunk.data, len(chunk.data))
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
                for first, reader in enumerate(readers):
                    group.create_task(read(first, reader))
                group.create_task(join())
                group.create_task(store())

    except BaseException:
        # A COPY cut short leaves its connection in the middle of the protocol, where no
        # ROLLBACK can follow: the connections are closed, and their pool replaces them.
        for reader in readers:
            # A lost pool connection has already gone back to its pool.
            with contextlib.suppress(asyncpg.InterfaceError):
                reader.terminate()
        raise
    await transaction.rollback()  # read only: nothing to keep

    return ExportResult(
        row_count=progress.rows,
        byte_size=sink.size,
        sha256=sink.sha256,
        snapshot_at=snapshot_at,
        first_row=lines.mark(marks[0]) if marks else None,
        last_row=lines.mark(marks[-1]) if marks else None,
    )
