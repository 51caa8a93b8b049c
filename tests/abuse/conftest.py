"""One running application per test module, shared by many hostile requests.

Abuse tests send hundreds of small malformed requests; a fresh database, bucket and app per
request would cost more than the requests themselves. Each module therefore gets its own
database (cloned from the session template), bucket, pool and application with the worker
running, plus a world of two organizations, each with one COMPLETED export. Tests that
must leave nothing behind wrap their requests in ``stack.unchanged()``, which compares row
counts of every table a request could write to before and after.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import httpx
import pytest
import pytest_asyncio

from devtools import services
from logexport import db
from logexport.config import Settings
from logexport.entries import (
    AuditLogEntryInput,
    ScimEventInput,
    record_audit_log_entries,
    record_scim_events,
)
from logexport.exports import requests
from logexport.exports.models import ExportKind
from logexport.web.app import create_app
from tests.support.app import running
from tests.support.keys import TEST_SIGNING_KEY
from tests.support.world import World, build_world, eventually, wait_for_status

BASE_URL = "http://testserver"
CLIENT_IP = "198.51.100.7"
SECRET_KEY = "abuse-secret-key-0123456789abcdef-0123456789abcdef"
ENTRY_DAY = datetime(2026, 1, 15, tzinfo=UTC)
# Rows a filter must match exactly: each looks like a pattern to a naive LIKE or regex.
LITERAL_ACTIONS = ("user.login", "user_login", "100%", "back\\slash", "it's")
# Every table a request could write to; "nothing written" means none of these changed.
_COUNTS = """
SELECT (SELECT count(*) FROM organizations) AS organizations,
       (SELECT count(*) FROM users) AS users,
       (SELECT count(*) FROM memberships) AS memberships,
       (SELECT count(*) FROM api_keys) AS api_keys,
       (SELECT count(*) FROM audit_log_entries) AS audit_log_entries,
       (SELECT count(*) FROM scim_events) AS scim_events,
       (SELECT count(*) FROM log_exports) AS log_exports,
       (SELECT count(*) FROM log_export_download_tokens) AS log_export_download_tokens
"""


_WORKER_BUSY = """
SELECT EXISTS (
    SELECT 1 FROM log_exports
    WHERE status IN ('PENDING', 'PROCESSING')
       OR (emailed_at IS NULL AND email_run_after IS NOT NULL
           AND status IN ('COMPLETED', 'FAILED'))
)
"""


@dataclass
class Stack:
    database_url: str
    pool: asyncpg.Pool
    settings: Settings
    world: World
    client: httpx.AsyncClient
    transport: httpx.ASGITransport
    # A COMPLETED export in each organization, and a one-step download link for each,
    # bound to that organization's owner.
    own_export_id: UUID
    foreign_export_id: UUID
    own_download_url: str
    foreign_download_url: str

    def fresh_client(self) -> httpx.AsyncClient:
        """A client with an empty cookie jar, on the same application."""
        return httpx.AsyncClient(transport=self.transport, base_url=BASE_URL)

    async def _worker_idle(self) -> bool:
        busy = await self.pool.fetchval(_WORKER_BUSY)
        return not busy

    async def counts(self) -> dict[str, int]:
        row = await self.pool.fetchrow(_COUNTS)
        return dict(row)

    @contextlib.asynccontextmanager
    async def unchanged(self) -> AsyncIterator[None]:
        """Fail if the block wrote a row to any table a request could touch."""
        # The in-process worker may still be finishing an earlier test's export (its
        # emails add link tokens, a failure adds an audit entry): wait until it is idle.
        await eventually(self._worker_idle, timeout=30, what="the worker to go idle")
        before = await self.counts()
        yield
        after = await self.counts()
        assert after == before, f"rows were written: {before} -> {after}"

    async def gql(
        self,
        token: str | None,
        query: str,
        variables: dict[str, Any] | None = None,
        *,
        expect_status: int = 200,
    ) -> dict[str, Any]:
        headers = {"User-Agent": "abuse-tests/1.0"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        response = await self.client.post(
            "/graphql", json={"query": query, "variables": variables or {}}, headers=headers
        )
        assert response.status_code == expect_status, response.text
        assert_no_internals(response.text)
        body: dict[str, Any] = response.json()
        return body

    async def mcp(
        self, token: str | None, payload: Any, *, raw: bytes | None = None, **headers: str
    ) -> httpx.Response:
        sent = {
            "Accept": "application/json, text/event-stream",
            "Content-Type": "application/json",
            **headers,
        }
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        content = raw if raw is not None else json.dumps(payload).encode()
        response = await self.client.post("/mcp", content=content, headers=sent)
        assert_no_internals(response.text)
        return response

    async def call_tool(self, token: str, name: str, arguments: Any) -> dict[str, Any]:
        """A ``tools/call`` result: ``{"isError": …, "content": [...], …}``."""
        response = await self.mcp(
            token,
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "tools/call",
                "params": {"name": name, "arguments": arguments},
            },
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert "result" in body, body
        result: dict[str, Any] = body["result"]
        return result


# Words that only appear when an internal detail escapes: SQL, a traceback, the driver,
# the storage backend or the filesystem layout.
_INTERNAL_MARKERS = (
    "Traceback",
    'File "',
    "asyncpg",
    "psycopg",
    "SELECT ",
    "INSERT ",
    "UPDATE ",
    "DELETE FROM",
    "syntax error at",
    "violates",
    'relation "',
    "botocore",
    "NoSuchKey",
    "s3://",
    "/work/",
    "site-packages",
    "logexport/",
)


def assert_no_internals(text: str) -> None:
    for marker in _INTERNAL_MARKERS:
        assert marker not in text, f"response leaks {marker!r}: {text[:500]}"


def only_error(body: dict[str, Any]) -> dict[str, Any]:
    assert "errors" in body, body
    assert len(body["errors"]) == 1, body["errors"]
    error: dict[str, Any] = body["errors"][0]
    return error


async def _seed(pool: asyncpg.Pool, world: World) -> None:
    audit = [
        AuditLogEntryInput(
            organization_id=org,
            action=action,
            actor_type="USER",
            actor_id=f"actor-{i}",
            resource_type="Widget",
            created_at=ENTRY_DAY + timedelta(minutes=i),
        )
        for org in (world.organization_id, world.other_organization_id)
        for i, action in enumerate(LITERAL_ACTIONS)
    ]
    scim = [
        ScimEventInput(
            organization_id=org,
            method="POST",
            path="/Users",
            status_code=201,
            user_name=f"user{i}@acme.test",
            created_at=ENTRY_DAY + timedelta(minutes=i),
        )
        for org in (world.organization_id, world.other_organization_id)
        for i in range(3)
    ]
    async with pool.acquire() as conn:
        await record_audit_log_entries(conn, audit)
        await record_scim_events(conn, scim)


async def _completed_export(
    stack_pool: asyncpg.Pool, settings: Settings, person: Any, org: UUID
) -> UUID:
    request = requests.ExportInput(
        organization_id=org,
        kind=ExportKind.AUDIT_LOG,
        from_time=datetime(2026, 1, 1, tzinfo=UTC),
        to_time=datetime(2026, 2, 1, tzinfo=UTC),
    )
    export = await requests.request_export(stack_pool, settings, person.principal, request)
    await wait_for_status(stack_pool, export.id, "COMPLETED", timeout=60)
    return export.id


async def _download_url(client: httpx.AsyncClient, token: str, export_id: UUID) -> str:
    response = await client.post(
        "/graphql",
        json={
            "query": "query($id: ID!) { logExport(id: $id) { downloadUrl } }",
            "variables": {"id": str(export_id)},
        },
        headers={"Authorization": f"Bearer {token}"},
    )
    url = response.json()["data"]["logExport"]["downloadUrl"]
    assert isinstance(url, str) and url.startswith(BASE_URL), response.text
    return url.removeprefix(BASE_URL)


@pytest.fixture(scope="module")
def stack_smtp_url(smtp_sink: services.SmtpSink) -> str:
    """Where the module's application sends mail; a module may override it."""
    return smtp_sink.url


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(
    pg_admin_url: str,
    template_database: str,
    s3_server: services.S3Server,
    stack_smtp_url: str,
) -> AsyncIterator[Stack]:
    name = f"abuse_{os.getpid()}_{secrets.token_hex(4)}"
    await services.create_database(pg_admin_url, name, template=template_database)
    database_url = services.with_database(pg_admin_url, name)
    if not s3_server.is_running():
        s3_server.start()
    bucket = f"abuse-{secrets.token_hex(6)}"
    s3_server.create_bucket(bucket)
    settings = Settings.from_env(
        env={
            "LOGEXPORT_DATABASE_URL": database_url,
            "LOGEXPORT_STORAGE_URL": f"s3://{bucket}/exports",
            "LOGEXPORT_S3_ENDPOINT_URL": s3_server.endpoint_url,
            "LOGEXPORT_S3_ADDRESSING_STYLE": "path",
            "LOGEXPORT_SMTP_URL": stack_smtp_url,
            "LOGEXPORT_MAIL_FROM": "logexport@example.test",
            "LOGEXPORT_BASE_URL": BASE_URL,
            "LOGEXPORT_SECRET_KEY": SECRET_KEY,
            "LOGEXPORT_SIGNING_KEY": TEST_SIGNING_KEY,
            "LOGEXPORT_WORKER_POLL_INTERVAL": "0.5s",
            "LOGEXPORT_WORKER_LEASE": "5s",
            "LOGEXPORT_SHUTDOWN_GRACE": "5s",
        }
    )
    pool = await db.create_pool(database_url)
    try:
        world = await build_world(pool)
        await _seed(pool, world)
        app = create_app(settings, pool=pool, run_worker=True)
        async with running(app):
            transport = httpx.ASGITransport(app=app, client=(CLIENT_IP, 40000))
            async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
                own = await _completed_export(pool, settings, world.owner, world.organization_id)
                foreign = await _completed_export(
                    pool, settings, world.outsider, world.other_organization_id
                )
                yield Stack(
                    database_url=database_url,
                    pool=pool,
                    settings=settings,
                    world=world,
                    client=client,
                    transport=transport,
                    own_export_id=own,
                    foreign_export_id=foreign,
                    own_download_url=await _download_url(client, world.owner.token, own),
                    foreign_download_url=await _download_url(client, world.outsider.token, foreign),
                )
    finally:
        await pool.close()
        await services.drop_database(pg_admin_url, name)
