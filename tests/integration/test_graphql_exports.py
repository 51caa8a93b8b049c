"""Exports and listings through GraphQL with the in-process worker: request → file →
download, cancel, visibility across organizations, pagination, probes and metrics."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest_asyncio
from starlette.applications import Starlette

from logexport.entries import AuditLogEntryInput, record_audit_log_entries
from logexport.exports.worker import Worker
from logexport.web.app import create_app
from tests.support.app import asgi_client, running
from tests.support.world import World, build_world, eventually

START = datetime(2026, 1, 1, tzinfo=UTC)


@pytest_asyncio.fixture(loop_scope="session")
async def app(pool, settings) -> AsyncIterator[Starlette]:
    application = create_app(
        settings, pool=pool, worker=Worker(settings, pool=pool, retry_base=0.1)
    )
    async with running(application):
        yield application


@pytest_asyncio.fixture(loop_scope="session")
async def client(app) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(app) as c:
        yield c


@pytest_asyncio.fixture(loop_scope="session")
async def world(pool) -> World:
    return await build_world(pool)


async def gql(
    client: httpx.AsyncClient, token: str, query: str, variables: dict[str, Any] | None = None
) -> dict[str, Any]:
    response = await client.post(
        "/graphql",
        json={"query": query, "variables": variables or {}},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def data(body: dict[str, Any]) -> dict[str, Any]:
    assert "errors" not in body, body["errors"]
    result: dict[str, Any] = body["data"]
    return result


EXPORT_FIELDS = """id status attempts rowsWritten rowCount byteSize sha256 fileName
    completedAt snapshotAt expiresAt downloadUrl error { code message }"""
REQUEST = (
    "mutation($input: RequestAuditLogExportInput!) {"
    f" requestAuditLogExport(input: $input) {{ logExport {{ {EXPORT_FIELDS} }} }} }}"
)
GET = f"query($id: ID!) {{ logExport(id: $id) {{ {EXPORT_FIELDS} }} }}"
CANCEL = "mutation($id: ID!) { cancelLogExport(input: {id: $id}) { logExport { id status } } }"


async def seed_entries(pool, organization_id, count: int) -> None:
    entries = [
        AuditLogEntryInput(
            organization_id=organization_id,
            action="user.login" if i % 2 == 0 else "user.logout",
            actor_type="USER",
            actor_id=f"u{i}",
            created_at=START + timedelta(seconds=i // 3),  # ties on created_at, broken by id
            ip_address="2001:db8::1",
            metadata={"n": i},
        )
        for i in range(count)
    ]
    async with pool.acquire() as conn:
        await record_audit_log_entries(conn, entries)


async def test_export_completes_and_download_url_returns_the_file(client, pool, world, s3):
    await seed_entries(pool, world.organization_id, 120)
    body = await gql(
        client,
        world.admin.token,
        REQUEST,
        {
            "input": {
                "organizationId": str(world.organization_id),
                "fromTime": "2026-01-01T00:00:00Z",
                "toTime": "2026-01-02T00:00:00Z",
                "format": "CSV",
                "compression": "GZIP",
            }
        },
    )
    export_id = data(body)["requestAuditLogExport"]["logExport"]["id"]

    async def completed() -> dict[str, Any] | None:
        export = data(await gql(client, world.admin.token, GET, {"id": export_id}))["logExport"]
        assert export["status"] in ("PENDING", "PROCESSING", "COMPLETED"), export
        return export if export["status"] == "COMPLETED" else None

    export = await eventually(completed, timeout=30, interval=0.2, what="export COMPLETED")
    assert export["rowCount"] == "120" and export["rowsWritten"] == "120"
    assert isinstance(export["byteSize"], str) and int(export["byteSize"]) > 0
    assert export["fileName"] == "audit-log-export-2026-01-01-to-2026-01-01.csv.gz"
    assert export["error"] is None
    assert export["expiresAt"].endswith("Z")

    link = urlsplit(export["downloadUrl"])
    assert f"/exports/{export_id}/download" == link.path
    response = await client.get(f"{link.path}?{link.query}")
    assert response.status_code == 303
    assert response.headers["referrer-policy"] == "no-referrer"
    async with httpx.AsyncClient() as plain:
        stored = await plain.get(response.headers["location"])
    assert stored.status_code == 200
    assert hashlib.sha256(stored.content).hexdigest() == export["sha256"]
    assert len(stored.content) == int(export["byteSize"])

    # The viewer may not see exports at all; the outsider sees nothing of this organization.
    for person in (world.viewer, world.outsider):
        body = await gql(client, person.token, GET, {"id": export_id})
        assert body["data"] == {"logExport": None}
        assert [e["extensions"]["code"] for e in body["errors"]] == ["NOT_FOUND"]


async def test_cancel_pending_export_and_cancel_again(client, world, app):
    # Stop claiming so the export stays PENDING until it is canceled.
    await app.state.worker.stop(grace=0)
    body = await gql(
        client,
        world.owner.token,
        REQUEST,
        {
            "input": {
                "organizationId": str(world.organization_id),
                "fromTime": "2026-01-01T00:00:00+02:00",
                "toTime": "2026-01-05T00:00:00Z",
            }
        },
    )
    export = data(body)["requestAuditLogExport"]["logExport"]
    assert export["status"] == "PENDING"
    assert export["downloadUrl"] is None and export["rowCount"] is None

    denied = await gql(client, world.viewer.token, CANCEL, {"id": export["id"]})
    assert [e["extensions"]["code"] for e in denied["errors"]] == ["NOT_FOUND"]

    for _ in range(2):
        canceled = data(await gql(client, world.admin.token, CANCEL, {"id": export["id"]}))
        assert canceled["cancelLogExport"]["logExport"]["status"] == "CANCELED"
    current = data(await gql(client, world.owner.token, GET, {"id": export["id"]}))["logExport"]
    assert current["status"] == "CANCELED"


async def test_missing_and_foreign_exports_are_not_found_alike(client, world):
    body = await gql(
        client,
        world.outsider.token,
        REQUEST,
        {
            "input": {
                "organizationId": str(world.other_organization_id),
                "fromTime": "2026-01-01T00:00:00Z",
                "toTime": "2026-01-02T00:00:00Z",
            }
        },
    )
    foreign = data(body)["requestAuditLogExport"]["logExport"]["id"]
    answers = []
    for export_id in (foreign, "00000000-0000-4000-8000-000000000000", "nonsense"):
        body = await gql(client, world.owner.token, GET, {"id": export_id})
        assert body["data"] == {"logExport": None}
        answers.append([(e["message"], e["extensions"]) for e in body["errors"]])
    assert answers[0][0][1] == {"code": "NOT_FOUND"}
    assert answers[0] == answers[1] == answers[2]


ENTRIES = """query($id: ID!, $first: Int, $after: String, $filter: AuditLogFilter) {
  organization(id: $id) {
    auditLogEntries(first: $first, after: $after, filter: $filter) {
      edges { cursor node { id createdAt actorType actorId action ipAddress metadata } }
      pageInfo { hasNextPage endCursor }
    }
  }
}"""


async def test_audit_log_pages_cover_every_entry_once_newest_first(client, pool, world):
    await seed_entries(pool, world.organization_id, 1000)
    variables: dict[str, Any] = {"id": str(world.organization_id), "first": 100}
    seen: list[tuple[str, str]] = []
    pages = 0
    while True:
        page = data(await gql(client, world.viewer.token, ENTRIES, variables))
        connection = page["organization"]["auditLogEntries"]
        seen += [(e["node"]["createdAt"], e["node"]["id"]) for e in connection["edges"]]
        pages += 1
        if not connection["pageInfo"]["hasNextPage"]:
            break
        assert connection["pageInfo"]["endCursor"] == connection["edges"][-1]["cursor"]
        variables["after"] = connection["pageInfo"]["endCursor"]
    assert pages == 10
    assert len(seen) == len(set(seen)) == 1000
    assert seen == sorted(seen, reverse=True)
    async with pool.acquire() as conn:
        stored = await conn.fetchval(
            "SELECT count(*) FROM audit_log_entries WHERE organization_id = $1",
            world.organization_id,
        )
    assert stored == 1000

    first = data(await gql(client, world.viewer.token, ENTRIES, {"id": str(world.organization_id)}))
    node = first["organization"]["auditLogEntries"]["edges"][0]["node"]
    assert node["ipAddress"] == "2001:db8::1" and node["actorType"] == "USER"
    assert isinstance(node["metadata"], dict)


async def test_entry_cursor_is_bound_to_filter_and_organization(client, pool, world):
    await seed_entries(pool, world.organization_id, 30)
    logins = {"actions": ["user.login"]}
    variables = {"id": str(world.organization_id), "first": 5, "filter": logins}
    page = data(await gql(client, world.owner.token, ENTRIES, variables))
    connection = page["organization"]["auditLogEntries"]
    assert {e["node"]["action"] for e in connection["edges"]} == {"user.login"}
    cursor = connection["pageInfo"]["endCursor"]

    unfiltered = {"id": str(world.organization_id), "first": 5, "after": cursor}
    other_org = {"id": str(world.other_organization_id), "first": 5, "after": cursor}
    for token, attempt in ((world.owner.token, unfiltered), (world.outsider.token, other_org)):
        body = await gql(client, token, ENTRIES, attempt)
        assert [e["extensions"] for e in body["errors"]] == [
            {"code": "BAD_USER_INPUT", "field": "after"}
        ]

    following = data(await gql(client, world.owner.token, ENTRIES, {**variables, "after": cursor}))
    next_ids = [e["node"]["id"] for e in following["organization"]["auditLogEntries"]["edges"]]
    assert len(next_ids) == 5
    assert not set(next_ids) & {e["node"]["id"] for e in connection["edges"]}


EXPORTS = """query($id: ID!, $first: Int, $after: String) {
  organization(id: $id) {
    logExports(first: $first, after: $after) {
      edges { cursor node { id createdAt } } pageInfo { hasNextPage endCursor }
    }
  }
}"""


async def test_log_exports_page_newest_first_with_org_bound_cursor(client, world, app):
    await app.state.worker.stop(grace=0)
    requested = []
    for day in range(1, 4):
        body = await gql(
            client,
            world.owner.token,
            REQUEST,
            {
                "input": {
                    "organizationId": str(world.organization_id),
                    "fromTime": "2026-01-01T00:00:00Z",
                    "toTime": f"2026-01-{day + 1:02d}T00:00:00Z",
                }
            },
        )
        requested.append(data(body)["requestAuditLogExport"]["logExport"]["id"])
    variables: dict[str, Any] = {"id": str(world.organization_id), "first": 2}
    first = data(await gql(client, world.owner.token, EXPORTS, variables))
    connection = first["organization"]["logExports"]
    assert connection["pageInfo"]["hasNextPage"] is True
    second = data(
        await gql(
            client,
            world.owner.token,
            EXPORTS,
            {**variables, "after": connection["pageInfo"]["endCursor"]},
        )
    )["organization"]["logExports"]
    assert second["pageInfo"] == {"hasNextPage": False, "endCursor": second["edges"][-1]["cursor"]}
    listed = [e["node"]["id"] for e in connection["edges"] + second["edges"]]
    assert listed == list(reversed(requested))

    foreign = await gql(
        client,
        world.outsider.token,
        EXPORTS,
        {"id": str(world.other_organization_id), "after": connection["pageInfo"]["endCursor"]},
    )
    assert [e["extensions"] for e in foreign["errors"]] == [
        {"code": "BAD_USER_INPUT", "field": "after"}
    ]


async def test_probes_and_metrics(client, world, app):
    health = await client.get("/healthz")
    assert health.status_code == 200 and health.json() == {"status": "ok"}

    async def ready() -> httpx.Response | None:
        response = await client.get("/readyz")
        return response if response.status_code == 200 else None

    response = await eventually(ready, timeout=15, what="/readyz 200")
    assert response.json()["checks"] == {
        "database": {"ok": True},
        "migrations": {"ok": True},
        "listener": {"ok": True},
    }

    await app.state.worker.stop(grace=0)
    for _ in range(2):
        body = await gql(
            client,
            world.owner.token,
            REQUEST,
            {
                "input": {
                    "organizationId": str(world.organization_id),
                    "fromTime": "2026-01-01T00:00:00Z",
                    "toTime": "2026-01-02T00:00:00Z",
                }
            },
        )
        data(body)
    # A stopped worker's listener is down: not ready, with the reason named.
    not_ready = await client.get("/readyz")
    assert not_ready.status_code == 503
    assert not_ready.json()["checks"]["listener"]["ok"] is False

    metrics = await client.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    lines = metrics.text.splitlines()
    assert 'logexport_exports{status="PENDING"} 2' in lines
    assert 'logexport_exports{status="COMPLETED"} 0' in lines
    assert "logexport_queue_depth 2" in lines
    assert "logexport_database_up 1" in lines
    assert any(line.startswith("logexport_claim_latency_seconds_bucket") for line in lines)
    assert str(world.organization_id) not in metrics.text
