"""Ids of another organization, on every field and tool that takes one.

For each, the caller gets the same answer for a foreign id as for an id that exists
nowhere, byte for byte once the id they passed is blanked out; nothing is written and
the foreign export is left as it was.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.abuse.conftest import Stack, assert_no_internals, only_error
from tests.support.world import export_status

ORGANIZATION = """
query($id: ID!) {
  organization(id: $id) {
    id name viewerRole
    auditLogEntries(first: 5) { edges { node { id } } }
    scimEvents(first: 5) { edges { node { id } } }
    logExports(first: 5) { edges { node { id } } }
  }
}
"""
LOG_EXPORT = "query($id: ID!) { logExport(id: $id) { id status fileName downloadUrl } }"
CANCEL = """
mutation($id: ID!) { cancelLogExport(input: {id: $id}) { logExport { id status } } }
"""
REQUEST_AUDIT = """
mutation($org: ID!) {
  requestAuditLogExport(input: {organizationId: $org, fromTime: "2026-01-01T00:00:00Z",
                                toTime: "2026-02-01T00:00:00Z"}) { logExport { id } }
}
"""
REQUEST_SCIM = """
mutation($org: ID!) {
  requestScimEventExport(input: {organizationId: $org, fromTime: "2026-01-01T00:00:00Z",
                                 toTime: "2026-02-01T00:00:00Z"}) { logExport { id } }
}
"""


def blank(text: str | bytes, *ids: Any) -> str:
    value = text.decode() if isinstance(text, bytes) else text
    for id_ in ids:
        value = value.replace(str(id_), "<id>")
    return value


async def raw_gql(stack: Stack, token: str, query: str, variables: dict[str, Any]) -> str:
    response = await stack.client.post(
        "/graphql",
        json={"query": query, "variables": variables},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200, response.text
    assert_no_internals(response.text)
    return response.text


# ---------------------------------------------------------------------------- GraphQL


@pytest.mark.parametrize(
    ("query", "variable", "target", "code"),
    [
        (ORGANIZATION, "id", "org", "FORBIDDEN"),
        (REQUEST_AUDIT, "org", "org", "FORBIDDEN"),
        (REQUEST_SCIM, "org", "org", "FORBIDDEN"),
        (LOG_EXPORT, "id", "export", "NOT_FOUND"),
        (CANCEL, "id", "export", "NOT_FOUND"),
    ],
    ids=["organization", "requestAuditLogExport", "requestScimEventExport", "logExport", "cancel"],
)
async def test_foreign_ids_get_the_answer_of_missing_ones(
    stack: Stack, query: str, variable: str, target: str, code: str
):
    world = stack.world
    foreign = world.other_organization_id if target == "org" else stack.foreign_export_id
    missing = uuid.uuid4()
    async with stack.unchanged():
        # The Acme admin reaches for Globex; Globex's owner reaches for Acme.
        answers = {
            "foreign": await raw_gql(stack, world.admin.token, query, {variable: str(foreign)}),
            "missing": await raw_gql(stack, world.admin.token, query, {variable: str(missing)}),
        }
        malformed = await raw_gql(stack, world.admin.token, query, {variable: "../../etc/passwd"})
        if target == "org":
            reverse = world.organization_id
        else:
            reverse = stack.own_export_id
        answers["reverse"] = await raw_gql(
            stack, world.outsider.token, query, {variable: str(reverse)}
        )
    body = httpx.Response(200, text=answers["foreign"]).json()
    assert only_error(body)["extensions"] == {"code": code}
    # logExport is nullable: its null stands in the data; the others null the data itself.
    assert body["data"] is None or set(body["data"].values()) == {None}, body
    blanked = {name: blank(text, foreign, missing, reverse) for name, text in answers.items()}
    assert len(set(blanked.values())) == 1, blanked
    # A malformed id cannot exist anywhere: the same answer, or a refusal naming the field.
    error = only_error(httpx.Response(200, text=malformed).json())
    if error["extensions"]["code"] != code:
        field = "organizationId" if target == "org" else "id"
        assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": field}, error
    assert "etc/passwd" not in error["message"]
    # The foreign export is untouched by the cancel attempt.
    foreign_row = await export_status(stack.pool, stack.foreign_export_id)
    assert foreign_row["status"] == "COMPLETED"


async def test_a_viewer_cannot_reach_exports_of_their_own_organization(stack: Stack):
    """Inside the organization, the viewer's role lacks log-export actions: same answer."""
    token = stack.world.viewer.token
    async with stack.unchanged():
        own = await raw_gql(stack, token, CANCEL, {"id": str(stack.own_export_id)})
        missing_id = uuid.uuid4()
        missing = await raw_gql(stack, token, CANCEL, {"id": str(missing_id)})
    assert blank(own, stack.own_export_id) == blank(missing, missing_id)
    assert (await export_status(stack.pool, stack.own_export_id))["status"] == "COMPLETED"


# ---------------------------------------------------------------------------- MCP

_EXPORT_ARGUMENTS = {"from_time": "2026-01-01T00:00:00Z", "to_time": "2026-02-01T00:00:00Z"}


@pytest.mark.parametrize(
    ("tool", "argument", "target", "extra"),
    [
        ("get_log_export", "id", "export", {}),
        ("list_log_exports", "organization_id", "org", {}),
        ("list_audit_log_entries", "organization_id", "org", {}),
        ("list_scim_events", "organization_id", "org", {}),
        ("request_audit_log_export", "organization_id", "org", _EXPORT_ARGUMENTS),
        ("request_scim_event_export", "organization_id", "org", _EXPORT_ARGUMENTS),
    ],
)
async def test_mcp_tools_answer_foreign_ids_like_missing_ones(
    stack: Stack, tool: str, argument: str, target: str, extra: dict[str, str]
):
    world = stack.world
    foreign = world.other_organization_id if target == "org" else stack.foreign_export_id
    missing = uuid.uuid4()
    async with stack.unchanged():
        results = [
            await stack.call_tool(world.admin.token, tool, {argument: str(value), **extra})
            for value in (foreign, missing)
        ]
    texts = [blank(r["content"][0]["text"], foreign, missing) for r in results]
    assert all(r["isError"] for r in results), results
    assert texts[0] == texts[1], texts
    assert texts[0].startswith("FORBIDDEN" if target == "org" else "NOT_FOUND"), texts
    assert "structuredContent" not in results[0] or not results[0]["structuredContent"]


# ---------------------------------------------------------------------------- download links


def _parts(url: str) -> tuple[str, str]:
    """``(export id, token)`` of a ``/exports/<id>/download?token=<token>`` path."""
    path, _, query = url.partition("?token=")
    return path.split("/")[2], query


async def test_a_valid_token_for_one_export_opens_no_other(stack: Stack):
    own_id, own_token = _parts(stack.own_download_url)
    foreign_id, foreign_token = _parts(stack.foreign_download_url)
    missing_id = str(uuid.uuid4())
    async with stack.unchanged():
        attempts = {
            "own token, foreign export": f"/exports/{foreign_id}/download?token={own_token}",
            "foreign token, own export": f"/exports/{own_id}/download?token={foreign_token}",
            "own token, missing export": f"/exports/{missing_id}/download?token={own_token}",
        }
        answers = {name: await stack.client.get(url) for name, url in attempts.items()}
        posted = await stack.client.post(
            f"/exports/{foreign_id}/download", data={"token": own_token}
        )
    for name, response in {**answers, "posted": posted}.items():
        assert response.status_code == 404, (name, response.status_code)
        assert "location" not in response.headers, name
        assert_no_internals(response.text)
    assert len({r.content for r in (*answers.values(), posted)}) == 1
