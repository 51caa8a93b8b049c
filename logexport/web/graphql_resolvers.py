"""GraphQL resolvers: parse arguments, call the service functions, shape their results.

Authorization and validation live in the services (``exports.requests``, ``entries``,
``policy``); a resolver only translates. Errors the services raise are mapped to
``extensions.code`` once, in ``web.graphql``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from operator import attrgetter
from typing import Any
from uuid import UUID

import asyncpg
from ariadne import MutationType, ObjectType, QueryType, ScalarType
from graphql import GraphQLResolveInfo, ValueNode, value_from_ast_untyped
from starlette.requests import Request

from logexport import identity, policy
from logexport.config import Settings
from logexport.errors import Forbidden
from logexport.exports import downloads, requests
from logexport.exports.models import ExportKind, ExportStatus, LogExport
from logexport.identity import Principal
from logexport.policy import Action, Role
from logexport.timeutil import format_rfc3339
from logexport.web import service_calls


@dataclass
class Context:
    """What every resolver of one request shares."""

    request: Request
    settings: Settings
    pool: asyncpg.Pool
    principal: Principal
    users: dict[UUID, identity.User | None] = field(default_factory=dict)

    @property
    def ip_address(self) -> str | None:
        # The peer address only: forwarded headers can be forged unless a proxy is trusted.
        return self.request.client.host if self.request.client else None

    @property
    def user_agent(self) -> str | None:
        return self.request.headers.get("user-agent") or None


Info = GraphQLResolveInfo[Context]


def _ctx(info: Info) -> Context:
    context = info.context
    assert isinstance(context, Context)
    return context


@dataclass(frozen=True)
class OrganizationView:
    """An organization as one member sees it."""

    organization: identity.Organization
    role: Role


# ---------------------------------------------------------------------------- scalars

datetime_scalar = ScalarType("DateTime")


@datetime_scalar.serializer
def _serialize_datetime(value: datetime) -> str:
    return format_rfc3339(value)


@datetime_scalar.value_parser
def _parse_datetime(value: Any) -> Any:
    # Passed through untouched: the service parses it and names the field (fromTime/toTime)
    # in its error, which a scalar parser cannot know.
    return value


@datetime_scalar.literal_parser
def _parse_datetime_literal(node: ValueNode, variables: dict[str, Any] | None = None) -> Any:
    return value_from_ast_untyped(node, variables)


bigint_scalar = ScalarType("BigInt")


@bigint_scalar.serializer
def _serialize_bigint(value: int) -> str:
    return str(int(value))


json_scalar = ScalarType("JSON")


@json_scalar.serializer
def _serialize_json(value: Any) -> Any:
    return value


@json_scalar.literal_parser
def _parse_json_literal(node: ValueNode, variables: dict[str, Any] | None = None) -> Any:
    return value_from_ast_untyped(node, variables)


# ---------------------------------------------------------------------------- helpers


def _attributes(object_type: ObjectType, names: Mapping[str, str]) -> None:
    """Resolve each GraphQL field from the attribute (a dotted path) of the same meaning."""

    def getter(attribute: str) -> Callable[..., Any]:
        get = attrgetter(attribute)
        return lambda obj, _info: get(obj)

    for graphql_name, attribute in names.items():
        object_type.set_field(graphql_name, getter(attribute))


def _connection(edges: list[tuple[str, Any]], has_next_page: bool) -> dict[str, Any]:
    return {
        "edges": [{"cursor": cursor, "node": node} for cursor, node in edges],
        "pageInfo": {
            "hasNextPage": has_next_page,
            "endCursor": edges[-1][0] if edges else None,
        },
    }


# ---------------------------------------------------------------------------- Query

query = QueryType()


@query.field("viewer")
async def resolve_viewer(_: None, info: Info) -> Principal:
    return _ctx(info).principal


@query.field("maxRangeDays")
async def resolve_max_range_days(_: None, info: Info) -> int:
    return _ctx(info).settings.max_range_days


@query.field("organization")
async def resolve_organization(_: None, info: Info, id: str) -> OrganizationView:
    ctx = _ctx(info)
    try:
        organization_id = UUID(id)
    except ValueError:
        # A malformed id gets the same answer as any organization the caller cannot see.
        raise Forbidden(policy.NO_ACCESS_MESSAGE) from None
    async with ctx.pool.acquire() as conn:
        role = await policy.role_of(conn, organization_id, ctx.principal.user_id)
        organization = (
            None if role is None else await identity.get_organization(conn, organization_id)
        )
    if role is None or organization is None:
        raise Forbidden(policy.NO_ACCESS_MESSAGE)
    return OrganizationView(organization, role)


@query.field("logExport")
async def resolve_log_export(_: None, info: Info, id: str) -> LogExport:
    ctx = _ctx(info)
    return await requests.get_export(ctx.pool, ctx.principal, id)


# ---------------------------------------------------------------------------- Mutation

mutation = MutationType()


# GraphQL input field (``fromTime``) → service argument (``from_time``).
_REQUEST_INPUT = {
    re.sub(r"_([a-z])", lambda m: m.group(1).upper(), name): name
    for name in service_calls.REQUEST_ARGUMENTS
}


async def _request(info: Info, kind: ExportKind, data: Mapping[str, Any]) -> Any:
    ctx = _ctx(info)
    export = await service_calls.request_export(
        ctx.pool,
        ctx.settings,
        ctx.principal,
        kind,
        {name: data.get(field) for field, name in _REQUEST_INPUT.items()},
        ip_address=ctx.ip_address,
        user_agent=ctx.user_agent,
    )
    return {"logExport": export}


@mutation.field("requestAuditLogExport")
async def resolve_request_audit_log_export(_: None, info: Info, input: dict[str, Any]) -> Any:
    return await _request(info, ExportKind.AUDIT_LOG, input)


@mutation.field("requestScimEventExport")
async def resolve_request_scim_event_export(_: None, info: Info, input: dict[str, Any]) -> Any:
    return await _request(info, ExportKind.SCIM_EVENT, input)


@mutation.field("cancelLogExport")
async def resolve_cancel_log_export(_: None, info: Info, input: dict[str, Any]) -> Any:
    ctx = _ctx(info)
    export = await requests.cancel_export(
        ctx.pool,
        ctx.principal,
        input.get("id"),
        ip_address=ctx.ip_address,
        user_agent=ctx.user_agent,
    )
    return {"logExport": export}


# ---------------------------------------------------------------------------- Viewer

viewer = ObjectType("Viewer")
_attributes(viewer, {"id": "user_id", "email": "email", "fullName": "full_name"})


@viewer.field("organizations")
async def resolve_viewer_organizations(principal: Principal, info: Info) -> list[OrganizationView]:
    ctx = _ctx(info)
    views = []
    async with ctx.pool.acquire() as conn:
        for organization in await identity.list_organizations_for(conn, principal.user_id):
            role = await policy.role_of(conn, organization.id, principal.user_id)
            if role is not None:
                views.append(OrganizationView(organization, role))
    return views


# ---------------------------------------------------------------------------- Organization

organization = ObjectType("Organization")


_attributes(
    organization,
    {
        "id": "organization.id",
        "name": "organization.name",
        "createdAt": "organization.created_at",
        "viewerRole": "role.value",
    },
)


@organization.field("viewerPermissions")
async def resolve_viewer_permissions(view: OrganizationView, info: Info) -> dict[str, bool]:
    ctx = _ctx(info)
    async with ctx.pool.acquire() as conn:
        held = await policy.permissions(conn, ctx.principal, view.organization.id)
    return {
        "canListAuditLog": Action.AUDIT_LOG_LIST in held,
        "canExportAuditLog": Action.AUDIT_LOG_EXPORT in held,
        "canListScimEvents": Action.SCIM_EVENT_LIST in held,
        "canExportScimEvents": Action.SCIM_EVENT_EXPORT in held,
    }


async def _entries(
    view: OrganizationView, info: Info, kind: ExportKind, arguments: Mapping[str, Any]
) -> dict[str, Any]:
    ctx = _ctx(info)
    page = await service_calls.list_entries(
        ctx.pool,
        ctx.principal,
        kind,
        view.organization.id,
        first=arguments.get("first", 50),
        after=arguments.get("after"),
        filter=arguments.get("filter"),
        from_time=arguments.get("fromTime"),
        to_time=arguments.get("toTime"),
    )
    return _connection([(e.cursor, e.node) for e in page.edges], page.has_next_page)


@organization.field("auditLogEntries")
async def resolve_audit_log_entries(
    view: OrganizationView, info: Info, **arguments: Any
) -> dict[str, Any]:
    return await _entries(view, info, ExportKind.AUDIT_LOG, arguments)


@organization.field("scimEvents")
async def resolve_scim_events(
    view: OrganizationView, info: Info, **arguments: Any
) -> dict[str, Any]:
    return await _entries(view, info, ExportKind.SCIM_EVENT, arguments)


@organization.field("logExports")
async def resolve_log_exports(
    view: OrganizationView, info: Info, first: Any = 50, after: str | None = None
) -> dict[str, Any]:
    ctx = _ctx(info)
    page = await service_calls.list_exports(
        ctx.pool, ctx.principal, view.organization.id, first=first, after=after
    )
    edges = [(service_calls.export_cursor(e), e) for e in page.items]
    return _connection(edges, page.has_next_page)


# ---------------------------------------------------------------------------- entries

audit_log_entry = ObjectType("AuditLogEntry")
_attributes(
    audit_log_entry,
    {
        "createdAt": "created_at",
        "actorType": "actor_type",
        "actorId": "actor_id",
        "actorEmail": "actor_email",
        "actorName": "actor_name",
        "resourceType": "resource_type",
        "resourceId": "resource_id",
        "ipAddress": "ip_address",
        "userAgent": "user_agent",
    },
)

scim_event = ObjectType("ScimEvent")
_attributes(
    scim_event,
    {
        "createdAt": "created_at",
        "userName": "user_name",
        "statusCode": "status_code",
        "errorMessage": "error_message",
        "ipAddress": "ip_address",
        "userAgent": "user_agent",
        "requestBody": "request_body",
        "responseBody": "response_body",
    },
)

# ---------------------------------------------------------------------------- LogExport

log_export = ObjectType("LogExport")
_attributes(
    log_export,
    {
        "fromTime": "from_time",
        "toTime": "to_time",
        "csvBom": "csv_bom",
        "createdAt": "created_at",
        "startedAt": "started_at",
        "completedAt": "completed_at",
        "snapshotAt": "snapshot_at",
        "emailedAt": "emailed_at",
        "rowsWritten": "rows_written",
        "rowCount": "row_count",
        "byteSize": "byte_size",
        "fileName": "file_name",
        "expiresAt": "expires_at",
        "kind": "kind.value",
        "status": "status.value",
        "format": "format.value",
        "compression": "compression.value",
    },
)


@log_export.field("error")
def resolve_error(export: LogExport, _info: Info) -> dict[str, str] | None:
    if export.error_code is None:
        return None
    return {"code": export.error_code, "message": export.error_message or export.error_code}


@log_export.field("requestedBy")
async def resolve_requested_by(export: LogExport, info: Info) -> dict[str, Any]:
    ctx = _ctx(info)
    if export.requested_by not in ctx.users:
        async with ctx.pool.acquire() as conn:
            ctx.users[export.requested_by] = await identity.get_user(conn, export.requested_by)
    user = ctx.users[export.requested_by]
    if user is None:  # users are never deleted; a missing one is a broken database
        raise LookupError(f"user {export.requested_by} of export {export.id} does not exist")
    return {"id": user.id, "email": user.email, "fullName": user.full_name}


@log_export.field("downloadUrl")
async def resolve_download_url(export: LogExport, info: Info) -> str | None:
    if export.status is not ExportStatus.COMPLETED:
        return None
    ctx = _ctx(info)
    async with ctx.pool.acquire() as conn:
        return await downloads.direct_download_url(conn, ctx.settings, ctx.principal, export)


BINDABLES = [
    datetime_scalar,
    bigint_scalar,
    json_scalar,
    query,
    mutation,
    viewer,
    organization,
    audit_log_entry,
    scim_event,
    log_export,
]
