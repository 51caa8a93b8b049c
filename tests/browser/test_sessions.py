"""Signing out ends console sessions on the server, in headless Chromium against a real
server: a cookie copied out of the browser before sign-out stops working after it, and
signing out everywhere (from the console or with the operator command) ends the session of
every browser the user signed in with."""

from __future__ import annotations

import os
import re
from typing import Any

import httpx
import pytest
from playwright.async_api import expect

from logexport.web import sessions
from tests.support.cli import run_logexport
from tests.support.world import World, build_world

pytestmark = pytest.mark.browser

ORG_PAGE = re.compile(r"/console/orgs/[0-9a-f-]+/audit-log$")
SIGN_IN_PAGE = re.compile(r"/console/sign-in(\?next=.*)?$")


async def sign_in(page: Any, token: str) -> None:
    await page.goto("/console")
    await expect(page).to_have_url(re.compile(r"/console/sign-in"))
    await page.get_by_label("API key").fill(token)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page).to_have_url(ORG_PAGE)


async def copied_cookie(page: Any) -> str:
    [cookie] = [c for c in await page.context.cookies() if c["name"] == sessions.COOKIE_NAME]
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    value: str = cookie["value"]
    return value


async def replay(base_url: str, world: World, cookie: str, csrf: str) -> tuple[int, int]:
    """The copied cookie sent by a plain HTTP client: (console page status, API status).

    A live session answers 200 and 200; an ended one is sent to sign in (303) and refused
    by the API (401).
    """
    headers = {"Cookie": f"{sessions.COOKIE_NAME}={cookie}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers) as client:
        page = await client.get(f"/console/orgs/{world.organization_id}/audit-log")
        if page.status_code == 303:
            assert page.headers["location"].startswith("/console/sign-in")
        api = await client.post(
            "/graphql",
            json={"query": "{ viewer { email } }"},
            headers={sessions.CSRF_HEADER: csrf},
        )
    return page.status_code, api.status_code


async def page_csrf(page: Any) -> str:
    token = await page.locator('meta[name="csrf-token"]').get_attribute("content")
    assert token
    return str(token)


async def test_a_cookie_copied_before_sign_out_is_refused_after_it(page, pool, live_server):
    world = await build_world(pool)
    await sign_in(page, world.admin.token)
    cookie, csrf = await copied_cookie(page), await page_csrf(page)
    assert await replay(live_server.base_url, world, cookie, csrf) == (200, 200)

    await page.get_by_role("button", name="Sign out", exact=True).click()

    await expect(page).to_have_url(SIGN_IN_PAGE)
    assert await replay(live_server.base_url, world, cookie, csrf) == (303, 401)
    async with pool.acquire() as conn:
        revoked = await conn.fetchval(
            "SELECT count(*) FROM console_sessions WHERE revoked_at IS NOT NULL"
        )
    assert revoked == 1


async def test_sign_out_everywhere_ends_the_session_in_another_browser(new_page, pool, live_server):
    world = await build_world(pool)
    laptop, phone, colleague = await new_page(), await new_page(), await new_page()
    await sign_in(laptop, world.admin.token)
    await sign_in(phone, world.admin.token)
    await sign_in(colleague, world.viewer.token)
    phone_cookie, phone_csrf = await copied_cookie(phone), await page_csrf(phone)

    await laptop.get_by_role("button", name="End all sessions").click()

    await expect(laptop).to_have_url(SIGN_IN_PAGE)
    # The phone's open page is signed out at its next navigation.
    await phone.get_by_role("link", name="Exports").click()
    await expect(phone).to_have_url(SIGN_IN_PAGE)
    await expect(phone.get_by_label("API key")).to_be_visible()
    assert await replay(live_server.base_url, world, phone_cookie, phone_csrf) == (303, 401)
    # Another user's session is not touched.
    await colleague.get_by_role("link", name="Exports").click()
    await expect(colleague).to_have_url(re.compile(r"/console/orgs/[0-9a-f-]+/exports$"))


async def test_operator_signs_a_user_out_everywhere(new_page, pool, live_server):
    world = await build_world(pool)
    first, second = await new_page(), await new_page()
    await sign_in(first, world.owner.token)
    await sign_in(second, world.owner.token)

    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        "LOGEXPORT_DATABASE_URL": live_server.settings.database_url,
    }
    result = await run_logexport(
        "admin", "sign-out-everywhere", "Olivia.Owner@acme.test", env=env, timeout=120
    )

    assert result.code == 0, result.stderr
    assert "ended 2 console session(s)" in result.stderr
    for browser_page in (first, second):
        await browser_page.reload()
        await expect(browser_page).to_have_url(SIGN_IN_PAGE)
    # The key itself keeps working: signing in again opens a new session.
    await sign_in(first, world.owner.token)


async def test_operator_sign_out_everywhere_names_an_unknown_user(database_url):
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        "LOGEXPORT_DATABASE_URL": database_url,
    }
    result = await run_logexport(
        "admin", "sign-out-everywhere", "nobody@acme.test", env=env, timeout=120
    )
    assert result.code == 1
    assert "nobody@acme.test" in result.stderr
    assert "Traceback" not in result.stderr
