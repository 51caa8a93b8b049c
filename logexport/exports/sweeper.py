"""The sweeper: housekeeping that no single export owns, run by every worker now and then.

It expires exports past their link time, deletes uploaded objects that no commit adopted
(an attempt that crashed, lost its lease or was canceled leaves its upload behind) together
with the manifest copy of a file whose export is over, writes the manifest copies that
could not be written right after their commit, and purges download tokens and console
sessions long past use. Several workers may sweep
at once: each step is idempotent, and an object is deleted again on later sweeps until it
has settled, so a slow writer cannot leave one behind.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import timedelta

import asyncpg

from logexport.db import q
from logexport.exports.downloads import purge_expired_download_tokens
from logexport.exports.jobs import JobStore
from logexport.exports.sealing import manifest_key, store_manifest_copy
from logexport.exports.storage import Storage, StorageError

log = logging.getLogger("logexport.worker")

SWEEP_SETTLE = 600.0  # an unadopted key is deleted again until this long after the job ends
# A manifest copy missing this long after its commit was not written by the completing
# worker (its storage failed, or it stopped): the sweeper writes it.
MANIFEST_STORE_AFTER = 60.0
_SWEEP_BATCH = 100
# Ended console sessions are kept a day, so a sign-in page can still tell "signed out".
_ENDED_SESSIONS_KEPT = timedelta(days=1)


class Sweeper:
    def __init__(self, pool: asyncpg.Pool, storage: Storage) -> None:
        self._pool = pool
        self._store = JobStore(pool)
        self._storage = storage

    async def run(self, interval: float, stopping: Callable[[], bool]) -> None:
        """Sweep every ``interval`` seconds until ``stopping()``; a failed sweep is retried
        at the next."""
        while not stopping():
            try:
                await self.sweep()
            except Exception as exc:
                log.warning("sweep failed", extra={"error": type(exc).__name__})
            await asyncio.sleep(interval)

    async def sweep(
        self, *, settle: float = SWEEP_SETTLE, manifest_after: float = MANIFEST_STORE_AFTER
    ) -> int:
        """One pass; returns how many unadopted objects it found."""
        for export_id, organization_id in await self._store.expire_exports():
            log.info(
                "export expired",
                extra={"export_id": str(export_id), "organization_id": str(organization_id)},
            )
        orphans = await self._store.unadopted_objects(_SWEEP_BATCH, settle)
        async with self._pool.acquire() as conn:
            await purge_expired_download_tokens(conn)
            # By name rather than through the console's module: the worker does not load the
            # web layer.
            await conn.fetchval(q("purge_console_sessions"), _ENDED_SESSIONS_KEPT)
        for orphan in orphans:
            try:
                if orphan.has_manifest:
                    # The manifest record stays on the export; only the copy goes.
                    await self._storage.delete(manifest_key(orphan.storage_key))
                await self._storage.delete(orphan.storage_key)
            except StorageError as exc:
                # One key the store refuses must not hold up the others; it is tried again
                # at the next sweep.
                log.warning(
                    "sweep could not delete an object",
                    extra={"export_id": str(orphan.export_id), "error": str(exc)},
                )
                continue
            if orphan.settled:
                await self._store.mark_object_deleted(orphan.storage_key)
        await self._store_missing_manifests(manifest_after)
        return len(orphans)

    async def _store_missing_manifests(self, after: float) -> None:
        for missing in await self._store.unstored_manifests(_SWEEP_BATCH, after):
            try:
                await store_manifest_copy(
                    self._storage,
                    self._store,
                    export_id=missing.export_id,
                    storage_key=missing.storage_key,
                    file_name=missing.file_name,
                    text=missing.manifest,
                    sha256=missing.manifest_sha256,
                )
            except StorageError as exc:
                log.warning(
                    "sweep could not store a manifest copy",
                    extra={"export_id": str(missing.export_id), "error": str(exc)},
                )
