"""Hostile requests to ``/exports/{id}/download``: path tricks and guessed tokens get the
same 404 page, redirect nowhere and record no download (SPEC §6)."""

from __future__ import annotations

import secrets

import pytest

from tests.abuse.conftest import Stack, assert_no_internals


def _parts(url: str) -> tuple[str, str]:
    path, _, token = url.partition("?token=")
    return path.split("/")[2], token


def _flip(token: str, index: int) -> str:
    return token[:index] + ("A" if token[index] != "A" else "B") + token[index + 1 :]


@pytest.mark.parametrize(
    "path",
    [
        "/exports/..%2F..%2Fetc%2Fpasswd/download?token=x",
        "/exports/%2e%2e%2f%2e%2e%2fetc%2fpasswd/download?token=x",
        "/exports/..%5C..%5Cwindows%5Cwin.ini/download?token=x",
        "/exports/%2e%2e/download?token=x",
        "/exports/etc%00passwd/download?token=x",
        "/exports/" + "a" * 5000 + "/download?token=x",
        "/exports/00000000-0000-0000-0000-000000000000/download?token=x",
        "/exports/'%20OR%20'1'='1/download?token=x",
        "/exports/%252e%252e%252fetc/download?token=x",
    ],
    ids=lambda p: p[9:40],
)
async def test_path_like_export_ids_are_not_found(stack: Stack, path: str):
    async with stack.unchanged():
        response = await stack.client.get(path)
    assert response.status_code == 404, response.text
    assert "root:" not in response.text
    assert "location" not in response.headers
    assert_no_internals(response.text)


async def test_guessed_and_altered_download_tokens_get_one_404_page(stack: Stack):
    export_id, token = _parts(stack.own_download_url)
    guesses = [
        secrets.token_urlsafe(32),
        secrets.token_urlsafe(32),
        token[:-1],
        token[:16],
        token + "A",
        _flip(token, 0),
        _flip(token, len(token) // 2),
        _flip(token, len(token) - 1),
        token.upper(),
        "x" * 257,
        "x" * 10_000,
        "%00",
        token[:10] + "%00" + token[10:],
        "'%20OR%20'1'='1",
        "..%2F..%2Fetc%2Fpasswd",
    ]
    pages = set()
    async with stack.unchanged():
        for guess in guesses:
            response = await stack.client.get(f"/exports/{export_id}/download?token={guess}")
            assert response.status_code == 404, (guess, response.status_code)
            assert "location" not in response.headers
            assert_no_internals(response.text)
            pages.add(response.content)
        posted = await stack.client.post(
            f"/exports/{export_id}/download", data={"token": _flip(token, 3)}
        )
        no_token = await stack.client.get(f"/exports/{export_id}/download")
        two_tokens = await stack.client.get(
            f"/exports/{export_id}/download?token={_flip(token, 5)}&token={_flip(token, 6)}"
        )
    for response in (posted, no_token, two_tokens):
        assert response.status_code == 404
        pages.add(response.content)
    assert len(pages) == 1
    # The real link still works: the guesses did not lock or consume anything.
    real = await stack.client.get(stack.own_download_url)
    assert real.status_code == 303


async def test_download_posts_from_another_site_or_with_huge_forms_are_refused(stack: Stack):
    export_id, token = _parts(stack.own_download_url)
    url = f"/exports/{export_id}/download"
    async with stack.unchanged():
        cross = await stack.client.post(
            url, data={"token": token}, headers={"Origin": "https://evil.example"}
        )
        null_origin = await stack.client.post(
            url, data={"token": token}, headers={"Origin": "null"}
        )
        huge = await stack.client.post(url, data={"token": "x" * 2_000_000})
        many = await stack.client.post(url, data={f"f{i}": "x" for i in range(50)})
        upload = await stack.client.post(url, files={"token": ("t.txt", b"x" * 1000)})
    assert cross.status_code == 403 and null_origin.status_code == 403
    for response in (huge, many, upload):
        assert response.status_code in (400, 404), response.status_code
        assert_no_internals(response.text)
