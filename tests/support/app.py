"""The real application in-process: its lifespan running, an HTTP client on it, or the
application served by uvicorn on a free loopback port."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
import uvicorn
from starlette.applications import Starlette

from devtools import services

BASE_URL = "http://testserver"


@contextlib.asynccontextmanager
async def running(app: Starlette) -> AsyncIterator[None]:
    """Run the app's lifespan in a task of its own: its task groups must start and end in
    the same task, and a fixture's setup and teardown run in different ones."""
    started, stop = asyncio.Event(), asyncio.Event()

    async def lifespan() -> None:
        async with app.router.lifespan_context(app):
            started.set()
            await stop.wait()

    task = asyncio.create_task(lifespan())
    waiter = asyncio.create_task(started.wait())
    await asyncio.wait([task, waiter], timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        waiter.cancel()
        task.result()
    assert started.is_set(), "the application did not start within 30 s"
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)


@contextlib.asynccontextmanager
async def asgi_client(
    app: Starlette, client_ip: str | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client that calls ``app`` directly, as from ``client_ip`` when given."""
    if client_ip is None:
        transport = httpx.ASGITransport(app=app)
    else:
        transport = httpx.ASGITransport(app=app, client=(client_ip, 40000))
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
        yield client


@contextlib.asynccontextmanager
async def running_app(settings, pool, *, run_worker: bool = True) -> AsyncIterator[str]:
    """The application on a free port; yields its base URL (also its LOGEXPORT_BASE_URL).

    Without the worker, a requested export stays PENDING until something cancels it.
    """
    from logexport.web.app import create_app

    port = services.free_port()
    base_url = f"http://127.0.0.1:{port}"
    app = create_app(settings.derive(base_url=base_url), pool=pool, run_worker=run_worker)
    # As ``logexport serve`` runs it: X-Forwarded-For is the app's to judge, not uvicorn's.
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", proxy_headers=False
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    deadline = asyncio.get_running_loop().time() + 20
    while not server.started:
        if task.done():
            task.result()
            raise AssertionError("the server stopped while starting")
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("the server did not start within 20 s")
        await asyncio.sleep(0.05)
    try:
        yield base_url
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=30)
