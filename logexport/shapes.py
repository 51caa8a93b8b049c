"""The API's output shape, written once.

Every object the API hands out (``schema.graphql``) is a tuple of ``Field``s here, in the
order the remote client selects them and MCP answers with them. Three readers share it:

- the GraphQL resolvers resolve each field from its model ``attribute``, and the
  ``DateTime`` / ``BigInt`` scalars serialize with the functions named as the fields'
  ``wire``;
- the in-process MCP server builds the same objects as dicts (``log_export_dict``,
  ``entry_dict``, ``connection_dict`` …), writing each value with its ``wire``;
- the remote client selects exactly these fields (``selection``), so ``logexport mcp``
  answers what ``/mcp`` answers.

A new field is one line in a tuple below plus its line in ``schema.graphql``.

The module imports no database, GraphQL or HTTP stack: the remote client loads it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from operator import attrgetter
from typing import TYPE_CHECKING, TypeAlias, TypeVar, cast

from logexport.actions import Action
from logexport.kinds import LOG_KINDS
from logexport.timeutil import format_rfc3339

if TYPE_CHECKING:
    from logexport.actions import Role
    from logexport.exports.models import LogExport
    from logexport.identity import Organization, Principal, User
    from logexport.records import AuditLogEntry, ScimEvent

JSON: TypeAlias = "bool | int | float | str | list[JSON] | dict[str, JSON] | None"
JSONObject: TypeAlias = dict[str, JSON]

Node = TypeVar("Node")

# ---------------------------------------------------------------------------- wire forms


def same(value: object) -> JSON:
    """A value JSON already holds as it is: booleans, integers, JSON columns."""
    return cast(JSON, value)


def text(value: object) -> JSON:
    """``ID`` and ``String`` fields (and enums resolved to their value): ``str()`` or null."""
    return None if value is None else str(value)


def datetime_text(value: object) -> JSON:
    """A ``DateTime``: RFC 3339 in UTC with six fractional digits, or null."""
    if value is None:
        return None
    assert isinstance(value, datetime)
    return format_rfc3339(value)


def bigint_text(value: object) -> JSON:
    """A ``BigInt``: a decimal string (a JSON number would lose digits in JavaScript)."""
    if value is None:
        return None
    assert isinstance(value, int)
    return str(int(value))


# ---------------------------------------------------------------------------- fields


@dataclass(frozen=True)
class Field:
    """One field of an output object."""

    name: str
    # The model attribute (a dotted path) it resolves from; None: resolved by its own code.
    attribute: str | None = None
    wire: Callable[[object], JSON] = same
    # The sub-selection of an object-typed field.
    fields: tuple[Field, ...] = ()


USER_FIELDS = (
    Field("id", "id", text),
    Field("email", "email", text),
    Field("fullName", "full_name", text),
)

ERROR_FIELDS = (Field("code"), Field("message"))

# The signed manifest: its whole JSON text over GraphQL; over MCP, its place in the chain.
MANIFEST = "manifest"

LOG_EXPORT_FIELDS = (
    Field("id", "id", text),
    Field("kind", "kind.value", text),
    Field("status", "status.value", text),
    Field("fromTime", "from_time", datetime_text),
    Field("toTime", "to_time", datetime_text),
    Field("format", "format.value", text),
    Field("compression", "compression.value", text),
    Field("csvBom", "csv_bom"),
    Field("filter", "filter"),
    Field("requestedBy", fields=USER_FIELDS),
    Field("createdAt", "created_at", datetime_text),
    Field("startedAt", "started_at", datetime_text),
    Field("completedAt", "completed_at", datetime_text),
    Field("snapshotAt", "snapshot_at", datetime_text),
    Field("emailedAt", "emailed_at", datetime_text),
    Field("attempts", "attempts"),
    Field("rowsWritten", "rows_written", bigint_text),
    Field("rowCount", "row_count", bigint_text),
    Field("byteSize", "byte_size", bigint_text),
    Field("sha256", "sha256", text),
    Field("fileName", "file_name", text),
    Field("expiresAt", "expires_at", datetime_text),
    Field(MANIFEST, "manifest", text),
    Field("error", fields=ERROR_FIELDS),
)

# A fresh download link is minted for each read, so it is asked for only on purpose and
# never handed to a model over MCP.
DOWNLOAD_URL = "downloadUrl"

# Keyed by the GraphQL type name, which is also the name of the model class.
ENTRY_FIELDS: Mapping[str, tuple[Field, ...]] = {
    "AuditLogEntry": (
        Field("id", "id", text),
        Field("createdAt", "created_at", datetime_text),
        Field("actorType", "actor_type", text),
        Field("actorId", "actor_id", text),
        Field("actorEmail", "actor_email", text),
        Field("actorName", "actor_name", text),
        Field("action", "action", text),
        Field("resourceType", "resource_type", text),
        Field("resourceId", "resource_id", text),
        Field("ipAddress", "ip_address", text),
        Field("userAgent", "user_agent", text),
        Field("metadata", "metadata"),
    ),
    "ScimEvent": (
        Field("id", "id", text),
        Field("createdAt", "created_at", datetime_text),
        Field("method", "method", text),
        Field("path", "path", text),
        Field("userName", "user_name", text),
        Field("statusCode", "status_code"),
        Field("errorMessage", "error_message", text),
        Field("ipAddress", "ip_address", text),
        Field("userAgent", "user_agent", text),
        Field("requestBody", "request_body"),
        Field("responseBody", "response_body"),
    ),
}

# ViewerPermissions field → the policy action it reports: each kind's list and export.
PERMISSIONS: Mapping[str, Action] = {
    name: action
    for row in LOG_KINDS.values()
    for name, action in (
        (row.list_permission, row.list_action),
        (row.export_permission, row.export_action),
    )
}

VIEWER_FIELDS = (
    Field("id", "user_id", text),
    Field("email", "email", text),
    Field("fullName", "full_name", text),
)

# An organization as one member sees it (what the client and MCP read of it).
MEMBER_ORGANIZATION_FIELDS = (
    Field("id", "organization.id", text),
    Field("name", "organization.name", text),
    Field("viewerRole", "role.value", text),
    Field("viewerPermissions", fields=tuple(Field(name) for name in PERMISSIONS)),
)

# MCP names an organization's ``viewerRole`` and ``viewerPermissions`` from the member's side.
MCP_ORGANIZATION_NAMES: Mapping[str, str] = {
    "viewerRole": "role",
    "viewerPermissions": "permissions",
}

PAGE_INFO_FIELDS = (Field("hasNextPage"), Field("endCursor"))


def selection(fields: Sequence[Field]) -> str:
    """The GraphQL selection of ``fields``: ``id kind … requestedBy { id email fullName } …``."""
    return " ".join(
        f"{field.name} {{ {selection(field.fields)} }}" if field.fields else field.name
        for field in fields
    )


# ---------------------------------------------------------------------------- objects


def object_dict(
    fields: Sequence[Field], obj: object, resolved: Mapping[str, JSON] | None = None
) -> JSONObject:
    """``obj`` as its API object: attributes written in their wire form, the fields
    without an attribute taken from ``resolved``."""
    out: JSONObject = {}
    for field in fields:
        if field.attribute is None:
            out[field.name] = (resolved or {})[field.name]
        else:
            out[field.name] = field.wire(attrgetter(field.attribute)(obj))
    return out


def error_dict(export: LogExport) -> dict[str, str] | None:
    """Why an export failed, or ``None``."""
    if export.error_code is None:
        return None
    return {"code": export.error_code, "message": export.error_message or export.error_code}


def user_dict(user: User) -> JSONObject:
    return object_dict(USER_FIELDS, user)


def log_export_dict(export: LogExport, requester: User) -> JSONObject:
    """A LogExport without ``downloadUrl``; ``requester`` is the user who requested it."""
    resolved: Mapping[str, JSON] = {
        "requestedBy": user_dict(requester),
        "error": cast(JSON, error_dict(export)),
    }
    return object_dict(LOG_EXPORT_FIELDS, export, resolved)


def manifest_summary(envelope: JSON) -> JSON:
    """What MCP shows of a signed manifest (``LogExport.manifest``, JSON text): its
    ``sequence`` in the organization's chain, its ``sha256`` (of the canonical manifest, the
    link the next manifest carries) and the ``keyId`` that signed it; null without one."""
    if not isinstance(envelope, str):
        return None
    from logexport.manifests import manifest_sha256

    parsed = json.loads(envelope)
    manifest = parsed["manifest"]
    return {
        "sequence": manifest["sequence"],
        "sha256": manifest_sha256(manifest),
        "keyId": parsed["key_id"],
    }


def mcp_log_export(export: Mapping[str, object]) -> dict[str, object]:
    """A LogExport as MCP shows it: the manifest summarized, the rest as GraphQL has it."""
    return {
        name: manifest_summary(cast(JSON, value)) if name == MANIFEST else value
        for name, value in export.items()
    }


def entry_dict(entry: AuditLogEntry | ScimEvent) -> JSONObject:
    """An audit log entry or a SCIM event."""
    return object_dict(ENTRY_FIELDS[type(entry).__name__], entry)


def viewer_dict(principal: Principal) -> JSONObject:
    return object_dict(VIEWER_FIELDS, principal)


def permissions_dict(allows: Callable[[Action], bool]) -> dict[str, bool]:
    """ViewerPermissions, each field answered by ``allows(action)``."""
    return {name: allows(action) for name, action in PERMISSIONS.items()}


@dataclass(frozen=True)
class OrganizationView:
    """An organization as one member sees it."""

    organization: Organization
    role: Role


def member_organization_dict(view: OrganizationView) -> JSONObject:
    """An organization with its ``viewerRole`` and ``viewerPermissions``."""
    from logexport.policy import allows

    resolved: Mapping[str, JSON] = {
        "viewerPermissions": cast(JSON, permissions_dict(lambda action: allows(view.role, action)))
    }
    return object_dict(MEMBER_ORGANIZATION_FIELDS, view, resolved)


def mcp_organization(organization: Mapping[str, JSON]) -> JSONObject:
    """A member's organization as MCP shows it: ``role`` and ``permissions``."""
    return {
        MCP_ORGANIZATION_NAMES.get(field.name, field.name): organization[field.name]
        for field in MEMBER_ORGANIZATION_FIELDS
    }


def connection_dict(edges: Sequence[tuple[str, Node]], has_next_page: bool) -> dict[str, object]:
    """A Relay connection of ``(cursor, node)`` pairs."""
    return {
        "edges": [{"cursor": cursor, "node": node} for cursor, node in edges],
        "pageInfo": {"hasNextPage": has_next_page, "endCursor": edges[-1][0] if edges else None},
    }
