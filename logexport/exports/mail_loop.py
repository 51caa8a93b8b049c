"""The mail loop: sends the ready and failure emails that are due, at least once.

A completed or failed export makes its email due in the same write that ends the job. The
mail loop of any worker may send it: it leases the email first (``claim_due_emails``), so no
other worker sends it meanwhile, and marks it sent afterwards. A send that fails is retried
with capped backoff, up to ``EMAIL_MAX_ATTEMPTS``; a ready email whose requester may no
longer export the log is dropped, not sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from email.message import EmailMessage

import asyncpg

from logexport.config import Settings
from logexport.exports.delivery import compose_failed_email, compose_ready_email
from logexport.exports.jobs import JobStore, requester_may_export, retry_delay
from logexport.exports.mailer import MailError, send_message
from logexport.exports.models import ExportStatus, LogExport
from logexport.metrics import WorkerMetrics

log = logging.getLogger("logexport.worker")

EMAIL_LEASE = 120.0
EMAIL_RETRY_CAP = 600.0
EMAIL_MAX_ATTEMPTS = 50

SendMail = Callable[[Settings, EmailMessage], Awaitable[None]]


class MailLoop:
    """Sends due emails when woken (an export just ended) and every poll interval."""

    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        *,
        send_mail: SendMail = send_message,
        metrics: WorkerMetrics,
        retry_base: float,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.retry_base = retry_base
        self._pool = pool
        self._store = JobStore(pool)
        self._send_mail = send_mail
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def run(self, stopping: Callable[[], bool]) -> None:
        """Send due emails until ``stopping()``; a failed pass is tried again at the next."""
        while not stopping():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.worker_poll_interval)
            self._wake.clear()
            try:
                await self.send_due()
            except Exception as exc:
                log.warning("mail pass failed", extra={"error": type(exc).__name__})

    async def send_due(self, limit: int = 20) -> int:
        """Send every ready/failure email that is due; returns how many went out."""
        sent = 0
        for export in await self._store.claim_due_emails(limit, EMAIL_LEASE):
            sent += await self._send_one(export)
        return sent

    async def _compose(self, export: LogExport) -> EmailMessage | None:
        """The email for ``export``, or None when its requester may no longer have it."""
        async with self._pool.acquire() as conn:
            if export.status is not ExportStatus.COMPLETED:
                return await compose_failed_email(conn, self.settings, export.id)
            if not await requester_may_export(conn, export):
                return None
            return await compose_ready_email(conn, self.settings, export.id)

    async def _send_one(self, export: LogExport) -> int:
        ids = {"export_id": str(export.id), "organization_id": str(export.organization_id)}
        message = await self._compose(export)
        if message is None:
            await self._store.drop_email(export.id)
            log.info("ready email dropped: requester lost access", extra=ids)
            return 0
        try:
            await self._send_mail(self.settings, message)
        except (MailError, OSError) as exc:
            if export.email_attempts >= EMAIL_MAX_ATTEMPTS:
                await self._store.drop_email(export.id)
                log.error("email abandoned", extra=ids)
            else:
                delay = retry_delay(export.email_attempts, self.retry_base, EMAIL_RETRY_CAP)
                await self._store.retry_email(export.id, delay)
            log.warning("email failed; will retry", extra={**ids, "error": type(exc).__name__})
            return 0
        await self._store.mark_emailed(export.id)
        self.metrics.emails_sent.inc(template=export.status.value.lower())
        log.info("email sent", extra=ids)
        return 1
