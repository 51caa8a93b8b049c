"""logexport: asynchronous exports of audit logs and SCIM provisioning events.

The asyncio library every surface (GraphQL, MCP, console, CLI) is built on::

    import logexport

    settings = logexport.Settings.from_env(needs=["database_url"])
    pool = await logexport.create_pool(settings.require("database_url"))
    async with pool.acquire() as conn:
        await logexport.record_audit_log_entry(
            conn, organization_id=org_id, action="user.login", actor_type="USER"
        )
    request = logexport.parse_export_input(
        settings, "AUDIT_LOG", organization_id=org_id,
        from_time="2026-01-01T00:00:00Z", to_time="2026-02-01T00:00:00Z",
    )
    export = await logexport.request_export(pool, settings, principal, request)
    async with logexport.Worker(settings):   # runs exports inside your event loop
        ...

    # Or, remotely, with no database access:
    async with logexport.LogExportClient("https://logexport.example.com", token) as client:
        export = await client.request_export("AUDIT_LOG", org_id, "2026-01-01", "2026-01-31")
        export = await client.wait_for_export(export["id"], timeout=600)

Errors: ``BadUserInput``, ``Unauthenticated``, ``Forbidden``, ``NotFound`` and
``RateLimited`` are raised by the in-process API and, as subclasses that are also
``ApiError``, by ``LogExportClient``, so one ``except`` clause serves both.
``QueryTooComplex`` and ``InternalError`` come from the remote client only.

Names are loaded on first use, so ``import logexport`` stays cheap and a submodule can be
imported without pulling in every dependency (S3, SMTP, HTTP clients).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS: dict[str, str] = {
    # settings and database
    "Settings": "logexport.config",
    "ConfigError": "logexport.config",
    "create_pool": "logexport.db",
    "connect": "logexport.db",
    "migrate": "logexport.db",
    # identities
    "Principal": "logexport.identity",
    "authenticate": "logexport.identity",
    # entries
    "record_audit_log_entry": "logexport.entries",
    "record_scim_event": "logexport.entries",
    "record_audit_log_entries": "logexport.entries",
    "record_scim_events": "logexport.entries",
    "AuditLogEntryInput": "logexport.entries",
    "ScimEventInput": "logexport.entries",
    "AuditLogFilter": "logexport.records",
    "ScimEventFilter": "logexport.records",
    "list_audit_log_entries": "logexport.entries",
    "list_scim_events": "logexport.entries",
    # exports
    "ExportInput": "logexport.exports.requests",
    "parse_export_input": "logexport.exports.requests",
    "request_export": "logexport.exports.requests",
    "get_export": "logexport.exports.requests",
    "list_exports": "logexport.exports.requests",
    "cancel_export": "logexport.exports.requests",
    "LogExport": "logexport.exports.models",
    "ExportKind": "logexport.exports.models",
    "ExportStatus": "logexport.exports.models",
    "ExportFormat": "logexport.exports.models",
    "Compression": "logexport.exports.models",
    "Worker": "logexport.exports.worker",
    # errors
    "LogExportError": "logexport.errors",
    "BadUserInput": "logexport.errors",
    "Unauthenticated": "logexport.errors",
    "Forbidden": "logexport.errors",
    "NotFound": "logexport.errors",
    "RateLimited": "logexport.errors",
    # remote client
    "LogExportClient": "logexport.client",
    "ApiError": "logexport.client",
    "ApiUnreachable": "logexport.client",
    "ChecksumMismatch": "logexport.client",
    "ManifestMismatch": "logexport.client",
    "KeysUnavailable": "logexport.client",
    "QueryTooComplex": "logexport.client",
    "InternalError": "logexport.client",
}

__all__ = [
    "ApiError",
    "ApiUnreachable",
    "AuditLogEntryInput",
    "AuditLogFilter",
    "BadUserInput",
    "ChecksumMismatch",
    "Compression",
    "ConfigError",
    "ExportFormat",
    "ExportInput",
    "ExportKind",
    "ExportStatus",
    "Forbidden",
    "InternalError",
    "KeysUnavailable",
    "LogExport",
    "LogExportClient",
    "LogExportError",
    "ManifestMismatch",
    "NotFound",
    "Principal",
    "QueryTooComplex",
    "RateLimited",
    "ScimEventFilter",
    "ScimEventInput",
    "Settings",
    "Unauthenticated",
    "Worker",
    "authenticate",
    "cancel_export",
    "connect",
    "create_pool",
    "get_export",
    "list_audit_log_entries",
    "list_exports",
    "list_scim_events",
    "migrate",
    "parse_export_input",
    "record_audit_log_entries",
    "record_audit_log_entry",
    "record_scim_event",
    "record_scim_events",
    "request_export",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'logexport' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:
    from logexport.client import (
        ApiError,
        ApiUnreachable,
        ChecksumMismatch,
        InternalError,
        KeysUnavailable,
        LogExportClient,
        ManifestMismatch,
        QueryTooComplex,
    )
    from logexport.config import ConfigError, Settings
    from logexport.db import connect, create_pool, migrate
    from logexport.entries import (
        AuditLogEntryInput,
        ScimEventInput,
        list_audit_log_entries,
        list_scim_events,
        record_audit_log_entries,
        record_audit_log_entry,
        record_scim_event,
        record_scim_events,
    )
    from logexport.errors import (
        BadUserInput,
        Forbidden,
        LogExportError,
        NotFound,
        RateLimited,
        Unauthenticated,
    )
    from logexport.exports.models import (
        Compression,
        ExportFormat,
        ExportKind,
        ExportStatus,
        LogExport,
    )
    from logexport.exports.requests import (
        ExportInput,
        cancel_export,
        get_export,
        list_exports,
        parse_export_input,
        request_export,
    )
    from logexport.exports.worker import Worker
    from logexport.identity import Principal, authenticate
    from logexport.records import AuditLogFilter, ScimEventFilter
