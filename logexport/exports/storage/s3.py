"""Export files in an S3 bucket (AWS, MinIO, R2, …) under an optional key prefix."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar, Unpack
from urllib.parse import unquote, urlsplit

from logexport.config import Settings
from logexport.exports.filenames import content_disposition
from logexport.exports.storage.base import (
    ExitCalls,
    MiB,
    ObjectNotFound,
    StorageError,
    validate_key,
)
from logexport.exports.storage.multipart import (
    DEFAULT_PART_SIZE,
    S3_MAX_OBJECT_SIZE,
    S3_MAX_PART_SIZE,
    S3_MIN_PART_SIZE,
    S3Call,
    S3Writer,
    describe,
    initial_part_size,
)

log = logging.getLogger(__name__)

S3_MAX_PRESIGN_SECONDS = 7 * 24 * 3600
DEFAULT_MAX_IN_FLIGHT = 4

T = TypeVar("T")

if TYPE_CHECKING:
    import aioboto3
    from botocore.config import Config
    from types_aiobotocore_s3 import S3Client


class S3Options(TypedDict, total=False):
    """How the S3 backend works, beyond where it points (which the settings say)."""

    region_name: str | None
    part_size: int
    max_in_flight: int
    call_timeout: float
    part_timeout: float
    session: aioboto3.Session | None


def _error_code(exc: StorageError) -> str | None:
    """The S3 error code behind a failed call (``NoSuchKey``, ``NoSuchUpload``, …), if any."""
    from botocore.exceptions import ClientError

    cause = exc.__cause__
    if isinstance(cause, ClientError):
        code = cause.response.get("Error", {}).get("Code")
        return str(code) if code is not None else None
    return None


class S3Storage(ExitCalls):
    """An S3 bucket (AWS, MinIO, R2, …) under an optional key prefix.

    One botocore client is created on first use and reused for every call; presigned links
    come from a client whose endpoint is the public URL when one is set, so links name the
    host that users can reach. Every call runs under a deadline, on top of botocore's own
    retries. Objects are written by ``S3Writer`` (``multipart``).
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
        session: aioboto3.Session | None = None,
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
        self._clients: dict[str | None, S3Client] = {}
        self._client_lock = asyncio.Lock()
        self._aborts: set[asyncio.Task[None]] = set()
        self._retries: set[asyncio.Task[None]] = set()
        self._closed = False

    @classmethod
    def from_settings(cls, settings: Settings, **options: Unpack[S3Options]) -> S3Storage:
        parts = urlsplit(settings.require("storage_url"))
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

    def _config(self) -> Config:
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

    async def client(self) -> S3Client:
        return await self._client_for(self.endpoint_url)

    async def _presigning_client(self) -> S3Client:
        return await self._client_for(self.public_url or self.endpoint_url)

    async def _client_for(self, endpoint_url: str | None) -> S3Client:
        """The client for ``endpoint_url``, opened on first use and shared after."""
        client = self._clients.get(endpoint_url)
        if client is not None:
            return client
        async with self._client_lock:
            if self._closed:
                raise StorageError("storage is closed")
            if endpoint_url not in self._clients:
                self._clients[endpoint_url] = await self._stack.enter_async_context(
                    self._session.client("s3", endpoint_url=endpoint_url, config=self._config())
                )
            return self._clients[endpoint_url]

    async def call(
        self, operation: str, key: str, make_call: S3Call[T], deadline: float | None = None
    ) -> T:
        """Run one S3 call under a deadline; any failure becomes a ``StorageError``."""
        client = await self.client()
        try:
            async with asyncio.timeout(deadline or self.call_timeout):
                return await make_call(client)
        except StorageError:
            raise
        except Exception as exc:
            raise StorageError(f"S3 {operation} of {key} failed: {describe(exc)}") from exc

    async def open_writer(
        self, key: str, *, content_type: str, file_name: str, expected_size: int | None = None
    ) -> S3Writer:
        if self._closed:
            raise StorageError("storage is closed")
        if expected_size is not None and expected_size > S3_MAX_OBJECT_SIZE:
            raise StorageError("file exceeds the 5 TiB object size limit")
        return S3Writer(
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
                    raise StorageError(f"S3 GetObject of {full} failed: {describe(exc)}") from exc
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
            page = await self.call(
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

    def _spawn(self, coro: Awaitable[None], owner: set[asyncio.Task[None]]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        owner.add(task)
        task.add_done_callback(owner.discard)
        return task

    @property
    def closed(self) -> bool:
        return self._closed

    async def on_exit(self) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Aborts under way get a moment to reach the store; retry loops are dropped at once,
        # their uploads stay visible to ``open_uploads`` for the sweeper.
        pending: set[asyncio.Task[None]] = set(self._retries)
        if self._aborts:
            _, still_running = await asyncio.wait(set(self._aborts), timeout=5)
            pending |= still_running
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        async with self._client_lock:
            await self._stack.aclose()
            self._clients.clear()
