"""Requesting an export in tests the way GraphQL and MCP do: raw values keyed by
snake_case name, authorized first, then parsed into an ``ExportInput``."""

from __future__ import annotations

from typing import Any

import asyncpg

from logexport.config import Settings
from logexport.exports.models import ExportKind, LogExport
from logexport.identity import Principal
from logexport.web import service_calls


async def request_export(
    pool: asyncpg.Pool,
    settings: Settings,
    principal: Principal,
    kind: ExportKind | str,
    *,
    ip_address: str | None = None,
    user_agent: str | None = None,
    **arguments: Any,
) -> LogExport:
    return await service_calls.request_export(
        pool,
        settings,
        principal,
        kind,
        arguments,
        ip_address=ip_address,
        user_agent=user_agent,
    )
