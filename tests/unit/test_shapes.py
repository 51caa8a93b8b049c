"""One list of fields per output object: the GraphQL schema and resolvers, the MCP dicts and
the remote client's selections all come from ``logexport.shapes``."""

from __future__ import annotations

import ipaddress
import uuid
from dataclasses import fields as dataclass_fields
from datetime import UTC, datetime
from typing import Any

import graphql
import pytest

from logexport import client, shapes
from logexport.exports.models import Compression, ExportFormat, ExportKind, ExportStatus, LogExport
from logexport.identity import Organization, User
from logexport.kinds import LOG_KINDS
from logexport.policy import Role
from logexport.records import AuditLogEntry, ScimEvent
from logexport.web.graphql import executable_schema

SCHEMA = executable_schema()

OBJECT_FIELDS = {
    "LogExport": shapes.LOG_EXPORT_FIELDS,
    "User": shapes.USER_FIELDS,
    "LogExportError": shapes.ERROR_FIELDS,
    "PageInfo": shapes.PAGE_INFO_FIELDS,
    "ViewerPermissions": tuple(shapes.Field(name) for name in shapes.PERMISSIONS),
    **shapes.ENTRY_FIELDS,
}
# GraphQL-only: a fresh link per read is asked for on purpose and never shown over MCP.
GRAPHQL_ONLY = {"LogExport": {shapes.DOWNLOAD_URL}}

WHEN = datetime(2026, 1, 2, 3, 4, 5, 600, tzinfo=UTC)
REQUESTER = User(uuid.uuid4(), "ada@acme.test", "Ada Lovelace", WHEN)


def names(fields: tuple[shapes.Field, ...]) -> list[str]:
    return [field.name for field in fields]


def an_export(**changes: object) -> LogExport:
    values: dict[str, Any] = {field.name: None for field in dataclass_fields(LogExport)}
    values |= {
        "id": uuid.uuid4(),
        "organization_id": uuid.uuid4(),
        "kind": ExportKind.SCIM_EVENT,
        "status": ExportStatus.COMPLETED,
        "from_time": WHEN,
        "to_time": WHEN.replace(year=2027),
        "format": ExportFormat.CSV,
        "compression": Compression.GZIP,
        "csv_bom": True,
        "filter": {"methods": ["POST"]},
        "requested_by": REQUESTER.id,
        "attempts": 2,
        "rows_written": 12,
        "row_count": 2**40,
        "byte_size": 9_007_199_254_740_993,
        "sha256": "ab" * 32,
        "file_name": "scim-events.csv.gz",
        "created_at": WHEN,
        "started_at": WHEN,
        "completed_at": WHEN,
        "expires_at": WHEN.replace(month=2),
        "email_attempts": 0,
        "run_after": WHEN,
        "updated_at": WHEN,
    }
    return LogExport(**(values | changes))


ENTRIES = {
    "AuditLogEntry": AuditLogEntry(
        uuid.uuid4(), uuid.uuid4(), WHEN, "USER", "u1", "ada@acme.test", "Ada", "user.login",
        "User", "u1", ipaddress.ip_address("192.0.2.7"), "curl/8", {"mfa": True},  # type: ignore[arg-type]
    ),
    "ScimEvent": ScimEvent(
        uuid.uuid4(), uuid.uuid4(), WHEN, "PATCH", "/Users/1", "ada", 409, "conflict",
        ipaddress.ip_address("2001:db8::1"), None, {"op": "add"}, None,  # type: ignore[arg-type]
    ),
}  # fmt: skip


def graphql_value(type_name: str, field_name: str, obj: object) -> object:
    """What the GraphQL server answers for one field: its resolver, then its scalar."""
    field = SCHEMA.type_map[type_name].fields[field_name]  # type: ignore[union-attr]
    assert field.resolve is not None, f"{type_name}.{field_name} has no resolver"
    value = field.resolve(obj, None)
    named = graphql.get_named_type(field.type)
    if value is None or not isinstance(named, graphql.GraphQLLeafType):
        return value
    return named.serialize(value)


@pytest.mark.parametrize("type_name", sorted(OBJECT_FIELDS))
def test_schema_fields_are_the_shape_fields(type_name: str) -> None:
    in_schema = set(SCHEMA.type_map[type_name].fields)  # type: ignore[union-attr]
    shared = set(names(OBJECT_FIELDS[type_name]))
    assert in_schema == shared | GRAPHQL_ONLY.get(type_name, set())


def test_mcp_log_export_client_fragment_and_graphql_type_share_one_list() -> None:
    listed = names(shapes.LOG_EXPORT_FIELDS)
    mcp = shapes.log_export_dict(an_export(), REQUESTER)
    [fragment] = graphql.parse(client.LOG_EXPORT_FRAGMENT).definitions
    selected = [s.name.value for s in fragment.selection_set.selections]  # type: ignore[attr-defined]
    in_schema = set(SCHEMA.type_map["LogExport"].fields) - {shapes.DOWNLOAD_URL}  # type: ignore[union-attr]

    assert list(mcp) == listed
    assert selected == listed
    assert in_schema == set(listed)


@pytest.mark.parametrize(
    "export",
    [
        an_export(),
        an_export(
            status=ExportStatus.FAILED, started_at=None, completed_at=None, row_count=None,
            byte_size=None, sha256=None, file_name=None, expires_at=None,
            error_code="STORAGE_UNAVAILABLE", error_message="object storage did not answer",
        ),
    ],
)  # fmt: skip
def test_mcp_log_export_is_what_graphql_answers(export: LogExport) -> None:
    mcp = shapes.log_export_dict(export, REQUESTER)
    for field in shapes.LOG_EXPORT_FIELDS:
        if field.attribute is not None:
            assert mcp[field.name] == graphql_value("LogExport", field.name, export), field.name
    assert mcp["requestedBy"] == {
        "id": str(REQUESTER.id),
        "email": REQUESTER.email,
        "fullName": REQUESTER.full_name,
    }
    assert mcp["error"] == shapes.error_dict(export)
    assert mcp["rowCount"] in (None, "1099511627776")
    assert mcp["createdAt"] == "2026-01-02T03:04:05.000600Z"


@pytest.mark.parametrize("type_name", sorted(ENTRIES))
def test_mcp_entries_are_what_graphql_answers_and_what_the_client_selects(type_name: str) -> None:
    entry = ENTRIES[type_name]
    mcp = shapes.entry_dict(entry)  # type: ignore[arg-type]
    (row,) = [row for row in LOG_KINDS.values() if row.graphql_node == type_name]
    document = client.listing_document(row)

    assert list(mcp) == names(shapes.ENTRY_FIELDS[type_name])
    assert shapes.selection(shapes.ENTRY_FIELDS[type_name]) in document
    for name, value in mcp.items():
        assert value == graphql_value(type_name, name, entry), name


def test_member_organization_is_one_shape_for_graphql_mcp_and_the_client() -> None:
    view = shapes.OrganizationView(Organization(uuid.uuid4(), "Acme Corp", WHEN), Role.VIEWER)
    organization = shapes.member_organization_dict(view)

    assert shapes.mcp_organization(organization) == {
        "id": str(view.organization.id),
        "name": "Acme Corp",
        "role": "VIEWER",
        "permissions": {
            "canListAuditLog": True,
            "canExportAuditLog": False,
            "canListScimEvents": True,
            "canExportScimEvents": False,
        },
    }
    for name in ("id", "name", "viewerRole"):
        assert organization[name] == graphql_value("Organization", name, view)
    assert organization["viewerPermissions"] == graphql_value(
        "Organization", "viewerPermissions", view
    )
    assert shapes.selection(shapes.MEMBER_ORGANIZATION_FIELDS) in client.VIEWER


def test_connection_names_the_last_cursor() -> None:
    assert shapes.connection_dict([("a", 1), ("b", 2)], True) == {
        "edges": [{"cursor": "a", "node": 1}, {"cursor": "b", "node": 2}],
        "pageInfo": {"hasNextPage": True, "endCursor": "b"},
    }
    assert shapes.connection_dict([], False) == {
        "edges": [],
        "pageInfo": {"hasNextPage": False, "endCursor": None},
    }


def test_selection_nests_object_fields() -> None:
    assert shapes.selection(shapes.LOG_EXPORT_FIELDS).startswith("id kind status fromTime")
    assert "requestedBy { id email fullName }" in shapes.selection(shapes.LOG_EXPORT_FIELDS)
    assert shapes.selection(shapes.LOG_EXPORT_FIELDS).endswith("error { code message }")
