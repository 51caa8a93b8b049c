"""Everything that differs between the two log kinds, in one table.

Every layer (request validation, the export pipeline and its encoders, file names, mail,
the download page, GraphQL, MCP and the clients) reads ``LOG_KINDS[kind]`` instead of
branching on the kind, so a third kind is one more row here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from logexport.entries import (
    AuditLogEntry,
    AuditLogFilter,
    Page,
    ScimEvent,
    ScimEventFilter,
    list_audit_log_entries,
    list_scim_events,
)
from logexport.exports.models import ExportKind
from logexport.policy import Action

# A filter of either kind; each row names the one it takes.
LogFilter = AuditLogFilter | ScimEventFilter
ListEntries = (
    Callable[..., Awaitable[Page[AuditLogEntry]]] | Callable[..., Awaitable[Page[ScimEvent]]]
)


@dataclass(frozen=True)
class LogKind:
    kind: ExportKind
    filter_type: type[AuditLogFilter] | type[ScimEventFilter]
    # The service call that lists a page of entries (it authorizes ``list_action``).
    list_entries: ListEntries
    # Named queries (sql/queries/exports.sql): the packed export rows, and the exact fields
    # of rows whose packed form cannot be split.
    export_query: str
    exact_query: str
    # JSONL keys and the CSV header, in file order.
    columns: tuple[str, ...]
    # The text fields the export query packs into one value, in order, and those that may
    # be NULL (bit i of a row's NULL mask is the i-th of them).
    packed_fields: tuple[str, ...]
    nullable_fields: tuple[str, ...]
    # Columns JSONL writes unquoted, as the JSON they hold: numbers and JSON documents.
    json_columns: frozenset[str]
    list_action: Action
    export_action: Action
    # How people call it: "Your audit log export is ready", "12 audit log entries".
    label: str
    rows_noun: str
    file_stem: str
    # Names on the API surfaces and in the clients.
    graphql_request: str
    graphql_connection: str
    mcp_list_tool: str
    mcp_request_tool: str

    @property
    def rows_title(self) -> str:
        """``rows_noun`` at the start of a sentence: "Audit log entries", "SCIM events"."""
        return self.rows_noun[:1].upper() + self.rows_noun[1:]


AUDIT_LOG = LogKind(
    kind=ExportKind.AUDIT_LOG,
    filter_type=AuditLogFilter,
    list_entries=list_audit_log_entries,
    export_query="export_audit_log_rows",
    exact_query="export_audit_log_exact",
    columns=(
        "id", "organization_id", "created_at", "actor_type", "actor_id", "actor_email",
        "actor_name", "action", "resource_type", "resource_id", "ip_address", "user_agent",
        "metadata",
    ),
    packed_fields=(
        "id", "created_at", "actor_type", "actor_id", "actor_email", "actor_name", "action",
        "resource_type", "resource_id", "ip_address", "user_agent",
    ),
    nullable_fields=(
        "actor_id", "actor_email", "actor_name", "resource_type", "resource_id", "ip_address",
        "user_agent",
    ),
    json_columns=frozenset({"metadata"}),
    list_action=Action.AUDIT_LOG_LIST,
    export_action=Action.AUDIT_LOG_EXPORT,
    label="audit log",
    rows_noun="audit log entries",
    file_stem="audit-log-export",
    graphql_request="requestAuditLogExport",
    graphql_connection="auditLogEntries",
    mcp_list_tool="list_audit_log_entries",
    mcp_request_tool="request_audit_log_export",
)  # fmt: skip

SCIM_EVENT = LogKind(
    kind=ExportKind.SCIM_EVENT,
    filter_type=ScimEventFilter,
    list_entries=list_scim_events,
    export_query="export_scim_event_rows",
    exact_query="export_scim_event_exact",
    columns=(
        "id", "organization_id", "created_at", "method", "path", "user_name", "status_code",
        "error_message", "ip_address", "user_agent", "request_body", "response_body",
    ),
    packed_fields=(
        "id", "created_at", "method", "path", "user_name", "status_code", "error_message",
        "ip_address", "user_agent",
    ),
    nullable_fields=("user_name", "error_message", "ip_address", "user_agent"),
    json_columns=frozenset({"status_code", "request_body", "response_body"}),
    list_action=Action.SCIM_EVENT_LIST,
    export_action=Action.SCIM_EVENT_EXPORT,
    label="SCIM event",
    rows_noun="SCIM events",
    file_stem="scim-event-export",
    graphql_request="requestScimEventExport",
    graphql_connection="scimEvents",
    mcp_list_tool="list_scim_events",
    mcp_request_tool="request_scim_event_export",
)  # fmt: skip

LOG_KINDS: Mapping[ExportKind, LogKind] = MappingProxyType(
    {AUDIT_LOG.kind: AUDIT_LOG, SCIM_EVENT.kind: SCIM_EVENT}
)


def log_kind(kind: ExportKind | str) -> LogKind:
    """The row of ``kind`` (an ``ExportKind`` or its name); ``ValueError`` if there is none."""
    return LOG_KINDS[ExportKind(str(kind).upper())]
