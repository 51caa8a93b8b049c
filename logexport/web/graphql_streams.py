"""GraphQL resolvers for log streams: ``Organization.logStreams``, the four stream
mutations and a stream's deliveries.

Like the export resolvers, they translate: ``streams.manage`` authorizes, validates and
audits. A stream is shown without any secret (its destination as type, URL, bucket and
prefix), to every member of its organization.
"""

from __future__ import annotations

from typing import Any

from ariadne import MutationType, ObjectType

from logexport import entries
from logexport.shapes import OrganizationView, connection_dict
from logexport.streams import manage
from logexport.streams.models import LogStream, StreamDelivery
from logexport.web.graphql_resolvers import Info, _ctx
from logexport.web.service_calls import page_size

# Cursors of one stream's deliveries: bound to the organization and to the stream.
_DELIVERIES_CURSOR_KIND = "log_stream_deliveries"

Payload = dict[str, LogStream]

organization = ObjectType("Organization")


@organization.field("logStreams")
async def resolve_log_streams(view: OrganizationView, info: Info) -> list[LogStream]:
    ctx = _ctx(info)
    return await manage.list_streams(ctx.pool, ctx.principal, view.organization.id)


mutation = MutationType()


@mutation.field("createLogStream")
async def resolve_create_log_stream(_: None, info: Info, input: dict[str, Any]) -> Payload:
    ctx = _ctx(info)
    stream = await manage.create_stream(
        ctx.pool,
        ctx.settings,
        ctx.principal,
        input,
        ip_address=ctx.ip_address,
        user_agent=ctx.user_agent,
    )
    return {"logStream": stream}


@mutation.field("updateLogStream")
async def resolve_update_log_stream(_: None, info: Info, input: dict[str, Any]) -> Payload:
    ctx = _ctx(info)
    stream = await manage.update_stream(
        ctx.pool,
        ctx.settings,
        ctx.principal,
        input,
        ip_address=ctx.ip_address,
        user_agent=ctx.user_agent,
    )
    return {"logStream": stream}


@mutation.field("deleteLogStream")
async def resolve_delete_log_stream(_: None, info: Info, input: dict[str, Any]) -> Payload:
    ctx = _ctx(info)
    stream = await manage.delete_stream(
        ctx.pool,
        ctx.principal,
        input.get("id"),
        ip_address=ctx.ip_address,
        user_agent=ctx.user_agent,
    )
    return {"logStream": stream}


@mutation.field("testLogStream")
async def resolve_test_log_stream(_: None, info: Info, input: dict[str, Any]) -> Payload:
    ctx = _ctx(info)
    stream = await manage.test_stream(ctx.pool, ctx.settings, ctx.principal, input.get("id"))
    return {"logStream": stream}


log_stream = ObjectType("LogStream")


@log_stream.field("id")
def resolve_id(stream: LogStream, _info: Info) -> str:
    return str(stream.id)


@log_stream.field("kind")
def resolve_kind(stream: LogStream, _info: Info) -> str:
    return stream.kind.value


@log_stream.field("state")
def resolve_state(stream: LogStream, _info: Info) -> str:
    return stream.state.value


@log_stream.field("intervalSeconds")
def resolve_interval(stream: LogStream, _info: Info) -> int:
    return stream.interval_seconds


@log_stream.field("filter")
def resolve_filter(stream: LogStream, _info: Info) -> object:
    return stream.filter


@log_stream.field("destination")
def resolve_destination(stream: LogStream, _info: Info) -> dict[str, Any]:
    return manage.destination_view(stream)


@log_stream.field("lastError")
def resolve_last_error(stream: LogStream, _info: Info) -> str | None:
    return stream.last_error


@log_stream.field("nextRunAt")
def resolve_next_run_at(stream: LogStream, _info: Info) -> object:
    return None if stream.state.value == "PAUSED" else stream.next_run_at


@log_stream.field("startAt")
def resolve_start_at(stream: LogStream, _info: Info) -> object:
    return stream.start_at


@log_stream.field("createdAt")
def resolve_created_at(stream: LogStream, _info: Info) -> object:
    return stream.created_at


def delivery_cursor(stream: LogStream, delivery: StreamDelivery) -> str:
    return entries.encode_cursor(
        _DELIVERIES_CURSOR_KIND,
        stream.organization_id,
        str(stream.id),
        delivery.created_at,
        delivery.id,
    )


@log_stream.field("deliveries")
async def resolve_deliveries(
    stream: LogStream, info: Info, first: int | None = 20, after: str | None = None
) -> dict[str, object]:
    ctx = _ctx(info)
    position = None
    if after is not None:
        position = entries.decode_cursor(
            after, _DELIVERIES_CURSOR_KIND, stream.organization_id, str(stream.id)
        )
    page = await manage.list_deliveries(ctx.pool, stream, first=page_size(first), after=position)
    edges = [(delivery_cursor(stream, d), d) for d in page.items]
    return connection_dict(edges, page.has_next_page)


delivery = ObjectType("LogStreamDelivery")


@delivery.field("id")
def resolve_delivery_id(item: StreamDelivery, _info: Info) -> str:
    return str(item.id)


@delivery.field("rowCount")
def resolve_row_count(item: StreamDelivery, _info: Info) -> int:
    return item.row_count


@delivery.field("byteSize")
def resolve_byte_size(item: StreamDelivery, _info: Info) -> int:
    return item.byte_size


@delivery.field("status")
def resolve_delivery_status(item: StreamDelivery, _info: Info) -> str:
    return item.status.value


@delivery.field("deliveredAt")
def resolve_delivered_at(item: StreamDelivery, _info: Info) -> object:
    return item.delivered_at


STREAM_BINDABLES = [organization, mutation, log_stream, delivery]
