"""Self-audit: what logexport does is written to the organization's own log."""

from __future__ import annotations

from collections.abc import Mapping
from uuid import UUID

import asyncpg

from logexport.entries import record_audit_log_entry
from logexport.exports.models import LogExport
from logexport.identity import Principal
from logexport.timeutil import format_rfc3339

SYSTEM_ACTOR_ID = "logexport-worker"
SYSTEM_ACTOR_NAME = "logexport"
FAIL_ACTION = "iam:log-export:fail"


def export_metadata(export: LogExport) -> dict[str, object]:
    """Kind, range, format and filter; rows and SHA-256 once they are known."""
    metadata: dict[str, object] = {
        "kind": export.kind.value,
        "from_time": format_rfc3339(export.from_time),
        "to_time": format_rfc3339(export.to_time),
        "format": export.format.value,
        "compression": export.compression.value,
        "filter": export.filter,
    }
    if export.row_count is not None:
        metadata["row_count"] = export.row_count
    if export.sha256 is not None:
        metadata["sha256"] = export.sha256
    if export.file_name is not None:
        metadata["file_name"] = export.file_name
    return metadata


async def record_export_event(
    conn: asyncpg.Connection,
    export: LogExport,
    action: str,
    *,
    actor: Principal | None,
    ip_address: str | None = None,
    user_agent: str | None = None,
    extra: Mapping[str, object] | None = None,
) -> UUID:
    """One entry about ``export``; ``actor=None`` means the worker acted (``SYSTEM``)."""
    metadata = export_metadata(export)
    if extra:
        metadata.update(extra)
    if actor is None:
        return await record_audit_log_entry(
            conn,
            organization_id=export.organization_id,
            action=action,
            actor_type="SYSTEM",
            actor_id=SYSTEM_ACTOR_ID,
            actor_name=SYSTEM_ACTOR_NAME,
            resource_type="LogExport",
            resource_id=str(export.id),
            metadata=metadata,
        )
    return await record_user_action(
        conn,
        actor,
        organization_id=export.organization_id,
        action=action,
        resource_type="LogExport",
        resource_id=str(export.id),
        metadata=metadata,
        ip_address=ip_address,
        user_agent=user_agent,
    )


async def record_user_action(
    conn: asyncpg.Connection,
    actor: Principal,
    *,
    organization_id: UUID,
    action: str,
    resource_type: str,
    resource_id: str,
    metadata: dict[str, object],
    ip_address: str | None,
    user_agent: str | None,
) -> UUID:
    """One entry about what a user did to one of the organization's resources; the API key
    used, if any, is named in its metadata."""
    if actor.api_key_id is not None:
        metadata["api_key_id"] = str(actor.api_key_id)
    return await record_audit_log_entry(
        conn,
        organization_id=organization_id,
        action=action,
        actor_type="USER",
        actor_id=str(actor.user_id),
        actor_email=actor.email,
        actor_name=actor.full_name or None,
        resource_type=resource_type,
        resource_id=resource_id,
        ip_address=ip_address,
        user_agent=user_agent,
        metadata=metadata,
    )
