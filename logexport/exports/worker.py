"""The export worker: listen, claim, lease, run, retry, mail, sweep, shut down (SPEC §4).

One ``Worker`` runs inside any asyncio program (``async with Worker(settings):``) and is
what ``logexport worker`` and ``logexport serve`` start. Its side tasks:

    listener   a dedicated ``LISTEN`` connection that wakes the claim loop, health-checked
               and reconnected with backoff (a reconnect claims at once); it also holds the
               worker's liveness lock and looks every second for exports of dead workers;
    claimer    claims jobs while slots are free, on a wake-up or every poll interval;
    jobs       one task per running export, each with a heartbeat on another connection;
    mailer     sends due ready/failure emails (at least once, retried on its own);
    sweeper    expires old exports and deletes objects that no commit adopted.

Every write about a job is fenced by ``(lease_owner, attempts)``: a worker that lost its
lease can no longer change anything, it only aborts its upload.

Liveness: while its listener connection is up, a worker holds a session-level advisory lock
on a 64-bit key of its own, and every export it runs records that key. PostgreSQL drops the
lock the moment the connection closes, so when a worker dies its exports are claimable at
once instead of when their lease runs out. The lease stays the fence and the fallback: for a
worker whose connection hangs instead of closing, and for poll-only workers (a PgBouncer in
transaction mode cannot keep a session lock), whose exports record no key.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from types import TracebackType
from typing import Any, Self

import asyncpg

from logexport import db
from logexport.config import Settings
from logexport.db import q
from logexport.exports.audit import FAIL_ACTION, record_export_event
from logexport.exports.delivery import (
    compose_failed_email,
    compose_ready_email,
    purge_expired_download_tokens,
)
from logexport.exports.filenames import content_type, export_file_name, object_key
from logexport.exports.mailer import MailError, send_message
from logexport.exports.models import ExportStatus, LogExport
from logexport.exports.pipeline import ExportResult, ExportSpec, Progress, run_export
from logexport.exports.storage import Storage, StorageError, StoredObject, storage_from_settings
from logexport.metrics import WorkerMetrics
from logexport.policy import allows, role_of

log = logging.getLogger("logexport.worker")

CHANNEL = "logexport_jobs"
REQUESTER_NOT_AUTHORIZED = "REQUESTER_NOT_AUTHORIZED"
_LISTENER_BACKOFF = (0.1, 10.0)
_EMAIL_LEASE = 120.0
_EMAIL_RETRY_CAP = 600.0
_EMAIL_MAX_ATTEMPTS = 50
_PROGRESS_INTERVAL = 2.0
_SWEEP_SETTLE = 600.0  # an unadopted key is deleted again until this long after the job ends
# Ended console sessions are kept a day, so a sign-in page can still tell "signed out".
_ENDED_SESSIONS_KEPT = timedelta(days=1)
# How often the listener connection looks for exports whose worker died: the bound on how
# long such an export waits before it is claimed again.
_LIVENESS_PROBE = 1.0
_LIVENESS_KEY_TRIES = 8

SendMail = Callable[[Settings, EmailMessage], Awaitable[None]]


@dataclass(frozen=True)
class Fence:
    """Who may write a job's row: this worker, for this attempt."""

    export_id: uuid.UUID
    owner: str
    attempt: int

    @property
    def args(self) -> tuple[uuid.UUID, str, int]:
        return (self.export_id, self.owner, self.attempt)


class _JobGone(Exception):
    """A fenced write found the job no longer this attempt's."""


class _LeaseLost(_JobGone):
    """The lease ran out and the job went back to the queue or to another worker."""


class _Canceled(_JobGone):
    """Someone canceled the export while it ran."""


class _Failure(Exception):
    """An attempt failed with a code and a message safe to show the requester."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def retry_delay(attempt: int, base: float, cap: float = 300.0) -> float:
    """Capped exponential backoff with jitter (between half and the whole step)."""
    step = min(cap, base * 2 ** max(0, attempt - 1))
    return float(step * random.uniform(0.5, 1.0))


def liveness_key(owner: str, salt: int = 0) -> int:
    """A signed 64-bit advisory lock key for a worker id (``salt`` draws another one)."""
    digest = hashlib.blake2b(f"{owner}#{salt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _classify(exc: BaseException) -> _Failure:
    if isinstance(exc, _Failure):
        return exc
    if isinstance(exc, StorageError):
        return _Failure("STORAGE_ERROR", "The file could not be stored")
    if isinstance(exc, (asyncpg.PostgresError, OSError, asyncpg.InterfaceError)):
        return _Failure("DATABASE_ERROR", "The log could not be read")
    return _Failure("INTERNAL", "The export failed unexpectedly")


class Worker:
    def __init__(
        self,
        settings: Settings,
        *,
        concurrency: int | None = None,
        pool: asyncpg.Pool | None = None,
        storage: Storage | None = None,
        worker_id: str | None = None,
        send_mail: SendMail = send_message,
        metrics: WorkerMetrics | None = None,
        retry_base: float | None = None,
        sweep_interval: float | None = None,
    ) -> None:
        self.settings = settings
        self.concurrency = concurrency or settings.worker_concurrency
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.metrics = metrics or WorkerMetrics()
        self.retry_base = settings.worker_retry_base if retry_base is None else retry_base
        self.sweep_interval = sweep_interval or max(settings.worker_poll_interval, 1.0)
        self._send_mail = send_mail
        self._pool = pool
        self._owns_pool = pool is None
        self._export_pool: asyncpg.Pool | None = None
        self._storage = storage
        self._owns_storage = storage is None
        self._wake = asyncio.Event()
        self._mail_wake = asyncio.Event()
        self._stopping = False
        self._handing_back = False
        self._jobs: dict[uuid.UUID, asyncio.Task[None]] = {}
        self._side_tasks: list[asyncio.Task[None]] = []
        self.listener_connected = False
        # The liveness lock key held right now by the listener connection, if any.
        self.lock_key: int | None = None
        self.started = False

    # ------------------------------------------------------------------ lifecycle

    @property
    def pool(self) -> asyncpg.Pool:
        assert self._pool is not None, "the worker is not started"
        return self._pool

    @property
    def storage(self) -> Storage:
        assert self._storage is not None, "the worker is not started"
        return self._storage

    @property
    def running_exports(self) -> list[uuid.UUID]:
        return list(self._jobs)

    async def start(self) -> None:
        if self._pool is None:
            self._pool = await db.create_pool(
                self.settings.database_url, min_size=1, max_size=self.concurrency + 4
            )
        self._export_pool = await db.create_pool(
            self.settings.snapshot_database_url, min_size=0, max_size=self.concurrency
        )
        if self._storage is None:
            self._storage = storage_from_settings(self.settings)
        spawn = asyncio.get_running_loop().create_task
        if not self.settings.worker_poll_only:
            self._side_tasks.append(spawn(self._listen(), name="logexport-listener"))
        self._side_tasks += [
            spawn(self._claim_loop(), name="logexport-claimer"),
            spawn(self._mail_loop(), name="logexport-mailer"),
            spawn(self._sweep_loop(), name="logexport-sweeper"),
        ]
        self.started = True
        log.info("worker started", extra={"worker_id": self.worker_id})

    async def stop(self, grace: float | None = None) -> None:
        """Stop claiming; let running exports finish within ``grace``, then hand back the rest."""
        if not self.started:
            return
        self._stopping = True
        self._wake.set()
        grace = self.settings.shutdown_grace if grace is None else grace
        running = list(self._jobs.values())
        if running:
            log.info("waiting for running exports", extra={"count": len(running)})
            _, still_running = await asyncio.wait(running, timeout=grace)
            if still_running:
                self._handing_back = True
                for task in still_running:
                    task.cancel()
                await asyncio.gather(*still_running, return_exceptions=True)
        for task in self._side_tasks:
            task.cancel()
        await asyncio.gather(*self._side_tasks, return_exceptions=True)
        self._side_tasks.clear()
        if self._export_pool is not None:
            await self._export_pool.close()
        if self._owns_storage and self._storage is not None:
            await self._storage.aclose()
            self._storage = None
        if self._owns_pool and self._pool is not None:
            await self._pool.close()
            self._pool = None
        self.started = False
        log.info("worker stopped", extra={"worker_id": self.worker_id})

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def wake(self) -> None:
        self._wake.set()

    # ------------------------------------------------------------------ listener

    def _on_notify(self, *_: Any) -> None:
        self._wake.set()

    def _listening(self) -> bool:
        # The liveness lock must outlive the exports still finishing in a shutdown grace:
        # without it, other workers would take them over as if this one had died.
        return not self._stopping or bool(self._jobs)

    async def _listen(self) -> None:
        delay = _LISTENER_BACKOFF[0]
        while self._listening():
            conn: asyncpg.Connection | None = None
            lost = asyncio.Event()
            try:
                conn = await asyncio.wait_for(
                    asyncpg.connect(self.settings.database_url), timeout=10
                )
                assert conn is not None
                conn.add_termination_listener(_setter(lost))
                await conn.fetchval(q("keep_connection_alive"))
                await conn.add_listener(CHANNEL, self._on_notify)
                self.lock_key = await self._take_liveness_lock(conn)
                self.listener_connected = True
                delay = _LISTENER_BACKOFF[0]
                # Anything notified while we were away is claimable now.
                self._wake.set()
                log.info("listener connected", extra={"liveness_lock": self.lock_key is not None})
                probe_every = min(self.settings.worker_poll_interval, _LIVENESS_PROBE)
                while self._listening():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), probe_every)
                    if lost.is_set():
                        raise ConnectionError("listener connection closed")
                    # Doubles as the connection's health check.
                    abandoned = await asyncio.wait_for(
                        conn.fetchval(q("abandoned_export_exists")), timeout=5
                    )
                    if abandoned and len(self._jobs) < self.concurrency:
                        self._wake.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "listener connection lost; reconnecting", extra={"error": type(exc).__name__}
                )
            finally:
                self.listener_connected = False
                # Whatever runs now records no key (the lease alone speaks for it) until
                # the next connection holds a lock again.
                self.lock_key = None
                if conn is not None:
                    conn.terminate()
            if not self._listening():
                return
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, _LISTENER_BACKOFF[1])

    async def _take_liveness_lock(self, conn: asyncpg.Connection) -> int | None:
        """Lock this worker's key on ``conn`` for the connection's lifetime.

        A key is busy when another worker's id hashes to it, or when this worker's previous
        connection is not yet gone on the server's side: then another key is drawn. Running
        exports pick up the new key at their next heartbeat.
        """
        for salt in range(_LIVENESS_KEY_TRIES):
            key = liveness_key(self.worker_id, salt)
            if await conn.fetchval(q("take_liveness_lock"), key):
                return key
        log.warning("no free liveness lock key; running exports rely on their lease alone")
        return None

    # ------------------------------------------------------------------ claiming

    async def _claim_loop(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.worker_poll_interval)
            self._wake.clear()
            while not self._stopping and len(self._jobs) < self.concurrency:
                try:
                    export = await self._claim()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("claim failed", extra={"error": type(exc).__name__})
                    break
                if export is None:
                    break
                task = asyncio.get_running_loop().create_task(
                    self._run_job(export), name=f"logexport-export-{export.id}"
                )
                self._jobs[export.id] = task
                task.add_done_callback(functools.partial(self._job_done, export.id))

    def _job_done(self, export_id: uuid.UUID, _task: asyncio.Task[None]) -> None:
        self._jobs.pop(export_id, None)
        self._wake.set()

    async def _claim(self) -> LogExport | None:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(q("claim_lock"))
            record = await conn.fetchrow(
                q("claim_export"),
                self.worker_id,
                self.settings.worker_lease,
                self.settings.max_running_exports_per_org,
                self.lock_key,
            )
        if record is None:
            return None
        self.metrics.claim_latency.observe(max(0.0, record["claim_delay"].total_seconds()))
        return LogExport.from_record(record)

    async def claim_once(self) -> LogExport | None:
        """Claim one job without running it (tests and tools)."""
        return await self._claim()

    # ------------------------------------------------------------------ one export

    async def _requester_may_export(self, conn: asyncpg.Connection, export: LogExport) -> bool:
        role = await role_of(conn, export.organization_id, export.requested_by)
        return allows(role, export.kind.export_action)

    async def _run_job(self, export: LogExport) -> None:
        fence = Fence(export.id, self.worker_id, export.attempts)
        ids = {"export_id": str(export.id), "organization_id": str(export.organization_id)}
        started = time.monotonic()
        try:
            async with self.pool.acquire() as conn:
                if export.attempts > self.settings.worker_max_attempts:
                    await self._fail(conn, fence, _Failure("MAX_ATTEMPTS", _gave_up(export)))
                    return
                if not await self._requester_may_export(conn, export):
                    await self._fail(
                        conn,
                        fence,
                        _Failure(
                            REQUESTER_NOT_AUTHORIZED,
                            "The requester is no longer allowed to export this log",
                        ),
                        email=False,
                    )
                    return
            log.info("export started", extra={**ids, "attempt": export.attempts})
            await self._attempt(export, fence)
            self.metrics.export_duration.observe(time.monotonic() - started)
        except asyncio.CancelledError:
            if self._handing_back:
                await self._shielded(self._hand_back(fence))
            raise
        except _JobGone as gone:
            self._note_gone(gone, ids)
        except Exception as exc:
            # An error may only be the consequence of a cancel or a lost lease (the sweeper
            # aborts the upload of a canceled export under the writer's feet): then the job
            # is not ours to fail or retry.
            why = await self._why_gone(fence)
            if why is not None:
                self._note_gone(why, ids)
                return
            failure = _classify(exc)
            self.metrics.failures.inc()
            log.warning(
                "export attempt failed",
                extra={
                    **ids,
                    "attempt": export.attempts,
                    "code": failure.code,
                    "error": type(exc).__name__,
                },
                exc_info=not isinstance(exc, (_Failure, StorageError)),
            )
            await self._shielded(self._after_failure(export, fence, failure))

    def _note_gone(self, gone: _JobGone, ids: dict[str, str]) -> None:
        if isinstance(gone, _Canceled):
            self.metrics.exports_finished.inc(outcome="canceled")
            log.info("export canceled; upload aborted", extra=ids)
        else:
            self.metrics.exports_finished.inc(outcome="lease_lost")
            log.warning("lease lost; upload aborted", extra=ids)

    async def _why_gone(self, fence: Fence) -> _JobGone | None:
        """Why this attempt may no longer write the job, or None while it still may."""
        try:
            # Bounded: when the database itself is what failed, the failure path must not
            # wait for it here as well.
            async with asyncio.timeout(5), self.pool.acquire() as conn:
                fate = await conn.fetchrow(q("export_fate"), *fence.args)
        except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError, TimeoutError):
            return None
        if fate is None:
            return _LeaseLost()
        if fate["ours"]:
            return None
        return _Canceled() if fate["status"] == ExportStatus.CANCELED.value else _LeaseLost()

    async def _not_ours(self, fence: Fence) -> _JobGone:
        """The reason to give up after a fenced write found no row."""
        return await self._why_gone(fence) or _LeaseLost()

    async def _shielded(self, coro: Awaitable[Any]) -> None:
        """Bookkeeping that must not be cut short by a cancellation."""
        try:
            await asyncio.shield(coro)
        except Exception as exc:
            log.warning("bookkeeping failed", extra={"error": type(exc).__name__})

    async def _attempt(self, export: LogExport, fence: Fence) -> None:
        file_name = export_file_name(
            export.kind, export.from_time, export.to_time, export.format, export.compression
        )
        mime = content_type(export.format, export.compression)
        key = object_key(export.id, export.attempts, file_name, claim=uuid.uuid4().hex[:8])
        async with self.pool.acquire() as conn:
            if await conn.fetchval(q("record_object_key"), *fence.args, key) is None:
                raise await self._not_ours(fence)

        progress = Progress()
        spec = ExportSpec.of(export)

        async def on_snapshot(snapshot_at: datetime) -> None:
            async with self.pool.acquire() as conn:
                await conn.execute(q("set_snapshot_time"), *fence.args, snapshot_at)

        writer = await self.storage.open_writer(key, content_type=mime, file_name=file_name)
        snapshot_token = id(progress)
        assert self._export_pool is not None

        async def export_and_store() -> tuple[ExportResult, StoredObject]:
            result = await self._export_with_snapshot(
                spec, writer, progress, on_snapshot, snapshot_token
            )
            # The last parts may take longest to upload: the lease must outlive them too.
            return result, await writer.complete()

        try:
            async with asyncio.TaskGroup() as group:
                export_task = group.create_task(export_and_store())
                heartbeat = group.create_task(self._heartbeat(fence, progress))
                await export_task
                heartbeat.cancel()
        except BaseException as exc:
            await asyncio.shield(writer.abort())
            gone = _gone_in(exc)
            if gone is not None:
                raise gone from None
            if isinstance(exc, BaseExceptionGroup):
                raise _first_leaf(exc) from None
            raise
        result, stored = export_task.result()
        self.metrics.rows_written.inc(result.row_count)
        self.metrics.bytes_written.inc(stored.byte_size)

        async with self.pool.acquire() as conn, conn.transaction():
            if not await self._requester_may_export(conn, export):
                raise _Failure(
                    REQUESTER_NOT_AUTHORIZED,
                    "The requester is no longer allowed to export this log",
                )
            record = await conn.fetchrow(
                q("complete_export"),
                *fence.args,
                key,
                file_name,
                mime,
                stored.byte_size,
                result.row_count,
                result.sha256,
                self.settings.link_ttl,
            )
        if record is None:
            # Not ours any more: the object is not adopted, so it must not stay.
            await self._shielded(self.storage.delete(key))
            raise await self._not_ours(fence)
        self.metrics.exports_finished.inc(outcome="completed")
        log.info(
            "export completed",
            extra={
                "export_id": str(export.id),
                "organization_id": str(export.organization_id),
                "rows": result.row_count,
                "bytes": stored.byte_size,
            },
        )
        self._mail_wake.set()

    async def _export_with_snapshot(
        self,
        spec: ExportSpec,
        writer: Any,
        progress: Progress,
        on_snapshot: Callable[[datetime], Awaitable[None]],
        token: int,
    ) -> ExportResult:
        assert self._export_pool is not None
        async with self._export_pool.acquire() as conn:
            self.metrics.snapshots.opened(token)
            try:
                return await run_export(
                    conn, spec, writer, progress=progress, on_snapshot=on_snapshot
                )
            finally:
                self.metrics.snapshots.closed(token)

    async def _heartbeat(self, fence: Fence, progress: Progress) -> None:
        # A third of the lease keeps it alive through two missed beats; at most every
        # couple of seconds so that progress shown to people moves.
        interval = max(0.05, min(self.settings.worker_lease / 3, _PROGRESS_INTERVAL))
        while True:
            await asyncio.sleep(interval)
            try:
                async with self.pool.acquire() as conn:
                    alive = await conn.fetchval(
                        q("heartbeat"),
                        *fence.args,
                        self.settings.worker_lease,
                        progress.rows,
                        self.lock_key,
                    )
            except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError) as exc:
                # The lease runs on; the next beat may get through before it ends.
                log.warning("heartbeat failed", extra={"error": type(exc).__name__})
                continue
            if alive is None:
                raise await self._not_ours(fence)

    async def _after_failure(self, export: LogExport, fence: Fence, failure: _Failure) -> None:
        async with self.pool.acquire() as conn:
            if failure.code == REQUESTER_NOT_AUTHORIZED:
                # Found by the re-check before the commit: final, like the one at claim.
                await self._fail(conn, fence, failure, email=False)
                return
            if export.attempts >= self.settings.worker_max_attempts:
                await self._fail(conn, fence, _Failure(failure.code, _gave_up(export, failure)))
                return
            delay = retry_delay(export.attempts, self.retry_base)
            await conn.execute(q("retry_export"), *fence.args, delay, failure.code, failure.message)

    async def _fail(
        self, conn: asyncpg.Connection, fence: Fence, failure: _Failure, *, email: bool = True
    ) -> None:
        async with conn.transaction():
            record = await conn.fetchrow(
                q("fail_export"), *fence.args, email, failure.code, failure.message
            )
            if record is None:
                return
            export = LogExport.from_record(record)
            await record_export_event(
                conn,
                export,
                FAIL_ACTION,
                actor=None,
                extra={"error_code": failure.code, "attempts": export.attempts},
            )
        self.metrics.exports_finished.inc(outcome="failed")
        if email:
            self._mail_wake.set()

    async def _hand_back(self, fence: Fence) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute(q("hand_back_export"), *fence.args)
        self.metrics.exports_finished.inc(outcome="handed_back")
        log.info("export handed back", extra={"export_id": str(fence.export_id)})

    # ------------------------------------------------------------------ email

    async def _mail_loop(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._mail_wake.wait(), self.settings.worker_poll_interval)
            self._mail_wake.clear()
            try:
                await self.send_due_emails()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("mail pass failed", extra={"error": type(exc).__name__})

    async def send_due_emails(self, limit: int = 20) -> int:
        """Send every ready/failure email that is due; returns how many went out."""
        async with self.pool.acquire() as conn:
            due = [
                LogExport.from_record(r)
                for r in await conn.fetch(q("claim_due_emails"), limit, _EMAIL_LEASE)
            ]
        sent = 0
        for export in due:
            sent += await self._send_one(export)
        return sent

    async def _send_one(self, export: LogExport) -> int:
        ids = {"export_id": str(export.id), "organization_id": str(export.organization_id)}
        async with self.pool.acquire() as conn:
            if export.status is ExportStatus.COMPLETED and not await self._requester_may_export(
                conn, export
            ):
                await conn.execute(q("drop_email"), export.id)
                log.info("ready email dropped: requester lost access", extra=ids)
                return 0
            if export.status is ExportStatus.COMPLETED:
                message = await compose_ready_email(conn, self.settings, export.id)
            else:
                message = await compose_failed_email(conn, self.settings, export.id)
        try:
            await self._send_mail(self.settings, message)
        except (MailError, OSError) as exc:
            async with self.pool.acquire() as conn:
                if export.email_attempts >= _EMAIL_MAX_ATTEMPTS:
                    await conn.execute(q("drop_email"), export.id)
                    log.error("email abandoned", extra=ids)
                else:
                    delay = retry_delay(export.email_attempts, self.retry_base, _EMAIL_RETRY_CAP)
                    await conn.execute(q("retry_email"), export.id, delay)
            log.warning("email failed; will retry", extra={**ids, "error": type(exc).__name__})
            return 0
        async with self.pool.acquire() as conn:
            await conn.execute(q("mark_emailed"), export.id)
        self.metrics.emails_sent.inc(template=export.status.value.lower())
        log.info("email sent", extra=ids)
        return 1

    # ------------------------------------------------------------------ sweeping

    async def _sweep_loop(self) -> None:
        while not self._stopping:
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("sweep failed", extra={"error": type(exc).__name__})
            await asyncio.sleep(self.sweep_interval)

    async def sweep(self, *, settle: float = _SWEEP_SETTLE) -> int:
        """Expire exports past their link TTL; delete objects no commit adopted, download
        tokens long expired and console sessions long ended."""
        async with self.pool.acquire() as conn:
            for record in await conn.fetch(q("expire_exports")):
                log.info(
                    "export expired",
                    extra={
                        "export_id": str(record["id"]),
                        "organization_id": str(record["organization_id"]),
                    },
                )
            orphans = await conn.fetch(q("unadopted_objects"), 100, settle)
            await purge_expired_download_tokens(conn)
            await conn.fetchval(q("purge_console_sessions"), _ENDED_SESSIONS_KEPT)
        for record in orphans:
            try:
                await self.storage.delete(record["storage_key"])
            except StorageError as exc:
                # One key the store refuses must not hold up the others; it is tried again
                # at the next sweep.
                log.warning(
                    "sweep could not delete an object",
                    extra={"export_id": str(record["export_id"]), "error": str(exc)},
                )
                continue
            if record["settled"]:
                async with self.pool.acquire() as conn:
                    await conn.execute(q("mark_object_deleted"), record["storage_key"])
        return len(orphans)


def _setter(event: asyncio.Event) -> Callable[[Any], None]:
    return lambda _conn: event.set()


def _gave_up(export: LogExport, failure: _Failure | None = None) -> str:
    reason = f": {failure.message}" if failure else ""
    return f"The export failed after {export.attempts} attempts{reason}"


def _first_leaf(exc: BaseException) -> BaseException:
    """The first real error in (possibly nested) task groups: the pipeline's own task group
    sits inside the attempt's, and a wrapped ``StorageError`` must still be classified as one."""
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def _gone_in(exc: BaseException) -> _JobGone | None:
    if isinstance(exc, _JobGone):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _gone_in(inner)
            if found is not None:
                return found
    return None
