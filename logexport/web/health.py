"""``/healthz``, ``/readyz`` and ``/metrics`` (README.md, "Behaviour worth knowing").

``/healthz`` says the process answers. ``/readyz`` says it can do its job: the database
answers, every migration this version knows is applied (``serve`` never migrates), and the
in-process worker's ``LISTEN`` connection is up. ``/metrics`` adds database-wide figures,
read at scrape time, to the counters of this process; nothing is labelled per organization.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import NotRequired, TypedDict

import asyncpg
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from logexport import db
from logexport.db import q
from logexport.exports.models import ExportStatus

log = logging.getLogger("logexport.health")

DATABASE_TIMEOUT = 2.0  # seconds; a probe must answer well within the orchestrator's timeout
_NO_STORE = {"Cache-Control": "no-store"}


async def healthz(_request: Request) -> Response:
    return JSONResponse({"status": "ok"}, headers=_NO_STORE)


class Check(TypedDict):
    """One readiness check: whether it passed, and why not."""

    ok: bool
    reason: NotRequired[str]


async def _database_checks(pool: asyncpg.Pool) -> dict[str, Check]:
    async with pool.acquire(timeout=DATABASE_TIMEOUT) as conn:
        await conn.fetchval("SELECT 1", timeout=DATABASE_TIMEOUT)
        pending = await db.pending_migrations(conn)
    if pending:
        return {
            "database": {"ok": True},
            "migrations": {
                "ok": False,
                "reason": f"not applied: {', '.join(pending)} (run logexport migrate)",
            },
        }
    return {"database": {"ok": True}, "migrations": {"ok": True}}


async def readyz(request: Request) -> Response:
    state = request.app.state
    checks: dict[str, Check]
    try:
        checks = await asyncio.wait_for(_database_checks(state.pool), DATABASE_TIMEOUT * 2)
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        log.warning("readiness: database unreachable", extra={"error": type(exc).__name__})
        checks = {
            "database": {"ok": False, "reason": "the database does not answer"},
            "migrations": {"ok": False, "reason": "unknown while the database does not answer"},
        }
    worker = state.worker
    if worker is not None and not state.settings.worker_poll_only:
        if worker.listener_connected:
            checks["listener"] = {"ok": True}
        else:
            checks["listener"] = {"ok": False, "reason": "the worker's LISTEN connection is down"}
    ready = all(check["ok"] for check in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "unavailable", "checks": checks},
        status_code=200 if ready else 503,
        headers=_NO_STORE,
    )


async def _database_gauges(pool: asyncpg.Pool) -> Iterable[str]:
    async with pool.acquire(timeout=DATABASE_TIMEOUT) as conn:
        counts = {
            r["status"]: r["n"] for r in await conn.fetch(q("export_status_counts"), timeout=5)
        }
        depth = await conn.fetchval(q("queue_depth"), timeout=5)
    lines = [
        "# HELP logexport_exports Exports in the database, by status",
        "# TYPE logexport_exports gauge",
    ]
    lines += [
        f'logexport_exports{{status="{s.value}"}} {counts.get(s.value, 0)}' for s in ExportStatus
    ]
    lines += [
        "# HELP logexport_queue_depth Exports waiting to be claimed and runnable now",
        "# TYPE logexport_queue_depth gauge",
        f"logexport_queue_depth {depth}",
    ]
    return lines


async def metrics(request: Request) -> Response:
    state = request.app.state
    lines = list(state.metrics.render())
    try:
        lines += await asyncio.wait_for(_database_gauges(state.pool), DATABASE_TIMEOUT * 3)
        up = 1
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        log.warning("metrics: database unreachable", extra={"error": type(exc).__name__})
        up = 0
    lines += [
        "# HELP logexport_database_up Whether the database answered this scrape",
        "# TYPE logexport_database_up gauge",
        f"logexport_database_up {up}",
    ]
    return PlainTextResponse(
        "\n".join(lines) + "\n",
        media_type="text/plain; version=0.0.4; charset=utf-8",
        headers=_NO_STORE,
    )


def health_routes() -> list[Route]:
    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
