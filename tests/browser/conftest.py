"""Browser fixtures: a real server on a free port and headless Chromium driven by Playwright.

The server runs in its own thread and event loop (uvicorn), with its own pool, storage and
in-process worker, against the test's database, bucket and SMTP sink. Tests drive it with
Playwright's async API so the shared event loop stays free for database checks.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import uvicorn
from starlette.applications import Starlette

from logexport.config import Settings
from logexport.db import create_pool
from logexport.exports.storage import storage_from_settings
from logexport.exports.worker import Worker
from logexport.web.console import console_routes

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/browser/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.browser)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _fallback_app(settings: Settings) -> Starlette:
    """The console and the routes it talks to, for as long as no app factory exists."""
    from logexport.web.download import download_routes
    from logexport.web.graphql import graphql_routes

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.settings = settings
        app.state.pool = await create_pool(settings.database_url)
        try:
            async with storage_from_settings(settings) as storage:
                app.state.storage = storage
                async with Worker(settings, retry_base=0.1) as worker:
                    app.state.worker = worker
                    yield
        finally:
            await app.state.pool.close()

    return Starlette(
        routes=[*graphql_routes(), *download_routes(), *console_routes()], lifespan=lifespan
    )


def build_app(settings: Settings, *, run_worker: bool = True) -> Any:
    try:
        from logexport.web.app import create_app
    except ImportError:
        return _fallback_app(settings)
    return create_app(settings, run_worker=run_worker)


@dataclass
class LiveServer:
    base_url: str
    settings: Settings
    server: uvicorn.Server
    thread: threading.Thread

    def url(self, path: str) -> str:
        return self.base_url + path


@pytest.fixture
def run_worker() -> bool:
    """Whether the live server runs an export worker. A test that needs exports to stay
    pending overrides it with ``@pytest.mark.parametrize("run_worker", [False])``."""
    return True


@pytest.fixture
def live_server(settings: Settings, run_worker: bool) -> Iterator[LiveServer]:
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}"
    served = settings.derive(base_url=base_url)
    config = uvicorn.Config(
        build_app(served, run_worker=run_worker),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="console-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the server exited while starting")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError("the server did not start within 20 s")
        time.sleep(0.02)
    try:
        yield LiveServer(base_url, served, server, thread)
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@pytest.fixture(scope="session")
def chromium_path() -> Path:
    if not CHROMIUM.exists():
        pytest.skip(f"Chromium is not installed at {CHROMIUM} (apt-get install -y chromium)")
    return CHROMIUM


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser(chromium_path: Path) -> AsyncIterator[Any]:
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.skip("Playwright for Python is not installed")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(chromium_path), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            await browser.close()


@dataclass
class PageProblems:
    """Console errors and failed page loads: a CSP violation shows up here."""

    messages: list[str] = field(default_factory=list)

    def assert_none(self) -> None:
        assert self.messages == [], self.messages


async def open_page(browser: Any, live_server: LiveServer, **options: Any) -> Any:
    """A page in a fresh browser context (own cookies); ``page.problems`` collects errors."""
    options.setdefault("viewport", {"width": 1280, "height": 860})
    context = await browser.new_context(base_url=live_server.base_url, **options)
    context.set_default_timeout(10_000)
    new_page = await context.new_page()
    problems = PageProblems()
    new_page.on(
        "console",
        lambda msg: (
            problems.messages.append(f"{msg.text} ({msg.location.get('url')})")
            if msg.type == "error"
            else None
        ),
    )
    new_page.on("pageerror", lambda exc: problems.messages.append(str(exc)))
    new_page.problems = problems
    return new_page


@pytest_asyncio.fixture(loop_scope="session")
async def new_page(browser: Any, live_server: LiveServer) -> AsyncIterator[Any]:
    """``await new_page(**context_options)``: another page with its own cookies."""
    pages: list[Any] = []

    async def make(**options: Any) -> Any:
        made = await open_page(browser, live_server, **options)
        pages.append(made)
        return made

    try:
        yield make
    finally:
        for made in pages:
            await made.context.close()


@pytest_asyncio.fixture(loop_scope="session")
async def page(new_page: Any) -> Any:
    return await new_page()
