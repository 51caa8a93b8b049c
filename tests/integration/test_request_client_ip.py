"""The address recorded with an export request or cancel over GraphQL and MCP: the peer,
or whom a proxy in ``LOGEXPORT_TRUSTED_PROXIES`` names in ``X-Forwarded-For`` — the same
rule the download route follows, never what an untrusted client claims."""

from __future__ import annotations

import ipaddress

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from logexport.config import Settings
from tests.support.app import running_app
from tests.support.world import build_world

CLAIMED = "198.51.100.23"
PEER = "127.0.0.1"
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)
ELSEWHERE = (ipaddress.ip_network("10.0.0.0/8"),)

REQUEST = """
mutation($input: RequestAuditLogExportInput!) {
  requestAuditLogExport(input: $input) { logExport { id } }
}
"""
CANCEL = """
mutation($id: ID!) { cancelLogExport(input: {id: $id}) { logExport { id status } } }
"""


def export_input(organization_id: object) -> dict[str, object]:
    return {
        "organizationId": str(organization_id),
        "fromTime": "2026-01-01T00:00:00Z",
        "toTime": "2026-01-02T00:00:00Z",
    }


async def recorded_ip(pool, action: str, export_id: str) -> str | None:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT host(ip_address) AS ip FROM audit_log_entries"
            " WHERE action = $1 AND resource_type = 'LogExport' AND resource_id = $2",
            action,
            export_id,
        )
    assert len(rows) == 1, rows
    return rows[0]["ip"]


async def graphql(base_url: str, token: str, query: str, variables: dict[str, object]) -> dict:
    headers = {"Authorization": f"Bearer {token}", "X-Forwarded-For": CLAIMED}
    async with httpx.AsyncClient(base_url=base_url, headers=headers) as client:
        response = await client.post("/graphql", json={"query": query, "variables": variables})
    body = response.json()
    assert response.status_code == 200 and "errors" not in body, body
    return body["data"]


@pytest.mark.parametrize(
    ("trusted", "expected"),
    [(LOOPBACK, CLAIMED), (ELSEWHERE, PEER)],
    ids=["trusted-proxy", "untrusted-peer"],
)
async def test_graphql_records_the_forwarded_client_only_from_a_trusted_proxy(
    pool, settings: Settings, trusted, expected
):
    world = await build_world(pool)
    served = settings.derive(trusted_proxies=trusted)
    async with running_app(served, pool, run_worker=False) as base_url:
        requested = await graphql(
            base_url, world.admin.token, REQUEST, {"input": export_input(world.organization_id)}
        )
        export_id = requested["requestAuditLogExport"]["logExport"]["id"]
        await graphql(base_url, world.admin.token, CANCEL, {"id": export_id})

    assert await recorded_ip(pool, "iam:audit-log:export", export_id) == expected
    assert await recorded_ip(pool, "iam:log-export:cancel", export_id) == expected


@pytest.mark.parametrize(
    ("trusted", "expected"),
    [(LOOPBACK, CLAIMED), (ELSEWHERE, PEER)],
    ids=["trusted-proxy", "untrusted-peer"],
)
async def test_mcp_records_the_forwarded_client_only_from_a_trusted_proxy(
    pool, settings: Settings, trusted, expected
):
    world = await build_world(pool)
    served = settings.derive(trusted_proxies=trusted)
    headers = {"Authorization": f"Bearer {world.admin.token}", "X-Forwarded-For": CLAIMED}
    async with running_app(served, pool, run_worker=False) as base_url:
        http = httpx2.AsyncClient(headers=headers)
        async with Client(streamable_http_client(f"{base_url}/mcp", http_client=http)) as mcp:
            requested = await mcp.call_tool(
                "request_audit_log_export",
                {
                    "organization_id": str(world.organization_id),
                    "from_time": "2026-01-01T00:00:00Z",
                    "to_time": "2026-01-02T00:00:00Z",
                },
            )
            assert not requested.is_error, requested.content
            export_id = str(requested.structured_content["id"])
            canceled = await mcp.call_tool("cancel_log_export", {"id": export_id})
            assert not canceled.is_error, canceled.content

    assert await recorded_ip(pool, "iam:audit-log:export", export_id) == expected
    assert await recorded_ip(pool, "iam:log-export:cancel", export_id) == expected
