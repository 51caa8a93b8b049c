"""The GraphQL API through the real application: authentication, authorization, input
rules, error codes and request limits."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
import pytest_asyncio
from graphql import build_schema, parse, specified_rules, validate

from logexport import identity
from logexport.web import sessions
from logexport.web.app import create_app
from logexport.web.graphql_limits import QueryLimits
from tests.support.app import asgi_client, running
from tests.support.world import World, build_world

CLIENT_IP = "203.0.113.9"


@pytest_asyncio.fixture(loop_scope="session")
async def client(pool, settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, pool=pool, run_worker=False)
    async with running(app), asgi_client(app, CLIENT_IP) as c:
        yield c


@pytest_asyncio.fixture(loop_scope="session")
async def world(pool) -> World:
    return await build_world(pool)


async def gql(
    client: httpx.AsyncClient,
    token: str | None,
    query: str,
    variables: dict[str, Any] | None = None,
    *,
    expect_status: int = 200,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    response = await client.post(
        "/graphql",
        json={"query": query, "variables": variables or {}},
        headers={**sent, "User-Agent": "graphql-tests/1.0"},
    )
    assert response.status_code == expect_status, response.text
    body: dict[str, Any] = response.json()
    return body


def only_error(body: dict[str, Any]) -> dict[str, Any]:
    assert "errors" in body, body
    assert len(body["errors"]) == 1, body["errors"]
    error: dict[str, Any] = body["errors"][0]
    return error


VIEWER_QUERY = "{ viewer { id email fullName organizations { id name viewerRole } } }"
REQUEST_AUDIT = """
mutation Request($input: RequestAuditLogExportInput!) {
  requestAuditLogExport(input: $input) {
    logExport { id kind status fromTime toTime format compression csvBom filter
                requestedBy { email fullName } rowsWritten rowCount downloadUrl error { code } }
  }
}
"""


def audit_input(world: World, **overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "organizationId": str(world.organization_id),
        "fromTime": "2026-01-01T00:00:00Z",
        "toTime": "2026-02-01T00:00:00Z",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not ...}


# ---------------------------------------------------------------------------- authentication


async def test_viewer_is_the_token_owner(client, world):
    body = await gql(client, world.owner.token, VIEWER_QUERY)
    assert "errors" not in body
    viewer = body["data"]["viewer"]
    assert viewer["email"] == "olivia.owner@acme.test"
    assert viewer["fullName"] == "Olivia Owner"
    assert viewer["id"] == str(world.owner.user_id)
    assert viewer["organizations"] == [
        {"id": str(world.organization_id), "name": "Acme Corp", "viewerRole": "OWNER"}
    ]


async def test_request_without_token_is_unauthenticated(client):
    response = await client.post("/graphql", json={"query": "{ maxRangeDays }"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert only_error(response.json())["extensions"]["code"] == "UNAUTHENTICATED"


@pytest.mark.parametrize(
    "token",
    ["lex_" + "A" * 43, "not-a-token", "", "lex_short"],
    ids=["unknown", "malformed", "empty", "short"],
)
async def test_bad_token_is_unauthenticated(client, world, token):
    body = await gql(client, token, "{ maxRangeDays }", expect_status=401)
    assert only_error(body)["extensions"]["code"] == "UNAUTHENTICATED"
    assert "data" not in body


async def test_basic_authorization_is_unauthenticated(client, world):
    response = await client.post(
        "/graphql", json={"query": "{ maxRangeDays }"}, headers={"Authorization": "Basic eDp5"}
    )
    assert response.status_code == 401
    assert only_error(response.json())["extensions"]["code"] == "UNAUTHENTICATED"


async def test_revoked_token_is_unauthenticated(client, pool, world):
    assert (await gql(client, world.admin.token, "{ maxRangeDays }"))["data"]["maxRangeDays"]
    async with pool.acquire() as conn:
        await identity.revoke_api_key(conn, world.admin.principal.api_key_id)
    body = await gql(client, world.admin.token, "{ maxRangeDays }", expect_status=401)
    assert only_error(body)["extensions"]["code"] == "UNAUTHENTICATED"


async def test_expired_token_is_unauthenticated(client, pool, world):
    async with pool.acquire() as conn:
        key, token = await identity.create_api_key(
            conn, world.viewer.user_id, "short-lived", timedelta(hours=1)
        )
        assert (await gql(client, token, "{ maxRangeDays }"))["data"] == {"maxRangeDays": 366}
        await conn.execute(
            "UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = $1", key.id
        )
    body = await gql(client, token, "{ maxRangeDays }", expect_status=401)
    assert only_error(body)["extensions"]["code"] == "UNAUTHENTICATED"


async def test_session_cookie_needs_csrf_token_on_post(client, world, settings, pool):
    async with pool.acquire() as conn:
        session = await sessions.start_session(conn, settings, world.viewer.principal)
    cookie = {"Cookie": f"{sessions.COOKIE_NAME}={sessions.encode_session(settings, session)}"}
    body = await gql(client, None, "{ maxRangeDays }", headers=cookie, expect_status=403)
    assert only_error(body)["extensions"]["code"] == "FORBIDDEN"
    body = await gql(
        client,
        None,
        "{ viewer { email } }",
        headers={**cookie, sessions.CSRF_HEADER: session.csrf_token},
    )
    assert body["data"]["viewer"]["email"] == "vera.viewer@acme.test"


# ---------------------------------------------------------------------------- authorization

ORG_QUERY = """
query Org($id: ID!) {
  organization(id: $id) {
    id name createdAt viewerRole
    viewerPermissions { canListAuditLog canExportAuditLog canListScimEvents canExportScimEvents }
  }
}
"""


@pytest.mark.parametrize(
    ("person", "role", "can_export"),
    [("owner", "OWNER", True), ("admin", "ADMIN", True), ("viewer", "VIEWER", False)],
)
async def test_members_see_their_role_and_permissions(client, world, person, role, can_export):
    token = getattr(world, person).token
    body = await gql(client, token, ORG_QUERY, {"id": str(world.organization_id)})
    assert "errors" not in body, body
    org = body["data"]["organization"]
    assert org["viewerRole"] == role
    assert org["createdAt"].endswith("Z") and len(org["createdAt"]) == 27
    assert org["viewerPermissions"] == {
        "canListAuditLog": True,
        "canExportAuditLog": can_export,
        "canListScimEvents": True,
        "canExportScimEvents": can_export,
    }


async def test_non_member_gets_the_same_forbidden_for_existing_and_missing_org(client, world):
    answers = []
    for org_id in (
        str(world.organization_id),
        "00000000-0000-4000-8000-000000000000",
        "not-a-uuid",
    ):
        body = await gql(client, world.outsider.token, ORG_QUERY, {"id": org_id})
        error = only_error(body)
        assert body["data"] is None
        answers.append((error["extensions"], error["message"]))
    assert answers[0][0] == {"code": "FORBIDDEN"}
    assert answers[0] == answers[1] == answers[2]


async def test_viewer_cannot_request_audit_log_export(client, world):
    body = await gql(client, world.viewer.token, REQUEST_AUDIT, {"input": audit_input(world)})
    assert only_error(body)["extensions"]["code"] == "FORBIDDEN"
    assert body["data"] is None


async def test_viewer_cannot_list_exports(client, world):
    query = "query($id: ID!) { organization(id: $id) { logExports { edges { cursor } } } }"
    body = await gql(client, world.viewer.token, query, {"id": str(world.organization_id)})
    assert only_error(body)["extensions"]["code"] == "FORBIDDEN"


async def test_admin_request_is_pending_and_self_audited_with_client_ip(client, pool, world):
    body = await gql(
        client,
        world.admin.token,
        REQUEST_AUDIT,
        {"input": audit_input(world, filter={"actions": ["user.login"]})},
    )
    assert "errors" not in body, body
    export = body["data"]["requestAuditLogExport"]["logExport"]
    assert export["status"] == "PENDING"
    assert export["kind"] == "AUDIT_LOG"
    assert export["fromTime"] == "2026-01-01T00:00:00.000000Z"
    assert export["toTime"] == "2026-02-01T00:00:00.000000Z"
    assert (export["format"], export["compression"], export["csvBom"]) == ("JSONL", "NONE", False)
    assert export["filter"] == {"actions": ["user.login"]}
    assert export["requestedBy"] == {"email": "adam.admin@acme.test", "fullName": "Adam Admin"}
    # BigInt travels as a string; file facts stay null until the export completes.
    assert export["rowsWritten"] == "0"
    assert export["rowCount"] is None and export["downloadUrl"] is None
    assert export["error"] is None
    async with pool.acquire() as conn:
        entry = await conn.fetchrow(
            "SELECT host(ip_address) AS ip, user_agent, actor_email FROM audit_log_entries"
            " WHERE resource_id = $1 AND action = 'iam:audit-log:export'",
            export["id"],
        )
    assert entry is not None
    assert entry["ip"] == CLIENT_IP
    assert entry["user_agent"] == "graphql-tests/1.0"
    assert entry["actor_email"] == "adam.admin@acme.test"


# ---------------------------------------------------------------------------- input rules

BAD_INPUTS = [
    ("no-offset", {"fromTime": "2026-01-01T00:00:00"}, "fromTime"),
    ("seven-digits", {"toTime": "2026-02-01T00:00:00.1234567Z"}, "toTime"),
    ("not-a-date", {"fromTime": "yesterday"}, "fromTime"),
    ("number", {"fromTime": 1767225600}, "fromTime"),
    ("reversed", {"fromTime": "2026-02-01T00:00:00Z", "toTime": "2026-01-01T00:00:00Z"}, "toTime"),
    ("empty-range", {"toTime": "2026-01-01T00:00:00Z"}, "toTime"),
    ("too-long", {"toTime": "2027-01-03T00:00:00Z"}, "toTime"),
    ("empty-actions", {"filter": {"actions": []}}, "filter.actions"),
    ("101-actions", {"filter": {"actions": [f"a{i}" for i in range(101)]}}, "filter.actions"),
    ("empty-key", {"idempotencyKey": ""}, "idempotencyKey"),
    ("long-key", {"idempotencyKey": "k" * 201}, "idempotencyKey"),
    ("non-ascii-key", {"idempotencyKey": "clé"}, "idempotencyKey"),
    ("bom-jsonl", {"csvBom": True}, "csvBom"),
    ("bad-org", {"organizationId": "acme"}, "organizationId"),
    ("bad-format", {"format": "XML"}, "format"),
    ("bad-compression", {"compression": "ZIP"}, "compression"),
    ("missing-from", {"fromTime": ...}, "fromTime"),
    ("unknown-filter", {"filter": {"actors": ["x"]}}, "filter.actors"),
]


async def test_each_bad_export_input_names_its_field(client, world):
    # One test walks every case: each is a request, not worth a fresh database.
    wrong = []
    for case, overrides, field in BAD_INPUTS:
        body = await gql(
            client, world.owner.token, REQUEST_AUDIT, {"input": audit_input(world, **overrides)}
        )
        errors = body.get("errors") or [{}]
        if len(errors) != 1 or errors[0].get("extensions") != {
            "code": "BAD_USER_INPUT",
            "field": field,
        }:
            wrong.append((case, errors))
        elif body.get("data") is not None:
            wrong.append((case, body["data"]))
    assert not wrong


async def test_bad_enum_literal_names_the_field(client, world):
    query = (
        f'mutation {{ requestAuditLogExport(input: {{organizationId: "{world.organization_id}",'
        ' fromTime: "2026-01-01T00:00:00Z", toTime: "2026-01-02T00:00:00Z", format: XML})'
        " { logExport { id } } }"
    )
    error = only_error(await gql(client, world.owner.token, query))
    assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": "format"}


async def test_scim_filter_status_codes_are_checked(client, world):
    query = """mutation($input: RequestScimEventExportInput!) {
        requestScimEventExport(input: $input) { logExport { id } } }"""
    body = await gql(
        client, world.owner.token, query, {"input": audit_input(world, filter={"statusCodes": []})}
    )
    assert only_error(body)["extensions"] == {
        "code": "BAD_USER_INPUT",
        "field": "filter.statusCodes",
    }


async def test_idempotency_key_replays_and_rejects_different_input(client, world):
    first = await gql(
        client,
        world.owner.token,
        REQUEST_AUDIT,
        {"input": audit_input(world, idempotencyKey="k-1")},
    )
    again = await gql(
        client,
        world.owner.token,
        REQUEST_AUDIT,
        {"input": audit_input(world, idempotencyKey="k-1")},
    )
    first_id = first["data"]["requestAuditLogExport"]["logExport"]["id"]
    assert again["data"]["requestAuditLogExport"]["logExport"]["id"] == first_id
    other = await gql(
        client,
        world.owner.token,
        REQUEST_AUDIT,
        {"input": audit_input(world, idempotencyKey="k-1", format="CSV")},
    )
    assert only_error(other)["extensions"] == {"code": "BAD_USER_INPUT", "field": "idempotencyKey"}


async def test_sixth_active_export_is_rate_limited(client, world):
    for day in range(1, 6):
        body = await gql(
            client,
            world.admin.token,
            REQUEST_AUDIT,
            {"input": audit_input(world, toTime=f"2026-01-{day + 1:02d}T00:00:00Z")},
        )
        assert "errors" not in body, body
    body = await gql(client, world.owner.token, REQUEST_AUDIT, {"input": audit_input(world)})
    assert only_error(body)["extensions"]["code"] == "RATE_LIMITED"


@pytest.mark.parametrize("first", [0, 101, -1])
async def test_page_size_outside_1_to_100_is_rejected(client, world, first):
    query = """query($id: ID!, $first: Int) { organization(id: $id) {
        auditLogEntries(first: $first) { edges { cursor } } } }"""
    body = await gql(
        client, world.viewer.token, query, {"id": str(world.organization_id), "first": first}
    )
    assert only_error(body)["extensions"] == {"code": "BAD_USER_INPUT", "field": "first"}


async def test_garbage_cursor_is_rejected_on_after(client, world):
    query = """query($id: ID!) { organization(id: $id) {
        logExports(after: "bm9wZQ") { edges { cursor } } } }"""
    body = await gql(client, world.owner.token, query, {"id": str(world.organization_id)})
    assert only_error(body)["extensions"] == {"code": "BAD_USER_INPUT", "field": "after"}


# ---------------------------------------------------------------------------- errors and limits


async def test_syntax_and_validation_errors_are_bad_user_input(client, world):
    for query in ("{ viewer { email ", "{ viewer { password } }", "{ nope }"):
        error = only_error(await gql(client, world.owner.token, query))
        assert error["extensions"]["code"] == "BAD_USER_INPUT", query


async def test_unexpected_failure_is_internal_without_details(client, world, monkeypatch, caplog):
    from logexport.web import graphql_resolvers

    async def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError('relation "log_exports" does not exist at /srv/secret')

    monkeypatch.setattr(graphql_resolvers.requests, "get_export", broken)
    body = await gql(
        client,
        world.owner.token,
        '{ logExport(id: "00000000-0000-4000-8000-000000000001") { id } }',
    )
    error = only_error(body)
    assert error["extensions"] == {"code": "INTERNAL"}
    assert "secret" not in str(body) and "relation" not in str(body)
    assert body["data"] == {"logExport": None}
    assert any("relation" in (r.exc_text or "") or r.exc_info for r in caplog.records)


async def test_body_over_64_kib_is_rejected(client, world):
    padding = " " * (64 * 1024)
    response = await client.post(
        "/graphql",
        json={"query": "{ maxRangeDays }" + padding},
        headers={"Authorization": f"Bearer {world.owner.token}"},
    )
    assert response.status_code == 413
    assert only_error(response.json())["extensions"]["code"] == "BAD_USER_INPUT"


async def test_natural_deep_query_passes_the_limits(client, world):
    query = """query($id: ID!) { organization(id: $id) {
        logExports { edges { node { requestedBy { email } } } } } }"""
    body = await gql(client, world.owner.token, query, {"id": str(world.organization_id)})
    assert body == {"data": {"organization": {"logExports": {"edges": []}}}}


def test_query_limits_count_depth_through_fragments_and_fields_through_aliases():
    # The API's own types do not nest past seven levels; a recursive schema shows the rule.
    schema = build_schema("type Query { node: Node } type Node { child: Node name: String }")
    rules = (*specified_rules, QueryLimits)

    def nested(levels: int) -> str:
        return "{ " + "node { " + "child { " * (levels - 2) + "name" + " }" * (levels - 1) + " }"

    assert validate(schema, parse(nested(10)), rules) == []
    [error] = validate(schema, parse(nested(11)), rules)
    assert "deeper than 10" in error.message
    hidden = "{ node { ...A } } fragment A on Node { child { child { ...B } } } " + (
        "fragment B on Node { " + "child { " * 7 + "name" + " }" * 7 + " }"
    )
    [error] = validate(schema, parse(hidden), rules)
    assert "deeper than 10" in error.message
    fields = "{ node { " + " ".join(f"n{i}: name" for i in range(199)) + " } }"
    assert validate(schema, parse(fields), rules) == []
    fields = "{ node { " + " ".join(f"n{i}: name" for i in range(200)) + " } }"
    [error] = validate(schema, parse(fields), rules)
    assert "more than 200 fields" in error.message


async def test_more_than_200_fields_is_rejected(client, world):
    too_many = "{ " + " ".join(f"a{i}: maxRangeDays" for i in range(201)) + " }"
    error = only_error(await gql(client, world.owner.token, too_many))
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert "200 fields" in error["message"]
    enough = "{ " + " ".join(f"a{i}: maxRangeDays" for i in range(200)) + " }"
    assert "errors" not in await gql(client, world.owner.token, enough)


async def test_introspection_is_allowed(client, world):
    body = await gql(client, world.owner.token, "{ __schema { queryType { name } } }")
    assert body["data"]["__schema"]["queryType"]["name"] == "Query"


async def test_explorer_is_off_unless_debug(client):
    assert (await client.get("/graphql")).status_code == 405


async def test_responses_carry_security_headers(client, world):
    response = await client.post(
        "/graphql",
        json={"query": "{ maxRangeDays }"},
        headers={"Authorization": f"Bearer {world.owner.token}"},
    )
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert "default-src 'none'" in response.headers["content-security-policy"]
