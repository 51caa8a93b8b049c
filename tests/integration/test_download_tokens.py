"""Download tokens stay few: repeated ``downloadUrl`` reads through GraphQL over HTTP store
no new token, links already handed out keep working, and the sweeper purges expired ones."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import httpx
import pytest_asyncio
from starlette.applications import Starlette

from logexport.exports import downloads
from logexport.exports.worker import Worker
from logexport.web.app import create_app
from tests.support.app import asgi_client, running
from tests.support.world import Person, World, build_world

EXPORTS = 8
ALIASES = 49


@pytest_asyncio.fixture(loop_scope="session")
async def app(pool, settings) -> AsyncIterator[Starlette]:
    # No worker: the exports below are written as COMPLETED directly.
    application = create_app(settings, pool=pool, run_worker=False)
    async with running(application):
        yield application


@pytest_asyncio.fixture(loop_scope="session")
async def client(app) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(app) as c:
        yield c


@pytest_asyncio.fixture(loop_scope="session")
async def world(pool) -> World:
    return await build_world(pool)


async def completed_exports(pool: asyncpg.Pool, world: World, count: int) -> list[UUID]:
    """``count`` COMPLETED exports; downloadUrl needs no object to exist."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            """
            INSERT INTO log_exports (organization_id, kind, from_time, to_time, requested_by,
                status, attempts, storage_key, file_name, content_type, byte_size, row_count,
                sha256, completed_at, expires_at)
            SELECT $1, 'AUDIT_LOG', '2026-01-01T00:00:00Z', '2026-01-02T00:00:00Z', $2,
                'COMPLETED', 1, 'exports/' || n || '/f.jsonl', 'f.jsonl',
                'application/x-ndjson', 10, 1, repeat('0', 64), now(), now() + interval '1 day'
            FROM generate_series(1, $3) AS n
            RETURNING id
            """,
            world.organization_id,
            world.admin.user_id,
            count,
        )
    return [row["id"] for row in rows]


async def gql(client: httpx.AsyncClient, person: Person, query: str, **variables: Any) -> Any:
    response = await client.post(
        "/graphql",
        json={"query": query, "variables": variables},
        headers={"Authorization": f"Bearer {person.token}"},
    )
    assert response.status_code == 200, response.text
    return response.json()


async def token_rows(pool: asyncpg.Pool, purpose: str = "DIRECT") -> int:
    count: int = await pool.fetchval(
        "SELECT count(*) FROM log_export_download_tokens WHERE purpose = $1", purpose
    )
    return count


ALIASED = (
    "query($org: ID!) { organization(id: $org) { logExports(first: 8) { edges { node { id "
    + " ".join(f"a{i}: downloadUrl" for i in range(ALIASES))
    + " } } } } }"
)
ONE = "query($id: ID!) { logExport(id: $id) { downloadUrl } }"


async def test_aliased_download_urls_store_a_bounded_number_of_tokens(client, pool, world) -> None:
    await completed_exports(pool, world, EXPORTS)
    for _ in range(3):
        body = await gql(client, world.admin, ALIASED, org=str(world.organization_id))
        assert "errors" not in body, body["errors"]
        edges = body["data"]["organization"]["logExports"]["edges"]
        assert len(edges) == EXPORTS
        for edge in edges:
            links = {edge["node"][f"a{i}"] for i in range(ALIASES)}
            # One link per export and caller, unless a five-minute window ended mid-request.
            assert 1 <= len(links) <= 2
            assert all(f"/exports/{edge['node']['id']}/download?token=" in link for link in links)
    # Today's main stored one row per alias: 3 x 49 x 8 = 1,176.
    assert await token_rows(pool) <= 2 * EXPORTS


async def test_reading_download_url_again_returns_a_working_link_and_stores_nothing(
    client, pool, world
) -> None:
    [export_id] = await completed_exports(pool, world, 1)
    first = (await gql(client, world.admin, ONE, id=str(export_id)))["data"]["logExport"][
        "downloadUrl"
    ]
    rows = await token_rows(pool)
    links = set()
    for _ in range(20):
        body = await gql(client, world.admin, ONE, id=str(export_id))
        links.add(body["data"]["logExport"]["downloadUrl"])
    # The same link each time, or the next window's link if one began meanwhile.
    assert len(links | {first}) <= 2
    assert await token_rows(pool) <= rows + 1

    # The link handed out first still resolves to its export, user and purpose.
    token = first.split("?token=", 1)[1]
    async with pool.acquire() as conn:
        match = await downloads.resolve_download_token(conn, export_id, token)
    assert match is not None and not match.expired()
    assert (match.user_id, match.purpose) == (world.admin.user_id, "DIRECT")
    assert match.expires_at <= datetime.now(UTC) + downloads.DIRECT_LINK_TTL
    assert match.expires_at > datetime.now(UTC) + (
        downloads.DIRECT_LINK_TTL - downloads.DIRECT_LINK_WINDOW - timedelta(seconds=5)
    )


async def test_each_caller_gets_a_link_of_their_own(client, pool, world) -> None:
    [export_id] = await completed_exports(pool, world, 1)
    links = {
        person.user_id: (await gql(client, person, ONE, id=str(export_id)))["data"]["logExport"][
            "downloadUrl"
        ]
        for person in (world.owner, world.admin)
    }
    assert len(set(links.values())) == 2
    async with pool.acquire() as conn:
        for user_id, link in links.items():
            match = await downloads.resolve_download_token(
                conn, export_id, link.split("?token=", 1)[1]
            )
            assert match is not None and match.user_id == user_id


async def test_sweep_purges_tokens_long_expired_and_keeps_the_rest(settings, pool, world) -> None:
    [export_id] = await completed_exports(pool, world, 1)
    now = datetime.now(UTC)
    ages = {
        ("DIRECT", "live"): now + timedelta(minutes=10),
        ("DIRECT", "just expired"): now - timedelta(minutes=10),
        ("DIRECT", "long expired"): now - timedelta(hours=2),
        ("EMAIL", "live"): now + timedelta(hours=20),
        ("EMAIL", "just expired"): now - timedelta(days=2),
        ("EMAIL", "long expired"): now - timedelta(days=31),
    }
    tokens = {}
    async with pool.acquire() as conn:
        for (purpose, age), expires_at in ages.items():
            tokens[purpose, age] = await downloads.issue_download_token(
                conn,
                export_id=export_id,
                user_id=world.admin.user_id,
                purpose=purpose,  # type: ignore[arg-type]
                expires_at=expires_at,
            )
    assert await pool.fetchval("SELECT count(*) FROM log_export_download_tokens") == 6

    async with Worker(settings, pool=pool, sweep_interval=3600) as worker:
        await worker.sweep(settle=0)

    async with pool.acquire() as conn:
        kept = {
            key
            for key, token in tokens.items()
            if await downloads.resolve_download_token(conn, export_id, token) is not None
        }
    assert kept == {key for key in tokens if key[1] != "long expired"}


async def test_sweep_purges_console_sessions_ended_long_ago(settings, pool, world) -> None:
    import hashlib

    from logexport.web import sessions

    async with pool.acquire() as conn:
        old = await sessions.start_session(conn, settings, world.admin.principal)
        await sessions.start_session(conn, settings, world.admin.principal)  # live
        recent = await sessions.start_session(conn, settings, world.admin.principal)
        await sessions.end_session(conn, old)
        await sessions.end_session(conn, recent)
        await conn.execute(
            "UPDATE console_sessions SET revoked_at = now() - interval '2 days' WHERE id_hash = $1",
            hashlib.sha256(old.id.encode()).digest(),
        )
    async with Worker(settings, pool=pool, sweep_interval=3600) as worker:
        await worker.sweep(settle=0)
    async with pool.acquire() as conn:
        left = await conn.fetchval("SELECT count(*) FROM console_sessions")
        old_left = await conn.fetchval(
            "SELECT count(*) FROM console_sessions WHERE id_hash = $1",
            hashlib.sha256(old.id.encode()).digest(),
        )
    assert (left, old_left) == (2, 0)
