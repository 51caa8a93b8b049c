"""Downloads in headless Chromium, as people start them: the emailed link's page and its
Download button, the console's Exports page, and a ``downloadUrl`` opened as a URL.

Each test saves the file Chromium downloads and compares its SHA-256 with the one the API
reports, and checks that the link's token reached no other origin.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import expect

from logexport.cli import browser_headers
from logexport.entries import AuditLogEntryInput, record_audit_log_entries
from tests.browser.conftest import LiveServer
from tests.support.world import Person, World, build_world, eventually

pytestmark = pytest.mark.browser

START = datetime(2026, 1, 1, tzinfo=UTC)
EXPORT_FIELDS = "id status sha256 byteSize fileName"
REQUEST = (
    "mutation($input: RequestAuditLogExportInput!) {"
    f" requestAuditLogExport(input: $input) {{ logExport {{ {EXPORT_FIELDS} }} }} }}"
)
GET = f"query($id: ID!) {{ logExport(id: $id) {{ {EXPORT_FIELDS} }} }}"
DOWNLOAD_URL = "query($id: ID!) { logExport(id: $id) { downloadUrl } }"


async def gql(
    server: LiveServer, person: Person, query: str, variables: dict[str, Any]
) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=server.base_url, trust_env=False) as http:
        response = await http.post(
            "/graphql",
            json={"query": query, "variables": variables},
            headers={"Authorization": f"Bearer {person.token}"},
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert "errors" not in body, body["errors"]
    data: dict[str, Any] = body["data"]
    return data


async def completed_export(pool: Any, server: LiveServer, world: World) -> dict[str, Any]:
    """Seed a day of entries, request their export as the admin, wait until it completes."""
    entries = [
        AuditLogEntryInput(
            organization_id=world.organization_id,
            action="user.login" if i % 2 else "role.changed",
            actor_type="USER",
            actor_id=f"u{i % 5}",
            resource_type="User",
            resource_id=f"usr_{i:04d}",
            metadata={"n": i},
            created_at=START + timedelta(minutes=7 * i),
        )
        for i in range(150)
    ]
    async with pool.acquire() as conn:
        await record_audit_log_entries(conn, entries)
    requested = await gql(
        server,
        world.admin,
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
    export_id = requested["requestAuditLogExport"]["logExport"]["id"]

    async def completed() -> dict[str, Any] | None:
        export: dict[str, Any] = (await gql(server, world.admin, GET, {"id": export_id}))[
            "logExport"
        ]
        assert export["status"] in ("PENDING", "PROCESSING", "COMPLETED"), export
        return export if export["status"] == "COMPLETED" else None

    return await eventually(completed, timeout=60, interval=0.2, what="the export to complete")


def emailed_link(message: Any, export_id: str) -> str | None:
    text = message.get_body(preferencelist=("plain",)).get_content()
    pattern = r"https?://\S+/exports/" + re.escape(export_id) + r"/download\?token=\S+"
    found = re.search(pattern, text)
    return found.group(0) if found else None


class TokenWatch:
    """Every request the page makes, so a test can tell where a link's token went."""

    def __init__(self, page: Any) -> None:
        self.requests: list[Any] = []
        page.on("request", lambda request: self.requests.append(request))

    async def origins_that_saw(self, token: str) -> set[str]:
        seen = set()
        for request in self.requests:
            headers = await request.all_headers()
            carried = token in request.url or any(token in v for v in headers.values())
            if carried or (request.post_data and token in request.post_data):
                parts = urlsplit(request.url)
                seen.add(f"{parts.scheme}://{parts.netloc}")
        return seen

    def origins(self) -> set[str]:
        return {f"{urlsplit(r.url).scheme}://{urlsplit(r.url).netloc}" for r in self.requests}

    async def headers_of(self, method: str, path: str) -> dict[str, str]:
        for request in self.requests:
            if request.method == method and urlsplit(request.url).path == path:
                headers: dict[str, str] = await request.all_headers()
                return headers
        raise AssertionError(f"the page sent no {method} {path}")


async def saved_sha256(download: Any, target: Path) -> str:
    assert await download.failure() is None
    await download.save_as(target)
    return file_sha256(target)


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def token_of(link: str) -> str:
    return link.split("?token=", 1)[1]


async def test_emailed_link_downloads_in_a_fresh_browser(
    new_page, pool, live_server, smtp_sink, artifacts_dir
):
    world = await build_world(pool)
    export = await completed_export(pool, live_server, world)
    message = await smtp_sink.wait_for(
        lambda m: emailed_link(m, export["id"]) is not None, timeout=30
    )
    link = emailed_link(message, export["id"])
    assert link is not None

    # A fresh context: no console session, as when the link is opened from a mail client.
    page = await new_page()
    assert await page.context.cookies() == []
    watch = TokenWatch(page)
    response = await page.goto(link)
    assert response is not None and response.status == 200
    await expect(page.get_by_role("heading", level=1)).to_have_text("Your export is ready")
    await expect(page.get_by_text(export["fileName"], exact=True)).to_be_visible()
    await page.screenshot(path=artifacts_dir / "download-page.png", full_page=True)

    async with page.expect_download() as download_info:
        await page.get_by_role("button", name="Download").click()
    download = await download_info.value
    assert download.suggested_filename == export["fileName"]
    digest = await saved_sha256(download, artifacts_dir / export["fileName"])
    assert digest == export["sha256"]

    path = f"/exports/{export['id']}/download"
    posted = await watch.headers_of("POST", path)
    assert posted["origin"] == live_server.base_url
    # The demo sends what Chromium sent, so it cannot pass where a browser fails.
    assert_same_navigation_headers(
        posted, browser_headers.form_post_headers(link, "same-origin", live_server.url(path))
    )
    [to_bucket] = [r for r in watch.requests if not r.url.startswith(live_server.base_url)]
    assert_same_navigation_headers(
        await to_bucket.all_headers(),
        browser_headers.redirect_headers(link, "same-origin", "no-referrer", to_bucket.url),
    )
    # The token went to this origin only: not to the bucket the download came from.
    assert await watch.origins_that_saw(token_of(link)) == {live_server.base_url}
    assert len(watch.origins()) == 2, watch.origins()
    page.problems.assert_none()

    async with pool.acquire() as conn:
        recorded = await conn.fetch(
            "SELECT actor_id, ip_address, user_agent, metadata FROM audit_log_entries "
            "WHERE action = 'iam:log-export:download' AND resource_id = $1",
            export["id"],
        )
    [entry] = recorded
    assert entry["actor_id"] == str(world.admin.user_id)
    assert str(entry["ip_address"]) == "127.0.0.1"
    assert "Chrome" in entry["user_agent"]


NAVIGATION_HEADERS = (
    "origin",
    "referer",
    "sec-fetch-site",
    "sec-fetch-mode",
    "sec-fetch-dest",
    "sec-fetch-user",
)


def assert_same_navigation_headers(sent: dict[str, str], modeled: dict[str, str]) -> None:
    modeled = {name.lower(): value for name, value in modeled.items()}
    assert {n: sent.get(n) for n in NAVIGATION_HEADERS} == {
        n: modeled.get(n) for n in NAVIGATION_HEADERS
    }


async def test_button_under_no_referrer_sends_what_the_demo_expects(
    new_page, pool, live_server, smtp_sink
):
    """Serve the page as it used to be (``no-referrer``): Chromium then sends ``Origin: null``.

    The demo's model of the browser must say the same, and the server must still accept the
    click because Chromium marks it ``Sec-Fetch-Site: same-origin``.
    """
    world = await build_world(pool)
    export = await completed_export(pool, live_server, world)
    message = await smtp_sink.wait_for(
        lambda m: emailed_link(m, export["id"]) is not None, timeout=30
    )
    link = emailed_link(message, export["id"])
    assert link is not None
    page = await new_page()
    watch = TokenWatch(page)

    async def as_it_used_to_be(route: Any) -> None:
        response = await route.fetch()
        body = (await response.text()).replace(
            '<meta name="referrer" content="same-origin">',
            '<meta name="referrer" content="no-referrer">',
        )
        headers = {**response.headers, "referrer-policy": "no-referrer"}
        await route.fulfill(response=response, body=body, headers=headers)

    page_url = re.compile(re.escape(link.split("?")[0]) + r"\?token=")
    await page.route(page_url, as_it_used_to_be)
    await page.goto(link)
    await page.unroute(page_url)
    async with page.expect_download() as download_info:
        await page.get_by_role("button", name="Download").click()
    download = await download_info.value
    assert await download.failure() is None

    path = f"/exports/{export['id']}/download"
    posted = await watch.headers_of("POST", path)
    assert posted["origin"] == "null"
    assert "referer" not in posted
    assert_same_navigation_headers(
        posted, browser_headers.form_post_headers(link, "no-referrer", live_server.url(path))
    )


async def test_console_exports_page_downloads_the_file(
    page, pool, live_server, smtp_sink, artifacts_dir
):
    world = await build_world(pool)
    export = await completed_export(pool, live_server, world)

    await sign_in(page, world.admin.token)
    await page.goto(f"/console/orgs/{world.organization_id}/exports")
    button = page.get_by_role("button", name=f"Download {export['fileName']}")
    await expect(button).to_be_enabled()
    watch = TokenWatch(page)
    async with page.expect_download() as download_info:
        await button.click()
    download = await download_info.value
    assert download.suggested_filename == export["fileName"]
    digest = await saved_sha256(download, artifacts_dir / export["fileName"])
    assert digest == export["sha256"]

    [link] = [r.url for r in watch.requests if "/download?token=" in r.url]
    assert await watch.origins_that_saw(token_of(link)) == {live_server.base_url}
    assert len(watch.origins()) == 2, watch.origins()
    page.problems.assert_none()


async def test_download_url_from_graphql_opens_as_a_download(
    new_page, pool, live_server, artifacts_dir
):
    world = await build_world(pool)
    export = await completed_export(pool, live_server, world)
    url = (await gql(live_server, world.owner, DOWNLOAD_URL, {"id": export["id"]}))["logExport"][
        "downloadUrl"
    ]
    assert url.startswith(f"{live_server.base_url}/exports/{export['id']}/download?token=")

    page = await new_page()
    watch = TokenWatch(page)
    async with page.expect_download() as download_info:
        # Chromium reports a navigation that turns into a download as an aborted goto.
        with contextlib.suppress(PlaywrightError):
            await page.goto(url)
    download = await download_info.value
    digest = await saved_sha256(download, artifacts_dir / export["fileName"])
    assert digest == export["sha256"]
    assert await watch.origins_that_saw(token_of(url)) == {live_server.base_url}
    assert len(watch.origins()) == 2, watch.origins()

    async with pool.acquire() as conn:
        actors = await conn.fetch(
            "SELECT actor_id, metadata->>'link' AS link FROM audit_log_entries "
            "WHERE action = 'iam:log-export:download' AND resource_id = $1",
            export["id"],
        )
    assert [(r["actor_id"], r["link"]) for r in actors] == [(str(world.owner.user_id), "DIRECT")]


async def sign_in(page: Any, token: str) -> None:
    await page.goto("/console")
    await expect(page).to_have_url(re.compile(r"/console/sign-in"))
    await page.get_by_label("API key").fill(token)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page).to_have_url(re.compile(r"/console/orgs/[0-9a-f-]+/audit-log$"))
