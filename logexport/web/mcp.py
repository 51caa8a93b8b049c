"""MCP over streamable HTTP at ``/mcp``.

The tools (``logexport.mcp_tools``) run in-process as the caller: the same bearer token as
GraphQL (``Authorization: Bearer lex_…``), the same service functions and policy. A request
whose ``Origin`` header is present and is not the origin of ``LOGEXPORT_BASE_URL`` gets 403:
a web page must not drive the tools with a user's browser. A body over ``MAX_BODY_BYTES``
gets 413 (as on ``/graphql``). Only ``POST`` is served: the server is stateless and never
sends a message of its own, so a ``GET`` (the optional server-to-client SSE stream) gets
405 with ``Allow: POST`` at once instead of a stream that would stay open and silent.

Wiring it into the host Starlette app::

    mcp_app, mcp_lifespan = create_mcp_app(settings, lambda: app.state.pool)
    routes = [..., Route("/mcp", endpoint=mcp_app)]   # an ASGI app, all methods

    @asynccontextmanager
    async def lifespan(app):
        ...  # create app.state.pool first
        async with mcp_lifespan():
            yield

``Route("/mcp", endpoint=mcp_app)`` serves exactly ``/mcp`` (a ``Mount`` would redirect it
to ``/mcp/``). The pool is looked up per request, so it may be created in the lifespan.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from uuid import UUID

import asyncpg
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from logexport import identity, policy, shapes
from logexport.config import Settings
from logexport.errors import Unauthenticated
from logexport.exports import requests
from logexport.exports.models import LogExport
from logexport.identity import Principal
from logexport.mcp_tools import (
    EntryQuery,
    RequestContext,
    ToolBackend,
    ToolResult,
    build_server,
)
from logexport.shapes import JSON
from logexport.web import service_calls
from logexport.web.auth import BAD_TOKEN_MESSAGE, bearer_token
from logexport.web.forwarded import request_client_ip
from logexport.web.graphql_resolvers import load_requester
from logexport.web.origins import same_origin

PoolProvider = Callable[[], asyncpg.Pool]

_PRINCIPAL_KEY = "logexport.principal"
# Tool arguments are a few hundred bytes; the transport itself would buffer any body whole.
MAX_BODY_BYTES = 64 * 1024


def create_mcp_app(
    settings: Settings, pool_provider: PoolProvider
) -> tuple[ASGIApp, Callable[[], AbstractAsyncContextManager[None]]]:
    """The ASGI app to route at ``/mcp`` and the lifespan the host app must enter."""
    pools = pool_provider

    async def backend_for(ctx: RequestContext) -> ToolBackend:
        request = ctx.request
        if not isinstance(request, Request):
            raise Unauthenticated(BAD_TOKEN_MESSAGE)
        principal = request.scope.get(_PRINCIPAL_KEY)
        if not isinstance(principal, Principal):
            raise Unauthenticated(BAD_TOKEN_MESSAGE)
        client = request_client_ip(request, settings.trusted_proxies)
        return ServiceBackend(
            pools(), settings, principal, client, request.headers.get("user-agent")
        )

    server = build_server(backend_for)
    # Stateless: no session outlives a request, so a revoked key stops working at once
    # and any number of server processes can sit behind a load balancer.
    manager = StreamableHTTPSessionManager(app=server, stateless=True, json_response=True)
    app = _Gate(manager, settings, pools)
    return app, manager.run


class _Gate:
    """Origin check and bearer authentication in front of the MCP transport."""

    def __init__(
        self, manager: StreamableHTTPSessionManager, settings: Settings, pools: PoolProvider
    ) -> None:
        self.manager = manager
        self.base_url = settings.require("base_url")
        self.pools = pools

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope)
        origin = request.headers.get("origin")
        if origin is not None and not same_origin(origin, self.base_url):
            await _reply(send, 403, "Forbidden: the Origin header names another site")
            return
        if request.method != "POST":
            await _reply(
                send, 405, "Method not allowed: send MCP messages with POST", {"allow": "POST"}
            )
            return
        token = bearer_token(request)
        principal = None
        if token:
            async with self.pools().acquire() as conn:
                principal = await identity.authenticate(conn, token)
        if principal is None:
            await _reply(
                send, 401, BAD_TOKEN_MESSAGE, {"www-authenticate": 'Bearer realm="logexport"'}
            )
            return
        body = await _bounded_body(receive)
        if body is None:
            await _reply(send, 413, f"The request body is larger than {MAX_BODY_BYTES} bytes")
            return
        scope[_PRINCIPAL_KEY] = principal
        # The transport binds anything stateful to this identity, never to the raw token.
        scope["user"] = AuthenticatedUser(
            AccessToken(
                token=str(principal.api_key_id or principal.user_id),
                client_id=str(principal.api_key_id or principal.user_id),
                subject=str(principal.user_id),
                scopes=[],
            )
        )
        await self.manager.handle_request(scope, _replay(body, receive), send)


async def _bounded_body(receive: Receive) -> bytes | None:
    """The whole request body, or ``None`` once it grows past ``MAX_BODY_BYTES``."""
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return bytes(body)
        body += message.get("body", b"")
        if len(body) > MAX_BODY_BYTES:
            return None
        if not message.get("more_body", False):
            return bytes(body)


def _replay(body: bytes, receive: Receive) -> Receive:
    """``receive`` that hands over the already-read body first, then defers to the client."""
    pending = True

    async def replayed() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


async def _reply(
    send: Send, status: int, message: str, headers: Mapping[str, str] | None = None
) -> None:
    body = json.dumps({"error": message}).encode()
    raw_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *((k.encode(), v.encode()) for k, v in (headers or {}).items()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


# ---------------------------------------------------------------------------- backend


class ServiceBackend:
    """The tools' operations through the service functions, as one principal."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: Settings,
        principal: Principal,
        ip_address: str | None,
        user_agent: str | None,
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.principal = principal
        self.ip_address = ip_address
        self.user_agent = user_agent

    async def list_organizations(self) -> ToolResult:
        principal = self.principal
        organizations: list[JSON] = []
        async with self.pool.acquire() as conn:
            for organization in await identity.list_organizations_for(conn, principal.user_id):
                role = await policy.role_of(conn, organization.id, principal.user_id)
                if role is not None:
                    view = shapes.OrganizationView(organization, role)
                    organizations.append(
                        shapes.mcp_organization(shapes.member_organization_dict(view))
                    )
        return {
            "viewer": shapes.viewer_dict(principal),
            "organizations": organizations,
            "maxRangeDays": self.settings.max_range_days,
        }

    async def request_export(self, kind: str, arguments: Mapping[str, object]) -> ToolResult:
        export = await service_calls.request_export(
            self.pool,
            self.settings,
            self.principal,
            kind,
            arguments,
            ip_address=self.ip_address,
            user_agent=self.user_agent,
        )
        return (await self._shape([export]))[0]

    async def get_export(self, id: str) -> ToolResult:
        export = await requests.get_export(self.pool, self.principal, id)
        return (await self._shape([export]))[0]

    async def cancel_export(self, id: str) -> ToolResult:
        export = await requests.cancel_export(
            self.pool,
            self.principal,
            id,
            ip_address=self.ip_address,
            user_agent=self.user_agent,
        )
        return (await self._shape([export]))[0]

    async def list_exports(self, organization_id: str, first: int, after: str | None) -> ToolResult:
        org_id = requests.parse_uuid(organization_id, "organizationId")
        page = await service_calls.list_exports(
            self.pool, self.principal, org_id, first=first, after=after
        )
        shaped = await self._shape(page.items)
        cursors = [service_calls.export_cursor(e) for e in page.items]
        return shapes.connection_dict(list(zip(cursors, shaped, strict=True)), page.has_next_page)

    async def list_entries(self, query: EntryQuery) -> ToolResult:
        org_id = requests.parse_uuid(query.organization_id, "organizationId")
        page = await service_calls.list_entries(
            self.pool,
            self.principal,
            query.kind,
            org_id,
            first=query.first,
            after=query.after,
            filter=query.filter,
            from_time=query.from_time,
            to_time=query.to_time,
        )
        edges = [(e.cursor, shapes.entry_dict(e.node)) for e in page.edges]
        return shapes.connection_dict(edges, page.has_next_page)

    async def _shape(self, exports: list[LogExport]) -> list[shapes.JSONObject]:
        users: dict[UUID, identity.User | None] = {}
        return [
            shapes.log_export_dict(export, await load_requester(self.pool, users, export))
            for export in exports
        ]
