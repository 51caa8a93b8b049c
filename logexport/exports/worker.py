"""The export worker: listen, claim, run with a heartbeat, shut down.

One ``Worker`` runs inside any asyncio program (``async with Worker(settings):``) and is
what ``logexport worker`` and ``logexport serve`` start. It decides when things happen; every
change to a job's row is a named call on the job store (``exports/jobs.py``). Its side tasks:

    listener   a dedicated ``LISTEN`` connection that wakes the claim loop, health-checked
               and reconnected with backoff (a reconnect claims at once); it also holds the
               worker's liveness lock and looks every second for exports of dead workers;
    claimer    claims jobs while slots are free, on a wake-up or every poll interval;
    jobs       one task per running export, each with a heartbeat that renews its lease;
    mailer     sends due ready/failure emails (``exports/mail_loop.py``);
    sweeper    expires old exports and deletes objects that no commit adopted
               (``exports/sweeper.py``).

A worker that lost its lease, or whose export was canceled, can no longer change the job
(the store's writes are fenced): it only aborts its upload.

Liveness: while its listener connection is up, a worker holds a session-level advisory lock
on a 64-bit key of its own, and every export it runs records that key, so its exports are
claimable the moment it dies. The lease stays the fence and the fallback: for a worker whose
connection hangs instead of closing, and for poll-only workers (a PgBouncer in transaction
mode cannot keep a session lock), whose exports record no key.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Self

import asyncpg

from logexport import db, signing
from logexport.config import Settings
from logexport.exports import sealing
from logexport.exports.filenames import content_type, export_file_name, object_key
from logexport.exports.jobs import (
    CHANNEL,
    Fence,
    GoneReason,
    JobGone,
    JobStore,
    SignedManifest,
    StoredFile,
    abandoned_export_exists,
    liveness_key,
    requester_may_export,
    retry_delay,
    take_liveness_lock,
)
from logexport.exports.mail_loop import MailLoop, SendMail
from logexport.exports.mailer import send_message
from logexport.exports.models import LogExport
from logexport.exports.pipeline import ExportResult, Progress, run_export
from logexport.exports.requests import ExportInput
from logexport.exports.storage import (
    ObjectWriter,
    Storage,
    StorageError,
    StoredObject,
    storage_from_settings,
)
from logexport.exports.sweeper import MANIFEST_STORE_AFTER, SWEEP_SETTLE, Sweeper
from logexport.metrics import WorkerMetrics
from logexport.streams.loop import StreamLoop

log = logging.getLogger("logexport.worker")

REQUESTER_NOT_AUTHORIZED = "REQUESTER_NOT_AUTHORIZED"
_LISTENER_BACKOFF = (0.1, 10.0)
_LISTENER_CONNECT_TIMEOUT = 10.0
_PROGRESS_INTERVAL = 2.0
# How often the listener connection looks for exports whose worker died: the bound on how
# long such an export waits before it is claimed again.
_LIVENESS_PROBE = 1.0
_LIVENESS_PROBE_TIMEOUT = 5.0
_LIVENESS_KEY_TRIES = 8


class _Failure(Exception):
    """An attempt failed with a code and a message safe to show the requester."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _classify(exc: BaseException) -> _Failure:
    if isinstance(exc, _Failure):
        return exc
    if isinstance(exc, StorageError):
        return _Failure("STORAGE_ERROR", "The file could not be stored")
    # The driver's internal error comes of a connection lost in the middle of a COPY.
    database = (asyncpg.PostgresError, OSError, asyncpg.InterfaceError, asyncpg.InternalClientError)
    if isinstance(exc, database):
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
        # Every completed export's manifest is signed with it: no key, no worker
        # (``ConfigError`` naming LOGEXPORT_SIGNING_KEY).
        self._signing_key = signing.signing_key(settings)
        self.concurrency = concurrency or settings.worker_concurrency
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.metrics = metrics or WorkerMetrics()
        self.retry_base = settings.worker_retry_base if retry_base is None else retry_base
        self.sweep_interval = sweep_interval or max(settings.worker_poll_interval, 1.0)
        self._send_mail = send_mail
        self._pool = pool
        self._owns_pool = pool is None
        self._store: JobStore | None = None
        self._mail: MailLoop | None = None
        if pool is not None:
            self._use_pool(pool)
        self._export_pool: asyncpg.Pool | None = None
        self._storage = storage
        self._owns_storage = storage is None
        self._wake = asyncio.Event()
        self._stopping = False
        self._handing_back = False
        self._jobs: dict[uuid.UUID, asyncio.Task[None]] = {}
        self._side_tasks: list[asyncio.Task[None]] = []
        self._streams: StreamLoop | None = None
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
    def store(self) -> JobStore:
        assert self._store is not None, "the worker is not started"
        return self._store

    @property
    def mail(self) -> MailLoop:
        assert self._mail is not None, "the worker is not started"
        return self._mail

    @property
    def storage(self) -> Storage:
        assert self._storage is not None, "the worker is not started"
        return self._storage

    @property
    def running_exports(self) -> list[uuid.UUID]:
        return list(self._jobs)

    def _use_pool(self, pool: asyncpg.Pool) -> None:
        self._store = JobStore(pool)
        self._mail = MailLoop(
            self.settings,
            pool,
            send_mail=self._send_mail,
            metrics=self.metrics,
            retry_base=self.retry_base,
        )

    async def start(self) -> None:
        if self._pool is None:
            self._pool = await db.create_pool(
                self.settings.require("database_url"), min_size=1, max_size=self.concurrency + 4
            )
            self._use_pool(self._pool)
        # Each export running holds its connection and its helpers: never more than this.
        self._export_pool = await db.create_pool(
            self.settings.snapshot_database_url,
            min_size=0,
            max_size=self.concurrency * self.settings.export_parallelism,
        )
        if self._storage is None:
            self._storage = storage_from_settings(self.settings)
        self._streams = StreamLoop(
            self.settings,
            self.pool,
            worker_id=self.worker_id,
            lock_key=lambda: self.lock_key,
            metrics=self.metrics,
        )
        spawn = asyncio.get_running_loop().create_task
        if not self.settings.worker_poll_only:
            self._side_tasks.append(spawn(self._listen(), name="logexport-listener"))
        self._side_tasks += [
            spawn(self._claim_loop(), name="logexport-claimer"),
            spawn(self.mail.run(lambda: self._stopping), name="logexport-mailer"),
            spawn(
                Sweeper(self.pool, self.storage).run(self.sweep_interval, lambda: self._stopping),
                name="logexport-sweeper",
            ),
            spawn(self._streams.run(lambda: self._stopping), name="logexport-streams"),
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
        # Stream runs finish within the grace too (the loop stops claiming by itself).
        streams = [t for t in self._side_tasks if t.get_name() == "logexport-streams"]
        if streams and grace > 0 and self._streams is not None and self._streams.busy:
            await asyncio.wait(streams, timeout=grace)
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

    async def __aexit__(self, *_exc_info: object) -> None:
        await self.stop()

    def wake(self) -> None:
        self._wake.set()

    # ------------------------------------------------------------------ listener

    def _on_notify(self, *_: object) -> None:
        self._wake.set()

    def _listening(self) -> bool:
        # The liveness lock must outlive the exports and stream runs still finishing in a
        # shutdown grace: without it, other workers would take them over as if this one
        # had died.
        streaming = self._streams is not None and self._streams.busy
        return not self._stopping or bool(self._jobs) or streaming

    async def _listen(self) -> None:
        delay = _LISTENER_BACKOFF[0]
        while self._listening():
            conn: asyncpg.Connection | None = None
            lost = asyncio.Event()
            try:
                conn = await asyncio.wait_for(
                    db.connect(self.settings.require("database_url"), keepalive=True),
                    timeout=_LISTENER_CONNECT_TIMEOUT,
                )
                assert conn is not None
                conn.add_termination_listener(_setter(lost))
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
                        abandoned_export_exists(conn), timeout=_LIVENESS_PROBE_TIMEOUT
                    )
                    if abandoned and len(self._jobs) < self.concurrency:
                        self._wake.set()
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
            if await take_liveness_lock(conn, key):
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
        claim = await self.store.claim(
            self.worker_id,
            lease=self.settings.worker_lease,
            per_org_cap=self.settings.max_running_exports_per_org,
            lock_key=self.lock_key,
        )
        if claim is None:
            return None
        self.metrics.claim_latency.observe(claim.delay)
        return claim.export

    async def claim_once(self) -> LogExport | None:
        """Claim one job without running it (tests and tools)."""
        return await self._claim()

    # ------------------------------------------------------------------ one export

    async def _requester_may_export(self, conn: asyncpg.Connection, export: LogExport) -> bool:
        return await requester_may_export(conn, export)

    async def _run_job(self, export: LogExport) -> None:
        fence = Fence(export.id, self.worker_id, export.attempts)
        ids = {"export_id": str(export.id), "organization_id": str(export.organization_id)}
        started = time.monotonic()
        try:
            if export.attempts > self.settings.worker_max_attempts:
                await self._fail(fence, _Failure("MAX_ATTEMPTS", _gave_up(export)))
                return
            async with self.pool.acquire() as conn:
                allowed = await self._requester_may_export(conn, export)
            if not allowed:
                await self._fail(fence, _not_authorized(), email=False)
                return
            log.info("export started", extra={**ids, "attempt": export.attempts})
            await self._attempt(export, fence)
            self.metrics.export_duration.observe(time.monotonic() - started)
        except asyncio.CancelledError:
            if self._handing_back:
                await self._shielded(self._hand_back(fence))
            raise
        except JobGone as gone:
            self._note_gone(gone.reason, ids)
        except Exception as exc:
            # An error may only be the consequence of a cancel or a lost lease (the sweeper
            # aborts the upload of a canceled export under the writer's feet): then the job
            # is not ours to fail or retry.
            why = await self.store.why_gone(fence)
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

    def _note_gone(self, reason: GoneReason, ids: dict[str, str]) -> None:
        self.metrics.exports_finished.inc(outcome=reason.value)
        if reason is GoneReason.CANCELED:
            log.info("export canceled; upload aborted", extra=ids)
        else:
            log.warning("lease lost; upload aborted", extra=ids)

    async def _shielded(self, coro: Awaitable[object]) -> None:
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
        await self.store.record_object_key(fence, key)

        progress = Progress()
        spec = ExportInput.of(export)

        async def on_snapshot(snapshot_at: datetime) -> None:
            await self.store.set_snapshot_time(fence, snapshot_at)

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

        async def still_allowed(conn: asyncpg.Connection) -> None:
            if not await self._requester_may_export(conn, export):
                raise _not_authorized()

        def sign(completed: LogExport, sequence: int, previous: str | None) -> SignedManifest:
            return sealing.sign_export_manifest(
                completed,
                sequence=sequence,
                previous_sha256=previous,
                snapshot_at=result.snapshot_at,
                first_row=result.first_row,
                last_row=result.last_row,
                key=self._signing_key,
            )

        stored_file = StoredFile(
            key, file_name, mime, stored.byte_size, result.row_count, result.sha256
        )
        try:
            completed = await self.store.complete(
                fence,
                stored_file,
                link_ttl=self.settings.link_ttl,
                before_commit=still_allowed,
                sign=sign,
            )
        except JobGone:
            # Not ours any more: the object is not adopted, so it must not stay.
            await self._shielded(self.storage.delete(key))
            raise
        self.metrics.exports_finished.inc(outcome="completed")
        log.info(
            "export completed",
            extra={
                "export_id": str(export.id),
                "organization_id": str(export.organization_id),
                "rows": result.row_count,
                "bytes": stored.byte_size,
                "manifest_sequence": completed.manifest_sequence,
            },
        )
        await self._store_manifest(completed)
        self.mail.wake()

    async def _store_manifest(self, export: LogExport) -> None:
        """The manifest copy beside the file. The export is committed whatever happens
        here: a copy that cannot be written now is written by a later sweep."""
        try:
            await sealing.store_completed_manifest(self.storage, self.store, export)
        except (StorageError, asyncpg.PostgresError, OSError, asyncpg.InterfaceError) as exc:
            log.warning(
                "manifest copy not stored yet; a sweep will store it",
                extra={"export_id": str(export.id), "error": type(exc).__name__},
            )

    async def _export_with_snapshot(
        self,
        spec: ExportInput,
        writer: ObjectWriter,
        progress: Progress,
        on_snapshot: Callable[[datetime], Awaitable[None]],
        token: int,
    ) -> ExportResult:
        pool = self._export_pool
        assert pool is not None
        async with contextlib.AsyncExitStack() as held:
            conn = await held.enter_async_context(pool.acquire())
            helpers = [
                await held.enter_async_context(pool.acquire())
                for _ in range(self.settings.export_parallelism - 1)
            ]
            self.metrics.snapshots.opened(token)
            try:
                return await run_export(
                    conn,
                    spec,
                    writer,
                    progress=progress,
                    on_snapshot=on_snapshot,
                    helpers=helpers,
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
                await self.store.heartbeat(
                    fence,
                    lease=self.settings.worker_lease,
                    rows=progress.rows,
                    lock_key=self.lock_key,
                )
            except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError) as exc:
                # The lease runs on; the next beat may get through before it ends.
                log.warning("heartbeat failed", extra={"error": type(exc).__name__})

    async def _after_failure(self, export: LogExport, fence: Fence, failure: _Failure) -> None:
        if failure.code == REQUESTER_NOT_AUTHORIZED:
            # Found by the re-check before the commit: final, like the one at claim.
            await self._fail(fence, failure, email=False)
            return
        if export.attempts >= self.settings.worker_max_attempts:
            await self._fail(fence, _Failure(failure.code, _gave_up(export, failure)))
            return
        delay = retry_delay(export.attempts, self.retry_base)
        await self.store.retry(fence, delay=delay, code=failure.code, message=failure.message)

    async def _fail(self, fence: Fence, failure: _Failure, *, email: bool = True) -> None:
        failed = await self.store.fail(
            fence, code=failure.code, message=failure.message, email=email
        )
        if failed is None:
            return
        self.metrics.exports_finished.inc(outcome="failed")
        if email:
            self.mail.wake()

    async def _hand_back(self, fence: Fence) -> None:
        await self.store.hand_back(fence)
        self.metrics.exports_finished.inc(outcome="handed_back")
        log.info("export handed back", extra={"export_id": str(fence.export_id)})

    # ------------------------------------------------------------------ email

    async def send_due_emails(self, limit: int = 20) -> int:
        """Send every ready/failure email that is due; returns how many went out."""
        return await self.mail.send_due(limit)

    # ------------------------------------------------------------------ sweeping

    async def sweep(
        self, *, settle: float = SWEEP_SETTLE, manifest_after: float = MANIFEST_STORE_AFTER
    ) -> int:
        """Expire exports past their link TTL; delete objects no commit adopted, download
        tokens long expired and console sessions long ended; write missing manifest copies."""
        return await Sweeper(self.pool, self.storage).sweep(
            settle=settle, manifest_after=manifest_after
        )


def _setter(event: asyncio.Event) -> Callable[[asyncpg.Connection], None]:
    return lambda _conn: event.set()


def _not_authorized() -> _Failure:
    return _Failure(
        REQUESTER_NOT_AUTHORIZED, "The requester is no longer allowed to export this log"
    )


def _gave_up(export: LogExport, failure: _Failure | None = None) -> str:
    reason = f": {failure.message}" if failure else ""
    return f"The export failed after {export.attempts} attempts{reason}"


def _first_leaf(exc: BaseException) -> BaseException:
    """The first real error in (possibly nested) task groups: the pipeline's own task group
    sits inside the attempt's, and a wrapped ``StorageError`` must still be classified as one."""
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def _gone_in(exc: BaseException) -> JobGone | None:
    if isinstance(exc, JobGone):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _gone_in(inner)
            if found is not None:
                return found
    return None
