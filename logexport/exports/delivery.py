"""Delivery: the emails that carry an export's download link or say why it failed.

Download links themselves (tokens, who may download) live in ``downloads``.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.message import EmailMessage
from uuid import UUID

import asyncpg

from logexport.config import Settings
from logexport.db import q
from logexport.exports.downloads import download_link, issue_download_token
from logexport.exports.mailer import (
    ExportFacts,
    Recipient,
    build_failed_message,
    build_ready_message,
)
from logexport.exports.models import ExportStatus, LogExport


@dataclass(frozen=True)
class ExportForDelivery:
    """An export and the person its emails go to."""

    export: LogExport
    requester: Recipient


async def load_export(conn: asyncpg.Connection, export_id: UUID) -> ExportForDelivery | None:
    row = await conn.fetchrow(q("delivery_export"), export_id)
    if row is None:
        return None
    return ExportForDelivery(
        LogExport.from_record(row), Recipient(row["requester_email"], row["requester_name"])
    )


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
        download_link(settings.require("base_url"), export.id, token),
    )


async def compose_failed_email(
    conn: asyncpg.Connection, settings: Settings, export_id: UUID
) -> EmailMessage:
    """The failure email for an export, addressed to its requester."""
    found = await load_export(conn, export_id)
    if found is None:
        raise LookupError(f"export {export_id} does not exist")
    return build_failed_message(settings, found.requester, ExportFacts.of(found.export))
