"""The S3 multipart writer: streams one object to S3 in parts of growing size.

The writer needs little of its store (``MultipartStore``): a way to run one S3 call under
a deadline, and the store's abort machinery, which outlives any one writer.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol, TypeVar

from logexport.exports.storage.base import ExitCalls, GiB, MiB, StorageError, StoredObject

log = logging.getLogger(__name__)

# Limits of the S3 protocol itself, shared by AWS and the compatible stores.
S3_MIN_PART_SIZE = 5 * MiB
S3_MAX_PART_SIZE = 5 * GiB
S3_MAX_PARTS = 10_000
S3_MAX_OBJECT_SIZE = 5 * (1 << 40)

DEFAULT_PART_SIZE = 8 * MiB
# The part size doubles after every this many parts; see ``S3Writer`` for why it suffices.
PART_GROWTH_INTERVAL = 1_000
# In-flight parts are also bounded by bytes so that grown parts do not multiply memory use.
MAX_IN_FLIGHT_BYTES = 256 * MiB

T = TypeVar("T")

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef

# One S3 request, given the client to make it with.
S3Call = Callable[["S3Client"], Awaitable[T]]


class MultipartStore(Protocol):
    """What a writer uses of the S3 store it writes to."""

    bucket: str
    max_in_flight: int
    part_timeout: float

    @property
    def closed(self) -> bool: ...

    async def call(
        self, operation: str, key: str, make_call: S3Call[T], deadline: float | None = None
    ) -> T: ...

    async def abort_upload(self, full_key: str, upload_id: str) -> None: ...
    def abort_upload_soon(self, full_key: str, upload_id: str) -> None: ...
    def spawn_abort(self, coro: Awaitable[None]) -> asyncio.Task[None]: ...


def describe(exc: BaseException) -> str:
    """A log-safe description: botocore messages name the operation and error code only."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}"


def initial_part_size(minimum: int, expected_size: int | None) -> int:
    """The first part size: ``minimum``, or larger when the expected size needs it.

    An expected size is split into at most 10,000 parts, rounded up to a whole MiB.
    """
    size = minimum
    if expected_size:
        needed = math.ceil(expected_size / S3_MAX_PARTS)
        size = max(size, math.ceil(needed / MiB) * MiB)
    return min(size, S3_MAX_PART_SIZE)


def part_size_after(part_number: int, current: int) -> int:
    """The size of the part following ``part_number``: doubled every 1,000 parts."""
    if part_number % PART_GROWTH_INTERVAL == 0:
        return min(current * 2, S3_MAX_PART_SIZE)
    return current


class S3Writer(ExitCalls):
    """Streams one object: a single PutObject when small, else a multipart upload.

    Part sizes: the first is ``max(part_size, expected_size / 10,000)``, and the size doubles
    after every 1,000 parts (capped at 5 GiB). S3 only needs every part but the last to be at
    least 5 MiB, so parts may differ in size. Starting from 8 MiB, 10,000 parts then hold
    1,000 * 8 MiB * (1 + 2 + ... + 512) ≈ 7.8 TiB, more than the 5 TiB object limit, so no
    file ever runs out of part numbers, whether or not its size was known in advance.

    At most ``max_in_flight`` parts upload at once (fewer when parts are large); ``write``
    waits for a free slot, which slows the caller down to the upload's pace.
    """

    def __init__(
        self,
        storage: MultipartStore,
        full_key: str,
        key: str,
        *,
        content_type: str,
        content_disposition: str,
        part_size: int,
    ) -> None:
        self._storage = storage
        self._full_key = full_key
        self._key = key
        self._content_type = content_type
        self._content_disposition = content_disposition
        self._part_size = part_size
        # Written chunks are kept as they came and joined once per part: one copy per byte.
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._size = 0
        self._next_part = 1
        self._etags: dict[int, str] = {}
        self._in_flight: set[asyncio.Task[None]] = set()
        self._failure: StorageError | None = None
        self._create: asyncio.Task[str] | None = None
        self._abort_task: asyncio.Task[None] | None = None
        self._result: StoredObject | None = None

    @property
    def part_size(self) -> int:
        return self._part_size

    async def on_exit(self) -> None:
        await self.abort()

    async def write(self, data: bytes) -> None:
        self._check_open()
        try:
            self._raise_failure()
            if not isinstance(data, bytes):
                data = bytes(data)  # the caller may reuse a mutable buffer
            if data:
                self._chunks.append(data)
                self._buffered += len(data)
                self._size += len(data)
            if self._size > S3_MAX_OBJECT_SIZE:
                raise StorageError("file exceeds the 5 TiB object size limit")
            while self._buffered >= self._part_size:
                await self._send_part(self._part_size)
        except StorageError:
            await self.abort()
            raise

    async def complete(self) -> StoredObject:
        if self._result is not None:
            return self._result
        self._check_open()
        try:
            self._raise_failure()
            if self._create is None:
                await self._put_whole()
            else:
                if self._buffered:
                    await self._send_part(self._buffered)
                await self._drain()
                await self._complete_upload()
        except StorageError:
            await self.abort()
            raise
        self._result = StoredObject(key=self._key, byte_size=self._size)
        return self._result

    async def abort(self) -> None:
        if self._result is not None:
            return
        if self._abort_task is None:
            self._abort_task = self._storage.spawn_abort(self._abort())
        try:
            # Shielded: a cancelled caller must not leave parts behind half-aborted.
            await asyncio.shield(self._abort_task)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("abort of upload of %s failed", self._full_key, exc_info=True)

    # -- internals ---------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._abort_task is not None:
            raise self._failure or StorageError("upload was aborted")

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    def _in_flight_limit(self) -> int:
        return max(1, min(self._storage.max_in_flight, MAX_IN_FLIGHT_BYTES // self._part_size))

    async def _send_part(self, size: int) -> None:
        if self._create is None:
            # Created lazily: a file that never fills a part is one PutObject instead.
            # Shielded so that a cancel cannot lose the upload id (and leak the upload).
            self._create = asyncio.ensure_future(self._create_upload())
        upload_id = await asyncio.shield(self._create)
        while len(self._in_flight) >= self._in_flight_limit():
            await asyncio.wait(self._in_flight, return_when=asyncio.FIRST_COMPLETED)
            self._raise_failure()
        number = self._next_part
        if number > S3_MAX_PARTS:
            raise StorageError("upload would exceed 10,000 parts")
        body = self._take(size)
        self._next_part += 1
        self._part_size = part_size_after(number, self._part_size)
        task = asyncio.ensure_future(self._upload_part(upload_id, number, body))
        self._in_flight.add(task)
        task.add_done_callback(self._part_done)

    def _take(self, size: int) -> bytes:
        """The first ``size`` buffered bytes as one object; a chunk straddling the end is split."""
        taken: list[bytes | memoryview] = []
        need = size
        chunks = self._chunks
        index = 0
        while need:
            chunk = chunks[index]
            if len(chunk) <= need:
                taken.append(chunk)
                need -= len(chunk)
                index += 1
            else:
                view = memoryview(chunk)
                taken.append(view[:need])
                chunks[index] = bytes(view[need:])
                need = 0
        del chunks[:index]
        self._buffered -= size
        if len(taken) == 1 and isinstance(taken[0], bytes):
            return taken[0]
        return b"".join(taken)

    def _part_done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        if task.cancelled() or self._failure is not None:
            return
        exc = task.exception()
        if exc is not None:
            self._failure = exc if isinstance(exc, StorageError) else StorageError(describe(exc))

    async def _drain(self) -> None:
        while self._in_flight:
            await asyncio.wait(self._in_flight, return_when=asyncio.FIRST_COMPLETED)
            self._raise_failure()
        self._raise_failure()

    async def _create_upload(self) -> str:
        response = await self._storage.call(
            "CreateMultipartUpload",
            self._full_key,
            lambda c: c.create_multipart_upload(
                Bucket=self._storage.bucket,
                Key=self._full_key,
                ContentType=self._content_type,
                ContentDisposition=self._content_disposition,
            ),
        )
        upload_id: str = response["UploadId"]
        return upload_id

    async def _upload_part(self, upload_id: str, number: int, body: bytes) -> None:
        response = await self._storage.call(
            "UploadPart",
            self._full_key,
            lambda c: c.upload_part(
                Bucket=self._storage.bucket,
                Key=self._full_key,
                UploadId=upload_id,
                PartNumber=number,
                Body=body,
            ),
            deadline=self._storage.part_timeout,
        )
        self._etags[number] = response["ETag"]

    async def _complete_upload(self) -> None:
        assert self._create is not None
        upload_id = self._create.result()
        parts: list[CompletedPartTypeDef] = [
            {"PartNumber": n, "ETag": self._etags[n]} for n in sorted(self._etags)
        ]
        await self._storage.call(
            "CompleteMultipartUpload",
            self._full_key,
            lambda c: c.complete_multipart_upload(
                Bucket=self._storage.bucket,
                Key=self._full_key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            ),
            # Assembling a large object can take a store a while.
            deadline=self._storage.part_timeout,
        )

    async def _put_whole(self) -> None:
        body = self._take(self._buffered)
        await self._storage.call(
            "PutObject",
            self._full_key,
            lambda c: c.put_object(
                Bucket=self._storage.bucket,
                Key=self._full_key,
                Body=body,
                ContentType=self._content_type,
                ContentDisposition=self._content_disposition,
            ),
            deadline=self._storage.part_timeout,
        )

    async def _abort(self) -> None:
        self._chunks, self._buffered = [], 0
        for task in list(self._in_flight):
            task.cancel()
        await asyncio.gather(*self._in_flight, return_exceptions=True)
        if self._create is None:
            return
        try:
            upload_id = await self._create
        except Exception:
            # Creation failed, so there is no upload to abort.
            return
        try:
            await self._storage.abort_upload(self._full_key, upload_id)
        except StorageError as exc:
            log.warning("abort of upload of %s failed, retrying later: %s", self._full_key, exc)
            if not self._storage.closed:
                self._storage.abort_upload_soon(self._full_key, upload_id)
