"""What every storage backend offers the pipeline, the download route and the sweeper.

Keys are relative (``<export_id>/attempt-<n>/<file name>``); each backend places them under
its own root. ``StorageError`` messages are fit for logs (they never carry credentials) but
not for users: surfaces show a generic failure instead.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self

MiB = 1 << 20
GiB = 1 << 30


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


class _AsyncContext(Protocol):
    async def __aenter__(self) -> Self: ...
    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class ObjectWriter(_AsyncContext, Protocol):
    """One object being written. Leaving its block without ``complete()`` aborts it."""

    async def write(self, data: bytes) -> None: ...
    async def complete(self) -> StoredObject: ...
    async def abort(self) -> None: ...


class Storage(_AsyncContext, Protocol):
    """A backend. Leaving its block closes it."""

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


def validate_key(key: str) -> list[str]:
    """Split a relative key into its segments, refusing anything that could escape a root."""
    if not key or key.startswith("/") or "\\" in key or "\x00" in key:
        raise InvalidKey("storage keys must be relative paths")
    segments = key.split("/")
    if any(s in ("", ".", "..") for s in segments):
        raise InvalidKey("storage keys must not contain empty, '.' or '..' segments")
    return segments


class ExitCalls:
    """``async with`` on the object itself; leaving the block awaits ``on_exit``.

    Stores close when their block ends; writers abort, which does nothing once complete,
    so leaving a writer's block any other way (an exception, a cancel) drops the upload.
    """

    async def on_exit(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.on_exit()
