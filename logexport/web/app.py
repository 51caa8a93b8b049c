"""The web application: every HTTP surface, wired explicitly in one factory.

    /graphql                     the API (GraphiQL on GET in debug mode only)
    /exports/{id}/download       download links (web.download)
    /console/...                 the console pages (web.console)
    /mcp                         MCP over streamable HTTP (web.mcp)
    /healthz /readyz /metrics    probes and Prometheus metrics (web.health)
    /.well-known/logexport-keys.json  public keys that verify manifests (web.keys)

The lifespan opens the database pool and the storage backend (unless given) and runs the
export worker in-process (unless told not to), sharing both; shutdown stops the worker
first, within ``LOGEXPORT_SHUTDOWN_GRACE``, then closes what it opened.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import sys
import time
from collections.abc import AsyncIterator

import asyncpg
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from logexport import db
from logexport.config import Settings
from logexport.exports.storage import Storage, storage_from_settings
from logexport.exports.worker import Worker
from logexport.metrics import WorkerMetrics
from logexport.web.console import console_routes
from logexport.web.download import download_routes
from logexport.web.graphql import graphql_routes
from logexport.web.health import health_routes
from logexport.web.keys import keys_routes
from logexport.web.mcp import create_mcp_app

access_log = logging.getLogger("logexport.access")

# Pages that need more than this set their own policy (console, download page, explorer).
DEFAULT_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
_SECURITY_HEADERS = (
    (b"referrer-policy", b"no-referrer"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
)


class SecurityHeaders:
    """Adds the security headers a response lacks, and logs one line per request.

    The line names the method, the path without its query string (download links carry
    their token there) and the status; never headers.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        path: str = scope.get("path", "")
        status = 500

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                for name, value in _SECURITY_HEADERS:
                    if name not in present:
                        headers.append((name, value))
                if b"content-security-policy" not in present and not path.startswith("/console"):
                    headers.append((b"content-security-policy", DEFAULT_CSP.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            access_log.info(
                "%s %s %s",
                scope.get("method", "-"),
                path,
                status,
                extra={"duration_ms": round((time.monotonic() - started) * 1000, 1)},
            )


def _keep_the_loop_responsive() -> None:
    """Interpreter settings for a process whose event loop shares it with CPU-bound threads.

    GraphQL parses, prices and encodes large requests and answers in worker threads. A
    thread that wants the interpreter lock waits for its holder up to the switch interval
    (5 ms by default) at each wake-up; the loop wakes several times per request, so 1 ms
    keeps ``/healthz`` fast while such threads run. What is loaded by now (modules, the
    schema, the pool) lives as long as the process: frozen, it is left out of the
    collector's full passes, which would otherwise walk all of it while every thread waits
    (hundreds of milliseconds on a slow machine, each time parsing fills the young
    generations).
    """
    sys.setswitchinterval(0.001)
    gc.freeze()


def create_app(
    settings: Settings,
    *,
    pool: asyncpg.Pool | None = None,
    storage: Storage | None = None,
    run_worker: bool = True,
    worker: Worker | None = None,
    debug: bool = False,
) -> Starlette:
    """The application for ``settings``.

    A given ``pool`` or ``storage`` is used and left open; a given ``worker`` is started
    and stopped with the application (``run_worker`` is then implied).
    """

    # The MCP app looks the pool up per request: it exists only once the lifespan ran.
    mcp_app, mcp_lifespan = create_mcp_app(settings, lambda: app.state.pool)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            state = app.state
            state.pool = pool
            if state.pool is None:
                state.pool = await db.create_pool(settings.require("database_url"))
                stack.push_async_callback(state.pool.close)
            state.storage = storage
            if state.storage is None:
                state.storage = storage_from_settings(settings)
                stack.push_async_callback(state.storage.aclose)
            state.worker = worker
            if state.worker is None and run_worker:
                state.worker = Worker(settings, pool=state.pool, storage=state.storage)
            if state.worker is not None:
                state.metrics = state.worker.metrics
                if not state.worker.started:
                    await state.worker.start()
                # Stops first (the stack unwinds in reverse): running exports may still
                # need the pool and the storage while they finish or hand back.
                stack.push_async_callback(state.worker.stop)
            await stack.enter_async_context(mcp_lifespan())
            _keep_the_loop_responsive()
            yield

    app = Starlette(
        routes=[],
        middleware=[Middleware(SecurityHeaders)],
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.debug = debug
    app.state.pool = pool
    app.state.storage = storage
    app.state.worker = worker
    app.state.metrics = worker.metrics if worker is not None else WorkerMetrics()
    routes: list[BaseRoute] = [
        *graphql_routes(debug=debug),
        *download_routes(),
        *health_routes(),
        *keys_routes(),
        *console_routes(),
        # A Route, not a Mount: it serves exactly /mcp (a Mount would redirect to /mcp/).
        Route("/mcp", endpoint=mcp_app),
    ]
    app.router.routes.extend(routes)
    return app
