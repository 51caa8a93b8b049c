"""The signed manifest beside the file, downloaded in headless Chromium as people do it:
from the emailed link's page and from the console's Exports page. What the browser saved
is then checked by ``logexport verify`` as a subprocess, with no ``LOGEXPORT_*`` setting,
against the keys document fetched from the server."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import expect

from logexport import manifests
from logexport.config import Settings
from tests.browser.conftest import LiveServer
from tests.browser.test_downloads import completed_export, emailed_link, gql, sign_in
from tests.support.cli import Result, run_logexport
from tests.support.world import World, build_world, export_status

pytestmark = pytest.mark.browser

SIGNING_KEY = manifests.generate_signing_key()


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.derive(signing_key=SIGNING_KEY)


def fetch_keys(server: LiveServer, target: Path) -> Path:
    """What an auditor's ``curl …/.well-known/logexport-keys.json > keys.json`` saves
    (the server runs in a thread of its own, so a blocking request is fine here)."""
    response = httpx.get(server.url(manifests.KEYS_PATH), trust_env=False)
    assert response.status_code == 200
    target.write_bytes(response.content)
    return target


async def verify(*args: str) -> Result:
    env = {"PATH": os.environ.get("PATH", "")}
    return await run_logexport("verify", *args, env=env, timeout=120)


async def save(download: Any, directory: Path) -> Path:
    assert await download.failure() is None
    target = directory / download.suggested_filename
    await download.save_as(target)
    return target


async def export_and_its_emailed_link(
    pool: Any, live_server: LiveServer, world: World, smtp_sink: Any
) -> tuple[dict[str, Any], str]:
    """A completed export, and the download link its requester was emailed."""
    export = await completed_export(pool, live_server, world)
    message = await smtp_sink.wait_for(
        lambda m: emailed_link(m, export["id"]) is not None, timeout=30
    )
    link = emailed_link(message, export["id"])
    assert link is not None
    return export, link


async def test_emailed_link_page_offers_the_manifest_beside_the_file(
    new_page, pool, live_server, smtp_sink, artifacts_dir
):
    world = await build_world(pool)
    export, link = await export_and_its_emailed_link(pool, live_server, world, smtp_sink)

    page = await new_page()
    await page.goto(link)
    await expect(page.get_by_role("heading", name="Signed manifest")).to_be_visible()
    await page.screenshot(path=artifacts_dir / "download-page-with-manifest.png", full_page=True)
    async with page.expect_download() as file_download:
        await page.get_by_role("button", name="Download").click()
    saved_file = await save(await file_download.value, artifacts_dir)
    async with page.expect_download() as manifest_download:
        await page.get_by_role("button", name="Manifest").click()
    saved_manifest = await save(await manifest_download.value, artifacts_dir)
    page.problems.assert_none()

    assert saved_file.name == export["fileName"]
    assert saved_manifest.name == export["fileName"] + ".manifest.json"
    row = await export_status(pool, export["id"])
    assert saved_manifest.read_text() == row["manifest"]

    keys = fetch_keys(live_server, artifacts_dir / "keys.json")
    checked = await verify(str(saved_file), "--keys", str(keys))
    assert checked.code == 0, checked.stderr
    assert checked.stdout.startswith(f"OK {saved_file.name}: ")
    assert f"export {export['id']}" in checked.stdout

    # Fetching the manifest is not a download of the file: only the button's is recorded.
    async with pool.acquire() as conn:
        recorded = await conn.fetchval(
            "SELECT count(*) FROM audit_log_entries "
            "WHERE action = 'iam:log-export:download' AND resource_id = $1",
            export["id"],
        )
    assert recorded == 1


async def test_manifest_post_needs_the_links_token_and_this_origin(pool, live_server, smtp_sink):
    world = await build_world(pool)
    export, link = await export_and_its_emailed_link(pool, live_server, world, smtp_sink)
    token = link.split("?token=", 1)[1]
    url = live_server.url(f"/exports/{export['id']}/manifest")
    async with httpx.AsyncClient(trust_env=False) as http:
        good = await http.post(url, data={"token": token})
        wrong = await http.post(url, data={"token": token[:-2] + "xx"})
        foreign = await http.post(
            url, data={"token": token}, headers={"Origin": "https://evil.example"}
        )
        opened = await http.get(url, params={"token": token})

    assert good.status_code == 200
    assert good.headers["content-type"].startswith("application/json")
    assert "attachment" in good.headers["content-disposition"]
    assert json.loads(good.text)["manifest"]["export_id"] == export["id"]
    assert wrong.status_code == 404
    assert foreign.status_code == 403
    assert opened.status_code == 405

    # An export completed before manifests were signed: the page offers none.
    async with pool.acquire() as conn:
        await conn.execute(
            "UPDATE log_exports SET manifest = NULL WHERE id = $1::uuid", export["id"]
        )
    async with httpx.AsyncClient(trust_env=False) as http:
        page = await http.get(link)
        unsigned = await http.post(url, data={"token": token})
    assert page.status_code == 200
    assert "Signed manifest" not in page.text
    assert unsigned.status_code == 404
    assert "No manifest" in unsigned.text


async def test_console_exports_page_offers_the_manifest_to_those_who_may_download(
    new_page, pool, live_server, artifacts_dir
):
    world = await build_world(pool)
    export = await completed_export(pool, live_server, world)

    page = await new_page()
    await sign_in(page, world.admin.token)
    await page.goto(f"/console/orgs/{world.organization_id}/exports")
    download_button = page.get_by_role("button", name=f"Download {export['fileName']}")
    manifest_button = page.get_by_role("button", name=f"Manifest of {export['fileName']}")
    await expect(manifest_button).to_be_enabled()
    async with page.expect_download() as file_download:
        await download_button.click()
    saved_file = await save(await file_download.value, artifacts_dir)
    async with page.expect_download() as manifest_download:
        await manifest_button.click()
    saved_manifest = await save(await manifest_download.value, artifacts_dir)
    await page.screenshot(path=artifacts_dir / "exports-page-with-manifest.png", full_page=True)
    page.problems.assert_none()

    assert saved_manifest.name == export["fileName"] + ".manifest.json"
    keys = fetch_keys(live_server, artifacts_dir / "keys.json")
    checked = await verify(str(saved_file), "--manifest", str(saved_manifest), "--keys", str(keys))
    assert checked.code == 0, checked.stderr
    assert checked.stdout.startswith(f"OK {saved_file.name}: ")

    # A cancel revokes the file, never the manifest.
    await gql(
        live_server,
        world.admin,
        "mutation($id: ID!) { cancelLogExport(input: { id: $id }) { logExport { id } } }",
        {"id": export["id"]},
    )
    await page.reload()
    await expect(page.get_by_role("cell", name="Canceled")).to_be_visible()
    await expect(manifest_button).to_be_enabled()
    await expect(download_button).to_have_count(0)
    async with page.expect_download() as after_cancel:
        await manifest_button.click()
    kept = await save(await after_cancel.value, artifacts_dir / "canceled")
    assert kept.read_bytes() == saved_manifest.read_bytes()

    # The session of someone who may not download gets no manifest, as for a missing export.
    viewer = await new_page()
    await sign_in(viewer, world.viewer.token)
    response = await viewer.goto(f"/console/exports/{export['id']}/manifest")
    assert response is not None and response.status == 404
    await expect(viewer.get_by_role("heading", level=1)).to_have_text("No manifest")
