"""The real application in-process: its lifespan running, and an HTTP client on it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
from starlette.applications import Starlette

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
