"""Download links: their tokens, and the rule for when a link may download its file.

A token is 256 bits, shown in a link and stored only as its SHA-256. Each is bound to one
export and one user:

- ``EMAIL`` tokens go in the ready email and live as long as the export. Opening the link
  shows a page; only the page's button downloads (mail scanners open links). They are
  random, issued once per email.
- ``DIRECT`` tokens back GraphQL's ``LogExport.downloadUrl``: the same URL shape, but
  opening the link downloads at once. They live min(15 minutes, the export's expiry).

The stored purpose, not anything in the URL, decides how a link behaves.

``downloadUrl`` can be read as often as a client likes (49 aliases in one query, a page
that refreshes), and each read must not store a token. So a ``DIRECT`` token is not drawn
at random but computed: an HMAC under ``LOGEXPORT_SECRET_KEY`` of the export, the user and
a five-minute window. Within a window every read yields the same link and the insert finds
its hash already stored; the table holds at most a few live ``DIRECT`` rows per export and
user. The token is as unguessable as a random one to anyone without the key (and the key
already signs console sessions), it is still stored only as a hash, and an issued link
never changes meaning: it stays valid until its own expiry even after the window moves on.
Deleting a user's older tokens instead would have broken links already handed out.

Every download re-checks, at that moment, that the token's user may still download in the
export's organization and that the file is still there (``check_download``); a download
is then recorded in the organization's audit log (``start_download``). The sweeper deletes
tokens some time after they expire: until then an expired link still answers that it
expired, rather than "not found".
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Literal, Protocol
from urllib.parse import quote
from uuid import UUID

import asyncpg

from logexport import policy
from logexport.config import Settings
from logexport.db import q
from logexport.exports.audit import record_export_event
from logexport.exports.models import ExportStatus, LogExport
from logexport.exports.storage import Storage, StorageError
from logexport.identity import Principal
from logexport.tokens import hash_token

log = logging.getLogger(__name__)

Purpose = Literal["EMAIL", "DIRECT"]
DIRECT_LINK_TTL = timedelta(minutes=15)
# A link read at any moment of its window has at least DIRECT_LINK_TTL - WINDOW to live.
DIRECT_LINK_WINDOW = timedelta(minutes=5)
# How long an expired token is kept so its link can still say "expired": one-step links
# are used by programs right away; emails sit in inboxes.
EXPIRED_TOKEN_KEPT: dict[Purpose, timedelta] = {
    "DIRECT": timedelta(hours=1),
    "EMAIL": timedelta(days=30),
}
# Presigned links to the stored file: the emailed link stays valid, this one need not.
PRESIGNED_URL_TTL = 300
MAX_TOKEN_CHARS = 256
_TOKEN_BYTES = 32
_DIRECT_TOKEN_LABEL = b"logexport direct download link v1"


# ---------------------------------------------------------------------------- tokens


@dataclass(frozen=True)
class TokenMatch:
    """A stored token that matched a presented one."""

    token_id: UUID
    export_id: UUID
    user_id: UUID
    user_email: str
    user_name: str
    purpose: Purpose
    expires_at: datetime

    def expired(self, now: datetime | None = None) -> bool:
        return self.expires_at <= (now or datetime.now(UTC))


async def issue_download_token(
    conn: asyncpg.Connection,
    *,
    export_id: UUID,
    user_id: UUID,
    purpose: Purpose,
    expires_at: datetime,
) -> str:
    """Store a new token's hash and return the token (the only time it exists in clear)."""
    if purpose not in ("EMAIL", "DIRECT"):
        raise ValueError(f"unknown token purpose {purpose!r}")
    token = secrets.token_urlsafe(_TOKEN_BYTES)
    await conn.execute(
        q("insert_download_token"), export_id, user_id, hash_token(token), purpose, expires_at
    )
    return token


def direct_token(secret_key: str, export_id: UUID, user_id: UUID, window: int) -> str:
    """The one-step token of ``user_id`` for ``export_id`` in time window number ``window``.

    The key is derived for this use alone, so no other value signed with the secret key
    (a console session) can ever equal a token.
    """
    key = hmac.new(secret_key.encode(), _DIRECT_TOKEN_LABEL, hashlib.sha256).digest()
    message = f"{export_id}/{user_id}/{window}".encode()
    mac = hmac.new(key, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


async def resolve_download_token(
    conn: asyncpg.Connection, export_id: UUID, token: str
) -> TokenMatch | None:
    """The stored token for this export, or None for a wrong or tampered one.

    An expired token still matches (so the page can say "expired"); check ``expired()``.
    """
    if not token or len(token) > MAX_TOKEN_CHARS:
        return None
    row = await conn.fetchrow(q("find_download_token"), hash_token(token), export_id)
    if row is None:
        return None
    return TokenMatch(
        token_id=row["id"],
        export_id=row["export_id"],
        user_id=row["user_id"],
        user_email=row["user_email"],
        user_name=row["user_name"],
        purpose=row["purpose"],
        expires_at=row["expires_at"],
    )


def download_path(base_url: str, export_id: UUID) -> str:
    """The download page's URL, built from ``LOGEXPORT_BASE_URL`` only."""
    return f"{base_url.rstrip('/')}/exports/{export_id}/download"


def download_link(base_url: str, export_id: UUID, token: str) -> str:
    """The link for a token, built from ``LOGEXPORT_BASE_URL`` only."""
    return f"{download_path(base_url, export_id)}?token={quote(token, safe='')}"


async def purge_expired_download_tokens(
    conn: asyncpg.Connection, *, now: datetime | None = None
) -> int:
    """Delete tokens expired for longer than ``EXPIRED_TOKEN_KEPT``. Returns how many."""
    now = now or datetime.now(UTC)
    status = await conn.execute(
        q("delete_expired_download_tokens"),
        now - EXPIRED_TOKEN_KEPT["DIRECT"],
        now - EXPIRED_TOKEN_KEPT["EMAIL"],
    )
    return int(status.rsplit(" ", 1)[-1])


# ---------------------------------------------------------------------------- who may download


async def may_download(conn: asyncpg.Connection, organization_id: UUID, user_id: UUID) -> bool:
    role = await policy.role_of(conn, organization_id, user_id)
    return policy.allows(role, policy.Action.LOG_EXPORT_DOWNLOAD)


async def _load_export(conn: asyncpg.Connection, export_id: UUID) -> LogExport | None:
    row = await conn.fetchrow(q("delivery_export"), export_id)
    return None if row is None else LogExport.from_record(row)


def _has_file(export: LogExport, now: datetime) -> bool:
    return (
        export.status is ExportStatus.COMPLETED
        and export.storage_key is not None
        and export.file_name is not None
        and export.expires_at is not None
        and export.expires_at > now
    )


class _HasId(Protocol):
    @property
    def id(self) -> UUID: ...


async def direct_download_url(
    conn: asyncpg.Connection, settings: Settings, principal: policy.Caller, export: _HasId
) -> str | None:
    """A fresh one-step link for ``LogExport.downloadUrl``, bound to the caller.

    None unless the export is COMPLETED, unexpired and the caller may download it. Reads
    the export afresh so a stale object can never yield a link.
    """
    found = await _load_export(conn, export.id)
    now = datetime.now(UTC)
    if found is None or not _has_file(found, now):
        return None
    assert found.expires_at is not None
    if not await may_download(conn, found.organization_id, principal.user_id):
        return None
    window = int(now.timestamp() // DIRECT_LINK_WINDOW.total_seconds())
    window_start = datetime.fromtimestamp(window * DIRECT_LINK_WINDOW.total_seconds(), UTC)
    token = direct_token(settings.require("secret_key"), found.id, principal.user_id, window)
    await conn.execute(
        q("insert_download_token_once"),
        found.id,
        principal.user_id,
        hash_token(token),
        "DIRECT",
        min(window_start + DIRECT_LINK_TTL, found.expires_at),
    )
    return download_link(settings.require("base_url"), found.id, token)


class Refusal(StrEnum):
    """Why a link cannot download now."""

    NOT_FOUND = "NOT_FOUND"  # no such token for this export
    FORBIDDEN = "FORBIDDEN"  # the token's user may no longer download here
    CANCELED = "CANCELED"
    FAILED = "FAILED"
    NOT_READY = "NOT_READY"  # PENDING or PROCESSING
    EXPORT_EXPIRED = "EXPORT_EXPIRED"  # the file is gone
    LINK_EXPIRED = "LINK_EXPIRED"  # the file is there, this link no longer opens it
    UNREADABLE = "UNREADABLE"  # the store could not hand the file out


class DownloadRefused(Exception):
    """A link that cannot download now. ``export`` is set once the token matched."""

    def __init__(self, reason: Refusal, export: LogExport | None = None) -> None:
        super().__init__(reason.value)
        self.reason = reason
        self.export = export


@dataclass(frozen=True)
class DownloadGrant:
    """A link that may download its export's file now."""

    export: LogExport
    token: TokenMatch

    @property
    def downloads_when_opened(self) -> bool:
        """One-step links download on open; emailed links show a page whose button does."""
        return self.token.purpose == "DIRECT"


async def check_download(
    conn: asyncpg.Connection, export_id: UUID, token: str, *, now: datetime | None = None
) -> DownloadGrant:
    """Whether ``token`` may download ``export_id`` now; ``DownloadRefused`` says why not.

    The user's permission is checked afresh, so a link stops working when its user loses
    the role that allowed it.
    """
    match = await resolve_download_token(conn, export_id, token)
    export = None if match is None else await _load_export(conn, export_id)
    if match is None or export is None:  # the token's foreign key makes export None moot
        raise DownloadRefused(Refusal.NOT_FOUND)
    if not await may_download(conn, export.organization_id, match.user_id):
        raise DownloadRefused(Refusal.FORBIDDEN, export)
    moment = now or datetime.now(UTC)
    status = export.status
    if status is ExportStatus.CANCELED:
        raise DownloadRefused(Refusal.CANCELED, export)
    if status is ExportStatus.FAILED:
        raise DownloadRefused(Refusal.FAILED, export)
    if status in (ExportStatus.PENDING, ExportStatus.PROCESSING):
        raise DownloadRefused(Refusal.NOT_READY, export)
    if not _has_file(export, moment):
        raise DownloadRefused(Refusal.EXPORT_EXPIRED, export)
    if match.expired(moment):
        raise DownloadRefused(Refusal.LINK_EXPIRED, export)
    return DownloadGrant(export, match)


@dataclass(frozen=True)
class Download:
    """A started download: a presigned ``url`` to redirect to, or the file's ``body``."""

    export: LogExport
    file_name: str
    content_type: str
    url: str | None = None
    body: AsyncIterator[bytes] | None = None


async def start_download(
    conn: asyncpg.Connection,
    storage: Storage,
    grant: DownloadGrant,
    *,
    ip_address: str | None,
    user_agent: str | None,
) -> Download:
    """Hand out the granted file and record the download in the organization's audit log.

    The file is presigned (S3) or its first chunk read (local directory) before the
    download is recorded: a file that cannot be read is not a download, and its error
    becomes ``DownloadRefused(UNREADABLE)`` rather than a truncated response.
    """
    export = grant.export
    assert export.storage_key is not None and export.file_name is not None
    content_type = export.content_type or "application/octet-stream"
    try:
        url = await storage.presigned_download_url(
            export.storage_key,
            file_name=export.file_name,
            content_type=content_type,
            expires_in=PRESIGNED_URL_TTL,
        )
        body = None if url is not None else await _primed(storage.read(export.storage_key))
    except StorageError as exc:
        log.warning(
            "download of export %s failed: %s",
            export.id,
            exc,
            extra={"export_id": str(export.id), "organization_id": str(export.organization_id)},
        )
        raise DownloadRefused(Refusal.UNREADABLE, export) from None

    match = grant.token
    await record_export_event(
        conn,
        export,
        policy.Action.LOG_EXPORT_DOWNLOAD.value,
        actor=Principal(match.user_id, match.user_email, match.user_name, None),
        ip_address=ip_address,
        user_agent=user_agent,
        extra={"link": match.purpose},
    )
    log.info(
        "export %s downloaded",
        export.id,
        extra={"export_id": str(export.id), "organization_id": str(export.organization_id)},
    )
    return Download(export, export.file_name, content_type, url=url, body=body)


async def _primed(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Fetch the first chunk now (so errors surface here) and replay it before the rest."""
    try:
        first = await anext(chunks)
    except StopAsyncIteration:
        first = b""

    async def replay() -> AsyncIterator[bytes]:
        if first:
            yield first
        async for chunk in chunks:
            yield chunk

    return replay()
