"""The download page and download through a real Starlette app, Postgres and S3."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit
from uuid import UUID

import asyncpg
import httpx
import pytest
import pytest_asyncio
from starlette.applications import Starlette

from logexport.cli import browser_headers
from logexport.config import Settings
from logexport.exports import downloads
from logexport.exports.storage import LocalStorage, Storage, storage_from_settings
from logexport.identity import Principal
from logexport.web.download import download_routes

CLIENT_IP = "203.0.113.9"
USER_AGENT = "ExportTests/1.0"
CONTENT = b"".join(b'{"id": %d, "action": "user.login"}\n' % i for i in range(2000))
SHA256 = hashlib.sha256(CONTENT).hexdigest()
FILE_NAME = "audit-log-export-2026-01-01-to-2026-01-31.jsonl"


@dataclass
class World:
    settings: Settings
    pool: asyncpg.Pool
    storage: Storage
    client: httpx.AsyncClient
    org_id: UUID
    user_id: UUID
    export_id: UUID
    token: str

    @property
    def path(self) -> str:
        return f"/exports/{self.export_id}/download"

    @property
    def origin(self) -> str:
        return self.settings.base_url

    async def get(self, token: str | None = None, **kwargs: Any) -> httpx.Response:
        params = {"token": self.token if token is None else token}
        return await self.client.get(self.path, params=params, **kwargs)

    async def post(
        self, token: str | None = None, origin: str | None = "", **headers: str
    ) -> httpx.Response:
        if origin is not None:
            headers["Origin"] = self.origin if origin == "" else origin
        return await self.client.post(
            self.path, data={"token": self.token if token is None else token}, headers=headers
        )

    async def sql(self, query: str, *args: Any) -> Any:
        async with self.pool.acquire() as conn:
            return await conn.fetchval(query, *args)

    async def downloads(self) -> list[asyncpg.Record]:
        async with self.pool.acquire() as conn:
            rows: list[asyncpg.Record] = await conn.fetch(
                "SELECT * FROM audit_log_entries WHERE action = 'iam:log-export:download'"
            )
            return rows


def app_for(settings: Settings, pool: asyncpg.Pool, storage: Storage) -> Starlette:
    app = Starlette(routes=download_routes())
    app.state.settings = settings
    app.state.pool = pool
    app.state.storage = storage
    return app


async def put_object(storage: Storage, key: str) -> None:
    writer = await storage.open_writer(
        key, content_type="application/x-ndjson", file_name=FILE_NAME
    )
    async with writer:
        await writer.write(CONTENT)
        await writer.complete()


async def build_world(
    settings: Settings, pool: asyncpg.Pool, storage: Storage
) -> AsyncIterator[World]:
    async with pool.acquire() as conn:
        org_id = await conn.fetchval(
            "INSERT INTO organizations (name) VALUES ('Acme') RETURNING id"
        )
        user_id = await conn.fetchval(
            "INSERT INTO users (email, full_name) VALUES ('ada@example.test', 'Ada Lovelace') "
            "RETURNING id"
        )
        await conn.execute(
            "INSERT INTO memberships (organization_id, user_id, role) VALUES ($1, $2, 'ADMIN')",
            org_id,
            user_id,
        )
        export_id = await conn.fetchval(
            "INSERT INTO log_exports (organization_id, kind, from_time, to_time, requested_by) "
            "VALUES ($1, 'AUDIT_LOG', '2026-01-01T00:00:00Z', '2026-02-01T00:00:00Z', $2) "
            "RETURNING id",
            org_id,
            user_id,
        )
        key = f"{export_id}/attempt-1/{FILE_NAME}"
        await put_object(storage, key)
        expires_at = datetime.now(UTC) + timedelta(hours=24)
        await conn.execute(
            """
            UPDATE log_exports
            SET status = 'COMPLETED', attempts = 1, storage_key = $2, file_name = $3,
                content_type = 'application/x-ndjson', byte_size = $4, row_count = 2000,
                sha256 = $5, completed_at = now(), expires_at = $6
            WHERE id = $1
            """,
            export_id,
            key,
            FILE_NAME,
            len(CONTENT),
            SHA256,
            expires_at,
        )
        token = await downloads.issue_download_token(
            conn, export_id=export_id, user_id=user_id, purpose="EMAIL", expires_at=expires_at
        )
    transport = httpx.ASGITransport(app=app_for(settings, pool, storage), client=(CLIENT_IP, 50000))
    async with httpx.AsyncClient(
        transport=transport, base_url=settings.base_url, headers={"User-Agent": USER_AGENT}
    ) as client:
        yield World(settings, pool, storage, client, org_id, user_id, export_id, token)


@pytest_asyncio.fixture(loop_scope="session")
async def world(settings: Settings, pool: asyncpg.Pool) -> AsyncIterator[World]:
    async with storage_from_settings(settings) as storage:
        async for w in build_world(settings, pool, storage):
            yield w


@pytest_asyncio.fixture(loop_scope="session")
async def local_world(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> AsyncIterator[World]:
    async with LocalStorage(str(tmp_path / "exports")) as storage:
        async for w in build_world(settings, pool, storage):
            yield w


def assert_hygiene(response: httpx.Response) -> None:
    assert response.headers["Cache-Control"] == "no-store"
    if response.headers.get("content-type", "").startswith("text/html"):
        # The page's own POST needs its real Origin; no other origin may see its URL.
        assert response.headers["Referrer-Policy"] == "same-origin"
        assert '<meta name="referrer" content="same-origin">' in response.text
        csp = response.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp
        assert "unsafe-inline" not in csp
        assert "<script" not in response.text
    else:
        assert response.headers["Referrer-Policy"] == "no-referrer"


async def test_get_shows_the_file_and_changes_nothing(world: World) -> None:
    response = await world.get()
    assert_hygiene(response)
    assert response.status_code == 200
    assert "location" not in response.headers
    page = response.text
    for fact in (FILE_NAME, SHA256, "2,000", f"{len(CONTENT):,}", "2026-01-01T00:00:00Z"):
        assert fact in page
    form = re.search(r'<form method="post" action="([^"]+)">', page)
    assert form is not None
    assert form.group(1) == f"{world.settings.base_url}{world.path}"
    assert f'name="token" value="{world.token}"' in page
    assert ">Download</button>" in page
    assert await world.downloads() == []


async def test_page_style_is_allowed_by_its_csp_hash(world: World) -> None:
    response = await world.get()
    style = re.search(r"<style>(.*?)</style>", response.text, re.DOTALL)
    assert style is not None
    digest = base64.b64encode(hashlib.sha256(style.group(1).encode()).digest()).decode()
    assert f"style-src 'sha256-{digest}'" in response.headers["Content-Security-Policy"]


async def test_post_redirects_to_presigned_url_and_records_the_download(world: World) -> None:
    response = await world.post()
    assert_hygiene(response)
    assert response.status_code == 303
    location = response.headers["location"]
    assert location.startswith(world.settings.s3_endpoint_url or "")
    query = parse_qs(urlsplit(location).query)
    assert query["X-Amz-Expires"] == ["300"]
    assert "attachment" in query["response-content-disposition"][0]
    async with httpx.AsyncClient() as s3_client:
        fetched = await s3_client.get(location)
    assert fetched.status_code == 200
    assert hashlib.sha256(fetched.content).hexdigest() == SHA256

    [entry] = await world.downloads()
    assert entry["organization_id"] == world.org_id
    assert entry["actor_type"] == "USER"
    assert entry["actor_id"] == str(world.user_id)
    assert entry["actor_email"] == "ada@example.test"
    assert entry["actor_name"] == "Ada Lovelace"
    assert entry["resource_type"] == "LogExport"
    assert entry["resource_id"] == str(world.export_id)
    assert str(entry["ip_address"]) == CLIENT_IP
    assert entry["user_agent"] == USER_AGENT
    metadata = entry["metadata"]
    assert metadata["kind"] == "AUDIT_LOG"
    assert metadata["file_name"] == FILE_NAME
    assert metadata["sha256"] == SHA256
    assert metadata["row_count"] == 2000


async def test_post_without_origin_header_is_allowed(world: World) -> None:
    response = await world.post(origin=None)
    assert response.status_code == 303


@pytest.mark.parametrize("origin", ["https://evil.example", "null", "http://127.0.0.1:2"])
async def test_post_from_a_foreign_origin_is_refused(world: World, origin: str) -> None:
    response = await world.post(origin=origin)
    assert_hygiene(response)
    assert response.status_code == 403
    assert await world.downloads() == []


# What Chromium sends when the page's own button is clicked (Sec-Fetch-* reach loopback and
# HTTPS origins), and what it sends from anywhere else.
BUTTON = {
    "Sec-Fetch-Site": "same-origin",
    "Sec-Fetch-Mode": "navigate",
    "Sec-Fetch-Dest": "document",
}


async def test_post_from_the_page_in_a_browser_is_allowed(world: World) -> None:
    response = await world.post(**BUTTON)
    assert response.status_code == 303
    assert len(await world.downloads()) == 1


async def test_post_a_browser_marks_same_origin_is_allowed_even_with_a_null_origin(
    world: World,
) -> None:
    # A page still cached from when it was served under no-referrer sends Origin: null;
    # Sec-Fetch-Site is set by the browser itself and says where the form was.
    response = await world.post(origin="null", **BUTTON)
    assert response.status_code == 303


@pytest.mark.parametrize(
    ("origin", "site"),
    [
        ("https://evil.example", "cross-site"),
        (None, "cross-site"),
        ("null", "cross-site"),
        ("http://127.0.0.1:2", "same-site"),
        (None, "none"),
        # An Origin naming this site on a request the browser says came from elsewhere.
        ("", "cross-site"),
        # And the other way round: only a browser bug or a forger could send this.
        ("https://evil.example", "same-origin"),
    ],
)
async def test_post_a_browser_marks_as_from_elsewhere_is_refused(
    world: World, origin: str | None, site: str
) -> None:
    response = await world.post(origin=origin, **{**BUTTON, "Sec-Fetch-Site": site})
    assert_hygiene(response)
    assert response.status_code == 403
    assert await world.downloads() == []


@pytest.mark.parametrize("status", ["EXPIRED", "CANCELED", "FAILED"])
async def test_gone_export_answers_410_naming_the_status(world: World, status: str) -> None:
    await world.sql("UPDATE log_exports SET status = $2 WHERE id = $1", world.export_id, status)
    for response in (await world.get(), await world.post()):
        assert_hygiene(response)
        assert response.status_code == 410
        assert status.lower() in response.text
        assert "location" not in response.headers
    assert await world.downloads() == []


async def test_completed_export_past_its_expiry_answers_410(world: World) -> None:
    await world.sql(
        "UPDATE log_exports SET expires_at = now() - interval '1 second' WHERE id = $1",
        world.export_id,
    )
    response = await world.post()
    assert response.status_code == 410
    assert "expired" in response.text
    assert await world.downloads() == []


@pytest.mark.parametrize("status", ["PENDING", "PROCESSING"])
async def test_unfinished_export_answers_409(world: World, status: str) -> None:
    await world.sql(
        "UPDATE log_exports SET status = $2, lease_owner = 'w', lease_expires_at = now() "
        "WHERE id = $1",
        world.export_id,
        status,
    )
    response = await world.post()
    assert_hygiene(response)
    assert response.status_code == 409
    assert "not ready" in response.text
    assert await world.downloads() == []


async def test_wrong_tampered_or_missing_token_answers_404(world: World) -> None:
    tampered = world.token[:-1] + ("A" if world.token[-1] != "A" else "B")
    responses = [
        await world.get(tampered),
        await world.post(tampered),
        await world.get("not-a-token"),
        await world.client.get(world.path),
        await world.client.post(world.path, headers={"Origin": world.origin}),
        await world.client.get("/exports/not-a-uuid/download", params={"token": world.token}),
    ]
    for response in responses:
        assert_hygiene(response)
        assert response.status_code == 404
    assert await world.downloads() == []


async def test_token_only_works_for_its_own_export(world: World) -> None:
    other = await world.sql(
        "INSERT INTO log_exports (organization_id, kind, from_time, to_time, requested_by) "
        "SELECT organization_id, kind, from_time, to_time, requested_by FROM log_exports "
        "WHERE id = $1 RETURNING id",
        world.export_id,
    )
    response = await world.client.get(f"/exports/{other}/download", params={"token": world.token})
    assert response.status_code == 404


@pytest.mark.parametrize(
    "change",
    [
        "UPDATE memberships SET role = 'VIEWER' WHERE user_id = $1",
        "DELETE FROM memberships WHERE user_id = $1",
    ],
)
async def test_user_who_lost_the_permission_gets_403(world: World, change: str) -> None:
    await world.sql(change, world.user_id)
    response = await world.post()
    assert_hygiene(response)
    assert response.status_code == 403
    assert "location" not in response.headers
    assert await world.downloads() == []


async def test_direct_link_downloads_at_once(world: World) -> None:
    principal = Principal(world.user_id, "ada@example.test", "Ada Lovelace", None)
    async with world.pool.acquire() as conn:
        url = await downloads.direct_download_url(
            conn, world.settings, principal, _Ref(world.export_id)
        )
        expires = await conn.fetchval(
            "SELECT max(expires_at) FROM log_export_download_tokens WHERE purpose = 'DIRECT'"
        )
    assert url is not None and url.startswith(f"{world.settings.base_url}{world.path}?token=")
    assert expires <= datetime.now(UTC) + timedelta(minutes=15)

    head = await world.client.head(url)  # HEAD never downloads
    assert head.status_code == 200
    assert await world.downloads() == []

    response = await world.client.get(url)
    assert_hygiene(response)
    assert response.status_code == 303
    async with httpx.AsyncClient() as s3_client:
        fetched = await s3_client.get(response.headers["location"])
    assert hashlib.sha256(fetched.content).hexdigest() == SHA256
    [entry] = await world.downloads()
    assert entry["metadata"]["link"] == "DIRECT"


async def test_direct_link_is_refused_to_a_viewer_and_for_unfinished_exports(world: World) -> None:
    principal = Principal(world.user_id, "ada@example.test", "Ada Lovelace", None)
    async with world.pool.acquire() as conn:
        await conn.execute(
            "UPDATE memberships SET role = 'VIEWER' WHERE user_id = $1", world.user_id
        )
        assert (
            await downloads.direct_download_url(
                conn, world.settings, principal, _Ref(world.export_id)
            )
            is None
        )
        await conn.execute(
            "UPDATE memberships SET role = 'OWNER' WHERE user_id = $1", world.user_id
        )
        await conn.execute(
            "UPDATE log_exports SET status = 'CANCELED' WHERE id = $1", world.export_id
        )
        assert (
            await downloads.direct_download_url(
                conn, world.settings, principal, _Ref(world.export_id)
            )
            is None
        )


async def test_expired_direct_token_answers_410(world: World) -> None:
    async with world.pool.acquire() as conn:
        token = await downloads.issue_download_token(
            conn,
            export_id=world.export_id,
            user_id=world.user_id,
            purpose="DIRECT",
            expires_at=datetime.now(UTC) - timedelta(seconds=1),
        )
    response = await world.get(token)
    assert response.status_code == 410
    assert "expired" in response.text
    assert await world.downloads() == []


async def test_local_backend_streams_the_file_safely(local_world: World) -> None:
    world = local_world
    page = await world.get()
    assert page.status_code == 200
    assert await world.downloads() == []

    response = await world.post()
    assert_hygiene(response)
    assert response.status_code == 200
    assert response.content == CONTENT
    assert response.headers["content-type"].startswith("application/x-ndjson")
    assert response.headers["content-disposition"].startswith("attachment;")
    assert FILE_NAME in response.headers["content-disposition"]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["content-security-policy"] == "sandbox; default-src 'none'"
    assert len(await world.downloads()) == 1


async def test_local_backend_missing_file_is_not_recorded(local_world: World) -> None:
    world = local_world
    key = await world.sql("SELECT storage_key FROM log_exports WHERE id = $1", world.export_id)
    await world.storage.delete(key)
    response = await world.post()
    assert_hygiene(response)
    assert response.status_code == 503
    assert await world.downloads() == []


@dataclass(frozen=True)
class _Ref:
    id: UUID


@pytest.mark.parametrize(
    ("trusted", "peer", "forwarded_for", "recorded"),
    [
        # No proxy is trusted by default: a client's own X-Forwarded-For is ignored.
        ("", CLIENT_IP, ["198.51.100.23"], CLIENT_IP),
        # A proxy is trusted, but this request did not come through it.
        ("10.0.0.0/8", CLIENT_IP, ["198.51.100.23"], CLIENT_IP),
        ("10.0.0.0/8", "10.0.0.2", ["198.51.100.23"], "198.51.100.23"),
        # What the client wrote itself (6.6.6.6) is left of what the proxies added.
        (
            "10.0.0.0/8, 192.168.0.0/16",
            "10.0.0.2",
            ["6.6.6.6, 198.51.100.23", "192.168.1.1"],
            "198.51.100.23",
        ),
        ("10.0.0.0/8", "10.0.0.2", [], "10.0.0.2"),
        ("fd00::/8", "fd00::5", ["2001:db8::7"], "2001:db8::7"),
    ],
)
async def test_recorded_ip_believes_forwarded_for_only_from_trusted_proxies(
    world: World, trusted: str, peer: str, forwarded_for: list[str], recorded: str
) -> None:
    proxies = Settings.from_env(env={"LOGEXPORT_TRUSTED_PROXIES": trusted}).trusted_proxies
    app = app_for(world.settings.derive(trusted_proxies=proxies), world.pool, world.storage)
    transport = httpx.ASGITransport(app=app, client=(peer, 50000))
    headers = [("Origin", world.origin)] + [("X-Forwarded-For", v) for v in forwarded_for]
    async with httpx.AsyncClient(transport=transport, base_url=world.settings.base_url) as client:
        response = await client.post(world.path, data={"token": world.token}, headers=headers)
    assert response.status_code == 303
    [entry] = await world.downloads()
    assert str(entry["ip_address"]) == recorded


@pytest.mark.parametrize("base_url", ["http://127.0.0.1:1", "https://downloads.example"])
async def test_what_a_browser_sends_from_the_page_is_accepted(world: World, base_url: str) -> None:
    settings = world.settings.derive(base_url=base_url)
    transport = httpx.ASGITransport(app=app_for(settings, world.pool, world.storage))
    async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
        link = downloads.download_link(base_url, world.export_id, world.token)
        page = await client.get(link)
        form = re.search(r'<form method="post" action="([^"]+)">', page.text)
        meta = re.search(r'<meta name="referrer" content="([^"]+)">', page.text)
        assert form is not None and meta is not None
        policy = browser_headers.page_policy(page.headers["referrer-policy"], meta.group(1))
        headers = browser_headers.form_post_headers(link, policy, form.group(1))
        response = await client.post(form.group(1), data={"token": world.token}, headers=headers)
    assert response.status_code == 303


async def test_what_a_browser_sends_under_no_referrer_over_plain_http_is_refused(
    world: World,
) -> None:
    # Why the page is not served under no-referrer: where browsers send no Sec-Fetch-*
    # (plain HTTP off loopback), its POST would carry only Origin: null.
    base_url = "http://downloads.example"
    settings = world.settings.derive(base_url=base_url)
    transport = httpx.ASGITransport(app=app_for(settings, world.pool, world.storage))
    link = downloads.download_link(base_url, world.export_id, world.token)
    action = downloads.download_path(base_url, world.export_id)
    headers = browser_headers.form_post_headers(link, "no-referrer", action)
    assert headers["Origin"] == "null" and "Sec-Fetch-Site" not in headers
    async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
        response = await client.post(action, data={"token": world.token}, headers=headers)
    assert response.status_code == 403
    assert await world.downloads() == []
