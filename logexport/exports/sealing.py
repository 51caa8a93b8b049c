"""Signed manifests of completed exports, and their copies beside the files.

The manifest is made and signed inside the transaction that commits the export as
``COMPLETED`` (``JobStore.complete``), numbered next in its organization's chain for its
kind; the envelope's text is stored on the export row in that same commit, so a completed
export always has its manifest, and a lost fence leaves none.

The copy beside the object (``<object key>.manifest.json``, private like the file) is
written after the commit, with exactly the bytes stored on the row. When that write fails
(the storage is down, the worker stops), ``manifest_stored_at`` stays NULL and the sweeper
writes it later. A copy is only kept while its export is still completed: when the export
was canceled or expired between the write and its bookkeeping, the writer deletes the copy
again, and the sweeper deletes it with the file of an export that is over.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from logexport import manifests
from logexport.exports.jobs import JobStore, SignedManifest
from logexport.exports.models import LogExport
from logexport.exports.storage import Storage

MANIFEST_CONTENT_TYPE = "application/json"


def manifest_key(storage_key: str) -> str:
    """Where the manifest copy of the object at ``storage_key`` is stored."""
    return storage_key + manifests.MANIFEST_SUFFIX


def sign_export_manifest(
    export: LogExport,
    *,
    sequence: int,
    previous_sha256: str | None,
    snapshot_at: datetime,
    first_row: tuple[str, str] | None,
    last_row: tuple[str, str] | None,
    key: Ed25519PrivateKey,
) -> SignedManifest:
    """The signed manifest of ``export``, just completed (its file recorded on the row).

    ``first_row`` and ``last_row`` are ``(created_at, id)`` as the file holds them.
    """
    assert export.file_name is not None and export.sha256 is not None
    assert export.byte_size is not None and export.row_count is not None
    manifest = manifests.build_manifest(
        export_id=str(export.id),
        organization_id=str(export.organization_id),
        kind=export.kind.value,
        from_time=export.from_time,
        to_time=export.to_time,
        filter=export.filter,
        format=export.format.value,
        compression=export.compression.value,
        file_name=export.file_name,
        row_count=export.row_count,
        byte_size=export.byte_size,
        sha256=export.sha256,
        snapshot_at=snapshot_at,
        first_row=_mark(first_row),
        last_row=_mark(last_row),
        sequence=sequence,
        previous_manifest_sha256=previous_sha256,
        key_id=manifests.key_id(key.public_key()),
    )
    envelope: dict[str, Any] = manifests.sign_manifest(manifest, key)
    return SignedManifest(
        text=manifests.envelope_bytes(envelope).decode(),
        sha256=manifests.manifest_sha256(manifest),
    )


def _mark(row: tuple[str, str] | None) -> manifests.RowMark | None:
    return manifests.RowMark(created_at=row[0], id=row[1]) if row is not None else None


async def write_manifest_copy(
    storage: Storage, *, storage_key: str, file_name: str, text: str
) -> None:
    """Write the envelope ``text`` beside the object; a failed write leaves nothing."""
    data = text.encode()
    writer = await storage.open_writer(
        manifest_key(storage_key),
        content_type=MANIFEST_CONTENT_TYPE,
        file_name=manifests.manifest_name(file_name),
        expected_size=len(data),
    )
    async with writer:
        await writer.write(data)
        await writer.complete()


async def store_manifest_copy(
    storage: Storage,
    store: JobStore,
    *,
    export_id: UUID,
    storage_key: str,
    file_name: str,
    text: str,
    sha256: str,
) -> bool:
    """Write the manifest copy and record it on the export; False (and the copy deleted)
    when the export was canceled or expired meanwhile. Raises ``StorageError`` or a
    database error when either step fails: the copy is then still to be written."""
    await write_manifest_copy(storage, storage_key=storage_key, file_name=file_name, text=text)
    if await store.mark_manifest_stored(export_id, storage_key, sha256):
        return True
    # The export is over: the sweeper may already have removed its file and manifest, so
    # the copy just written must not stay behind.
    await storage.delete(manifest_key(storage_key))
    return False


async def store_completed_manifest(storage: Storage, store: JobStore, export: LogExport) -> bool:
    """``store_manifest_copy`` for an export as ``JobStore.complete`` returned it."""
    assert export.storage_key is not None and export.file_name is not None
    assert export.manifest is not None and export.manifest_sha256 is not None
    return await store_manifest_copy(
        storage,
        store,
        export_id=export.id,
        storage_key=export.storage_key,
        file_name=export.file_name,
        text=export.manifest,
        sha256=export.manifest_sha256,
    )
