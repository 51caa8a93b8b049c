"""Process commands: ``serve`` (the web application, with the worker in-process by default)
and ``worker`` (export workers alone). Neither migrates the database: run
``logexport migrate`` first. Both refuse to start on a database with no migration applied;
``/readyz`` reports pending migrations.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from types import FrameType

import click

from logexport.cli.common import fail, load_settings, run
from logexport.config import Settings
from logexport.logs import configure_logging

log = logging.getLogger("logexport.cli")

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _note_signal(signum: int, _frame: FrameType | None) -> None:
    log.info("stopped by signal", extra={"signal": signal.Signals(signum).name})


async def _pending_migrations(dsn: str) -> tuple[list[str], int]:
    from logexport import db

    conn = await db.connect(dsn)
    try:
        return await db.pending_migrations(conn), len(db.migration_files())
    finally:
        await conn.close()


def _require_schema(settings: Settings) -> None:
    """Refuse to start on a database nobody migrated: every request and every export would
    fail on a missing table. Some migrations pending (an upgrade under way) only warns;
    ``/readyz`` reports them."""
    pending, known = run(_pending_migrations(settings.require("database_url")))
    if pending and len(pending) == known:
        fail("the database has no logexport tables yet: run logexport migrate")
    if pending:
        log.warning("database migrations not applied", extra={"pending": ", ".join(pending)})


@click.command()
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    envvar="LOGEXPORT_HOST",
    show_envvar=True,
    help="Address to listen on (the container image sets 0.0.0.0).",
)
@click.option(
    "--port",
    default=8000,
    show_default=True,
    envvar="LOGEXPORT_PORT",
    show_envvar=True,
    type=click.IntRange(0, 65535),
    help="TCP port.",
)
@click.option(
    "--no-worker",
    is_flag=True,
    help="Serve HTTP only; run `logexport worker` elsewhere to process exports.",
)
def serve(host: str, port: int, no_worker: bool) -> None:
    """Serve the GraphQL API, console, MCP endpoint and download links."""
    needs = ["database_url", "base_url", "storage_url", "smtp_url", "mail_from", "secret_key"]
    if not no_worker:
        # The in-process worker signs the manifest of every export it completes.
        needs.append("signing_key")
    settings = load_settings(*needs)
    configure_logging()
    _require_schema(settings)
    # Imported here, as the worker is below: `serve --help` needs neither the web stack
    # (with the MCP SDK) nor the export pipeline.
    import uvicorn

    from logexport.web.app import create_app

    app = create_app(settings, run_worker=not no_worker)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="on",
        # Our own handler formats and redacts every line; uvicorn's access log would print
        # query strings, which carry download tokens, so the app logs requests itself.
        log_config=None,
        access_log=False,
        server_header=False,
        # X-Forwarded-For is believed only from LOGEXPORT_TRUSTED_PROXIES, by the app;
        # uvicorn's own rewriting would believe any local peer.
        proxy_headers=False,
        timeout_graceful_shutdown=max(1, int(settings.shutdown_grace)),
    )
    server = uvicorn.Server(config)
    # uvicorn re-raises SIGTERM/SIGINT once it has shut down gracefully; with these
    # handlers in place that ends in a clean exit 0 instead of death by signal.
    for signum in _SIGNALS:
        signal.signal(signum, _note_signal)
    try:
        server.run()
    except SystemExit as exc:
        if exc.code not in (0, None):
            fail("the server did not start (see the log above)")
        raise
    if not server.started:
        fail("the server did not start (see the log above)")


@click.command()
@click.option(
    "--concurrency",
    type=click.IntRange(1, 256),
    default=None,
    help="Exports run at once by this process [default: LOGEXPORT_WORKER_CONCURRENCY].",
)
def worker(concurrency: int | None) -> None:
    """Process exports until SIGTERM or SIGINT, then finish or hand back running ones."""
    settings = load_settings(
        "database_url", "base_url", "storage_url", "smtp_url", "mail_from", "signing_key"
    )
    configure_logging()
    _require_schema(settings)
    run(_run_worker(settings, concurrency))


async def _run_worker(settings: Settings, concurrency: int | None) -> None:
    from logexport.exports.worker import Worker

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in _SIGNALS:
        loop.add_signal_handler(signum, stop.set)
    async with Worker(settings, concurrency=concurrency) as running:
        log.info(
            "worker running",
            extra={
                "worker_id": running.worker_id,
                "concurrency": running.concurrency,
                "export_parallelism": settings.export_parallelism,
            },
        )
        await stop.wait()
        # Further signals land on stop.set() again, so they cannot cut the grace short.
        log.info("stopping: no new claims; running exports get the shutdown grace")
