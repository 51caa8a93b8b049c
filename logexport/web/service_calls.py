"""The service calls GraphQL and MCP share: one argument mapping per operation.

Both surfaces accept the same inputs under different spellings (``fromTime`` and
``from_time``); each translates its names, then calls through here, so a new argument or a
new listing is wired once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from uuid import UUID

import asyncpg

from logexport import entries
from logexport.config import Settings
from logexport.errors import BadUserInput
from logexport.exports import requests
from logexport.exports.models import ExportKind, LogExport
from logexport.identity import Principal

# One cursor format for GraphQL's Organization.logExports and MCP's list_log_exports, so a
# cursor from one works in the other.
_EXPORTS_CURSOR_KIND = "log_exports"
_EXPORTS_CURSOR_FILTER = "-"

# The arguments of ``requests.request_export`` a caller chooses, by their snake_case names.
REQUEST_ARGUMENTS = (
    "organization_id",
    "from_time",
    "to_time",
    "format",
    "compression",
    "csv_bom",
    "filter",
    "idempotency_key",
)


def page_size(first: Any) -> int:
    if isinstance(first, bool) or not isinstance(first, int) or not 1 <= first <= 100:
        raise BadUserInput("first must be between 1 and 100", field="first")
    return first


async def request_export(
    pool: asyncpg.Pool,
    settings: Settings,
    principal: Principal,
    kind: ExportKind | str,
    arguments: Mapping[str, Any],
    *,
    ip_address: str | None,
    user_agent: str | None,
) -> LogExport:
    """``requests.request_export`` with ``arguments`` keyed by snake_case name."""
    return await requests.request_export(
        pool,
        settings,
        principal,
        kind,
        ip_address=ip_address,
        user_agent=user_agent,
        **{name: arguments.get(name) for name in REQUEST_ARGUMENTS},
    )


async def list_entries(
    pool: asyncpg.Pool,
    principal: Principal,
    kind: ExportKind | str,
    organization_id: UUID,
    *,
    first: Any,
    after: str | None,
    filter: Mapping[str, Any] | None,
    from_time: Any = None,
    to_time: Any = None,
) -> entries.Page[Any]:
    """A page of the organization's audit log entries or SCIM events, by ``kind``, created
    in [``from_time``, ``to_time``) when either bound is given."""
    time_range = entries.TimeRange.parse(from_time, to_time)
    if ExportKind(kind) is ExportKind.AUDIT_LOG:
        audit_filter = entries.AuditLogFilter.parse(filter)
        size = page_size(first)
        async with pool.acquire() as conn:
            return await entries.list_audit_log_entries(
                conn,
                principal,
                organization_id,
                first=size,
                after=after,
                filter=audit_filter,
                time_range=time_range,
            )
    scim_filter = entries.ScimEventFilter.parse(filter)
    size = page_size(first)
    async with pool.acquire() as conn:
        return await entries.list_scim_events(
            conn,
            principal,
            organization_id,
            first=size,
            after=after,
            filter=scim_filter,
            time_range=time_range,
        )


def export_cursor(export: LogExport) -> str:
    """The cursor that resumes an organization's export list after ``export``."""
    return entries.encode_cursor(
        _EXPORTS_CURSOR_KIND,
        export.organization_id,
        _EXPORTS_CURSOR_FILTER,
        export.created_at,
        export.id,
    )


async def list_exports(
    pool: asyncpg.Pool,
    principal: Principal,
    organization_id: UUID,
    *,
    first: Any,
    after: str | None,
) -> requests.ExportPage:
    """A page of the organization's exports, resuming after the cursor ``after``."""
    position = None
    if after is not None:
        position = entries.decode_cursor(
            after, _EXPORTS_CURSOR_KIND, organization_id, _EXPORTS_CURSOR_FILTER
        )
    size = page_size(first)
    return await requests.list_exports(pool, principal, organization_id, first=size, after=position)
