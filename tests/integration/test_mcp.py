"""The MCP tools through the SDK's own client: over HTTP at /mcp, and over stdio.

The HTTP server is the real application (``create_app``, worker included) served by uvicorn
on a free loopback port; the stdio server is ``logexport mcp`` as a subprocess, a GraphQL
client of that same server.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import os
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from logexport.entries import (
    AuditLogEntryInput,
    ScimEventInput,
    record_audit_log_entries,
    record_scim_events,
)
from tests.support.app import running_app
from tests.support.cli import logexport_command
from tests.support.world import build_world, export_status, wait_for_status

START = datetime(2026, 1, 1, tzinfo=UTC)
READ_TOOLS = {
    "list_organizations",
    "get_log_export",
    "list_log_exports",
    "list_audit_log_entries",
    "list_scim_events",
}
WRITE_TOOLS = {"request_audit_log_export", "request_scim_event_export", "cancel_log_export"}
VERSION = importlib.metadata.version("logexport")


def http_client(base_url: str, token: str, **headers: str) -> Client:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}", **headers})
    return Client(streamable_http_client(f"{base_url}/mcp", http_client=http))


async def seed_entries(pool, organization_id, count: int = 120) -> None:
    entries = [
        AuditLogEntryInput(
            organization_id=organization_id,
            action="user.login" if i % 2 else "user.logout",
            actor_type="USER",
            actor_id=f"u{i}",
            created_at=START + timedelta(minutes=i),
        )
        for i in range(count)
    ]
    async with pool.acquire() as conn:
        await record_audit_log_entries(conn, entries)


# ---------------------------------------------------------------------------- HTTP


async def test_tools_are_listed_with_schemas_and_read_only_hints(pool, settings):
    world = await build_world(pool)
    async with (
        running_app(settings, pool) as base_url,
        http_client(base_url, world.viewer.token) as client,
    ):
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}

    assert set(tools) == READ_TOOLS | WRITE_TOOLS
    for name in READ_TOOLS:
        assert tools[name].annotations.read_only_hint is True, name
    for name in WRITE_TOOLS:
        assert tools[name].annotations.read_only_hint is False, name
    cancel = tools["cancel_log_export"]
    assert cancel.annotations.destructive_hint is True
    assert cancel.annotations.idempotent_hint is True
    assert cancel.input_schema["required"] == ["id"]
    assert "e.g." in cancel.input_schema["properties"]["id"]["description"]
    assert tools["list_organizations"].input_schema["properties"] == {}
    schema = tools["request_audit_log_export"].input_schema
    assert schema["required"] == ["organization_id", "from_time", "to_time"]
    assert "inclusive" in schema["properties"]["from_time"]["description"]
    assert "exclusive" in schema["properties"]["to_time"]["description"]
    assert "2026-" in schema["properties"]["from_time"]["description"]
    assert set(schema["properties"]["filter"]["properties"]) == {
        "actions",
        "actor_ids",
        "resource_types",
    }
    scim = tools["request_scim_event_export"].input_schema["properties"]["filter"]
    assert set(scim["properties"]) == {"methods", "user_name", "status_codes"}
    listing = tools["list_audit_log_entries"].input_schema["properties"]
    assert set(listing) == {"organization_id", "first", "after", "filter", "from_time", "to_time"}
    assert "inclusive" in listing["from_time"]["description"]
    assert "exclusive" in listing["to_time"]["description"]
    assert set(tools["list_log_exports"].input_schema["properties"]) == {
        "organization_id",
        "first",
        "after",
    }


async def test_requested_export_completes_and_never_shows_a_download_url(pool, settings, s3):
    world = await build_world(pool)
    await seed_entries(pool, world.organization_id)
    async with (
        running_app(settings, pool) as base_url,
        http_client(base_url, world.admin.token) as client,
    ):
        requested = await client.call_tool(
            "request_audit_log_export",
            {
                "organization_id": str(world.organization_id),
                "from_time": "2026-01-01T00:00:00Z",
                "to_time": "2026-01-01T01:00:00Z",
                "filter": {"actions": ["user.login"]},
                "format": "CSV",
            },
        )
        assert not requested.is_error, requested.content
        export = requested.structured_content
        assert export["status"] == "PENDING"
        assert export["filter"] == {"actions": ["user.login"]}
        assert export["requestedBy"]["email"] == "adam.admin@acme.test"

        await wait_for_status(pool, export["id"], "COMPLETED", "FAILED")
        shown = await client.call_tool("get_log_export", {"id": export["id"]})
        listed = await client.call_tool(
            "list_log_exports", {"organization_id": str(world.organization_id), "first": 5}
        )

    assert not shown.is_error, shown.content
    done = shown.structured_content
    assert done["status"] == "COMPLETED"
    assert done["rowCount"] == "30"
    assert len(done["sha256"]) == 64
    assert "downloadUrl" not in done
    assert "downloadUrl" not in shown.content[0].text
    assert json.loads(shown.content[0].text) == done
    edges = listed.structured_content["edges"]
    assert [edge["node"]["id"] for edge in edges] == [export["id"]]
    assert "downloadUrl" not in edges[0]["node"]


async def test_list_tools_page_through_entries(pool, settings):
    world = await build_world(pool)
    await seed_entries(pool, world.organization_id, count=5)
    org = str(world.organization_id)
    async with (
        running_app(settings, pool) as base_url,
        http_client(base_url, world.viewer.token) as client,
    ):
        first = await client.call_tool(
            "list_audit_log_entries",
            {"organization_id": org, "first": 3, "filter": {"actions": ["user.logout"]}},
        )
        page = first.structured_content
        second = await client.call_tool(
            "list_audit_log_entries",
            {
                "organization_id": org,
                "first": 3,
                "after": page["pageInfo"]["endCursor"],
                "filter": {"actions": ["user.logout"]},
            },
        )
    # Entries 0, 2, 4 are logouts, newest first.
    assert [e["node"]["actorId"] for e in page["edges"]] == ["u4", "u2", "u0"]
    assert page["pageInfo"]["hasNextPage"] is False
    assert second.structured_content["edges"] == []


async def test_entry_listings_take_a_half_open_time_range(pool, settings):
    world = await build_world(pool)
    await seed_entries(pool, world.organization_id, count=5)
    org = str(world.organization_id)
    async with (
        running_app(settings, pool) as base_url,
        http_client(base_url, world.viewer.token) as client,
    ):
        ranged = await client.call_tool(
            "list_audit_log_entries",
            {
                "organization_id": org,
                "from_time": "2026-01-01T00:01:00Z",
                "to_time": "2026-01-01T00:03:00Z",
            },
        )
        open_start = await client.call_tool(
            "list_audit_log_entries", {"organization_id": org, "to_time": "2026-01-01T00:02:00Z"}
        )
        backwards = await client.call_tool(
            "list_scim_events",
            {
                "organization_id": org,
                "from_time": "2026-01-02T00:00:00Z",
                "to_time": "2026-01-01T00:00:00Z",
            },
        )
        no_offset = await client.call_tool(
            "list_audit_log_entries", {"organization_id": org, "to_time": "2026-01-01T00:02:00"}
        )
    assert [e["node"]["actorId"] for e in ranged.structured_content["edges"]] == ["u2", "u1"]
    assert [e["node"]["actorId"] for e in open_start.structured_content["edges"]] == ["u1", "u0"]
    assert backwards.is_error
    assert backwards.content[0].text.startswith("BAD_USER_INPUT (from_time): ")
    assert "to_time" in backwards.content[0].text
    assert no_offset.is_error
    assert no_offset.content[0].text.startswith("BAD_USER_INPUT (to_time): ")


async def test_bad_from_time_is_a_tool_error_naming_the_argument(pool, settings):
    world = await build_world(pool)
    async with (
        running_app(settings, pool) as base_url,
        http_client(base_url, world.admin.token) as client,
    ):
        result = await client.call_tool(
            "request_audit_log_export",
            {
                "organization_id": str(world.organization_id),
                "from_time": "2026-01-01T00:00:00",
                "to_time": "2026-02-01T00:00:00Z",
            },
        )
        unknown = await client.call_tool(
            "get_log_export", {"id": str(world.organization_id), "verbose": True}
        )
        # A bare day is the CLI's shorthand; the tools take exact instants only.
        day = await client.call_tool(
            "request_audit_log_export",
            {
                "organization_id": str(world.organization_id),
                "from_time": "2026-01-01",
                "to_time": "2026-02-01T00:00:00Z",
            },
        )
    assert day.is_error
    assert day.content[0].text.startswith("BAD_USER_INPUT (from_time): ")
    assert result.is_error
    text = result.content[0].text
    assert text.startswith("BAD_USER_INPUT (from_time): ")
    assert "UTC offset" in text
    assert "fromTime" not in text
    assert unknown.is_error
    assert unknown.content[0].text.startswith("BAD_USER_INPUT (verbose): ")


async def test_viewer_cannot_request_an_export_over_mcp(pool, settings):
    world = await build_world(pool)
    async with (
        running_app(settings, pool) as base_url,
        http_client(base_url, world.viewer.token) as client,
    ):
        result = await client.call_tool(
            "request_scim_event_export",
            {
                "organization_id": str(world.organization_id),
                "from_time": "2026-01-01T00:00:00Z",
                "to_time": "2026-02-01T00:00:00Z",
            },
        )
    assert result.is_error
    assert result.content[0].text.startswith("FORBIDDEN: ")
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM log_exports") == 0


async def test_foreign_origin_and_bad_token_are_rejected(pool, settings):
    world = await build_world(pool)
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    headers = {"Accept": "application/json, text/event-stream"}
    async with running_app(settings, pool) as base_url, httpx.AsyncClient() as http:
        foreign = await http.post(
            f"{base_url}/mcp",
            json=body,
            headers={
                **headers,
                "Authorization": f"Bearer {world.admin.token}",
                "Origin": "https://attacker.example",
            },
        )
        same_host_other_port = await http.post(
            f"{base_url}/mcp",
            json=body,
            headers={
                **headers,
                "Authorization": f"Bearer {world.admin.token}",
                "Origin": "http://127.0.0.1:1",
            },
        )
        bad_token = await http.post(
            f"{base_url}/mcp",
            json=body,
            headers={**headers, "Authorization": "Bearer lex_not-a-real-token"},
        )
        own_origin_client = http_client(base_url, world.admin.token, Origin=base_url)
        async with own_origin_client as client:
            tools = await client.list_tools()
    assert foreign.status_code == 403
    assert same_host_other_port.status_code == 403
    assert bad_token.status_code == 401
    assert "lex_not-a-real-token" not in bad_token.text
    assert len(tools.tools) == len(READ_TOOLS | WRITE_TOOLS)


async def test_sdk_client_with_a_foreign_origin_gets_nothing(pool, settings):
    world = await build_world(pool)
    statuses: list[int] = []

    async def record(response: httpx2.Response) -> None:
        statuses.append(response.status_code)

    http = httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {world.admin.token}", "Origin": "https://x.example"},
        event_hooks={"response": [record]},
    )
    async with running_app(settings, pool) as base_url:
        client = Client(streamable_http_client(f"{base_url}/mcp", http_client=http))
        with pytest.raises(Exception):  # noqa: B017 - the SDK wraps the HTTP error its own way
            async with client:
                await client.list_tools()
    assert statuses
    assert set(statuses) == {403}


async def test_server_info_carries_the_package_version(pool, settings):
    world = await build_world(pool)
    async with (
        running_app(settings, pool) as base_url,
        http_client(base_url, world.viewer.token) as client,
    ):
        info = client.server_info
    assert info is not None
    assert info.name == "logexport"
    assert info.version == VERSION


async def test_list_organizations_shows_only_the_callers_own(pool, settings):
    world = await build_world(pool)
    async with running_app(settings, pool) as base_url:
        async with http_client(base_url, world.viewer.token) as client:
            viewer = await client.call_tool("list_organizations", {})
        async with http_client(base_url, world.outsider.token) as client:
            outsider = await client.call_tool("list_organizations", {})

    assert not viewer.is_error, viewer.content
    assert viewer.structured_content["organizations"] == [
        {
            "id": str(world.organization_id),
            "name": "Acme Corp",
            "role": "VIEWER",
            "permissions": {
                "canListAuditLog": True,
                "canExportAuditLog": False,
                "canListScimEvents": True,
                "canExportScimEvents": False,
            },
        }
    ]
    assert viewer.structured_content["viewer"]["email"] == "vera.viewer@acme.test"
    assert viewer.structured_content["maxRangeDays"] == settings.max_range_days
    assert [(o["name"], o["role"]) for o in outsider.structured_content["organizations"]] == [
        ("Globex", "OWNER")
    ]
    assert "Acme Corp" not in outsider.content[0].text
    assert str(world.organization_id) not in outsider.content[0].text


async def request_pending_export(client: Client, organization_id) -> str:
    requested = await client.call_tool(
        "request_audit_log_export",
        {
            "organization_id": str(organization_id),
            "from_time": "2026-01-01T00:00:00Z",
            "to_time": "2026-01-02T00:00:00Z",
        },
    )
    assert not requested.is_error, requested.content
    assert requested.structured_content["status"] == "PENDING"
    return str(requested.structured_content["id"])


async def cancel_entries(pool, export_id: str) -> list[dict]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT actor_id, resource_type, metadata FROM audit_log_entries"
            " WHERE action = 'iam:log-export:cancel' AND resource_id = $1",
            export_id,
        )
    return [dict(row) for row in rows]


async def test_cancel_log_export_cancels_a_pending_export_once(pool, settings):
    world = await build_world(pool)
    async with running_app(settings, pool, run_worker=False) as base_url:
        async with http_client(base_url, world.admin.token) as admin:
            export_id = await request_pending_export(admin, world.organization_id)
            async with http_client(base_url, world.viewer.token) as viewer:
                refused = await viewer.call_tool("cancel_log_export", {"id": export_id})
            assert (await export_status(pool, export_id))["status"] == "PENDING"

            canceled = await admin.call_tool("cancel_log_export", {"id": export_id})
            again = await admin.call_tool("cancel_log_export", {"id": export_id})
            missing = await admin.call_tool("cancel_log_export", {"id": "  "})

    assert refused.is_error
    assert refused.content[0].text == "NOT_FOUND (id): No such export"
    assert not canceled.is_error, canceled.content
    assert canceled.structured_content["status"] == "CANCELED"
    assert canceled.structured_content["id"] == export_id
    assert "downloadUrl" not in canceled.structured_content
    assert not again.is_error and again.structured_content["status"] == "CANCELED"
    assert (await export_status(pool, export_id))["status"] == "CANCELED"
    # One self-audit entry: canceling a canceled export changes nothing.
    entries = await cancel_entries(pool, export_id)
    assert len(entries) == 1
    assert entries[0]["actor_id"] == str(world.admin.user_id)
    assert entries[0]["resource_type"] == "LogExport"
    assert entries[0]["metadata"]["previous_status"] == "PENDING"
    assert missing.is_error
    assert missing.content[0].text == "NOT_FOUND (id): No such export"


async def test_cancel_log_export_answers_a_foreign_export_like_a_missing_one(pool, settings):
    world = await build_world(pool)
    async with running_app(settings, pool, run_worker=False) as base_url:
        async with http_client(base_url, world.outsider.token) as outsider:
            foreign_id = await request_pending_export(outsider, world.other_organization_id)
        async with http_client(base_url, world.admin.token) as admin:
            foreign = await admin.call_tool("cancel_log_export", {"id": foreign_id})
            missing = await admin.call_tool("cancel_log_export", {"id": str(uuid.uuid4())})
    assert foreign.is_error and missing.is_error
    assert foreign.content[0].text == missing.content[0].text
    assert foreign.content[0].text.startswith("NOT_FOUND (id): ")
    assert (await export_status(pool, foreign_id))["status"] == "PENDING"
    assert await cancel_entries(pool, foreign_id) == []


async def test_cancel_log_export_refuses_a_failed_export_naming_id(pool, settings):
    world = await build_world(pool)
    async with running_app(settings, pool, run_worker=False) as base_url:
        async with http_client(base_url, world.admin.token) as admin:
            export_id = await request_pending_export(admin, world.organization_id)
            async with pool.acquire() as conn:
                await conn.execute(
                    "UPDATE log_exports SET status = 'FAILED', error_code = 'INTERNAL',"
                    " error_message = 'x' WHERE id = $1",
                    uuid.UUID(export_id),
                )
            result = await admin.call_tool("cancel_log_export", {"id": export_id})
    assert result.is_error
    assert result.content[0].text == (
        "BAD_USER_INPUT (id): An export that is failed cannot be canceled"
    )
    assert (await export_status(pool, export_id))["status"] == "FAILED"
    assert await cancel_entries(pool, export_id) == []


async def test_get_on_mcp_answers_at_once(pool, settings):
    """A GET (the optional server-to-client stream) is refused instead of held open."""
    world = await build_world(pool)
    async with running_app(settings, pool) as base_url, httpx.AsyncClient() as http:
        started = asyncio.get_running_loop().time()
        response = await asyncio.wait_for(
            http.get(
                f"{base_url}/mcp",
                headers={
                    "Authorization": f"Bearer {world.admin.token}",
                    "Accept": "text/event-stream",
                },
            ),
            timeout=2,
        )
        elapsed = asyncio.get_running_loop().time() - started
        anonymous = await asyncio.wait_for(http.get(f"{base_url}/mcp"), timeout=2)
        # The SDK client, which never needs the stream, still works alongside.
        async with http_client(base_url, world.admin.token) as client:
            tools = await client.list_tools()
    assert response.status_code == 405, response.text
    assert response.headers["allow"] == "POST"
    assert elapsed < 2
    assert anonymous.status_code == 405
    assert anonymous.headers["allow"] == "POST"
    assert len(tools.tools) == len(READ_TOOLS | WRITE_TOOLS)


# ---------------------------------------------------------------------------- stdio


def stdio_parameters(base_url: str, token: str) -> StdioServerParameters:
    command = logexport_command()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "LOGEXPORT_API_URL": base_url,
        "LOGEXPORT_TOKEN": token,
        "NO_PROXY": "127.0.0.1,localhost",
        # Keeps a developer's saved login out of the way.
        "XDG_CONFIG_HOME": "/nonexistent",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    return StdioServerParameters(
        command=command[0], args=[*command[1:], "mcp"], env=env, cwd=str(Path.cwd())
    )


async def test_stdio_server_serves_the_same_tools_through_graphql(pool, settings):
    world = await build_world(pool)
    async with running_app(settings, pool) as base_url:
        params = stdio_parameters(base_url, world.admin.token)
        async with Client(params) as client:
            tools = {tool.name: tool for tool in (await client.list_tools()).tools}
            requested = await client.call_tool(
                "request_audit_log_export",
                {
                    "organization_id": str(world.organization_id),
                    "from_time": "2026-01-01T00:00:00Z",
                    "to_time": "2026-01-02T00:00:00Z",
                    "filter": {"actor_ids": ["u1"]},
                    "idempotency_key": "stdio-1",
                },
            )
            assert not requested.is_error, requested.content
            export_id = requested.structured_content["id"]
            await wait_for_status(pool, export_id, "COMPLETED", "FAILED")
            shown = await client.call_tool("get_log_export", {"id": export_id})
            bad = await client.call_tool(
                "request_audit_log_export",
                {
                    "organization_id": str(world.organization_id),
                    "from_time": "yesterday",
                    "to_time": "2026-01-02T00:00:00Z",
                },
            )
            missing = await client.call_tool(
                "get_log_export", {"id": "00000000-0000-0000-0000-000000000000"}
            )
            day = await client.call_tool(
                "request_audit_log_export",
                {
                    "organization_id": str(world.organization_id),
                    "from_time": "2026-01-01",
                    "to_time": "2026-01-02",
                },
            )
            await seed_entries(pool, world.organization_id, count=5)
            ranged = await client.call_tool(
                "list_audit_log_entries",
                {
                    "organization_id": str(world.organization_id),
                    "from_time": "2026-01-01T00:01:00Z",
                    "to_time": "2026-01-01T00:03:00Z",
                    "filter": {"actions": ["user.login"]},
                },
            )
            backwards = await client.call_tool(
                "list_scim_events",
                {
                    "organization_id": str(world.organization_id),
                    "from_time": "2026-01-02T00:00:00Z",
                    "to_time": "2026-01-01T00:00:00Z",
                },
            )

    assert set(tools) == READ_TOOLS | WRITE_TOOLS
    assert tools["list_scim_events"].annotations.read_only_hint is True
    assert requested.structured_content["filter"] == {"actorIds": ["u1"]}
    assert shown.structured_content["status"] == "COMPLETED"
    assert "downloadUrl" not in shown.structured_content
    assert bad.is_error
    assert bad.content[0].text.startswith("BAD_USER_INPUT (from_time): ")
    assert missing.is_error
    assert missing.content[0].text.startswith("NOT_FOUND")
    # Refused as /mcp refuses it: both servers take the same arguments.
    assert day.is_error
    assert day.content[0].text.startswith("BAD_USER_INPUT (from_time): ")
    assert [e["node"]["actorId"] for e in ranged.structured_content["edges"]] == ["u1"]
    assert backwards.is_error
    assert backwards.content[0].text.startswith("BAD_USER_INPUT (from_time): ")


async def test_stdio_server_lists_organizations_and_cancels_through_graphql(pool, settings):
    world = await build_world(pool)
    async with running_app(settings, pool, run_worker=False) as base_url:
        async with http_client(base_url, world.outsider.token) as outsider:
            foreign_id = await request_pending_export(outsider, world.other_organization_id)
        async with Client(stdio_parameters(base_url, world.admin.token)) as client:
            info = client.server_info
            organizations = await client.call_tool("list_organizations", {})
            export_id = await request_pending_export(client, world.organization_id)
            canceled = await client.call_tool("cancel_log_export", {"id": export_id})
            again = await client.call_tool("cancel_log_export", {"id": export_id})
            foreign = await client.call_tool("cancel_log_export", {"id": foreign_id})
            async with pool.acquire() as conn:
                await conn.execute(
                    "UPDATE log_exports SET status = 'EXPIRED' WHERE id = $1",
                    uuid.UUID(export_id),
                )
            expired = await client.call_tool("cancel_log_export", {"id": export_id})

    assert info is not None and info.version == VERSION
    assert organizations.structured_content["organizations"] == [
        {
            "id": str(world.organization_id),
            "name": "Acme Corp",
            "role": "ADMIN",
            "permissions": {
                "canListAuditLog": True,
                "canExportAuditLog": True,
                "canListScimEvents": True,
                "canExportScimEvents": True,
            },
        }
    ]
    assert organizations.structured_content["viewer"]["email"] == "adam.admin@acme.test"
    assert canceled.structured_content["status"] == "CANCELED"
    assert again.structured_content["status"] == "CANCELED"
    assert len(await cancel_entries(pool, export_id)) == 1
    assert foreign.is_error
    assert foreign.content[0].text.startswith("NOT_FOUND (id): ")
    assert (await export_status(pool, foreign_id))["status"] == "PENDING"
    assert expired.is_error
    assert expired.content[0].text == (
        "BAD_USER_INPUT (id): An export that is expired cannot be canceled"
    )


async def test_both_servers_answer_every_read_tool_byte_for_byte(pool, settings, s3):
    """``/mcp`` shapes service results in-process, ``logexport mcp`` reads them through the
    client's GraphQL selections; both come from one field list, so the texts are equal."""
    world = await build_world(pool)
    await seed_entries(pool, world.organization_id, count=6)
    async with pool.acquire() as conn:
        await record_scim_events(
            conn,
            [
                ScimEventInput(
                    organization_id=world.organization_id,
                    method="PATCH",
                    path="/Users/42",
                    status_code=409,
                    user_name="ada",
                    error_message="conflict",
                    ip_address="2001:db8::1",
                    request_body={"password": "hunter2", "op": "add"},
                    created_at=START,
                )
            ],
        )
    org = str(world.organization_id)
    async with (
        running_app(settings, pool) as base_url,
        http_client(base_url, world.admin.token) as http,
        Client(stdio_parameters(base_url, world.admin.token)) as stdio,
    ):
        requested = await http.call_tool(
            "request_scim_event_export",
            {
                "organization_id": org,
                "from_time": "2026-01-01T00:00:00Z",
                "to_time": "2026-01-02T00:00:00Z",
                "format": "CSV",
                "compression": "GZIP",
                "csv_bom": True,
                "filter": {"status_codes": [409]},
            },
        )
        export_id = requested.structured_content["id"]
        await wait_for_status(pool, export_id, "COMPLETED", "FAILED")
        failed_id = await request_pending_export(http, world.organization_id)
        await wait_for_status(pool, failed_id, "COMPLETED", "FAILED")
        async with pool.acquire() as conn:
            await conn.execute(
                "UPDATE log_exports SET status = 'FAILED', error_code = 'STORAGE_UNAVAILABLE',"
                " error_message = 'storage was down' WHERE id = $1",
                uuid.UUID(failed_id),
            )
        calls = [
            ("list_organizations", {}),
            ("get_log_export", {"id": export_id}),
            ("get_log_export", {"id": failed_id}),
            ("list_log_exports", {"organization_id": org, "first": 2}),
            ("list_audit_log_entries", {"organization_id": org, "first": 4}),
            ("list_scim_events", {"organization_id": org}),
        ]
        answers = []
        for name, arguments in calls:
            answers.append(
                (
                    name,
                    await http.call_tool(name, arguments),
                    await stdio.call_tool(name, arguments),
                )
            )

    for name, over_http, over_stdio in answers:
        assert not over_http.is_error, (name, over_http.content)
        assert over_http.content[0].text == over_stdio.content[0].text, name
        assert over_http.structured_content == over_stdio.structured_content, name
    failed = answers[2][1].structured_content
    assert failed["error"] == {"code": "STORAGE_UNAVAILABLE", "message": "storage was down"}
    # Both report the signed manifest by its place in the chain, not its whole text.
    completed = answers[1][1].structured_content
    row = await export_status(pool, export_id)
    assert completed["manifest"]["sequence"] == row["manifest_sequence"]
    assert completed["manifest"]["sha256"] == row["manifest_sha256"]
    listed = answers[4][1].structured_content
    assert len(listed["edges"]) == 4 and listed["pageInfo"]["hasNextPage"] is True
