"""Hostile sign-ins and page requests to the console (SPEC §9 Console)."""

from __future__ import annotations

import re
import uuid

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
    async with stack.fresh_client() as client, stack.unchanged():
        form = {"csrf_token": await _form_token(client), "api_key": api_key, "next": "/console"}
        response = await client.post(SIGN_IN, data=form)
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
