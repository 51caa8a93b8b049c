"""Hostile sign-ins and page requests to the console."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

import httpx
import pytest

from logexport.web import sessions
from tests.abuse.conftest import Stack, assert_no_internals

SIGN_IN = "/console/sign-in"


async def _form_token(client: httpx.AsyncClient) -> str:
    page = await client.get(SIGN_IN)
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found, page.text
    return found.group(1)


async def _signed_in(stack: Stack, token: str) -> httpx.AsyncClient:
    client = stack.fresh_client()
    form = {"csrf_token": await _form_token(client), "api_key": token, "next": ""}
    response = await client.post(SIGN_IN, data=form)
    assert response.status_code == 303, response.text
    assert sessions.COOKIE_NAME in client.cookies
    return client


def _flip(token: str) -> str:
    return token[:-1] + ("A" if token[-1] != "A" else "B")


@pytest.mark.parametrize(
    "api_key",
    [
        "lex_guess",
        "x" * 10_000,
        "'; DROP TABLE api_keys; --",
        "lex_\u00e9\u00e8\u4e2d\u6587" + "A" * 37,
        "lex_AAAA\r\nSet-Cookie: logexport_session=forged",
        "lex_\x00" + "A" * 42,
        "",
    ],
    ids=["short", "huge", "sql", "unicode", "crlf", "nul", "empty"],
)
async def test_bad_api_keys_do_not_sign_in(stack: Stack, api_key: str):
    count_sessions = "SELECT count(*) FROM console_sessions"
    sessions_before = await stack.pool.fetchval(count_sessions)
    async with stack.fresh_client() as client, stack.unchanged():
        form = {"csrf_token": await _form_token(client), "api_key": api_key, "next": "/console"}
        response = await client.post(SIGN_IN, data=form)
    assert await stack.pool.fetchval(count_sessions) == sessions_before
    assert sessions.COOKIE_NAME not in response.cookies
    assert "forged" not in response.headers.get("set-cookie", "")
    assert_no_internals(response.text)
    if len(api_key) > 4096:  # refused by the form parser before any lookup
        assert response.status_code == 400
    else:
        assert response.status_code == 401, response.status_code
        assert "not valid" in response.text


async def test_an_altered_real_key_does_not_sign_in(stack: Stack):
    async with stack.fresh_client() as client:
        form = {"csrf_token": await _form_token(client), "api_key": _flip(stack.world.admin.token)}
        response = await client.post(SIGN_IN, data=form)
    assert response.status_code == 401
    assert sessions.COOKIE_NAME not in client.cookies


async def test_malformed_and_oversized_sign_in_bodies_are_refused(stack: Stack):
    async with stack.fresh_client() as client, stack.unchanged():
        token = await _form_token(client)
        real = stack.world.admin.token
        answers = {
            "no csrf": await client.post(SIGN_IN, data={"api_key": real}),
            "wrong csrf": await client.post(SIGN_IN, data={"api_key": real, "csrf_token": "x"}),
            "json body": await client.post(SIGN_IN, json={"api_key": real, "csrf_token": token}),
            "garbage": await client.post(
                SIGN_IN,
                content=b"\xff\xfe%%%&&&==\x00",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            ),
            "huge field": await client.post(
                SIGN_IN, data={"csrf_token": token, "api_key": "x" * 2_000_000}
            ),
            "many fields": await client.post(
                SIGN_IN, data={"csrf_token": token} | {f"f{i}": "x" for i in range(500)}
            ),
            "file upload": await client.post(
                SIGN_IN,
                data={"csrf_token": token, "api_key": real},
                files={"upload": ("big.bin", b"\x00" * 3_000_000)},
            ),
            "foreign origin": await client.post(
                SIGN_IN,
                data={"csrf_token": token, "api_key": real},
                headers={"Origin": "https://evil.example"},
            ),
        }
    for name, response in answers.items():
        assert response.status_code in (400, 401, 403), (name, response.status_code)
        assert sessions.COOKIE_NAME not in response.cookies, name
        assert_no_internals(response.text)
    # Limits are enforced while parsing, before anything is buffered or checked.
    for name in ("huge field", "many fields", "file upload"):
        assert answers[name].status_code == 400, (name, answers[name].text[:200])


@pytest.mark.parametrize(
    "next_path",
    [
        "//evil.example",
        "https://evil.example/console",
        "/console/../../etc/passwd",
        "/console\r\nLocation: https://evil.example",
        "/\\evil.example",
        "javascript:alert(1)",
    ],
)
async def test_sign_in_never_redirects_off_the_console(stack: Stack, next_path: str):
    async with stack.fresh_client() as client:
        form = {
            "csrf_token": await _form_token(client),
            "api_key": stack.world.viewer.token,
            "next": next_path,
        }
        response = await client.post(SIGN_IN, data=form)
    assert response.status_code == 303
    assert response.headers["location"] == "/console"


async def test_foreign_missing_and_malformed_organization_pages_look_alike(stack: Stack):
    world = stack.world
    client = await _signed_in(stack, world.admin.token)
    async with stack.unchanged():
        missing = uuid.uuid4()
        pages = {
            "foreign": await client.get(f"/console/orgs/{world.other_organization_id}/audit-log"),
            "missing": await client.get(f"/console/orgs/{missing}/audit-log"),
            "malformed": await client.get("/console/orgs/'%20OR%201=1--/audit-log"),
            "dots": await client.get("/console/orgs/%2e%2e/exports"),
        }
        own = await client.get(f"/console/orgs/{world.organization_id}/audit-log")
    await client.aclose()
    assert own.status_code == 200
    bodies = set()
    for name, page in pages.items():
        assert page.status_code == 404, (name, page.status_code)
        assert "Globex" not in page.text
        assert_no_internals(page.text)
        bodies.add(
            page.text.replace(str(world.other_organization_id), "<id>").replace(
                str(missing), "<id>"
            )
        )
    assert len(bodies) == 1


async def test_foreign_missing_and_malformed_export_manifests_look_alike(stack: Stack):
    world = stack.world
    client = await _signed_in(stack, world.admin.token)
    missing = uuid.uuid4()
    async with stack.unchanged():
        pages = {
            "foreign": await client.get(f"/console/exports/{stack.foreign_export_id}/manifest"),
            "missing": await client.get(f"/console/exports/{missing}/manifest"),
            "malformed": await client.get("/console/exports/'%20OR%201=1--/manifest"),
        }
        own = await client.get(f"/console/exports/{stack.own_export_id}/manifest")
    signed_out = await stack.fresh_client().get(f"/console/exports/{stack.own_export_id}/manifest")
    await client.aclose()

    assert own.status_code == 200
    assert own.headers["content-disposition"].startswith("attachment;")
    assert own.json()["manifest"]["export_id"] == str(stack.own_export_id)
    bodies = set()
    for name, page in pages.items():
        assert page.status_code == 404, (name, page.status_code)
        assert_no_internals(page.text)
        bodies.add(
            page.text.replace(str(stack.foreign_export_id), "<id>").replace(str(missing), "<id>")
        )
    assert len(bodies) == 1
    assert signed_out.status_code == 303
    assert signed_out.headers["location"].startswith(SIGN_IN)


async def test_a_tampered_session_cookie_is_signed_out(stack: Stack):
    client = await _signed_in(stack, stack.world.admin.token)
    try:
        value = client.cookies[sessions.COOKIE_NAME]
        client.cookies.set(
            sessions.COOKIE_NAME, value[:-2] + ("AA" if value[-2:] != "AA" else "BB")
        )
        page = await client.get(f"/console/orgs/{stack.world.organization_id}/audit-log")
        write = await client.post(
            "/graphql",
            json={"query": "{ viewer { id } }"},
            headers={sessions.CSRF_HEADER: "whatever"},
        )
    finally:
        await client.aclose()
    assert page.status_code == 303
    assert page.headers["location"].startswith(SIGN_IN)
    assert write.status_code == 401


# ---------------------------------------------------------------------------- sessions

AUDIT_PAGE = "/console/orgs/{}/audit-log"


def _page_csrf(html: str) -> str:
    found = re.search(r'<meta name="csrf-token" content="([^"]+)">', html)
    assert found, html[:500]
    return found.group(1)


async def _session_works(stack: Stack, cookie: str) -> bool:
    """Whether a bare cookie value (as copied out of a browser) still opens the console."""
    async with stack.fresh_client() as client:
        client.cookies.set(sessions.COOKIE_NAME, cookie)
        page = await client.get(AUDIT_PAGE.format(stack.world.organization_id))
        if page.status_code != 200:
            assert page.status_code == 303
            assert page.headers["location"].startswith(SIGN_IN)
            return False
        api = await client.post(
            "/graphql",
            json={"query": "{ viewer { email } }"},
            headers={sessions.CSRF_HEADER: _page_csrf(page.text)},
        )
        assert api.status_code == 200, api.text
        return True


async def _graphql_status(stack: Stack, cookie: str, csrf: str) -> int:
    async with stack.fresh_client() as client:
        client.cookies.set(sessions.COOKIE_NAME, cookie)
        response = await client.post(
            "/graphql", json={"query": "{ viewer { email } }"}, headers={sessions.CSRF_HEADER: csrf}
        )
    return response.status_code


async def _sign_out(client: httpx.AsyncClient, stack: Stack, path: str = "/console/sign-out"):
    page = await client.get(AUDIT_PAGE.format(stack.world.organization_id))
    return await client.post(path, data={"csrf_token": _page_csrf(page.text)})


async def test_a_cookie_copied_before_sign_out_stops_working_after_it(stack: Stack):
    client = await _signed_in(stack, stack.world.admin.token)
    copied = client.cookies[sessions.COOKIE_NAME]
    page = await client.get(AUDIT_PAGE.format(stack.world.organization_id))
    csrf = _page_csrf(page.text)
    assert await _session_works(stack, copied)
    assert await _graphql_status(stack, copied, csrf) == 200

    response = await _sign_out(client, stack)
    await client.aclose()

    assert response.status_code == 303
    assert not await _session_works(stack, copied)
    assert await _graphql_status(stack, copied, csrf) == 401


async def test_sign_out_everywhere_ends_every_session_of_the_user_only(stack: Stack):
    world = stack.world
    here = await _signed_in(stack, world.admin.token)
    elsewhere = await _signed_in(stack, world.admin.token)
    someone_else = await _signed_in(stack, world.viewer.token)
    cookies = [c.cookies[sessions.COOKIE_NAME] for c in (here, elsewhere, someone_else)]

    response = await _sign_out(here, stack, "/console/sign-out-everywhere")
    for client in (here, elsewhere, someone_else):
        await client.aclose()

    assert response.status_code == 303
    assert response.headers["location"] == SIGN_IN
    assert [await _session_works(stack, cookie) for cookie in cookies] == [False, False, True]


async def test_sign_out_and_sign_out_everywhere_need_the_csrf_token(stack: Stack):
    client = await _signed_in(stack, stack.world.admin.token)
    cookie = client.cookies[sessions.COOKIE_NAME]
    try:
        answers = [
            await client.post(path, data=data, headers=headers)
            for path in ("/console/sign-out", "/console/sign-out-everywhere")
            for data, headers in [
                ({}, {}),
                ({"csrf_token": "forged"}, {}),
                ({}, {"Origin": "https://evil.example"}),
            ]
        ]
    finally:
        await client.aclose()
    assert [a.status_code for a in answers] == [403] * len(answers)
    assert await _session_works(stack, cookie)


async def test_the_session_table_holds_no_usable_session_id(stack: Stack):
    client = await _signed_in(stack, stack.world.viewer.token)
    cookie = client.cookies[sessions.COOKIE_NAME]
    await client.aclose()
    session = sessions.decode_session(stack.settings, cookie)
    assert session is not None
    rows = await stack.pool.fetch("SELECT * FROM console_sessions")
    dump = repr([dict(row) for row in rows])
    assert session.id not in dump and session.id.encode() not in dump.encode()
    stored = await stack.pool.fetchrow(
        "SELECT user_id, api_key_id, expires_at - created_at AS lifetime FROM console_sessions"
        " WHERE id_hash = sha256(convert_to($1, 'UTF8'))",
        session.id,
    )
    assert stored is not None
    assert stored["user_id"] == stack.world.viewer.user_id
    assert stored["api_key_id"] == stack.world.viewer.principal.api_key_id
    assert stored["lifetime"].total_seconds() == 12 * 3600


async def test_an_expired_session_row_ends_the_session(stack: Stack):
    client = await _signed_in(stack, stack.world.viewer.token)
    cookie = client.cookies[sessions.COOKIE_NAME]
    await client.aclose()
    session = sessions.decode_session(stack.settings, cookie)
    assert session is not None and await _session_works(stack, cookie)
    await stack.pool.execute(
        "UPDATE console_sessions SET created_at = now() - interval '13 hours',"
        " expires_at = now() - interval '1 hour' WHERE id_hash = sha256(convert_to($1, 'UTF8'))",
        session.id,
    )
    assert not await _session_works(stack, cookie)


async def test_a_signed_cookie_naming_no_stored_session_is_refused(stack: Stack):
    # Signed with the real key (as if the key leaked), but naming a session never started.
    forged = sessions.encode_session(
        stack.settings, sessions.Session(id="A" * 43, csrf_token="unused")
    )
    assert not await _session_works(stack, forged)


async def test_purging_removes_only_rows_that_ended_long_enough_ago(stack: Stack):
    live = await _signed_in(stack, stack.world.owner.token)
    ended = await _signed_in(stack, stack.world.owner.token)
    cookies = [c.cookies[sessions.COOKIE_NAME] for c in (live, ended)]
    await _sign_out(ended, stack)
    for client in (live, ended):
        await client.aclose()
    ids = [sessions.decode_session(stack.settings, cookie) for cookie in cookies]
    hashes = "SELECT id_hash FROM console_sessions WHERE id_hash = sha256(convert_to($1, 'UTF8'))"
    async with stack.pool.acquire() as conn:
        await sessions.purge_sessions(conn, timedelta(hours=1))
        assert [await conn.fetchval(hashes, s.id) is not None for s in ids if s] == [True, True]
        await conn.execute(
            "UPDATE console_sessions SET revoked_at = now() - interval '2 hours'"
            " WHERE revoked_at IS NOT NULL"
        )
        assert await sessions.purge_sessions(conn, timedelta(hours=1)) >= 1
        left = [await conn.fetchval(hashes, s.id) for s in ids if s is not None]
    assert left[0] is not None and left[1] is None
    assert await _session_works(stack, cookies[0])
