"""GraphQL resolvers for log streams: ``Organization.logStreams``, the four stream
mutations and a stream's deliveries.

Like the export resolvers, they translate: ``streams.manage`` authorizes, validates and
audits. A stream is shown without any secret (its destination as type, URL, bucket and
prefix), to every member of its organization.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from ariadne import MutationType, ObjectType

from logexport import entries
from logexport.shapes import OrganizationView, connection_dict
from logexport.streams import manage
from logexport.streams.models import LogStream, StreamDelivery
from logexport.web.graphql_resolvers import Context, Info, _ctx
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

# What each stream mutation asks of ``streams.manage``, given the request's context and the
# mutation's input; every one answers with the stream as it now is.
_StreamChange = Callable[[Context, dict[str, Any]], Awaitable[LogStream]]

_STREAM_MUTATIONS: dict[str, _StreamChange] = {
    "createLogStream": lambda ctx, input: manage.create_stream(
        ctx.pool, ctx.settings, ctx.principal, input, **_client(ctx)
    ),
    "updateLogStream": lambda ctx, input: manage.update_stream(
        ctx.pool, ctx.settings, ctx.principal, input, **_client(ctx)
    ),
    "deleteLogStream": lambda ctx, input: manage.delete_stream(
        ctx.pool, ctx.principal, input.get("id"), **_client(ctx)
    ),
    "testLogStream": lambda ctx, input: manage.test_stream(
        ctx.pool, ctx.settings, ctx.principal, input.get("id")
    ),
}


def _client(ctx: Context) -> dict[str, str | None]:
    """Where the request came from, as the self-audit entry records it."""
    return {"ip_address": ctx.ip_address, "user_agent": ctx.user_agent}


def _payload_resolver(change: _StreamChange) -> Callable[..., Awaitable[Payload]]:
    async def resolve(_: None, info: Info, input: dict[str, Any]) -> Payload:
        return {"logStream": await change(_ctx(info), input)}

    return resolve


for _name, _change in _STREAM_MUTATIONS.items():
    mutation.set_field(_name, _payload_resolver(_change))


def _record_type(name: str, *, text: tuple[str, ...], **renamed: str) -> ObjectType:
    """An object type over a record: the ``text`` attributes (ids, enum members) shown as
    their text, the ``renamed`` fields read from the attribute named, the rest shaped by
    resolvers of their own."""
    object_type = ObjectType(name)
    for field_name in text:
        object_type.set_field(field_name, _text_of(field_name))
    for field_name, attribute in renamed.items():
        object_type.set_alias(field_name, attribute)
    return object_type


def _text_of(attribute: str) -> Callable[[object, Info], str]:
    def resolve(record: object, _info: Info) -> str:
        return str(getattr(record, attribute))

    return resolve


log_stream = _record_type(
    "LogStream",
    text=("id", "kind", "state"),
    intervalSeconds="interval_seconds",
    lastError="last_error",
    startAt="start_at",
    createdAt="created_at",
)


@log_stream.field("destination")
def resolve_destination(stream: LogStream, _info: Info) -> dict[str, Any]:
    return manage.destination_view(stream)


@log_stream.field("nextRunAt")
def resolve_next_run_at(stream: LogStream, _info: Info) -> object:
    return None if stream.state.value == "PAUSED" else stream.next_run_at


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


delivery = _record_type(
    "LogStreamDelivery",
    text=("id", "status"),
    rowCount="row_count",
    byteSize="byte_size",
    deliveredAt="delivered_at",
)


STREAM_BINDABLES = [organization, mutation, log_stream, delivery]
