"""Throughput of the storage writers.

    python scripts/bench_storage.py [--size-mib 256] [--chunk-kib 64] [--s3-endpoint URL --bucket B]

``local`` writes to a temporary directory; ``s3-overhead`` runs the S3 writer against a client
that accepts every call at once, so it measures the writer's own buffering cost; with
``--s3-endpoint`` it also uploads to a real S3-compatible server on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from logexport.exports.storage import LocalStorage, MiB, S3Storage, Storage


class NullClient:
    """Answers every S3 call at once, keeping nothing."""

    async def create_multipart_upload(self, **kwargs: Any) -> dict[str, Any]:
        return {"UploadId": "bench"}

    async def upload_part(self, **kwargs: Any) -> dict[str, Any]:
        return {"ETag": f'"{kwargs["PartNumber"]}"'}

    async def complete_multipart_upload(self, **kwargs: Any) -> dict[str, Any]:
        return {}

    async def put_object(self, **kwargs: Any) -> dict[str, Any]:
        return {}

    async def abort_multipart_upload(self, **kwargs: Any) -> dict[str, Any]:
        return {}


class NullSession:
    @asynccontextmanager
    async def _client(self) -> AsyncIterator[NullClient]:
        yield NullClient()

    def client(self, *args: Any, **kwargs: Any) -> Any:
        return self._client()


async def measure(name: str, storage: Storage, size: int, chunk: bytes) -> None:
    async with storage:
        writer = await storage.open_writer(
            "bench/attempt-1/bench.jsonl", content_type="application/x-ndjson", file_name="b"
        )
        started = time.perf_counter()
        written = 0
        while written < size:
            await writer.write(chunk)
            written += len(chunk)
        stored = await writer.complete()
        elapsed = time.perf_counter() - started
        await storage.delete("bench/attempt-1/bench.jsonl") if name != "s3-overhead" else None
    print(
        f"{name:12s} {stored.byte_size / MiB:8.0f} MiB in {elapsed:6.2f} s = "
        f"{stored.byte_size / MiB / elapsed:8.1f} MiB/s"
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--chunk-kib", type=int, default=64)
    parser.add_argument("--s3-endpoint")
    parser.add_argument("--bucket")
    args = parser.parse_args()
    size = args.size_mib * MiB
    chunk = os.urandom(args.chunk_kib * 1024)

    with tempfile.TemporaryDirectory() as directory:
        await measure("local", LocalStorage(directory), size, chunk)
    await measure("s3-overhead", S3Storage("bench", session=NullSession()), size, chunk)
    if args.s3_endpoint:
        if not args.bucket:
            parser.error("--bucket is needed with --s3-endpoint")
        real = S3Storage(
            args.bucket, "bench", endpoint_url=args.s3_endpoint, addressing_style="path"
        )
        await measure("s3", real, size, chunk)


if __name__ == "__main__":
    asyncio.run(main())
