"""The S3 backend against a real S3-protocol server over HTTP."""

import asyncio
import hashlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aioboto3
import httpx
import pytest
from botocore.exceptions import EndpointConnectionError

from logexport.config import Settings
from logexport.exports.filenames import content_disposition
from logexport.exports.storage import (
    MiB,
    ObjectNotFound,
    S3Storage,
    StorageError,
    StoredObject,
    storage_from_settings,
)

FILE_NAME = "audit-log-export-2026-01-01-to-2026-01-31.jsonl"
KEY = f"8d5e0c1e-9b0f-4d1c-9a43-7c1d2f3e4a5b/attempt-1/{FILE_NAME}"
FULL_KEY = f"exports/{KEY}"
CONTENT_TYPE = "application/x-ndjson"


def settings_for(s3: Any, **changes: Any) -> Settings:
    return Settings(
        storage_url=s3.storage_url,
        s3_endpoint_url=s3.endpoint_url,
        s3_addressing_style="path",
    ).derive(**changes)


def make_storage(s3: Any, **options: Any) -> S3Storage:
    storage = storage_from_settings(settings_for(s3), **options)
    assert isinstance(storage, S3Storage)
    return storage


def open_uploads(s3: Any) -> list[dict[str, Any]]:
    uploads: list[dict[str, Any]] = (
        s3.client().list_multipart_uploads(Bucket=s3.bucket).get("Uploads", [])
    )
    return uploads


async def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def payload(size: int) -> bytes:
    # Incompressible and position-dependent, so a reordered or dropped part shows.
    block = os.urandom(1 << 16)
    return b"".join(
        i.to_bytes(8, "big") + block[8:] for i in range((size + len(block) - 1) // len(block))
    )[:size]


async def write_in_chunks(writer: Any, data: bytes, chunk: int = 256 * 1024) -> None:
    for start in range(0, len(data), chunk):
        await writer.write(data[start : start + chunk])


# ---------------------------------------------------------------------------- uploads


async def test_small_file_is_stored_with_one_put_and_download_headers(s3: Any) -> None:
    data = b'{"id": 1}\n' * 1000
    async with make_storage(s3) as storage:
        async with await storage.open_writer(
            KEY, content_type=CONTENT_TYPE, file_name=FILE_NAME, expected_size=len(data)
        ) as writer:
            await write_in_chunks(writer, data, chunk=333)
            stored = await writer.complete()

    assert stored == StoredObject(key=KEY, byte_size=len(data))
    head = s3.client().head_object(Bucket=s3.bucket, Key=FULL_KEY)
    assert head["ContentType"] == CONTENT_TYPE
    assert head["ContentDisposition"] == content_disposition(FILE_NAME)
    assert head["ContentDisposition"].startswith(f'attachment; filename="{FILE_NAME}"')
    assert "-" not in head["ETag"], "a small file is a single PutObject, not a multipart upload"
    assert "ServerSideEncryption" not in head or head["ServerSideEncryption"] == "AES256"
    assert s3.get(FULL_KEY) == data
    assert open_uploads(s3) == []


async def test_empty_file_is_stored(s3: Any) -> None:
    async with make_storage(s3) as storage:
        writer = await storage.open_writer(KEY, content_type=CONTENT_TYPE, file_name=FILE_NAME)
        assert await writer.complete() == StoredObject(key=KEY, byte_size=0)
    assert s3.get(FULL_KEY) == b""


async def test_large_file_is_streamed_as_multipart_upload(s3: Any) -> None:
    data = payload(20 * MiB + 4321)
    async with make_storage(s3) as storage:
        async with await storage.open_writer(
            KEY, content_type="application/gzip", file_name=FILE_NAME + ".gz"
        ) as writer:
            await write_in_chunks(writer, data, chunk=100_003)  # chunks straddle parts
            assert open_uploads(s3), "parts upload while the file is still being written"
            stored = await writer.complete()
        assert stored.byte_size == len(data)

        read_back = hashlib.sha256()
        async for chunk in storage.read(KEY, chunk_size=MiB):
            assert len(chunk) <= MiB
            read_back.update(chunk)
        assert read_back.hexdigest() == hashlib.sha256(data).hexdigest()

    head = s3.client().head_object(Bucket=s3.bucket, Key=FULL_KEY)
    parts = int(head["ETag"].strip('"').rsplit("-", 1)[1])
    assert parts == 3  # 8 MiB + 8 MiB + the 4 MiB remainder
    assert head["ContentLength"] == len(data)
    assert head["ContentType"] == "application/gzip"
    assert head["ContentDisposition"] == content_disposition(FILE_NAME + ".gz")
    assert open_uploads(s3) == []


async def test_abort_leaves_no_open_upload_and_no_object(s3: Any) -> None:
    async with make_storage(s3, part_size=5 * MiB) as storage:
        writer = await storage.open_writer(KEY, content_type=CONTENT_TYPE, file_name=FILE_NAME)
        await write_in_chunks(writer, payload(12 * MiB))
        assert [u["Key"] for u in open_uploads(s3)] == [FULL_KEY]
        assert await storage.open_uploads() == [KEY]

        await writer.abort()
        await writer.abort()

        assert open_uploads(s3) == []
        assert not await storage.exists(KEY)
        with pytest.raises(StorageError):
            await writer.write(b"more")
        with pytest.raises(StorageError):
            await writer.complete()
    assert s3.keys() == []


async def test_error_inside_the_writer_block_aborts_the_upload(s3: Any) -> None:
    async with make_storage(s3, part_size=5 * MiB) as storage:
        with pytest.raises(RuntimeError):
            async with await storage.open_writer(
                KEY, content_type=CONTENT_TYPE, file_name=FILE_NAME
            ) as writer:
                await write_in_chunks(writer, payload(11 * MiB))
                raise RuntimeError("database went away")
    assert open_uploads(s3) == []
    assert s3.keys() == []


# ----------------------------------------------------------------------------- faults


class FaultyClient:
    """Forwards to a real client, letting a test fail or stall chosen operations."""

    def __init__(self, real: Any, faults: dict[str, Callable[[dict[str, Any]], Any]]) -> None:
        self._real = real
        self._faults = faults

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._real, name)
        fault = self._faults.get(name)
        if fault is None:
            return attribute

        async def call(**kwargs: Any) -> Any:
            await fault(kwargs)
            return await attribute(**kwargs)

        return call


class FaultySession:
    def __init__(self, faults: dict[str, Callable[[dict[str, Any]], Any]]) -> None:
        self._session = aioboto3.Session()
        self.faults = faults

    @asynccontextmanager
    async def _client(self, *args: Any, **kwargs: Any) -> AsyncIterator[FaultyClient]:
        async with self._session.client(*args, **kwargs) as real:
            yield FaultyClient(real, self.faults)

    def client(self, *args: Any, **kwargs: Any) -> Any:
        return self._client(*args, **kwargs)


def connection_error(kwargs: dict[str, Any]) -> Exception:
    error: Exception = EndpointConnectionError(endpoint_url="http://127.0.0.1:1/")
    return error


async def test_write_waits_while_max_parts_are_in_flight(s3: Any) -> None:
    part_entered = asyncio.Event()
    release = asyncio.Event()

    async def gate(kwargs: dict[str, Any]) -> None:
        part_entered.set()
        await release.wait()

    session = FaultySession({"upload_part": gate})
    data = payload(10 * MiB + 100)
    async with make_storage(s3, part_size=5 * MiB, max_in_flight=1, session=session) as storage:
        writer = await storage.open_writer(KEY, content_type=CONTENT_TYPE, file_name=FILE_NAME)
        await writer.write(data[: 5 * MiB])  # part 1 starts uploading and is held
        async with asyncio.timeout(10):
            await part_entered.wait()
        second = asyncio.create_task(writer.write(data[5 * MiB :]))  # fills part 2
        # Part 2 may not start while part 1 occupies the only slot: write() must wait.
        done, _ = await asyncio.wait({second}, timeout=0.5)
        assert not done, "write() returned although no upload slot was free"
        release.set()
        async with asyncio.timeout(30):
            await second
            stored = await writer.complete()
    assert stored.byte_size == len(data)
    assert s3.get(FULL_KEY) == data


async def test_cancelled_export_task_aborts_its_upload(s3: Any) -> None:
    parts_started = 0
    two_parts_started = asyncio.Event()

    async def count(kwargs: dict[str, Any]) -> None:
        nonlocal parts_started
        parts_started += 1
        if parts_started >= 2:
            two_parts_started.set()

    async def export(storage: S3Storage) -> None:
        async with await storage.open_writer(
            KEY, content_type=CONTENT_TYPE, file_name=FILE_NAME
        ) as writer:
            block = payload(MiB)
            while True:
                await writer.write(block)

    session = FaultySession({"upload_part": count})
    async with make_storage(s3, part_size=5 * MiB, session=session) as storage:
        task = asyncio.create_task(export(storage))
        async with asyncio.timeout(30):
            await two_parts_started.wait()
        assert open_uploads(s3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert open_uploads(s3) == []
    assert s3.keys() == []


async def test_abort_completes_even_if_the_aborting_task_is_cancelled_again(s3: Any) -> None:
    abort_entered = asyncio.Event()
    release_abort = asyncio.Event()

    async def hold(kwargs: dict[str, Any]) -> None:
        abort_entered.set()
        await release_abort.wait()

    session = FaultySession({"abort_multipart_upload": hold})
    async with make_storage(s3, part_size=5 * MiB, session=session) as storage:
        writer = await storage.open_writer(KEY, content_type=CONTENT_TYPE, file_name=FILE_NAME)
        await write_in_chunks(writer, payload(6 * MiB), chunk=MiB)
        shutdown = asyncio.create_task(writer.abort())
        async with asyncio.timeout(10):
            await abort_entered.wait()
        shutdown.cancel()  # e.g. a second Ctrl-C while the worker is shutting down
        with pytest.raises(asyncio.CancelledError):
            await shutdown
        assert open_uploads(s3), "the abort is still held"
        release_abort.set()
        await wait_until(lambda: open_uploads(s3) == [], 10, "the upload to be aborted")


async def test_failed_part_raises_and_aborts_the_upload(s3: Any) -> None:
    async def fail_part_two(kwargs: dict[str, Any]) -> None:
        if kwargs["PartNumber"] == 2:
            raise connection_error(kwargs)

    session = FaultySession({"upload_part": fail_part_two})
    async with make_storage(s3, part_size=5 * MiB, session=session) as storage:
        writer = await storage.open_writer(KEY, content_type=CONTENT_TYPE, file_name=FILE_NAME)
        with pytest.raises(StorageError) as raised:
            async with asyncio.timeout(30):
                await write_in_chunks(writer, payload(30 * MiB), chunk=MiB)
                await writer.complete()
        assert "UploadPart" in str(raised.value)
        assert s3.access_key not in str(raised.value) and s3.secret_key not in str(raised.value)
        assert open_uploads(s3) == []
    assert s3.keys() == []


async def test_stalled_store_fails_within_the_deadline(s3: Any) -> None:
    async def stall(kwargs: dict[str, Any]) -> None:
        await asyncio.sleep(3600)

    session = FaultySession({"upload_part": stall})
    async with make_storage(s3, part_size=5 * MiB, part_timeout=1, session=session) as storage:
        writer = await storage.open_writer(KEY, content_type=CONTENT_TYPE, file_name=FILE_NAME)
        started = time.monotonic()
        with pytest.raises(StorageError, match="timed out"):
            async with asyncio.timeout(30):
                await write_in_chunks(writer, payload(30 * MiB), chunk=MiB)
                await writer.complete()
        assert time.monotonic() - started < 10
        assert open_uploads(s3) == []


async def test_failed_abort_is_retried_until_the_store_answers(s3: Any) -> None:
    failures = {"abort_multipart_upload": 2, "upload_part": 1}

    async def fail_first(name: str) -> Callable[[dict[str, Any]], Any]:
        async def fault(kwargs: dict[str, Any]) -> None:
            if name == "upload_part" and kwargs["PartNumber"] != 2:
                return
            if failures[name] > 0:
                failures[name] -= 1
                raise connection_error(kwargs)

        return fault

    session = FaultySession(
        {name: await fail_first(name) for name in ("abort_multipart_upload", "upload_part")}
    )
    async with make_storage(s3, part_size=5 * MiB, session=session) as storage:
        writer = await storage.open_writer(KEY, content_type=CONTENT_TYPE, file_name=FILE_NAME)
        with pytest.raises(StorageError):
            async with asyncio.timeout(30):
                await write_in_chunks(writer, payload(30 * MiB), chunk=MiB)
                await writer.complete()
        await wait_until(lambda: open_uploads(s3) == [], 15, "the upload to be aborted")
        assert failures["abort_multipart_upload"] == 0


async def test_abort_of_an_upload_already_gone_is_done_without_retries(
    s3: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The sweeper may abort an upload (its export was canceled) before the writer does: the
    store then answers NoSuchUpload, which means the upload is gone, not that the abort failed."""
    aborts: list[str] = []

    async def count(kwargs: dict[str, Any]) -> None:
        aborts.append(kwargs["UploadId"])

    session = FaultySession({"abort_multipart_upload": count})
    async with make_storage(s3, part_size=5 * MiB, session=session) as storage:
        writer = await storage.open_writer(KEY, content_type=CONTENT_TYPE, file_name=FILE_NAME)
        await write_in_chunks(writer, payload(12 * MiB))
        [upload] = open_uploads(s3)
        s3.client().abort_multipart_upload(
            Bucket=s3.bucket, Key=FULL_KEY, UploadId=upload["UploadId"]
        )

        await writer.abort()
        await storage.abort_upload(FULL_KEY, upload["UploadId"])
        await storage.delete(KEY)

        assert aborts == [upload["UploadId"]] * 2
        assert open_uploads(s3) == []
    assert s3.keys() == []
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


async def test_abort_failing_for_another_reason_still_raises(s3: Any) -> None:
    storage = S3Storage(
        "no-such-bucket-here", endpoint_url=s3.endpoint_url, addressing_style="path"
    )
    async with storage:
        with pytest.raises(StorageError, match="NoSuchBucket"):
            await storage.abort_upload("x", "u")


@pytest.mark.faults
async def test_store_outage_mid_upload_raises_promptly(s3: Any) -> None:
    async with make_storage(s3, part_size=5 * MiB, call_timeout=5, part_timeout=5) as storage:
        writer = await storage.open_writer(KEY, content_type=CONTENT_TYPE, file_name=FILE_NAME)
        await write_in_chunks(writer, payload(5 * MiB), chunk=MiB)

        def first_part_stored() -> bool:
            uploads = open_uploads(s3)
            if not uploads:
                return False
            listing = s3.client().list_parts(
                Bucket=s3.bucket, Key=FULL_KEY, UploadId=uploads[0]["UploadId"]
            )
            return len(listing.get("Parts", [])) == 1

        await wait_until(first_part_stored, 15, "the first part to be stored")
        await asyncio.to_thread(s3.server.stop)

        started = time.monotonic()
        with pytest.raises(StorageError):
            async with asyncio.timeout(60):
                await write_in_chunks(writer, payload(30 * MiB), chunk=MiB)
                await writer.complete()
        assert time.monotonic() - started < 30
        async with asyncio.timeout(30):
            await writer.abort()  # already aborted: returns at once, never raises
    await asyncio.to_thread(s3.server.start)


# ------------------------------------------------------------------ reads, links, keys


async def test_presigned_link_is_sigv4_names_the_public_host_and_downloads(s3: Any) -> None:
    data = b"a,b\r\n1,2\r\n"
    public = s3.endpoint_url.replace("127.0.0.1", "localhost")
    storage = storage_from_settings(settings_for(s3, s3_public_url=public))
    async with storage:
        async with await storage.open_writer(
            KEY, content_type="text/csv; charset=utf-8", file_name="export.csv"
        ) as writer:
            await writer.write(data)
            await writer.complete()
        url = await storage.presigned_download_url(
            KEY, file_name="export.csv", content_type="text/csv; charset=utf-8", expires_in=300
        )

    assert url is not None
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    assert parts.netloc == urlsplit(public).netloc
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert query["X-Amz-Expires"] == ["300"]
    assert query["response-content-disposition"] == [content_disposition("export.csv")]
    async with httpx.AsyncClient(trust_env=False) as http:
        response = await http.get(url)
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["content-disposition"] == content_disposition("export.csv")


async def test_presigned_link_uses_the_endpoint_without_a_public_url(s3: Any) -> None:
    async with make_storage(s3) as storage:
        url = await storage.presigned_download_url(
            KEY, file_name=FILE_NAME, content_type=CONTENT_TYPE, expires_in=60
        )
    assert url is not None
    assert urlsplit(url).netloc == urlsplit(s3.endpoint_url).netloc
    assert urlsplit(url).path.endswith(f"/{FULL_KEY}")


async def test_delete_removes_the_object_and_unfinished_uploads(s3: Any) -> None:
    other = KEY.replace("attempt-1", "attempt-2")
    async with make_storage(s3, part_size=5 * MiB) as storage:
        async with await storage.open_writer(
            KEY, content_type=CONTENT_TYPE, file_name=FILE_NAME
        ) as writer:
            await writer.write(b"done")
            await writer.complete()
        # A crashed process leaves an unfinished upload behind; the sweeper finds it.
        s3.client().create_multipart_upload(Bucket=s3.bucket, Key=f"exports/{other}")
        s3.client().create_multipart_upload(Bucket=s3.bucket, Key="outside-the-prefix")
        assert await storage.open_uploads() == [other]
        assert await storage.exists(KEY)

        await storage.delete(KEY)
        await storage.delete(other)
        await storage.delete(other)

        assert not await storage.exists(KEY)
        assert await storage.open_uploads() == []
        with pytest.raises(ObjectNotFound):
            [chunk async for chunk in storage.read(KEY)]
    assert [u["Key"] for u in open_uploads(s3)] == ["outside-the-prefix"]


async def test_keys_cannot_climb_out_of_the_prefix(s3: Any) -> None:
    async with make_storage(s3) as storage:
        for key in ("../other", "/abs", "a/../../b", ""):
            with pytest.raises(StorageError):
                await storage.open_writer(key, content_type=CONTENT_TYPE, file_name="f")
