"""GraphQL resolvers: parse arguments, call the service functions, shape their results.

Authorization and validation live in the services (``exports.requests``, ``entries``,
``policy``); a resolver only translates. Errors the services raise are mapped to
``extensions.code`` once, in ``web.graphql``.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any
from uuid import UUID

import asyncpg
from ariadne import MutationType, ObjectType, QueryType, ScalarType
from graphql import GraphQLResolveInfo, ValueNode, value_from_ast_untyped
from starlette.requests import Request

from logexport import identity, policy, shapes
from logexport.config import Settings
from logexport.errors import Forbidden
from logexport.exports import downloads, requests
from logexport.exports.models import ExportKind, ExportStatus, LogExport
from logexport.identity import Principal
from logexport.kinds import LOG_KINDS
from logexport.shapes import OrganizationView, connection_dict
from logexport.web import service_calls
from logexport.web.forwarded import request_client_ip


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
        return request_client_ip(self.request, self.settings.trusted_proxies)

    @property
    def user_agent(self) -> str | None:
        return self.request.headers.get("user-agent") or None


Info = GraphQLResolveInfo[Context]


def _ctx(info: Info) -> Context:
    context = info.context
    assert isinstance(context, Context)
    return context


# ---------------------------------------------------------------------------- scalars

datetime_scalar = ScalarType("DateTime", serializer=shapes.datetime_text)


@datetime_scalar.value_parser
def _parse_datetime(value: object) -> object:
    # Passed through untouched: the service parses it and names the field (fromTime/toTime)
    # in its error, which a scalar parser cannot know.
    return value


@datetime_scalar.literal_parser
def _parse_datetime_literal(node: ValueNode, variables: dict[str, object] | None = None) -> object:
    return value_from_ast_untyped(node, variables)


bigint_scalar = ScalarType("BigInt", serializer=shapes.bigint_text)
json_scalar = ScalarType("JSON", serializer=shapes.same)


@json_scalar.literal_parser
def _parse_json_literal(node: ValueNode, variables: dict[str, object] | None = None) -> object:
    return value_from_ast_untyped(node, variables)


# ---------------------------------------------------------------------------- helpers


def _object_type(name: str, fields: Sequence[shapes.Field]) -> ObjectType:
    """The object type whose fields resolve from the model attributes ``fields`` name."""

    def getter(attribute: str) -> Callable[[object, Info], object]:
        get = attrgetter(attribute)
        return lambda obj, _info: get(obj)

    object_type = ObjectType(name)
    for shape in fields:
        if shape.attribute is not None:
            object_type.set_field(shape.name, getter(shape.attribute))
    return object_type


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


Payload = dict[str, LogExport]


async def _request(info: Info, kind: ExportKind, data: Mapping[str, object]) -> Payload:
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


def _request_resolver(kind: ExportKind) -> Callable[..., Awaitable[Payload]]:
    async def resolve(_: None, info: Info, input: dict[str, object]) -> Payload:
        return await _request(info, kind, input)

    return resolve


for _kind in LOG_KINDS.values():  # requestAuditLogExport, requestScimEventExport
    mutation.set_field(_kind.graphql_request, _request_resolver(_kind.kind))


@mutation.field("cancelLogExport")
async def resolve_cancel_log_export(_: None, info: Info, input: dict[str, object]) -> Payload:
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

viewer = _object_type("Viewer", shapes.VIEWER_FIELDS)


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

organization = _object_type(
    "Organization",
    (*shapes.MEMBER_ORGANIZATION_FIELDS, shapes.Field("createdAt", "organization.created_at")),
)


@organization.field("viewerPermissions")
def resolve_viewer_permissions(view: OrganizationView, _info: Info) -> dict[str, bool]:
    return shapes.permissions_dict(lambda action: policy.allows(view.role, action))


Connection = dict[str, object]


async def _entries(
    view: OrganizationView, info: Info, kind: ExportKind, arguments: Mapping[str, Any]
) -> Connection:
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
    return connection_dict([(e.cursor, e.node) for e in page.edges], page.has_next_page)


def _entries_resolver(kind: ExportKind) -> Callable[..., Awaitable[Connection]]:
    async def resolve(view: OrganizationView, info: Info, **arguments: object) -> Connection:
        return await _entries(view, info, kind, arguments)

    return resolve


for _kind in LOG_KINDS.values():  # auditLogEntries, scimEvents
    organization.set_field(_kind.graphql_connection, _entries_resolver(_kind.kind))


@organization.field("logExports")
async def resolve_log_exports(
    view: OrganizationView, info: Info, first: int | None = 50, after: str | None = None
) -> Connection:
    ctx = _ctx(info)
    page = await service_calls.list_exports(
        ctx.pool, ctx.principal, view.organization.id, first=first, after=after
    )
    edges = [(service_calls.export_cursor(e), e) for e in page.items]
    return connection_dict(edges, page.has_next_page)


# ---------------------------------------------------------------------------- entries

entry_types = [_object_type(name, fields) for name, fields in shapes.ENTRY_FIELDS.items()]

# ---------------------------------------------------------------------------- LogExport

log_export = _object_type("LogExport", shapes.LOG_EXPORT_FIELDS)


@log_export.field("error")
def resolve_error(export: LogExport, _info: Info) -> dict[str, str] | None:
    return shapes.error_dict(export)


async def load_requester(
    pool: asyncpg.Pool, users: dict[UUID, identity.User | None], export: LogExport
) -> identity.User:
    """The user who requested ``export``, looked up once per ``users`` cache."""
    if export.requested_by not in users:
        async with pool.acquire() as conn:
            users[export.requested_by] = await identity.get_user(conn, export.requested_by)
    user = users[export.requested_by]
    if user is None:  # users are never deleted; a missing one is a broken database
        raise LookupError(f"user {export.requested_by} of export {export.id} does not exist")
    return user


@log_export.field("requestedBy")
async def resolve_requested_by(export: LogExport, info: Info) -> shapes.JSONObject:
    ctx = _ctx(info)
    return shapes.user_dict(await load_requester(ctx.pool, ctx.users, export))


@log_export.field(shapes.DOWNLOAD_URL)
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
    *entry_types,
    log_export,
]
