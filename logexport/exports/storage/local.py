"""Export files under one local directory, for single-machine installs and development."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import mmap
import os
import secrets
from collections.abc import AsyncIterator
from urllib.parse import unquote, urlsplit

from logexport.exports.storage.base import (
    ExitCalls,
    InvalidKey,
    MiB,
    ObjectNotFound,
    StorageError,
    StoredObject,
    validate_key,
)

log = logging.getLogger(__name__)

# Writes are gathered into batches this large before a thread writes them.
LOCAL_WRITE_BATCH = 4 * MiB
# Direct writes start and end on this boundary (a page: what every common disk accepts).
_BLOCK = mmap.PAGESIZE
_O_DIRECT = getattr(os, "O_DIRECT", 0)


class LocalStorage(ExitCalls):
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
        return await asyncio.to_thread(_LocalWriter.create, key, self.path_for(key))

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

    async def on_exit(self) -> None:
        await self.aclose()


def _make_private_directories(directory: str) -> None:
    """``directory`` and whichever of its parents are missing, each for this user only
    (``os.makedirs`` gives the parents it creates the umask's permissions)."""
    missing = []
    while not os.path.isdir(directory):
        missing.append(directory)
        directory = os.path.dirname(directory)
    for path in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700)


class _FileOut:
    """The temporary file's descriptor, written around the page cache where it can be.

    An export file is written once and read rarely; through the page cache it would push
    out what the database and the rest of the machine keep there, and the final ``fsync``
    would wait for all of it. ``O_DIRECT`` takes block-aligned writes from page-aligned
    memory straight to the disk. Where the file system refuses it (ramfs, tmpfs before Linux
    6.6, some network and overlay file systems, systems without it) the file is written the
    usual way.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.direct = False

    @classmethod
    def create(cls, path: str) -> _FileOut:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        out = cls(os.open(path, flags, 0o600))
        # Direct writes are asked for once the file exists: a file system refusing them at
        # open() may have created the file by then, and a second open() would find it.
        out._try_direct()
        return out

    def write(self, data: memoryview) -> None:
        while data:
            try:
                written = os.write(self.fd, data)
            except OSError as exc:
                if not (self.direct and exc.errno == errno.EINVAL):
                    raise
                # The device wants larger alignment than a page: carry on buffered.
                self._stop_direct()
                continue
            data = data[written:]

    def finish(self, batch: mmap.mmap, filled: int, size: int) -> None:
        """Write the last batch, partly filled; the file is then exactly ``size`` bytes, on
        disk. A direct write is whole blocks: the batch is padded, then the file cut back."""
        with memoryview(batch) as view:
            if self.direct and filled % _BLOCK:
                padded = -(-filled // _BLOCK) * _BLOCK
                view[filled:padded] = bytes(padded - filled)
                self.write(view[:padded])
                os.ftruncate(self.fd, size)
            else:
                self.write(view[:filled])
        os.fsync(self.fd)

    def _try_direct(self) -> None:
        """Ask for direct writes; where the file system refuses, writes stay ordinary."""
        if _O_DIRECT:
            with contextlib.suppress(OSError):
                fcntl.fcntl(self.fd, fcntl.F_SETFL, fcntl.fcntl(self.fd, fcntl.F_GETFL) | _O_DIRECT)
                self.direct = True

    def _stop_direct(self) -> None:
        fcntl.fcntl(self.fd, fcntl.F_SETFL, fcntl.fcntl(self.fd, fcntl.F_GETFL) & ~_O_DIRECT)
        self.direct = False

    def close(self) -> None:
        """Close once: after a failed rename the abort closes again, and the number may
        by then belong to another file."""
        fd, self.fd = self.fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)


class _LocalWriter(ExitCalls):
    """Bytes gathered into one of two page-aligned batches; while a thread writes one, the
    other fills."""

    def __init__(self, key: str, path: str, temp_path: str, out: _FileOut) -> None:
        self.key = key
        self.path = path
        self.temp_path = temp_path
        self._out = out
        self._batches = [mmap.mmap(-1, LOCAL_WRITE_BATCH) for _ in range(2)]
        self._filled = 0  # bytes in the batch being filled, self._batches[0]
        self._writing: asyncio.Future[None] | None = None
        self._size = 0
        self._done = False
        self._result: StoredObject | None = None

    @classmethod
    def create(cls, key: str, path: str) -> _LocalWriter:
        """A writer on a new hidden temporary file beside ``path`` (blocking: run in a thread)."""
        directory, name = os.path.split(path)
        temp_path = os.path.join(directory, f".{name}.part-{secrets.token_hex(8)}")
        try:
            _make_private_directories(directory)
            out = _FileOut.create(temp_path)
        except OSError as exc:
            raise StorageError(f"cannot create {key}: {exc.strerror}") from exc
        return cls(key, path, temp_path, out)

    async def on_exit(self) -> None:
        await self.abort()

    async def write(self, data: bytes) -> None:
        if self._done:
            raise StorageError("writer is already closed")
        self._size += len(data)
        with memoryview(data) as view:
            while view:
                batch = self._batches[0]
                taken = min(len(view), LOCAL_WRITE_BATCH - self._filled)
                batch[self._filled : self._filled + taken] = view[:taken]
                self._filled += taken
                view = view[taken:]
                if self._filled == LOCAL_WRITE_BATCH:
                    await self._write_batch()

    async def _write_batch(self) -> None:
        """Start writing the full batch, once the one before it is written."""
        await self._written()
        batch = self._batches[0]
        self._batches.reverse()
        self._filled = 0
        self._writing = asyncio.ensure_future(asyncio.to_thread(self._out.write, memoryview(batch)))

    async def _written(self) -> None:
        writing, self._writing = self._writing, None
        if writing is None:
            return
        try:
            await writing
        except OSError as exc:
            await self.abort()
            raise StorageError(f"cannot write {self.key}: {exc.strerror}") from exc

    async def complete(self) -> StoredObject:
        if self._result is not None:
            return self._result
        if self._done:
            raise StorageError("writer was aborted")
        await self._written()
        try:
            await asyncio.to_thread(self._finish_sync)
        except OSError as exc:
            await self.abort()
            raise StorageError(f"cannot store {self.key}: {exc.strerror}") from exc
        self._done = True
        self._result = StoredObject(key=self.key, byte_size=self._size)
        self._release()
        return self._result

    def _finish_sync(self) -> None:
        self._out.finish(self._batches[0], self._filled, self._size)
        self._out.close()
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
        writing, self._writing = self._writing, None
        try:
            if writing is not None:
                # The thread is still using a batch and the file.
                await asyncio.shield(asyncio.wait([writing]))
            await asyncio.shield(asyncio.to_thread(self._remove_temp_sync))
        except Exception:
            log.warning("could not remove temporary file for %s", self.key, exc_info=True)
        self._release()

    def _release(self) -> None:
        for batch in self._batches:
            # A thread cut off by cancellation may still hold it: then it goes with its view.
            with contextlib.suppress(BufferError):
                batch.close()
        self._batches = []

    def _remove_temp_sync(self) -> None:
        self._out.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.temp_path)
