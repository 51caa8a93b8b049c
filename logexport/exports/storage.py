"""Where export files go: S3-compatible object storage or a local directory (SPEC §5).

The pipeline streams a file through ``Storage.open_writer`` without knowing which backend
it talks to. Keys are relative (``<export_id>/attempt-<n>/<file name>``); each backend
places them under its own root. ``StorageError`` messages are fit for logs (they never
carry credentials) but not for users: surfaces show a generic failure instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar
from urllib.parse import unquote, urlsplit

from logexport.config import Settings
from logexport.exports.filenames import content_disposition

log = logging.getLogger(__name__)

MiB = 1 << 20
GiB = 1 << 30
# Limits of the S3 protocol itself, shared by AWS and the compatible stores.
S3_MIN_PART_SIZE = 5 * MiB
S3_MAX_PART_SIZE = 5 * GiB
S3_MAX_PARTS = 10_000
S3_MAX_OBJECT_SIZE = 5 * (1 << 40)
S3_MAX_PRESIGN_SECONDS = 7 * 24 * 3600

DEFAULT_PART_SIZE = 8 * MiB
DEFAULT_MAX_IN_FLIGHT = 4
# The part size doubles after every this many parts; see ``_S3Writer`` for why it suffices.
PART_GROWTH_INTERVAL = 1_000
# In-flight parts are also bounded by bytes so that grown parts do not multiply memory use.
MAX_IN_FLIGHT_BYTES = 256 * MiB
LOCAL_WRITE_BATCH = 1 * MiB

T = TypeVar("T")


class StorageError(Exception):
    """Storage failed. The message is safe for logs, never shown to users."""


class InvalidKey(StorageError):
    """A key is absolute, empty or climbs out of the storage root."""


class ObjectNotFound(StorageError):
    """The key names no stored object."""


@dataclass(frozen=True)
class StoredObject:
    key: str
    byte_size: int


class ObjectWriter(Protocol):
    async def write(self, data: bytes) -> None: ...
    async def complete(self) -> StoredObject: ...
    async def abort(self) -> None: ...
    async def __aenter__(self) -> Self: ...
    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class Storage(Protocol):
    async def open_writer(
        self, key: str, *, content_type: str, file_name: str, expected_size: int | None = None
    ) -> ObjectWriter: ...
    async def delete(self, key: str) -> None: ...
    async def exists(self, key: str) -> bool: ...
    def read(self, key: str, chunk_size: int = MiB) -> AsyncIterator[bytes]: ...
    async def presigned_download_url(
        self, key: str, *, file_name: str, content_type: str, expires_in: int
    ) -> str | None: ...
    async def open_uploads(self) -> list[str]: ...
    async def aclose(self) -> None: ...
    async def __aenter__(self) -> Self: ...
    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


def storage_from_settings(settings: Settings, **options: Any) -> Storage:
    """The backend named by ``LOGEXPORT_STORAGE_URL``; ``options`` tune the S3 backend."""
    url = settings.storage_url
    if not url:
        raise StorageError("no storage URL configured")
    parts = urlsplit(url)
    if parts.scheme == "file":
        return LocalStorage.from_url(url)
    if parts.scheme == "s3":
        return S3Storage.from_settings(settings, **options)
    raise StorageError("storage URL must start with s3:// or file://")


def validate_key(key: str) -> list[str]:
    """Split a relative key into its segments, refusing anything that could escape a root."""
    if not key or key.startswith("/") or "\\" in key or "\x00" in key:
        raise InvalidKey("storage keys must be relative paths")
    segments = key.split("/")
    if any(s in ("", ".", "..") for s in segments):
        raise InvalidKey("storage keys must not contain empty, '.' or '..' segments")
    return segments


class _ClosingContext:
    async def aclose(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class _AbortingContext:
    """Leaving the block without ``complete()`` (an exception, a cancel) aborts the upload."""

    async def abort(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.abort()


# --------------------------------------------------------------------------------------
# Local directory


class LocalStorage(_ClosingContext):
    """Files under one directory, for single-machine installs and development.

    A file appears under its key only once complete: it is written to a hidden temporary
    file beside it, flushed to disk, then renamed into place.
    """

    def __init__(self, root: str) -> None:
        if not os.path.isabs(root):
            raise StorageError("local storage needs an absolute directory")
        self.root = os.path.normpath(root)

    @classmethod
    def from_url(cls, url: str) -> LocalStorage:
        parts = urlsplit(url)
        if parts.scheme != "file" or parts.netloc not in ("", "localhost"):
            raise StorageError("local storage URL must look like file:///absolute/dir")
        return cls(unquote(parts.path))

    def path_for(self, key: str) -> str:
        path = os.path.join(self.root, *validate_key(key))
        # Symlinks inside the root could still lead out of it.
        real_root = os.path.realpath(self.root)
        if os.path.commonpath([real_root, os.path.realpath(path)]) != real_root:
            raise InvalidKey("storage key resolves outside the storage directory")
        return path

    async def open_writer(
        self, key: str, *, content_type: str, file_name: str, expected_size: int | None = None
    ) -> _LocalWriter:
        path = self.path_for(key)
        writer = _LocalWriter(key, path)
        await asyncio.to_thread(writer.open_sync)
        return writer

    async def delete(self, key: str) -> None:
        path = self.path_for(key)
        await asyncio.to_thread(self._delete_sync, path)

    def _delete_sync(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        # Drop the per-export directories the key created, never the root itself.
        parent = os.path.dirname(path)
        while parent != self.root and parent.startswith(self.root + os.sep):
            try:
                os.rmdir(parent)
            except OSError:
                break
            parent = os.path.dirname(parent)

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(os.path.isfile, self.path_for(key))

    async def read(self, key: str, chunk_size: int = MiB) -> AsyncIterator[bytes]:
        path = self.path_for(key)
        try:
            handle = await asyncio.to_thread(open, path, "rb")
        except FileNotFoundError:
            raise ObjectNotFound(f"no stored object at {key}") from None
        except OSError as exc:
            raise StorageError(f"cannot read {key}: {exc.strerror}") from exc
        try:
            while chunk := await asyncio.to_thread(handle.read, chunk_size):
                yield chunk
        finally:
            handle.close()

    async def presigned_download_url(
        self, key: str, *, file_name: str, content_type: str, expires_in: int
    ) -> str | None:
        return None

    async def open_uploads(self) -> list[str]:
        return []

    async def aclose(self) -> None:
        return None


class _LocalWriter(_AbortingContext):
    def __init__(self, key: str, path: str) -> None:
        self.key = key
        self.path = path
        directory, name = os.path.split(path)
        self.temp_path = os.path.join(directory, f".{name}.part-{secrets.token_hex(8)}")
        self._file: Any = None
        self._buffer = bytearray()
        self._size = 0
        self._done = False
        self._result: StoredObject | None = None

    def open_sync(self) -> None:
        try:
            os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
            self._file = os.fdopen(os.open(self.temp_path, flags, 0o600), "wb")
        except OSError as exc:
            raise StorageError(f"cannot create {self.key}: {exc.strerror}") from exc

    async def write(self, data: bytes) -> None:
        if self._done:
            raise StorageError("writer is already closed")
        self._buffer += data
        self._size += len(data)
        if len(self._buffer) >= LOCAL_WRITE_BATCH:
            # Hand the whole batch to the thread and start a fresh buffer: no copy.
            batch, self._buffer = self._buffer, bytearray()
            try:
                await asyncio.to_thread(self._file.write, batch)
            except OSError as exc:
                await self.abort()
                raise StorageError(f"cannot write {self.key}: {exc.strerror}") from exc

    async def complete(self) -> StoredObject:
        if self._result is not None:
            return self._result
        if self._done:
            raise StorageError("writer was aborted")
        batch, self._buffer = self._buffer, bytearray()
        try:
            await asyncio.to_thread(self._finish_sync, batch)
        except OSError as exc:
            await self.abort()
            raise StorageError(f"cannot store {self.key}: {exc.strerror}") from exc
        self._done = True
        self._result = StoredObject(key=self.key, byte_size=self._size)
        return self._result

    def _finish_sync(self, batch: bytearray) -> None:
        self._file.write(batch)
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self.temp_path, self.path)
        # The rename itself must survive a crash too.
        dir_fd = os.open(os.path.dirname(self.path), os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    async def abort(self) -> None:
        if self._done:
            return
        self._done = True
        self._buffer = bytearray()
        try:
            await asyncio.shield(asyncio.to_thread(self._remove_temp_sync))
        except Exception:
            log.warning("could not remove temporary file for %s", self.key, exc_info=True)

    def _remove_temp_sync(self) -> None:
        if self._file is not None:
            self._file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.temp_path)


# --------------------------------------------------------------------------------------
# S3


def _error_code(exc: StorageError) -> str | None:
    """The S3 error code behind a failed call (``NoSuchKey``, ``NoSuchUpload``, …), if any."""
    from botocore.exceptions import ClientError

    cause = exc.__cause__
    if isinstance(cause, ClientError):
        code = cause.response.get("Error", {}).get("Code")
        return str(code) if code is not None else None
    return None


def _describe(exc: BaseException) -> str:
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


class S3Storage(_ClosingContext):
    """An S3 bucket (AWS, MinIO, R2, …) under an optional key prefix.

    One botocore client is created on first use and reused for every call; presigned links
    come from a second client whose endpoint is the public URL, so links name the host that
    users can reach. Every call runs under a deadline, on top of botocore's own retries.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        public_url: str | None = None,
        addressing_style: str = "auto",
        region_name: str | None = None,
        part_size: int = DEFAULT_PART_SIZE,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        call_timeout: float = 60.0,
        part_timeout: float = 300.0,
        session: Any = None,
    ) -> None:
        if not bucket:
            raise StorageError("S3 storage URL names no bucket")
        if part_size < S3_MIN_PART_SIZE or part_size > S3_MAX_PART_SIZE:
            raise ValueError("part size must be between 5 MiB and 5 GiB")
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        import aioboto3  # deferred: the local backend must not need the AWS stack loaded

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self.public_url = public_url
        self.part_size = part_size
        self.max_in_flight = max_in_flight
        self.call_timeout = call_timeout
        self.part_timeout = part_timeout
        self._session = session or aioboto3.Session(region_name=region_name)
        self._addressing_style = addressing_style
        self._stack = AsyncExitStack()
        self._client: Any = None
        self._presigner: Any = None
        self._client_lock = asyncio.Lock()
        self._aborts: set[asyncio.Task[Any]] = set()
        self._retries: set[asyncio.Task[Any]] = set()
        self._closed = False

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> S3Storage:
        parts = urlsplit(settings.storage_url)
        return cls(
            parts.netloc,
            unquote(parts.path),
            endpoint_url=settings.s3_endpoint_url,
            public_url=settings.s3_public_url,
            addressing_style=settings.s3_addressing_style or "auto",
            **options,
        )

    def full_key(self, key: str) -> str:
        validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _config(self) -> Any:
        from botocore.config import Config

        return Config(
            signature_version="s3v4",
            s3={"addressing_style": self._addressing_style},
            retries={"mode": "standard", "max_attempts": 3},
            connect_timeout=10,
            read_timeout=60,
            max_pool_connections=max(10, self.max_in_flight * 4),
            # The newer default checksums (CRC trailers) are not understood by every
            # S3-compatible store; the pipeline records its own SHA-256 of the content.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )

    async def client(self) -> Any:
        if self._client is None:
            async with self._client_lock:
                if self._closed:
                    raise StorageError("storage is closed")
                if self._client is None:
                    self._client = await self._stack.enter_async_context(
                        self._session.client(
                            "s3", endpoint_url=self.endpoint_url, config=self._config()
                        )
                    )
        return self._client

    async def _presigning_client(self) -> Any:
        if self._presigner is None:
            async with self._client_lock:
                if self._closed:
                    raise StorageError("storage is closed")
                if self._presigner is None:
                    self._presigner = await self._stack.enter_async_context(
                        self._session.client(
                            "s3",
                            endpoint_url=self.public_url or self.endpoint_url,
                            config=self._config(),
                        )
                    )
        return self._presigner

    async def call(
        self,
        operation: str,
        key: str,
        make_call: Callable[[Any], Awaitable[T]],
        deadline: float | None = None,
    ) -> T:
        """Run one S3 call under a deadline; any failure becomes a ``StorageError``."""
        client = await self.client()
        try:
            async with asyncio.timeout(deadline or self.call_timeout):
                return await make_call(client)
        except StorageError:
            raise
        except Exception as exc:
            raise StorageError(f"S3 {operation} of {key} failed: {_describe(exc)}") from exc

    async def open_writer(
        self, key: str, *, content_type: str, file_name: str, expected_size: int | None = None
    ) -> _S3Writer:
        if self._closed:
            raise StorageError("storage is closed")
        if expected_size is not None and expected_size > S3_MAX_OBJECT_SIZE:
            raise StorageError("file exceeds the 5 TiB object size limit")
        return _S3Writer(
            self,
            self.full_key(key),
            key,
            content_type=content_type,
            content_disposition=content_disposition(file_name),
            part_size=initial_part_size(self.part_size, expected_size),
        )

    async def delete(self, key: str) -> None:
        """Delete the object and abort any unfinished upload to the same key."""
        full = self.full_key(key)
        for upload_id in await self._upload_ids(full):
            await self.abort_upload(full, upload_id)
        await self.call(
            "DeleteObject", full, lambda c: c.delete_object(Bucket=self.bucket, Key=full)
        )

    async def exists(self, key: str) -> bool:
        full = self.full_key(key)
        try:
            await self.call(
                "HeadObject", full, lambda c: c.head_object(Bucket=self.bucket, Key=full)
            )
        except StorageError as exc:
            if _error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    async def read(self, key: str, chunk_size: int = MiB) -> AsyncIterator[bytes]:
        full = self.full_key(key)
        try:
            response = await self.call(
                "GetObject", full, lambda c: c.get_object(Bucket=self.bucket, Key=full)
            )
        except StorageError as exc:
            if _error_code(exc) in ("404", "NoSuchKey"):
                raise ObjectNotFound(f"no stored object at {key}") from None
            raise
        body = response["Body"]
        try:
            while True:
                try:
                    async with asyncio.timeout(self.call_timeout):
                        chunk = await body.read(chunk_size)
                except Exception as exc:
                    raise StorageError(f"S3 GetObject of {full} failed: {_describe(exc)}") from exc
                if not chunk:
                    return
                yield chunk
        finally:
            body.close()

    async def presigned_download_url(
        self, key: str, *, file_name: str, content_type: str, expires_in: int
    ) -> str | None:
        if not 1 <= expires_in <= S3_MAX_PRESIGN_SECONDS:
            raise ValueError("presigned URLs last between 1 second and 7 days")
        full = self.full_key(key)
        presigner = await self._presigning_client()
        url: str = await presigner.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": self.bucket,
                "Key": full,
                "ResponseContentDisposition": content_disposition(file_name),
                "ResponseContentType": content_type,
            },
            ExpiresIn=expires_in,
        )
        return url

    async def _upload_ids(self, full_key: str) -> list[str]:
        return [
            upload_id for key, upload_id in await self._list_uploads(full_key) if key == full_key
        ]

    async def _list_uploads(self, prefix: str) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        params: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        while True:
            page: dict[str, Any] = await self.call(
                "ListMultipartUploads",
                prefix or self.bucket,
                lambda c, p=dict(params): c.list_multipart_uploads(**p),  # type: ignore[misc]
            )
            found.extend((u["Key"], u["UploadId"]) for u in page.get("Uploads", []))
            if not page.get("IsTruncated"):
                return found
            params["KeyMarker"] = page.get("NextKeyMarker", "")
            params["UploadIdMarker"] = page.get("NextUploadIdMarker", "")

    async def open_uploads(self) -> list[str]:
        prefix = f"{self.prefix}/" if self.prefix else ""
        keys = {key for key, _ in await self._list_uploads(prefix)}
        return sorted(key[len(prefix) :] for key in keys)

    async def abort_upload(self, full_key: str, upload_id: str) -> None:
        """Abort one multipart upload. An upload the store no longer knows counts as aborted:
        another abort (the sweeper's, or an earlier try whose answer was lost) got there
        first, and retrying could never succeed."""
        try:
            await self.call(
                "AbortMultipartUpload",
                full_key,
                lambda c: c.abort_multipart_upload(
                    Bucket=self.bucket, Key=full_key, UploadId=upload_id
                ),
            )
        except StorageError as exc:
            if _error_code(exc) != "NoSuchUpload":
                raise
            log.debug("upload of %s was already gone", full_key)

    def abort_upload_soon(self, full_key: str, upload_id: str) -> None:
        """Keep trying to abort an upload in the background after a failed attempt.

        An abort usually fails because the store is unreachable, which is often brief;
        retrying keeps orphaned parts (which are billed) from piling up. Whatever is still
        open when the process stops is found by ``open_uploads`` and removed by ``delete``.
        """
        self._spawn(self._abort_with_backoff(full_key, upload_id), self._retries)

    async def _abort_with_backoff(self, full_key: str, upload_id: str) -> None:
        delay = 0.5
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + 15 * 60
        while loop.time() < give_up_at:
            await asyncio.sleep(delay)
            try:
                await self.abort_upload(full_key, upload_id)
                log.info("aborted upload of %s after retrying", full_key)
                return
            except StorageError as exc:
                log.warning("retrying abort of upload of %s: %s", full_key, exc)
            delay = min(delay * 2, 30.0)
        log.error("gave up aborting upload of %s; the sweeper will remove it", full_key)

    def spawn_abort(self, coro: Awaitable[None]) -> asyncio.Task[None]:
        """Run a writer's abort as a task the storage owns, so a cancelled caller can't stop it."""
        return self._spawn(coro, self._aborts)

    def _spawn(self, coro: Awaitable[T], owner: set[asyncio.Task[Any]]) -> asyncio.Task[T]:
        task = asyncio.ensure_future(coro)
        owner.add(task)
        task.add_done_callback(owner.discard)
        return task

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Aborts under way get a moment to reach the store; retry loops are dropped at once,
        # their uploads stay visible to ``open_uploads`` for the sweeper.
        pending: set[asyncio.Task[Any]] = set(self._retries)
        if self._aborts:
            _, still_running = await asyncio.wait(set(self._aborts), timeout=5)
            pending |= still_running
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        async with self._client_lock:
            await self._stack.aclose()
            self._client = self._presigner = None


class _S3Writer(_AbortingContext):
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
        storage: S3Storage,
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
            self._failure = exc if isinstance(exc, StorageError) else StorageError(_describe(exc))

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
        parts = [{"PartNumber": n, "ETag": self._etags[n]} for n in sorted(self._etags)]
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
            if not self._storage._closed:
                self._storage.abort_upload_soon(self._full_key, upload_id)
