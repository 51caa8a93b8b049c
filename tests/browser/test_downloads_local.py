"""The emailed link's Download button in Chromium when exports live in a local directory:
the file is streamed by the server itself (no bucket, no redirect), sandboxed by its CSP."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.async_api import expect

from logexport.config import Settings
from tests.browser.test_downloads import (
    TokenWatch,
    completed_export,
    emailed_link,
    saved_sha256,
    token_of,
)
from tests.support.world import build_world

pytestmark = pytest.mark.browser


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    return settings.derive(storage_url=f"file://{tmp_path / 'exports'}")


async def test_emailed_link_downloads_a_locally_stored_file(
    new_page, pool, live_server, smtp_sink, artifacts_dir
):
    assert live_server.settings.storage_url.startswith("file://")
    world = await build_world(pool)
    export = await completed_export(pool, live_server, world)
    message = await smtp_sink.wait_for(
        lambda m: emailed_link(m, export["id"]) is not None, timeout=30
    )
    link = emailed_link(message, export["id"])
    assert link is not None

    page = await new_page()
    watch = TokenWatch(page)
    await page.goto(link)
    await expect(page.get_by_role("heading", level=1)).to_have_text("Your export is ready")
    async with page.expect_download() as download_info:
        await page.get_by_role("button", name="Download").click()
    download = await download_info.value
    assert download.suggested_filename == export["fileName"]
    assert await saved_sha256(download, artifacts_dir / export["fileName"]) == export["sha256"]
    assert watch.origins() == {live_server.base_url}
    assert await watch.origins_that_saw(token_of(link)) == {live_server.base_url}
    page.problems.assert_none()
