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
from logexport.kinds import LOG_KINDS
from logexport.records import AuditLogEntry, ScimEvent

# One cursor format for GraphQL's Organization.logExports and MCP's list_log_exports, so a
# cursor from one works in the other.
_EXPORTS_CURSOR_KIND = "log_exports"
_EXPORTS_CURSOR_FILTER = "-"

# The export request's arguments a caller chooses, by their snake_case names.
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


def page_size(first: object) -> int:
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
    """Queue an export from ``arguments`` keyed by snake_case name; the service checks the
    caller's right to export before it judges them."""
    raw = {name: arguments.get(name) for name in REQUEST_ARGUMENTS}
    return await requests.request_export_from_values(
        pool, settings, principal, kind, raw, ip_address=ip_address, user_agent=user_agent
    )


async def list_entries(
    pool: asyncpg.Pool,
    principal: Principal,
    kind: ExportKind | str,
    organization_id: UUID,
    *,
    first: object,
    after: str | None,
    filter: Mapping[str, Any] | None,
    from_time: object = None,
    to_time: object = None,
) -> entries.Page[AuditLogEntry] | entries.Page[ScimEvent]:
    """A page of the organization's audit log entries or SCIM events, by ``kind``, created
    in [``from_time``, ``to_time``) when either bound is given."""
    chosen = LOG_KINDS[ExportKind(kind)]
    time_range = entries.TimeRange.parse(from_time, to_time)
    entry_filter = chosen.filter_type.parse(filter)
    size = page_size(first)
    async with pool.acquire() as conn:
        return await entries.list_entries(
            conn,
            principal,
            chosen.kind,
            organization_id,
            first=size,
            after=after,
            filter=entry_filter,
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
    first: object,
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
