"""The job store: every read and change of an export's job row, each a named function.

The worker and the mail loop decide *when* something happens to a job; this module is the
only place that knows *how* its row changes, with the SQL of ``sql/queries/jobs.sql``.

A job is claimed by one worker for one attempt, under a lease the worker renews with each
heartbeat. Every write about a running job is fenced by ``(lease_owner, attempts)``: when
the row no longer matches, the write changes nothing and raises ``JobGone`` with the reason
(the export was canceled, or its lease ran out and went to another worker), so the attempt
only has to clean up after itself.

Liveness: while its listener connection is up, a worker holds a session-level advisory lock
on a 64-bit key of its own (``liveness_key``), and every export it runs records that key.
PostgreSQL drops the lock the moment the connection closes, so a claim sees at once that
the worker died, without waiting for its lease to run out.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from uuid import UUID

import asyncpg

from logexport.db import q
from logexport.exports.audit import FAIL_ACTION, record_export_event
from logexport.exports.models import ExportStatus, LogExport
from logexport.kinds import LOG_KINDS
from logexport.policy import allows, role_of

# The channel a new export is notified on (``notify_export``); workers listen to it.
CHANNEL = "logexport_jobs"
# Asking why a job is no longer ours must not wait long for a database that may itself be
# what failed the attempt.
_WHY_GONE_TIMEOUT = 5.0
_DATABASE_ERRORS = (asyncpg.PostgresError, OSError, asyncpg.InterfaceError, TimeoutError)


@dataclass(frozen=True)
class Fence:
    """Who may write a job's row: this worker, for this attempt."""

    export_id: UUID
    owner: str
    attempt: int

    @property
    def args(self) -> tuple[UUID, str, int]:
        return (self.export_id, self.owner, self.attempt)


class GoneReason(StrEnum):
    """Why an attempt may no longer write its job (the values are metric outcomes)."""

    CANCELED = "canceled"
    LEASE_LOST = "lease_lost"


class JobGone(Exception):
    """A fenced write found the job no longer this attempt's."""

    def __init__(self, reason: GoneReason) -> None:
        super().__init__(reason.value)
        self.reason = reason


@dataclass(frozen=True)
class Claim:
    """A job just claimed, and how long it waited past its run time (seconds)."""

    export: LogExport
    delay: float


@dataclass(frozen=True)
class StoredFile:
    """The object an attempt uploaded: what the completed export points to."""

    key: str
    file_name: str
    content_type: str
    byte_size: int
    row_count: int
    sha256: str


@dataclass(frozen=True)
class SignedManifest:
    """A completed export's signed manifest: the envelope's JSON text, exactly as stored
    beside the object, and the SHA-256 of the manifest's canonical bytes (what the next
    manifest of its chain links to)."""

    text: str
    sha256: str


# Signs the manifest of a just-completed export, given its number in the chain and the
# previous manifest's SHA-256 (None for the first). Runs while the chain's head is locked.
SignManifest = Callable[[LogExport, int, str | None], SignedManifest]


@dataclass(frozen=True)
class UnstoredManifest:
    """A completed export whose manifest copy beside the object is still to be written."""

    export_id: UUID
    storage_key: str
    file_name: str
    manifest: str
    manifest_sha256: str


@dataclass(frozen=True)
class UnadoptedObject:
    """An uploaded object no completed export points to.

    ``settled`` once its export is over and it is older than the settle time: after one more
    delete it is done with for good. ``has_manifest`` when it was a completed export's file,
    whose manifest copy goes with it.
    """

    storage_key: str
    export_id: UUID
    settled: bool
    has_manifest: bool = False


def retry_delay(attempt: int, base: float, cap: float = 300.0) -> float:
    """Capped exponential backoff with jitter (between half and the whole step)."""
    step = min(cap, base * 2 ** max(0, attempt - 1))
    return float(step * random.uniform(0.5, 1.0))


def liveness_key(owner: str, salt: int = 0) -> int:
    """A signed 64-bit advisory lock key for a worker id (``salt`` draws another one)."""
    digest = hashlib.blake2b(f"{owner}#{salt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


# ---------------------------------------------------------------------------- liveness
# These run on the listener's own connection: the lock lives as long as that session.


async def take_liveness_lock(conn: asyncpg.Connection, key: int) -> bool:
    """Lock ``key`` for the session of ``conn``; False when another session holds it."""
    return bool(await conn.fetchval(q("take_liveness_lock"), key))


async def abandoned_export_exists(conn: asyncpg.Connection) -> bool:
    """Whether some running export's worker let go of its liveness lock (it died)."""
    return bool(await conn.fetchval(q("abandoned_export_exists")))


async def requester_may_export(conn: asyncpg.Connection, export: LogExport) -> bool:
    """Whether the export's requester may still export its kind of log."""
    role = await role_of(conn, export.organization_id, export.requested_by)
    return allows(role, LOG_KINDS[export.kind].export_action)


class JobStore:
    """Job-row transitions and reads over a pool; each call takes its own connection."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    # ------------------------------------------------------------------ running jobs

    async def claim(
        self, worker_id: str, *, lease: float, per_org_cap: int, lock_key: int | None
    ) -> Claim | None:
        """Claim the next runnable job for ``worker_id`` (pending, or its worker is gone).

        ``lock_key`` is the claiming worker's liveness lock, None when it holds none (the
        lease alone then tells it is alive).
        """
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(q("claim_lock"))
            record = await conn.fetchrow(q("claim_export"), worker_id, lease, per_org_cap, lock_key)
        if record is None:
            return None
        delay: timedelta = record["claim_delay"]
        return Claim(LogExport.from_record(record), max(0.0, delay.total_seconds()))

    async def heartbeat(
        self, fence: Fence, *, lease: float, rows: int, lock_key: int | None
    ) -> None:
        """Renew the lease for ``lease`` seconds, store progress and the current lock key."""
        async with self.pool.acquire() as conn:
            alive = await conn.fetchval(q("heartbeat"), *fence.args, lease, rows, lock_key)
        if alive is None:
            raise await self.gone(fence)

    async def record_object_key(self, fence: Fence, key: str) -> None:
        """Note an object about to be uploaded, so the sweeper finds it if nothing adopts it."""
        async with self.pool.acquire() as conn:
            recorded = await conn.fetchval(q("record_object_key"), *fence.args, key)
        if recorded is None:
            raise await self.gone(fence)

    async def set_snapshot_time(self, fence: Fence, snapshot_at: datetime) -> None:
        """Store the time of the snapshot the export reads (no effect once the job is gone)."""
        async with self.pool.acquire() as conn:
            await conn.execute(q("set_snapshot_time"), *fence.args, snapshot_at)

    async def complete(
        self,
        fence: Fence,
        stored: StoredFile,
        *,
        link_ttl: float,
        before_commit: Callable[[asyncpg.Connection], Awaitable[None]],
        sign: SignManifest,
    ) -> LogExport:
        """Adopt ``stored``, mark the export COMPLETED, its ready email due, and record its
        signed manifest, numbered next in its organization's chain for its kind.

        ``before_commit`` runs in the same transaction first; raising there commits nothing.
        The chain's head is locked only once the fenced update has succeeded, and until the
        commit: a lost fence touches no chain, and a failure after the number was taken
        rolls the number back with everything else, so numbers are never skipped or shared.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            await before_commit(conn)
            record = await conn.fetchrow(
                q("complete_export"),
                *fence.args,
                stored.key,
                stored.file_name,
                stored.content_type,
                stored.byte_size,
                stored.row_count,
                stored.sha256,
                link_ttl,
            )
            if record is not None:
                record = await self._chain_manifest(conn, LogExport.from_record(record), sign)
        if record is None:
            raise await self.gone(fence)
        return LogExport.from_record(record)

    async def _chain_manifest(
        self, conn: asyncpg.Connection, export: LogExport, sign: SignManifest
    ) -> asyncpg.Record:
        kind = export.kind.value
        head = await conn.fetchrow(q("advance_manifest_chain"), export.organization_id, kind)
        signed = sign(export, head["sequence"], head["previous_sha256"])
        record = await conn.fetchrow(
            q("store_manifest"),
            export.id,
            export.organization_id,
            kind,
            head["sequence"],
            signed.text,
            signed.sha256,
        )
        if record is None:
            # The head is locked by this transaction: it cannot have moved.
            raise RuntimeError("the manifest chain head changed under its lock")
        return record

    async def mark_manifest_stored(self, export_id: UUID, storage_key: str, sha256: str) -> bool:
        """Record that the manifest copy beside ``storage_key`` is written; False when the
        export is no longer completed with that file and manifest (its copy must go)."""
        async with self.pool.acquire() as conn:
            marked = await conn.fetchval(q("mark_manifest_stored"), export_id, storage_key, sha256)
        return marked is not None

    async def unstored_manifests(self, limit: int, after: float) -> list[UnstoredManifest]:
        """Completed exports, done at least ``after`` seconds ago, whose manifest copy beside
        the object was never written."""
        async with self.pool.acquire() as conn:
            records = await conn.fetch(q("manifests_to_store"), limit, after)
        return [
            UnstoredManifest(
                r["id"], r["storage_key"], r["file_name"], r["manifest"], r["manifest_sha256"]
            )
            for r in records
        ]

    async def retry(self, fence: Fence, *, delay: float, code: str, message: str) -> None:
        """Put the job back in the queue to run again after ``delay`` seconds."""
        async with self.pool.acquire() as conn:
            await conn.execute(q("retry_export"), *fence.args, delay, code, message)

    async def fail(self, fence: Fence, *, code: str, message: str, email: bool) -> LogExport | None:
        """Mark the export FAILED for good and audit it; ``email`` makes its failure email due.

        None when the job was no longer this attempt's (nothing changed).
        """
        async with self.pool.acquire() as conn, conn.transaction():
            record = await conn.fetchrow(q("fail_export"), *fence.args, email, code, message)
            if record is None:
                return None
            export = LogExport.from_record(record)
            await record_export_event(
                conn,
                export,
                FAIL_ACTION,
                actor=None,
                extra={"error_code": code, "attempts": export.attempts},
            )
        return export

    async def hand_back(self, fence: Fence) -> None:
        """Back to the queue at once, the attempt not counted (the worker is shutting down)."""
        async with self.pool.acquire() as conn:
            await conn.execute(q("hand_back_export"), *fence.args)

    async def why_gone(self, fence: Fence) -> GoneReason | None:
        """Why this attempt may no longer write the job, or None while it still may.

        None as well when the database cannot say within a few seconds.
        """
        try:
            async with asyncio.timeout(_WHY_GONE_TIMEOUT), self.pool.acquire() as conn:
                fate = await conn.fetchrow(q("export_fate"), *fence.args)
        except _DATABASE_ERRORS:
            return None
        if fate is None:
            return GoneReason.LEASE_LOST
        if fate["ours"]:
            return None
        if fate["status"] == ExportStatus.CANCELED.value:
            return GoneReason.CANCELED
        return GoneReason.LEASE_LOST

    async def gone(self, fence: Fence) -> JobGone:
        """The reason to give up after a fenced write found no row."""
        return JobGone(await self.why_gone(fence) or GoneReason.LEASE_LOST)

    # ------------------------------------------------------------------ emails

    async def claim_due_emails(self, limit: int, lease: float) -> list[LogExport]:
        """Exports whose ready or failure email is due, leased for ``lease`` seconds so that
        no other worker sends them meanwhile."""
        async with self.pool.acquire() as conn:
            records = await conn.fetch(q("claim_due_emails"), limit, lease)
        return [LogExport.from_record(r) for r in records]

    async def mark_emailed(self, export_id: UUID) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute(q("mark_emailed"), export_id)

    async def retry_email(self, export_id: UUID, delay: float) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute(q("retry_email"), export_id, delay)

    async def drop_email(self, export_id: UUID) -> None:
        """The email will not be sent (its requester lost access, or it failed too often)."""
        async with self.pool.acquire() as conn:
            await conn.execute(q("drop_email"), export_id)

    # ------------------------------------------------------------------ sweeping

    async def expire_exports(self) -> list[tuple[UUID, UUID]]:
        """Mark EXPIRED the completed exports past their link TTL: ``(id, organization_id)``."""
        async with self.pool.acquire() as conn:
            records = await conn.fetch(q("expire_exports"))
        return [(r["id"], r["organization_id"]) for r in records]

    async def unadopted_objects(self, limit: int, settle: float) -> list[UnadoptedObject]:
        """Objects no commit adopted (or whose export is over) and no live attempt writes."""
        async with self.pool.acquire() as conn:
            records = await conn.fetch(q("unadopted_objects"), limit, settle)
        return [
            UnadoptedObject(r["storage_key"], r["export_id"], r["settled"], r["has_manifest"])
            for r in records
        ]

    async def mark_object_deleted(self, storage_key: str) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute(q("mark_object_deleted"), storage_key)
