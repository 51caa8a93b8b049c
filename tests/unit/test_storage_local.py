import asyncio
import errno
import fcntl
import os
import stat
from pathlib import Path

import pytest

from logexport.config import Settings
from logexport.exports.storage import (
    InvalidKey,
    LocalStorage,
    ObjectNotFound,
    S3Storage,
    StorageError,
    StoredObject,
    storage_from_settings,
)
from logexport.exports.storage import local as local_storage

KEY = (
    "0b6c3f0e-5d5e-4b59-9d0e-7f7f9d2a1c11/attempt-1/audit-log-export-2026-01-01-to-2026-01-31.jsonl"
)


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "exports"


@pytest.fixture
def storage(root: Path) -> LocalStorage:
    return LocalStorage.from_url(f"file://{root}")


async def test_written_file_reads_back_and_is_private(storage: LocalStorage, root: Path) -> None:
    data = os.urandom(3 * (1 << 20) + 12345)
    writer = await storage.open_writer(KEY, content_type="application/x-ndjson", file_name="f")
    for start in range(0, len(data), 70_000):
        await writer.write(data[start : start + 70_000])
    target = root / KEY
    assert not target.exists(), "the file must not be visible before complete()"
    temps = files_under(root)
    assert len(temps) == 1 and Path(temps[0]).name.startswith(f".{target.name}.part-")

    stored = await writer.complete()

    assert stored == StoredObject(key=KEY, byte_size=len(data))
    assert files_under(root) == [KEY]
    assert target.read_bytes() == data
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert stat.S_IMODE(target.parent.stat().st_mode) & 0o077 == 0
    assert await storage.exists(KEY)
    chunks = [chunk async for chunk in storage.read(KEY, chunk_size=1 << 20)]
    assert b"".join(chunks) == data
    assert max(len(c) for c in chunks) == 1 << 20
    # complete() is idempotent and the writer's context exit after it changes nothing.
    assert await writer.complete() == stored
    await writer.abort()
    assert target.read_bytes() == data


async def test_abort_leaves_nothing(storage: LocalStorage, root: Path) -> None:
    writer = await storage.open_writer(KEY, content_type="text/csv", file_name="f")
    await writer.write(b"x" * (2 << 20))
    assert files_under(root)
    await writer.abort()
    await writer.abort()
    assert files_under(root) == []
    with pytest.raises(StorageError):
        await writer.write(b"more")
    with pytest.raises(StorageError):
        await writer.complete()
    assert not await storage.exists(KEY)


async def test_leaving_the_block_with_an_error_aborts(storage: LocalStorage, root: Path) -> None:
    with pytest.raises(RuntimeError):
        async with await storage.open_writer(KEY, content_type="text/csv", file_name="f") as w:
            await w.write(b"a,b\r\n")
            raise RuntimeError("encoder failed")
    assert files_under(root) == []


async def test_leaving_the_block_without_complete_aborts(storage: LocalStorage, root: Path) -> None:
    async with await storage.open_writer(KEY, content_type="text/csv", file_name="f") as w:
        await w.write(b"a,b\r\n")
    assert files_under(root) == []


async def test_cancelled_writer_task_leaves_nothing(storage: LocalStorage, root: Path) -> None:
    started = asyncio.Event()

    async def export() -> None:
        async with await storage.open_writer(KEY, content_type="text/csv", file_name="f") as w:
            while True:
                await w.write(b"y" * 65536)
                started.set()

    task = asyncio.create_task(export())
    async with asyncio.timeout(10):
        await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert files_under(root) == []


async def test_a_replaced_file_is_never_seen_half_written(
    storage: LocalStorage, root: Path
) -> None:
    async with await storage.open_writer(KEY, content_type="text/csv", file_name="f") as w:
        await w.write(b"old")
        await w.complete()
    async with await storage.open_writer(KEY, content_type="text/csv", file_name="f") as w:
        await w.write(b"new" * 1000)
        assert (root / KEY).read_bytes() == b"old"
        await w.complete()
    assert (root / KEY).read_bytes() == b"new" * 1000


async def test_tiny_writes_are_batched_into_few_thread_calls(
    storage: LocalStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = 0
    real_to_thread = asyncio.to_thread

    async def counting_to_thread(func, /, *args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        return await real_to_thread(func, *args, **kwargs)

    monkeypatch.setattr(local_storage.asyncio, "to_thread", counting_to_thread)
    writer = await storage.open_writer(KEY, content_type="text/csv", file_name="f")
    line = b"2026-01-01T00:00:00.000000Z,user.login,203.0.113.5\r\n"
    count = (4 << 20) // len(line) + 1
    for _ in range(count):
        await writer.write(line)
    stored = await writer.complete()
    assert stored.byte_size == count * len(line)
    # open + one per MiB + complete, not one per write.
    assert calls <= 2 + stored.byte_size // (1 << 20) + 1


@pytest.mark.parametrize(
    "key",
    [
        "../outside",
        "a/../../outside",
        "/etc/passwd",
        "",
        "a//b",
        "./a",
        "a/.",
        "a\\..\\b",
        "a\x00b",
    ],
)
async def test_keys_that_could_escape_the_directory_are_refused(
    storage: LocalStorage, root: Path, key: str
) -> None:
    with pytest.raises(InvalidKey):
        await storage.open_writer(key, content_type="text/csv", file_name="f")
    with pytest.raises(InvalidKey):
        await storage.delete(key)
    with pytest.raises(InvalidKey):
        await storage.exists(key)
    with pytest.raises(InvalidKey):
        [chunk async for chunk in storage.read(key)]
    assert not root.parent.joinpath("outside").exists()


async def test_symlink_out_of_the_directory_is_refused(
    storage: LocalStorage, root: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    os.makedirs(elsewhere)
    os.makedirs(root)
    os.symlink(elsewhere, root / "link", target_is_directory=True)
    with pytest.raises(InvalidKey):
        await storage.open_writer("link/file.csv", content_type="text/csv", file_name="f")
    assert list(elsewhere.iterdir()) == []


async def test_delete_is_idempotent_and_removes_empty_directories(
    storage: LocalStorage, root: Path
) -> None:
    async with await storage.open_writer(KEY, content_type="text/csv", file_name="f") as w:
        await w.write(b"data")
        await w.complete()
    await storage.delete(KEY)
    await storage.delete(KEY)
    assert not await storage.exists(KEY)
    assert os.listdir(root) == []


async def test_reading_a_missing_key_raises_not_found(storage: LocalStorage) -> None:
    with pytest.raises(ObjectNotFound):
        [chunk async for chunk in storage.read(KEY)]


async def test_local_backend_has_no_links_and_no_open_uploads(storage: LocalStorage) -> None:
    async with storage as same:
        assert same is storage
        assert (
            await storage.presigned_download_url(
                KEY, file_name="f.jsonl", content_type="application/x-ndjson", expires_in=300
            )
            is None
        )
        assert await storage.open_uploads() == []


def test_storage_url_selects_the_backend(tmp_path: Path) -> None:
    local = storage_from_settings(Settings(storage_url=f"file://{tmp_path}/dir"))
    assert isinstance(local, LocalStorage) and local.root == f"{tmp_path}/dir"
    s3 = storage_from_settings(
        Settings(storage_url="s3://bucket/some/prefix/", s3_endpoint_url="http://127.0.0.1:9")
    )
    assert isinstance(s3, S3Storage)
    assert (s3.bucket, s3.prefix, s3.endpoint_url) == (
        "bucket",
        "some/prefix",
        "http://127.0.0.1:9",
    )
    assert s3.full_key("a/b.csv") == "some/prefix/a/b.csv"
    with pytest.raises(StorageError):
        LocalStorage.from_url("file://remote-host/dir")


def _direct_io_works(directory: Path) -> bool:
    """Whether this file system takes O_DIRECT (tmpfs, for one, does not)."""
    direct = getattr(os, "O_DIRECT", 0)
    if not direct:
        return False
    directory.mkdir(parents=True, exist_ok=True)
    probe = directory / ".probe"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | direct, 0o600))
    except OSError:
        return False
    finally:
        probe.unlink(missing_ok=True)
    return True


BATCH = local_storage.LOCAL_WRITE_BATCH


@pytest.mark.parametrize(
    "size", [0, 1, 4095, 4096, 4097, BATCH - 1, BATCH, BATCH + 1, 2 * BATCH + 12345]
)
async def test_every_size_reads_back_exactly(storage: LocalStorage, root: Path, size: int) -> None:
    data = os.urandom(size)
    writer = await storage.open_writer(KEY, content_type="text/csv", file_name="f")
    for start in range(0, size, 1_000_003):
        await writer.write(data[start : start + 1_000_003])
    stored = await writer.complete()
    assert stored.byte_size == size
    assert (root / KEY).read_bytes() == data


async def test_files_are_written_around_the_page_cache_where_the_file_system_allows(
    storage: LocalStorage, root: Path
) -> None:
    if not _direct_io_works(root):
        pytest.skip("this file system does not take O_DIRECT")
    data = os.urandom(BATCH + 5000)
    writer = await storage.open_writer(KEY, content_type="text/csv", file_name="f")
    assert writer._out.direct
    await writer.write(data)
    await writer.complete()
    assert (root / KEY).read_bytes() == data


async def test_a_file_system_refusing_direct_writes_gets_ordinary_ones(
    storage: LocalStorage, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As ramfs does: open() with O_DIRECT creates the file, then fails with EINVAL, and so
    does turning O_DIRECT on later."""
    direct = 0o40000
    real_open, real_fcntl = os.open, fcntl.fcntl

    def refusing_open(path, flags, mode=0o777):  # type: ignore[no-untyped-def]
        if flags & direct:
            os.close(real_open(path, flags & ~direct, mode))
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, mode)

    def refusing_fcntl(fd: int, command: int, arg: int = 0) -> int:
        if command == fcntl.F_SETFL and arg & direct:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_fcntl(fd, command, arg)

    monkeypatch.setattr(local_storage, "_O_DIRECT", direct)
    monkeypatch.setattr(local_storage.os, "open", refusing_open)
    monkeypatch.setattr(local_storage.fcntl, "fcntl", refusing_fcntl)
    data = os.urandom(BATCH + 777)
    writer = await storage.open_writer(KEY, content_type="text/csv", file_name="f")
    assert not writer._out.direct
    await writer.write(data)
    await writer.complete()
    assert (root / KEY).read_bytes() == data
    assert files_under(root) == [KEY]


async def test_directories_it_creates_are_private(tmp_path: Path) -> None:
    root = tmp_path / "new" / "exports"
    storage = LocalStorage.from_url(f"file://{root}")
    async with await storage.open_writer(KEY, content_type="text/csv", file_name="f") as w:
        await w.write(b"data")
        await w.complete()
    created = [tmp_path / "new", root, *(p for p in root.rglob("*") if p.is_dir())]
    assert len(created) == 2 + KEY.count("/")
    assert {stat.S_IMODE(p.stat().st_mode) for p in created} == {0o700}


async def test_a_device_refusing_a_direct_write_midway_gets_the_rest_written_ordinarily(
    storage: LocalStorage, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not _direct_io_works(root):
        pytest.skip("this file system does not take O_DIRECT")
    real_write = os.write
    refused = []

    def refusing_write(fd: int, data: bytes) -> int:
        if not refused:
            refused.append(fd)
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_write(fd, data)

    data = os.urandom(2 * BATCH + 4321)
    writer = await storage.open_writer(KEY, content_type="text/csv", file_name="f")
    await writer.write(data[:BATCH])
    monkeypatch.setattr(local_storage.os, "write", refusing_write)
    await writer.write(data[BATCH:])
    await writer.complete()
    assert refused and not writer._out.direct
    assert (root / KEY).read_bytes() == data


async def test_a_failed_write_aborts_and_leaves_nothing(
    storage: LocalStorage, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full_disk(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    writer = await storage.open_writer(KEY, content_type="text/csv", file_name="f")
    monkeypatch.setattr(local_storage.os, "write", full_disk)
    with pytest.raises(StorageError, match="No space left"):
        await writer.write(b"z" * (2 * BATCH))
        await writer.complete()
    assert files_under(root) == []
