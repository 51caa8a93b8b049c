"""An export request asks the database for the caller's membership once, whichever way it
comes in: GraphQL, MCP or the library."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import httpx
import httpx2
import pytest_asyncio
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from logexport import db
from logexport.config import Settings
from logexport.exports import requests
from tests.support.app import running_app
from tests.support.world import build_world


class MembershipQueries:
    """Counts the membership lookups every connection of a pool sends."""

    def __init__(self) -> None:
        self.count = 0
        self.text = db.q("membership_role")

    def __call__(self, logged: asyncpg.connection.LoggedQuery) -> None:
        if logged.query == self.text:
            self.count += 1

    async def init(self, conn: asyncpg.Connection) -> None:
        await db.init_connection(conn)
        conn.add_query_logger(self)


@pytest_asyncio.fixture(loop_scope="session")
async def counted(database_url: str) -> AsyncIterator[tuple[asyncpg.Pool, MembershipQueries]]:
    queries = MembershipQueries()
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4, init=queries.init)
    assert pool is not None
    try:
        yield pool, queries
    finally:
        await pool.close()


REQUEST = """
mutation($input: RequestAuditLogExportInput!) {
  requestAuditLogExport(input: $input) { logExport { id } }
}
"""


async def test_a_graphql_export_request_looks_up_the_membership_once(counted, settings: Settings):
    pool, queries = counted
    world = await build_world(pool)
    variables = {
        "input": {
            "organizationId": str(world.organization_id),
            "fromTime": "2026-01-01T00:00:00Z",
            "toTime": "2026-01-02T00:00:00Z",
        }
    }
    async with running_app(settings, pool, run_worker=False) as base_url:
        headers = {"Authorization": f"Bearer {world.admin.token}"}
        async with httpx.AsyncClient(base_url=base_url, headers=headers) as client:
            queries.count = 0
            body = {"query": REQUEST, "variables": variables}
            response = await client.post("/graphql", json=body)
            counted_queries = queries.count
    assert "errors" not in response.json(), response.text
    assert counted_queries == 1


async def test_an_mcp_export_request_looks_up_the_membership_once(counted, settings: Settings):
    pool, queries = counted
    world = await build_world(pool)
    arguments = {
        "organization_id": str(world.organization_id),
        "from_time": "2026-01-01T00:00:00Z",
        "to_time": "2026-01-02T00:00:00Z",
    }
    async with running_app(settings, pool, run_worker=False) as base_url:
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {world.admin.token}"})
        async with Client(streamable_http_client(f"{base_url}/mcp", http_client=http)) as mcp:
            queries.count = 0
            requested = await mcp.call_tool("request_audit_log_export", arguments)
            counted_queries = queries.count
    assert not requested.is_error, requested.content
    assert counted_queries == 1


async def test_a_library_export_request_looks_up_the_membership_once(counted, settings: Settings):
    pool, queries = counted
    world = await build_world(pool)
    request = requests.ExportInput(
        organization_id=world.organization_id,
        kind=requests.ExportKind.AUDIT_LOG,
        from_time=datetime(2026, 1, 1, tzinfo=UTC),
        to_time=datetime(2026, 1, 2, tzinfo=UTC),
    )
    queries.count = 0
    await requests.request_export(pool, settings, world.admin.principal, request)
    assert queries.count == 1
