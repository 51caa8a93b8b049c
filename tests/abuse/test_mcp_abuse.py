"""Hostile requests to ``/mcp``: malformed JSON-RPC, wrong argument types, huge bodies,
guessed tokens, foreign origins and cursors."""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.abuse.conftest import Stack


def _call(name: str, arguments: Any) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "tools/call",
        "params": {"name": name, "arguments": arguments},
    }


@pytest.mark.parametrize(
    "raw",
    [
        b"{not json",
        b"",
        b"\xff\xfe\x00",
        b"[]",
        b"42",
        b'{"jsonrpc": "1.0", "id": 1, "method": "tools/list"}',
        b'{"jsonrpc": "2.0", "id": {"a": 1}, "method": "tools/list"}',
        b'{"jsonrpc": "2.0", "id": 1, "method": 5}',
        b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": "x"}',
        b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": 5}}',
        json.dumps(_call("get_log_export", "not an object")).encode(),
        json.dumps(_call("get_log_export", ["id"])).encode(),
    ],
    ids=lambda raw: raw.decode(errors="replace")[:30],
)
async def test_malformed_json_rpc_is_an_error_and_writes_nothing(stack: Stack, raw: bytes):
    async with stack.unchanged():
        response = await stack.mcp(stack.world.admin.token, None, raw=raw)
    # A client error, a JSON-RPC error, or (for what parses as a notification) an empty 202.
    if response.status_code == 202:
        assert response.content == b""
    elif response.status_code == 200:
        assert "error" in response.json(), response.text
    else:
        assert 400 <= response.status_code < 500, response.text


async def test_unknown_methods_and_tools_are_errors(stack: Stack):
    token = stack.world.admin.token
    unknown = await stack.mcp(token, {"jsonrpc": "2.0", "id": 1, "method": "admin/drop"})
    assert unknown.json()["error"]["code"] == -32601
    result = await stack.call_tool(token, "drop_tables", {})
    assert result["isError"] is True
    assert result["content"][0]["text"].startswith("NOT_FOUND")


async def test_bodies_over_the_limit_are_refused(stack: Stack):
    token = stack.world.admin.token
    padded = _call("get_log_export", {"id": str(stack.own_export_id)}) | {"pad": "x" * 70_000}

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"jsonrpc": "2.0", "id": 1, "method": "tools/list", "pad": "'
        for _ in range(200):
            yield b"x" * 1024
        yield b'"}'

    async with stack.unchanged():
        declared = await stack.mcp(token, padded)
        streamed = await stack.client.post(
            "/mcp",
            content=chunks(),
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": "application/json, text/event-stream",
                "Content-Type": "application/json",
            },
        )
    assert declared.status_code == 413, declared.text
    assert streamed.status_code == 413, streamed.text
    # A request of ordinary size still goes through.
    fine = await stack.call_tool(token, "get_log_export", {"id": str(stack.own_export_id)})
    assert fine["isError"] is False


async def test_guessed_tokens_and_foreign_origins_are_refused_alike(stack: Stack):
    real = stack.world.admin.token
    listing = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    guesses = [
        "lex_" + secrets.token_urlsafe(32),
        real[:-1],
        real + "A",
        real[:-1] + ("A" if real[-1] != "A" else "B"),
        "LEX_" + real[4:],
        "",
    ]
    bodies = set()
    async with stack.unchanged():
        for token in guesses:
            response = await stack.mcp(token, listing)
            assert response.status_code == 401, (token, response.text)
            bodies.add(response.content)
        missing = await stack.mcp(None, listing)
        foreign = await stack.mcp(real, listing, Origin="https://evil.example")
        lookalike = await stack.mcp(real, listing, Origin="http://testserver.evil.example")
    assert missing.status_code == 401
    bodies.add(missing.content)
    assert len(bodies) == 1
    assert foreign.status_code == 403 and lookalike.status_code == 403


EXPORT = {"from_time": "2026-01-01T00:00:00Z", "to_time": "2026-02-01T00:00:00Z"}


@pytest.mark.parametrize(
    ("tool", "arguments", "field"),
    [
        ("request_audit_log_export", {"organization_id": 5}, "organization_id"),
        ("request_audit_log_export", {"organization_id": "'; DROP TABLE x; --"}, "organization_id"),
        ("request_audit_log_export", {"from_time": 20260101}, "from_time"),
        ("request_audit_log_export", {"from_time": "2023-02-29T00:00:00Z"}, "from_time"),
        ("request_audit_log_export", {"from_time": "2026-01-01T24:00:00Z"}, "from_time"),
        ("request_audit_log_export", {"from_time": "2026-01-01T00:00:00"}, "from_time"),
        ("request_audit_log_export", {"from_time": "0001-01-01T00:00:00Z"}, "from_time"),
        ("request_audit_log_export", {"to_time": "2026-02-01T00:00:00.1234567Z"}, "to_time"),
        ("request_audit_log_export", {"format": "XML"}, "format"),
        ("request_audit_log_export", {"csv_bom": "yes"}, "csv_bom"),
        ("request_audit_log_export", {"filter": "user.login"}, "filter"),
        ("request_audit_log_export", {"filter": {"actions": []}}, "filter.actions"),
        ("request_audit_log_export", {"filter": {"actions": [3]}}, "filter.actions"),
        ("request_audit_log_export", {"filter": {"bogus": ["x"]}}, "filter.bogus"),
        ("request_audit_log_export", {"idempotency_key": "k" * 201}, "idempotency_key"),
        ("request_audit_log_export", {"idempotency_key": "caf\u00e9"}, "idempotency_key"),
        ("request_audit_log_export", {"extra": 1}, "extra"),
        ("request_scim_event_export", {"filter": {"status_codes": [99]}}, "filter.status_codes"),
        ("list_audit_log_entries", {"first": "ten"}, "first"),
        ("list_audit_log_entries", {"first": 0}, "first"),
        ("list_audit_log_entries", {"first": 101}, "first"),
        ("list_audit_log_entries", {"after": 5}, "after"),
        ("list_audit_log_entries", {"after": "garbage"}, "after"),
    ],
    ids=lambda v: json.dumps(v)[:40] if isinstance(v, dict) else v,
)
async def test_wrong_arguments_are_tool_errors_naming_the_argument(
    stack: Stack, tool: str, arguments: dict[str, Any], field: str
):
    base: dict[str, Any] = {"organization_id": str(stack.world.organization_id)}
    if tool.startswith("request_"):
        base |= EXPORT
    async with stack.unchanged():
        result = await stack.call_tool(stack.world.admin.token, tool, base | arguments)
    assert result["isError"] is True, result
    text = result["content"][0]["text"]
    assert text.startswith(f"BAD_USER_INPUT ({field})"), text


async def test_sql_metacharacters_are_plain_values_to_the_tools(stack: Stack):
    org = str(stack.world.organization_id)
    async with stack.unchanged():
        for value in ("'; DROP TABLE audit_log_entries; --", "%", "_", "\\"):
            audit = await stack.call_tool(
                stack.world.admin.token,
                "list_audit_log_entries",
                {"organization_id": org, "filter": {"actions": [value], "actor_ids": [value]}},
            )
            scim = await stack.call_tool(
                stack.world.admin.token,
                "list_scim_events",
                {"organization_id": org, "filter": {"user_name": value}},
            )
            for result in (audit, scim):
                assert result["isError"] is False, result
                assert result["structuredContent"]["edges"] == []


async def test_cursors_of_another_organization_are_refused(stack: Stack):
    world = stack.world
    foreign = await stack.call_tool(
        world.outsider.token,
        "list_audit_log_entries",
        {"organization_id": str(world.other_organization_id), "first": 1},
    )
    cursor = foreign["structuredContent"]["pageInfo"]["endCursor"]
    exports = await stack.call_tool(
        world.outsider.token,
        "list_log_exports",
        {"organization_id": str(world.other_organization_id), "first": 1},
    )
    export_cursor = exports["structuredContent"]["pageInfo"]["endCursor"]
    async with stack.unchanged():
        for tool, after in (
            ("list_audit_log_entries", cursor),
            ("list_log_exports", export_cursor),
            ("list_audit_log_entries", export_cursor),
        ):
            result = await stack.call_tool(
                world.admin.token,
                tool,
                {"organization_id": str(world.organization_id), "after": after},
            )
            assert result["isError"] is True
            assert result["content"][0]["text"].startswith("BAD_USER_INPUT (after)")
            assert str(world.other_organization_id) not in json.dumps(result)


@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS"])
async def test_methods_other_than_post_are_refused_at_once(stack: Stack, method: str):
    headers = {
        "Authorization": f"Bearer {stack.world.admin.token}",
        "Accept": "text/event-stream",
    }
    async with stack.unchanged():
        # A GET used to open an event stream that never ended.
        response = await asyncio.wait_for(
            stack.client.request(method, "/mcp", headers=headers), timeout=5
        )
        anonymous = await asyncio.wait_for(stack.client.request(method, "/mcp"), timeout=5)
    for answer in (response, anonymous):
        assert answer.status_code == 405, (method, answer.text)
        assert answer.headers["allow"] == "POST"
        assert "mcp-session-id" not in answer.headers


async def test_get_with_a_foreign_origin_is_refused_as_a_post_would_be(stack: Stack):
    response = await asyncio.wait_for(
        stack.client.get(
            "/mcp",
            headers={
                "Authorization": f"Bearer {stack.world.admin.token}",
                "Origin": "https://evil.example",
            },
        ),
        timeout=5,
    )
    assert response.status_code == 403


@pytest.mark.parametrize(
    ("tool", "arguments", "field"),
    [
        ("cancel_log_export", {}, "id"),
        ("cancel_log_export", {"id": 5}, "id"),
        ("cancel_log_export", {"id": None}, "id"),
        ("cancel_log_export", {"id": ["a"]}, "id"),
        ("cancel_log_export", {"export_id": "00000000-0000-0000-0000-000000000000"}, "id"),
        ("cancel_log_export", {"id": "x", "organization_id": "y"}, "organization_id"),
        ("list_organizations", {"organization_id": "x"}, "organization_id"),
    ],
    ids=lambda v: json.dumps(v)[:40] if isinstance(v, dict) else v,
)
async def test_wrong_arguments_to_cancel_and_list_organizations_name_the_argument(
    stack: Stack, tool: str, arguments: dict[str, Any], field: str
):
    async with stack.unchanged():
        result = await stack.call_tool(stack.world.admin.token, tool, arguments)
    assert result["isError"] is True, result
    text = result["content"][0]["text"]
    assert text.startswith(f"BAD_USER_INPUT ({field})"), text


async def test_cancel_refuses_viewers_and_foreign_or_malformed_ids_alike(stack: Stack):
    world = stack.world
    attempts = [
        (world.viewer.token, str(stack.own_export_id)),
        (world.admin.token, str(stack.foreign_export_id)),
        (world.admin.token, str(uuid.uuid4())),
        (world.admin.token, "not-a-uuid"),
        (world.admin.token, "'; UPDATE log_exports SET status = 'CANCELED'; --"),
        (world.outsider.token, str(stack.own_export_id)),
    ]
    async with stack.unchanged():
        results = [
            await stack.call_tool(token, "cancel_log_export", {"id": export_id})
            for token, export_id in attempts
        ]
    texts = {result["content"][0]["text"] for result in results}
    assert all(result["isError"] for result in results), results
    assert texts == {"NOT_FOUND (id): No such export"}
    assert not any(result.get("structuredContent") for result in results)
    statuses = await stack.pool.fetch(
        "SELECT status FROM log_exports WHERE id = ANY($1::uuid[])",
        [stack.own_export_id, stack.foreign_export_id],
    )
    assert [row["status"] for row in statuses] == ["COMPLETED", "COMPLETED"]


async def test_list_organizations_tells_nothing_of_other_organizations(stack: Stack):
    world = stack.world
    async with stack.unchanged():
        result = await stack.call_tool(world.outsider.token, "list_organizations", {})
    assert result["isError"] is False, result
    text = json.dumps(result)
    assert [o["id"] for o in result["structuredContent"]["organizations"]] == [
        str(world.other_organization_id)
    ]
    assert str(world.organization_id) not in text
    assert "Acme" not in text
