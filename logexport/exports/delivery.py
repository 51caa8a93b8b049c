"""Delivery: download tokens, download links and the emails that carry them.

A token is 256 bits, shown in a link and stored only as its SHA-256. Each is bound to one
export and one user:

- ``EMAIL`` tokens go in the ready email and live as long as the export. Opening the link
  shows a page; only its same-origin POST downloads (mail scanners open links). They are
  random, issued once per email.
- ``DIRECT`` tokens back GraphQL's ``LogExport.downloadUrl``: the same URL shape, but a
  ``GET`` downloads at once. They live min(15 minutes, the export's expiry).

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

The sweeper deletes tokens some time after they expire: until then an expired link still
answers with a page saying it expired, rather than "not found".
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Literal, Protocol
from urllib.parse import quote
from uuid import UUID

import asyncpg

from logexport import policy
from logexport.config import ConfigError, Settings
from logexport.db import q
from logexport.exports.mailer import (
    ExportFacts,
    Recipient,
    build_failed_message,
    build_ready_message,
)
from logexport.exports.models import ExportStatus, LogExport

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
_TOKEN_BYTES = 32
_DIRECT_TOKEN_LABEL = b"logexport direct download link v1"


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


@dataclass(frozen=True)
class ExportForDelivery:
    """An export and the person its emails go to."""

    export: LogExport
    requester: Recipient

    def downloadable(self, now: datetime | None = None) -> bool:
        export = self.export
        return (
            export.status is ExportStatus.COMPLETED
            and export.storage_key is not None
            and export.expires_at is not None
            and export.expires_at > (now or datetime.now(UTC))
        )


class _HasId(Protocol):
    @property
    def id(self) -> UUID: ...


class _Caller(Protocol):
    @property
    def user_id(self) -> UUID: ...


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


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
    if not token or len(token) > 256:
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


def download_link(base_url: str, export_id: UUID, token: str) -> str:
    """The link for a token, built from ``LOGEXPORT_BASE_URL`` only."""
    return f"{base_url.rstrip('/')}/exports/{export_id}/download?token={quote(token, safe='')}"


def download_path(base_url: str, export_id: UUID) -> str:
    return f"{base_url.rstrip('/')}/exports/{export_id}/download"


async def load_export(conn: asyncpg.Connection, export_id: UUID) -> ExportForDelivery | None:
    row = await conn.fetchrow(q("delivery_export"), export_id)
    if row is None:
        return None
    return ExportForDelivery(
        LogExport.from_record(row), Recipient(row["requester_email"], row["requester_name"])
    )


async def may_download(conn: asyncpg.Connection, organization_id: UUID, user_id: UUID) -> bool:
    role = await policy.role_of(conn, organization_id, user_id)
    return role is not None and policy.allows(role, policy.Action.LOG_EXPORT_DOWNLOAD)


async def direct_download_url(
    conn: asyncpg.Connection, settings: Settings, principal: _Caller, export: _HasId
) -> str | None:
    """A fresh one-step link for ``LogExport.downloadUrl``, bound to the caller.

    None unless the export is COMPLETED, unexpired and the caller may download it. Reads
    the export afresh so a stale object can never yield a link.
    """
    current = await load_export(conn, export.id)
    now = datetime.now(UTC)
    if current is None or not current.downloadable(now):
        return None
    found = current.export
    assert found.expires_at is not None
    if not await may_download(conn, found.organization_id, principal.user_id):
        return None
    if not settings.secret_key:
        raise ConfigError("LOGEXPORT_SECRET_KEY is not set")
    window = int(now.timestamp() // DIRECT_LINK_WINDOW.total_seconds())
    window_start = datetime.fromtimestamp(window * DIRECT_LINK_WINDOW.total_seconds(), UTC)
    token = direct_token(settings.secret_key, found.id, principal.user_id, window)
    await conn.execute(
        q("insert_download_token_once"),
        found.id,
        principal.user_id,
        hash_token(token),
        "DIRECT",
        min(window_start + DIRECT_LINK_TTL, found.expires_at),
    )
    return download_link(settings.base_url, found.id, token)


async def compose_ready_email(
    conn: asyncpg.Connection, settings: Settings, export_id: UUID
) -> EmailMessage:
    """The ready email for a COMPLETED export, with a new EMAIL token for its requester.

    Each call issues a new token; earlier ones stay valid until the export expires, so a
    resent email never breaks a link already delivered.
    """
    found = await load_export(conn, export_id)
    if found is None:
        raise LookupError(f"export {export_id} does not exist")
    export = found.export
    if export.status is not ExportStatus.COMPLETED or export.expires_at is None:
        raise ValueError(f"export {export_id} is {export.status}, not COMPLETED")
    token = await issue_download_token(
        conn,
        export_id=export.id,
        user_id=export.requested_by,
        purpose="EMAIL",
        expires_at=export.expires_at,
    )
    return build_ready_message(
        settings,
        found.requester,
        ExportFacts.of(export),
        download_link(settings.base_url, export.id, token),
    )


async def compose_failed_email(
    conn: asyncpg.Connection, settings: Settings, export_id: UUID
) -> EmailMessage:
    """The failure email for an export, addressed to its requester."""
    found = await load_export(conn, export_id)
    if found is None:
        raise LookupError(f"export {export_id} does not exist")
    return build_failed_message(settings, found.requester, ExportFacts.of(found.export))


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
