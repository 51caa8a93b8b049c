"""Hostile input to ``POST /graphql``: every request is refused with a clear error naming
its field, writes nothing and reveals nothing internal."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest

from logexport.exports import requests
from tests.abuse.conftest import LITERAL_ACTIONS, Stack, assert_no_internals, only_error
from tests.support.world import wait_for_status

REQUEST_AUDIT = """
mutation($input: RequestAuditLogExportInput!) {
  requestAuditLogExport(input: $input) { logExport { id status fromTime toTime filter fileName } }
}
"""
REQUEST_SCIM = """
mutation($input: RequestScimEventExportInput!) {
  requestScimEventExport(input: $input) { logExport { id status filter } }
}
"""
AUDIT_ENTRIES = """
query($org: ID!, $first: Int, $after: String, $filter: AuditLogFilter) {
  organization(id: $org) {
    auditLogEntries(first: $first, after: $after, filter: $filter) {
      edges { cursor node { action } }
      pageInfo { hasNextPage endCursor }
    }
  }
}
"""
SCIM_EVENTS = """
query($org: ID!, $filter: ScimEventFilter) {
  organization(id: $org) { scimEvents(first: 100, filter: $filter) { edges { node { userName } } } }
}
"""
LOG_EXPORTS = """
query($org: ID!, $after: String) {
  organization(id: $org) { logExports(first: 1, after: $after) { edges { cursor } } }
}
"""
SQL_METACHARACTERS = [
    "'; DROP TABLE audit_log_entries; --",
    "' OR '1'='1",
    "%",
    "_",
    "\\",
    "user%",
    "user.%",
    "*",
    ".*",
    "$1",
]


def audit_input(stack: Stack, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "organizationId": str(stack.world.organization_id),
        "fromTime": "2026-01-01T00:00:00Z",
        "toTime": "2026-02-01T00:00:00Z",
    }
    base.update(fields)
    return base


def assert_bad_input(body: dict[str, Any], field: str | None) -> dict[str, Any]:
    error = only_error(body)
    assert error["extensions"]["code"] == "BAD_USER_INPUT", error
    if field is not None:
        assert error["extensions"].get("field") == field, error
    assert body.get("data") is None, body
    return error


async def cancel(stack: Stack, export_id: str) -> None:
    """Accepted exports are canceled at once: they would count against the active cap."""
    await requests.cancel_export(stack.pool, stack.world.admin.principal, export_id)


# ---------------------------------------------------------------------------- transport


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "not JSON"),
        (b"{not json", "not JSON"),
        (b"\xff\xfe\x00garbage", "not JSON"),
        (b'"{ maxRangeDays }"', "one JSON object"),
        (b'[{"query": "{ maxRangeDays }"}]', "one JSON object"),
        (b"42", "one JSON object"),
        (b'{"query": 5}', "no query string"),
        (b'{"query": null}', "no query string"),
        (b'{"query": {"q": "x"}}', "no query string"),
        (b'{"query": "{ maxRangeDays }", "variables": [1]}', "variables must be a JSON object"),
        (b'{"query": "{ maxRangeDays }", "variables": "x"}', "variables must be a JSON object"),
        (b'{"query": "{ maxRangeDays }", "operationName": 7}', "operationName must be a string"),
    ],
    ids=lambda v: v.decode(errors="replace")[:25] if isinstance(v, bytes) else None,
)
async def test_malformed_body_is_a_400_with_a_graphql_error(stack: Stack, raw: bytes, message: str):
    async with stack.unchanged():
        response = await stack.client.post(
            "/graphql",
            content=raw,
            headers={
                "Authorization": f"Bearer {stack.world.admin.token}",
                "Content-Type": "application/json",
            },
        )
    assert response.status_code == 400, response.text
    assert_no_internals(response.text)
    error = only_error(response.json())
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert message in error["message"]


async def test_bodies_over_the_limit_are_refused_before_parsing(stack: Stack):
    auth = {"Authorization": f"Bearer {stack.world.admin.token}"}
    padding = " " * (64 * 1024)
    too_long = json.dumps({"query": "{ maxRangeDays }" + padding})

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(200):  # 200 KiB without a Content-Length
            yield b" " * 1024

    async with stack.unchanged():
        declared = await stack.client.post("/graphql", content=too_long, headers=auth)
        streamed = await stack.client.post("/graphql", content=chunks(), headers=auth)
        anonymous = await stack.client.post("/graphql", content=too_long)
    for response in (declared, streamed, anonymous):
        assert response.status_code == 413, response.text
        assert only_error(response.json())["extensions"]["code"] == "BAD_USER_INPUT"
    # Just under the limit is parsed as usual.
    fits = json.dumps({"query": "{ maxRangeDays }" + " " * (64 * 1024 - 40)})
    assert len(fits) <= 64 * 1024
    ok = await stack.client.post("/graphql", content=fits, headers=auth)
    assert ok.status_code == 200 and ok.json() == {"data": {"maxRangeDays": 366}}


# ---------------------------------------------------------------------------- deep and wide


@pytest.mark.parametrize(
    ("query", "message"),
    [
        # Under the token limit (each brace is a token), over the parser's recursion limit.
        ("{" + "viewer {" * 1500 + "id" + "}" * 1501, "nested too deeply"),
        ("{" + " ".join(f"a{i}: maxRangeDays" for i in range(201)) + "}", "more than 200 fields"),
        ("{ " + "maxRangeDays " * 4000 + "}", "more than 200 fields"),
        (
            "fragment F on Organization { id viewerRole name createdAt }"
            "{ viewer { organizations { "
            + " ".join(f"o{i}: id ...F" for i in range(60))
            + " } } }",
            "more than 200 fields",
        ),
        ("fragment A on Query { ...B } fragment B on Query { ...A } { ...A }", "within itself"),
    ],
    ids=["nested-1500", "aliases-201", "repeated-4000", "fragment-fanout", "fragment-cycle"],
)
async def test_deep_and_wide_queries_are_rejected_before_execution(
    stack: Stack, query: str, message: str
):
    body = await stack.gql(stack.world.admin.token, query)
    assert "data" not in body
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert message in body["errors"][0]["message"]


async def test_a_query_of_many_errors_gets_a_bounded_answer(stack: Stack):
    # 900 unused variables (within the token limit): one error each would amplify a 10 KB
    # request many times over.
    query = "query(" + ",".join(f"$v{i}: Int" for i in range(900)) + ") { maxRangeDays }"
    response = await stack.client.post(
        "/graphql",
        json={"query": query},
        headers={"Authorization": f"Bearer {stack.world.admin.token}"},
    )
    errors = response.json()["errors"]
    assert len(errors) <= 101
    assert all(e["extensions"]["code"] == "BAD_USER_INPUT" for e in errors)


# ---------------------------------------------------------------------------- wrong types


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"organizationId": 12345}, "organizationId"),
        ({"organizationId": "'; DROP TABLE log_exports; --"}, "organizationId"),
        ({"fromTime": 20260101}, "fromTime"),
        ({"fromTime": ["2026-01-01T00:00:00Z"]}, "fromTime"),
        ({"fromTime": {"$gt": ""}}, "fromTime"),
        ({"toTime": True}, "toTime"),
        ({"format": "XML"}, "format"),
        ({"format": 1}, "format"),
        ({"compression": "ZSTD"}, "compression"),
        ({"csvBom": "yes"}, "csvBom"),
        ({"format": "JSONL", "csvBom": True}, "csvBom"),
        ({"filter": "user.login"}, "filter"),
        ({"filter": {"actions": [1]}}, "filter.actions"),
        ({"filter": {"actions": []}}, "filter.actions"),
        ({"filter": {"actions": [""]}}, "filter.actions"),
        ({"filter": {"actions": [f"a{i}" for i in range(101)]}}, "filter.actions"),
        ({"filter": {"actorIds": [None]}}, "filter.actorIds"),
        ({"filter": {"resourceTypes": [["nested"]]}}, "filter.resourceTypes"),
        ({"filter": {"methods": ["GET"]}}, "filter.methods"),
        ({"idempotencyKey": 42}, "idempotencyKey"),
        ({"idempotencyKey": ""}, "idempotencyKey"),
        ({"idempotencyKey": "k" * 201}, "idempotencyKey"),
        ({"idempotencyKey": "caf\u00e9"}, "idempotencyKey"),
        ({"idempotencyKey": "line\r\nbreak"}, "idempotencyKey"),
        ({"idempotencyKey": "nul\x00"}, "idempotencyKey"),
        ({"unknownField": 1}, "unknownField"),
    ],
    ids=lambda v: json.dumps(v)[:40] if isinstance(v, dict) else v,
)
async def test_wrong_types_in_an_export_request_name_their_field(
    stack: Stack, fields: dict[str, Any], field: str
):
    async with stack.unchanged():
        body = await stack.gql(
            stack.world.admin.token, REQUEST_AUDIT, {"input": audit_input(stack, **fields)}
        )
    assert_bad_input(body, field)


@pytest.mark.parametrize(
    ("variables", "field"),
    [
        ({"first": "10"}, "first"),
        ({"first": 2**31}, "first"),
        ({"first": 0}, "first"),
        ({"first": 101}, "first"),
        ({"first": 1.5}, "first"),
        ({"after": 12}, "after"),
        ({"filter": {"actions": "x", "bogus": ["y"]}}, "filter.bogus"),
    ],
    ids=lambda v: json.dumps(v)[:40] if isinstance(v, dict) else v,
)
async def test_wrong_types_in_a_listing_name_their_field(
    stack: Stack, variables: dict[str, Any], field: str
):
    async with stack.unchanged():
        body = await stack.gql(
            stack.world.admin.token,
            AUDIT_ENTRIES,
            {"org": str(stack.world.organization_id), **variables},
        )
    assert_bad_input(body, field)


# ---------------------------------------------------------------------------- SQL metacharacters


async def test_sql_metacharacters_in_filters_are_plain_values(stack: Stack):
    org = str(stack.world.organization_id)
    token = stack.world.admin.token
    async with stack.unchanged():
        for value in SQL_METACHARACTERS:
            for name in ("actions", "actorIds", "resourceTypes"):
                body = await stack.gql(
                    token, AUDIT_ENTRIES, {"org": org, "first": 100, "filter": {name: [value]}}
                )
                assert "errors" not in body, (value, body)
                assert body["data"]["organization"]["auditLogEntries"]["edges"] == [], value
            scim = await stack.gql(token, SCIM_EVENTS, {"org": org, "filter": {"userName": value}})
            assert scim["data"]["organization"]["scimEvents"]["edges"] == [], value
            methods = await stack.gql(
                token, SCIM_EVENTS, {"org": org, "filter": {"methods": [value]}}
            )
            assert methods["data"]["organization"]["scimEvents"]["edges"] == [], value
    # Each stored action matches itself and nothing else: no LIKE, no regex, no escaping.
    for action in LITERAL_ACTIONS:
        body = await stack.gql(
            token, AUDIT_ENTRIES, {"org": org, "first": 100, "filter": {"actions": [action]}}
        )
        found = [
            e["node"]["action"] for e in body["data"]["organization"]["auditLogEntries"]["edges"]
        ]
        assert found == [action]
    # The tables are still there and whole.
    everything = await stack.gql(token, AUDIT_ENTRIES, {"org": org, "first": 100})
    assert len(everything["data"]["organization"]["auditLogEntries"]["edges"]) >= len(
        LITERAL_ACTIONS
    )


async def test_sql_metacharacters_in_an_export_filter_are_stored_verbatim(stack: Stack):
    values = sorted(SQL_METACHARACTERS)
    body = await stack.gql(
        stack.world.admin.token,
        REQUEST_AUDIT,
        {
            "input": audit_input(
                stack, filter={"actions": values}, idempotencyKey="'; DROP TABLE log_exports; --"
            )
        },
    )
    assert "errors" not in body, body
    export = body["data"]["requestAuditLogExport"]["logExport"]
    assert export["filter"] == {"actions": values}
    await cancel(stack, export["id"])
    scim = await stack.gql(
        stack.world.admin.token,
        REQUEST_SCIM,
        {"input": audit_input(stack, filter={"userName": "%", "methods": ["_"]})},
    )
    assert scim["data"]["requestScimEventExport"]["logExport"]["filter"] == {
        "methods": ["_"],
        "userName": "%",
    }
    await cancel(stack, scim["data"]["requestScimEventExport"]["logExport"]["id"])


async def test_nul_in_a_filter_value_is_refused_on_its_field(stack: Stack):
    org = str(stack.world.organization_id)
    token = stack.world.admin.token
    async with stack.unchanged():
        listing = await stack.gql(
            token, AUDIT_ENTRIES, {"org": org, "filter": {"actions": ["user\x00login"]}}
        )
        request = await stack.gql(
            token, REQUEST_AUDIT, {"input": audit_input(stack, filter={"actions": ["a\x00"]})}
        )
        scim = await stack.gql(token, SCIM_EVENTS, {"org": org, "filter": {"userName": "a\x00"}})
    for body, field in (
        (listing, "filter.actions"),
        (request, "filter.actions"),
        (scim, "filter.userName"),
    ):
        error = only_error(body)
        assert error["extensions"]["code"] == "BAD_USER_INPUT", body
        assert error["extensions"].get("field") == field, body


# ---------------------------------------------------------------------------- RFC 3339


@pytest.mark.parametrize(
    ("from_time", "to_time", "field"),
    [
        ("2023-02-29T00:00:00Z", "2023-03-01T00:00:00Z", "fromTime"),
        ("2026-01-01T24:00:00Z", "2026-01-02T00:00:00Z", "fromTime"),
        ("2026-01-01T00:00:00", "2026-01-02T00:00:00Z", "fromTime"),
        ("2026-01-01T00:00:00Z", "2026-01-02 00:00:00", "toTime"),
        ("2026-01-01T00:00:00.1234567Z", "2026-01-02T00:00:00Z", "fromTime"),
        ("2026-01-01T00:00:60Z", "2026-01-02T00:00:00Z", "fromTime"),
        ("2026-13-01T00:00:00Z", "2026-12-02T00:00:00Z", "fromTime"),
        ("2026-01-01T00:00:00+24:00", "2026-01-02T00:00:00Z", "fromTime"),
        ("2026-01-01T00:00:00+0100", "2026-01-02T00:00:00Z", "fromTime"),
        ("2026-01-01", "2026-01-02T00:00:00Z", "fromTime"),
        ("0000-12-31T00:00:00Z", "0001-01-02T00:00:00Z", "fromTime"),
        ("0001-01-01T00:00:00+01:00", "0001-01-02T00:00:00Z", "fromTime"),
        ("0001-01-01T00:00:00Z", "0001-01-02T00:00:00Z", "fromTime"),
        ("9999-12-31T00:00:00Z", "9999-12-31T23:59:59.999999Z", "toTime"),
        ("9999-12-31T00:00:00Z", "9999-12-31T23:59:59-01:00", "toTime"),
        ("10000-01-01T00:00:00Z", "10000-01-02T00:00:00Z", "fromTime"),
        ("2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z", "toTime"),
        ("2026-01-02T00:00:00Z", "2026-01-01T00:00:00Z", "toTime"),
        ("2024-01-01T00:00:00Z", "2025-01-02T00:00:00.000001Z", "toTime"),
    ],
)
async def test_invalid_timestamps_are_refused_on_their_field(
    stack: Stack, from_time: str, to_time: str, field: str
):
    async with stack.unchanged():
        body = await stack.gql(
            stack.world.admin.token,
            REQUEST_AUDIT,
            {"input": audit_input(stack, fromTime=from_time, toTime=to_time)},
        )
    error = assert_bad_input(body, field)
    assert field in error["message"]


async def test_non_ascii_digits_are_not_a_timestamp(stack: Stack):
    async with stack.unchanged():
        body = await stack.gql(
            stack.world.admin.token,
            REQUEST_AUDIT,
            {"input": audit_input(stack, fromTime="\u0662\u0660\u0662\u0666-01-01T00:00:00Z")},
        )
        if "errors" not in body:
            await cancel(stack, body["data"]["requestAuditLogExport"]["logExport"]["id"])
    assert_bad_input(body, "fromTime")


@pytest.mark.parametrize(
    ("from_time", "to_time", "stored_from"),
    [
        ("2024-02-29T00:00:00Z", "2024-03-01T00:00:00Z", "2024-02-29T00:00:00.000000Z"),
        ("2026-01-01t00:00:00z", "2026-01-02T00:00:00Z", "2026-01-01T00:00:00.000000Z"),
        ("2026-01-01T00:00:00+14:00", "2026-01-02T00:00:00Z", "2025-12-31T10:00:00.000000Z"),
        ("2026-01-01T00:00:00-12:00", "2026-01-02T00:00:00Z", "2026-01-01T12:00:00.000000Z"),
        ("2026-01-01T00:00:00.123456Z", "2026-01-02T00:00:00Z", "2026-01-01T00:00:00.123456Z"),
        ("2026-01-01T00:00:00.1+00:00", "2026-01-02T00:00:00Z", "2026-01-01T00:00:00.100000Z"),
    ],
)
async def test_valid_timestamp_edge_cases_are_accepted_and_shown_in_utc(
    stack: Stack, from_time: str, to_time: str, stored_from: str
):
    body = await stack.gql(
        stack.world.admin.token,
        REQUEST_AUDIT,
        {"input": audit_input(stack, fromTime=from_time, toTime=to_time)},
    )
    assert "errors" not in body, body
    export = body["data"]["requestAuditLogExport"]["logExport"]
    assert export["fromTime"] == stored_from
    await cancel(stack, export["id"])


async def test_the_first_and_last_representable_days_export_with_date_only_names(stack: Stack):
    ids = []
    for from_time, to_time in (
        ("0001-01-01T00:00:00.000001Z", "0001-01-02T00:00:00Z"),
        ("9999-12-30T00:00:00Z", "9999-12-31T23:59:59.999998Z"),
    ):
        body = await stack.gql(
            stack.world.admin.token,
            REQUEST_AUDIT,
            {"input": audit_input(stack, fromTime=from_time, toTime=to_time)},
        )
        assert "errors" not in body, (from_time, body)
        ids.append(body["data"]["requestAuditLogExport"]["logExport"]["id"])
    names = [
        (await wait_for_status(stack.pool, i, "COMPLETED", timeout=60))["file_name"] for i in ids
    ]
    assert names == [
        "audit-log-export-0001-01-01-to-0001-01-01.jsonl",
        "audit-log-export-9999-12-30-to-9999-12-31.jsonl",
    ]


# ---------------------------------------------------------------------------- tokens


def _flip(token: str, index: int) -> str:
    char = token[index]
    return token[:index] + ("B" if char != "B" else "C") + token[index + 1 :]


async def test_guessed_and_altered_tokens_are_unauthenticated_alike(stack: Stack):
    real = stack.world.admin.token
    guesses = [
        *("lex_" + secrets.token_urlsafe(32) for _ in range(5)),
        real[:-1],
        real[:20],
        real + "A",
        real + " extra",
        _flip(real, len(real) - 1),
        _flip(real, 4),
        _flip(real, 25),
        "LEX_" + real[4:],
        real[4:],
        "lex_" + real[4:].upper(),
        "lex_" + "\u00e9" * 43,
        "lex_" + "A" * 10_000,
        "",
    ]
    bodies = set()
    async with stack.unchanged():
        for token in guesses:
            response = await stack.client.post(
                "/graphql",
                json={"query": "{ viewer { id } }"},
                headers={b"Authorization": f"Bearer {token}".encode()},
            )
            assert response.status_code == 401, (token, response.text)
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert only_error(response.json())["extensions"]["code"] == "UNAUTHENTICATED"
            bodies.add(response.content)
    assert len(bodies) == 1, bodies


# ---------------------------------------------------------------------------- cursors


async def _first_cursor(stack: Stack, token: str, org: str, **filter: Any) -> str:
    body = await stack.gql(token, AUDIT_ENTRIES, {"org": org, "first": 1, "filter": filter or None})
    cursor: str = body["data"]["organization"]["auditLogEntries"]["pageInfo"]["endCursor"]
    return cursor


def _reencode(cursor: str, **changes: str) -> str:
    import base64

    payload = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    payload.update(changes)
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


async def test_foreign_and_tampered_cursors_are_refused_on_after(stack: Stack):
    world = stack.world
    org, other = str(world.organization_id), str(world.other_organization_id)
    own = await _first_cursor(stack, world.admin.token, org)
    foreign = await _first_cursor(stack, world.outsider.token, other)
    filtered = await _first_cursor(stack, world.admin.token, org, actions=["user.login"])
    exports = await stack.gql(world.admin.token, LOG_EXPORTS, {"org": org})
    export_cursor = exports["data"]["organization"]["logExports"]["edges"][0]["cursor"]
    bad = [
        foreign,
        filtered,
        export_cursor,
        _reencode(own, o=other),
        _reencode(own, k="scim"),
        _reencode(own, t="2023-02-29T00:00:00Z"),
        _reencode(own, i="'; DROP TABLE audit_log_entries; --"),
        _reencode(own, t="' OR 1=1 --"),
        own[:-3],
        own[::-1],
        "",
        "null",
        "x" * 5000,
        "\x00",
    ]
    async with stack.unchanged():
        for cursor in bad:
            body = await stack.gql(
                world.admin.token, AUDIT_ENTRIES, {"org": org, "first": 5, "after": cursor}
            )
            error = assert_bad_input(body, "after")
            assert other not in json.dumps(body)
        # The export listing's cursor is bound the same way.
        for cursor in (own, _reencode(export_cursor, o=other), "garbage"):
            body = await stack.gql(world.admin.token, LOG_EXPORTS, {"org": org, "after": cursor})
            assert_bad_input(body, "after")
    assert error["message"] == "after is not a cursor of this list"
