"""Everything that differs between the two log kinds, in one table.

Every layer (request validation, listings, the export pipeline and its encoders, file
names, mail, the download page, GraphQL, MCP, the clients and the console) reads
``LOG_KINDS[kind]`` instead of branching on the kind, so a third kind is one more row here.

A row is data only: names, labels, columns, query and action names. The module imports no
database, server or HTTP stack, so the remote client loads it too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

from logexport.actions import Action
from logexport.records import AuditLogEntry, AuditLogFilter, ScimEvent, ScimEventFilter


class ExportKind(StrEnum):
    """Which log an export or a listing reads; ``LOG_KINDS`` holds what each implies."""

    AUDIT_LOG = "AUDIT_LOG"
    SCIM_EVENT = "SCIM_EVENT"


# A filter of either kind; each row names the one it takes.
LogFilter = AuditLogFilter | ScimEventFilter


@dataclass(frozen=True)
class FilterField:
    """One field of a kind's filter as a person fills it in on the console: its key in the
    GraphQL filter input, its URL parameter, its label and an example value; ``many`` when
    it takes several values, ``integer`` when they are numbers, ``suggestions`` to offer."""

    key: str
    param: str
    label: str
    example: str
    many: bool = True
    integer: bool = False
    suggestions: tuple[str, ...] = ()


@dataclass(frozen=True)
class LogKind:
    kind: ExportKind
    filter_type: type[AuditLogFilter] | type[ScimEventFilter]
    # What a listing reads back, from the named query ``list_query``; its cursors carry
    # ``cursor_tag`` so that one kind's cursor never resumes the other's listing.
    record_type: type[AuditLogEntry] | type[ScimEvent]
    list_query: str
    cursor_tag: str
    # Named queries (sql/queries/exports.sql): the packed export rows, and the exact fields
    # of rows whose packed form cannot be split.
    # The export's lines as PostgreSQL writes them: whole JSONL lines, or CSV text cells
    # and the JSON columns (sql/queries/exports.sql).
    jsonl_query: str
    csv_query: str
    exact_query: str
    # JSONL keys and the CSV header, in file order.
    columns: tuple[str, ...]
    # The text fields the export query packs into one value, in order, and those that may
    # be NULL (bit i of a row's NULL mask is the i-th of them).
    packed_fields: tuple[str, ...]
    nullable_fields: tuple[str, ...]
    # Columns JSONL writes unquoted, as the JSON they hold: numbers and JSON documents.
    json_columns: frozenset[str]
    filter_fields: tuple[FilterField, ...]
    list_action: Action
    export_action: Action
    # How people call it: "Your audit log export is ready", "12 audit log entries", and
    # the kind of an export in the console's list of exports.
    label: str
    rows_noun: str
    exports_label: str
    file_stem: str
    # Names on the API surfaces and in the clients: the request mutation, the connection
    # field on Organization, its node and filter input types, the ViewerPermissions fields
    # reporting ``list_action`` and ``export_action``, and the MCP tools.
    graphql_request: str
    graphql_connection: str
    graphql_node: str
    graphql_filter: str
    list_permission: str
    export_permission: str
    mcp_list_tool: str
    mcp_request_tool: str

    @property
    def rows_title(self) -> str:
        """``rows_noun`` at the start of a sentence: "Audit log entries", "SCIM events"."""
        return self.rows_noun[:1].upper() + self.rows_noun[1:]

    @property
    def graphql_request_operation(self) -> str:
        """The request mutation's operation name, and its input type without ``Input``."""
        return _initial_upper(self.graphql_request)

    @property
    def graphql_list_operation(self) -> str:
        return _initial_upper(self.graphql_connection)


def _initial_upper(name: str) -> str:
    return name[:1].upper() + name[1:]


AUDIT_LOG = LogKind(
    kind=ExportKind.AUDIT_LOG,
    filter_type=AuditLogFilter,
    record_type=AuditLogEntry,
    list_query="list_audit_log_entries",
    cursor_tag="audit",
    jsonl_query="export_audit_log_jsonl",
    csv_query="export_audit_log_csv",
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
    filter_fields=(
        FilterField("actions", "action", "Action", "user.login"),
        FilterField("actorIds", "actorId", "Actor ID", "usr_123"),
        FilterField("resourceTypes", "resourceType", "Resource type", "User"),
    ),
    list_action=Action.AUDIT_LOG_LIST,
    export_action=Action.AUDIT_LOG_EXPORT,
    label="audit log",
    rows_noun="audit log entries",
    exports_label="Audit log",
    file_stem="audit-log-export",
    graphql_request="requestAuditLogExport",
    graphql_connection="auditLogEntries",
    graphql_node="AuditLogEntry",
    graphql_filter="AuditLogFilter",
    list_permission="canListAuditLog",
    export_permission="canExportAuditLog",
    mcp_list_tool="list_audit_log_entries",
    mcp_request_tool="request_audit_log_export",
)  # fmt: skip

SCIM_EVENT = LogKind(
    kind=ExportKind.SCIM_EVENT,
    filter_type=ScimEventFilter,
    record_type=ScimEvent,
    list_query="list_scim_events",
    cursor_tag="scim",
    jsonl_query="export_scim_event_jsonl",
    csv_query="export_scim_event_csv",
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
    filter_fields=(
        FilterField("methods", "method", "Method", "POST",
                    suggestions=("GET", "POST", "PUT", "PATCH", "DELETE")),
        FilterField("userName", "userName", "User name", "ada@example.com", many=False),
        FilterField("statusCodes", "statusCode", "Status code", "409", integer=True),
    ),
    list_action=Action.SCIM_EVENT_LIST,
    export_action=Action.SCIM_EVENT_EXPORT,
    label="SCIM event",
    rows_noun="SCIM events",
    exports_label="SCIM events",
    file_stem="scim-event-export",
    graphql_request="requestScimEventExport",
    graphql_connection="scimEvents",
    graphql_node="ScimEvent",
    graphql_filter="ScimEventFilter",
    list_permission="canListScimEvents",
    export_permission="canExportScimEvents",
    mcp_list_tool="list_scim_events",
    mcp_request_tool="request_scim_event_export",
)  # fmt: skip

LOG_KINDS: Mapping[ExportKind, LogKind] = MappingProxyType(
    {AUDIT_LOG.kind: AUDIT_LOG, SCIM_EVENT.kind: SCIM_EVENT}
)


def log_kind(kind: ExportKind | str) -> LogKind:
    """The row of ``kind`` (an ``ExportKind`` or its name); ``ValueError`` if there is none."""
    return LOG_KINDS[ExportKind(str(kind).upper())]


def console_kinds() -> dict[str, dict[str, object]]:
    """The table as the console's scripts read it (a JSON data block in each page), by
    kind: the request mutation and its input type, the exports list's label, the filter."""
    return {
        kind.value: {
            "request": row.graphql_request,
            "requestInput": f"{row.graphql_request_operation}Input",
            "exportsLabel": row.exports_label,
            "filterFields": [
                {
                    "key": field.key,
                    "param": field.param,
                    "label": field.label,
                    "example": field.example,
                    "many": field.many,
                    "integer": field.integer,
                    **({"suggestions": list(field.suggestions)} if field.suggestions else {}),
                }
                for field in row.filter_fields
            ],
        }
        for kind, row in LOG_KINDS.items()
    }
