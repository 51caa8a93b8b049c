"""Export files under one local directory, for single-machine installs and development."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
from collections.abc import AsyncIterator
from io import BufferedWriter
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

# Small writes are gathered into batches this large before a thread writes them.
LOCAL_WRITE_BATCH = 1 * MiB


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


class _LocalWriter(ExitCalls):
    def __init__(self, key: str, path: str, temp_path: str, file: BufferedWriter) -> None:
        self.key = key
        self.path = path
        self.temp_path = temp_path
        self._file = file
        self._buffer = bytearray()
        self._size = 0
        self._done = False
        self._result: StoredObject | None = None

    @classmethod
    def create(cls, key: str, path: str) -> _LocalWriter:
        """A writer on a new hidden temporary file beside ``path`` (blocking: run in a thread)."""
        directory, name = os.path.split(path)
        temp_path = os.path.join(directory, f".{name}.part-{secrets.token_hex(8)}")
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
            file = os.fdopen(os.open(temp_path, flags, 0o600), "wb")
        except OSError as exc:
            raise StorageError(f"cannot create {key}: {exc.strerror}") from exc
        return cls(key, path, temp_path, file)

    async def on_exit(self) -> None:
        await self.abort()

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
        self._file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.temp_path)
