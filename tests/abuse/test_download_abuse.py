"""Hostile requests to ``/exports/{id}/download`` (and its manifest): path tricks and
guessed tokens get the same 404 page, posts from other sites get 403; none redirects or
records a download."""

from __future__ import annotations

import secrets

import pytest

from tests.abuse.conftest import BASE_URL, Stack, assert_no_internals


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
        manifest = await stack.client.post(
            f"/exports/{export_id}/manifest", data={"token": _flip(token, 4)}
        )
        no_token = await stack.client.get(f"/exports/{export_id}/download")
        two_tokens = await stack.client.get(
            f"/exports/{export_id}/download?token={_flip(token, 5)}&token={_flip(token, 6)}"
        )
    for response in (posted, manifest, no_token, two_tokens):
        assert response.status_code == 404
        pages.add(response.content)
    assert len(pages) == 1
    # The real link still works: the guesses did not lock or consume anything.
    real = await stack.client.get(stack.own_download_url)
    assert real.status_code == 303


def _navigation(site: str) -> dict[str, str]:
    return {"Sec-Fetch-Site": site, "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}


@pytest.mark.parametrize("action", ["download", "manifest"])
async def test_download_posts_from_another_site_or_with_huge_forms_are_refused(
    stack: Stack, action: str
):
    export_id, token = _parts(stack.own_download_url)
    url = f"/exports/{export_id}/{action}"
    refused = [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Origin": "http://testserver.evil.example"},
        {"Origin": "http://testserver:8080"},
        {"Origin": "https://testserver"},
        {"Origin": "not a url"},
        # A browser on another site submitting a copy of the form, as Chromium sends it.
        {"Origin": "https://evil.example", **_navigation("cross-site")},
        {"Origin": "null", **_navigation("cross-site")},
        {**_navigation("cross-site")},
        # A sibling subdomain, or a link opened from the address bar then replayed as POST.
        {"Origin": "http://other.testserver", **_navigation("same-site")},
        {**_navigation("none")},
        # A forged Origin does not outweigh what the browser itself says, nor the reverse.
        {"Origin": BASE_URL, **_navigation("cross-site")},
        {"Origin": "https://evil.example", **_navigation("same-origin")},
    ]
    async with stack.unchanged():
        answers = [
            await stack.client.post(url, data={"token": token}, headers=headers)
            for headers in refused
        ]
        huge = await stack.client.post(url, data={"token": "x" * 2_000_000})
        many = await stack.client.post(url, data={f"f{i}": "x" for i in range(50)})
        upload = await stack.client.post(url, files={"token": ("t.txt", b"x" * 1000)})
    for headers, answer in zip(refused, answers, strict=True):
        assert answer.status_code == 403, headers
        assert "location" not in answer.headers
        assert "Downloads must be started from the download page itself." in answer.text
    for response in (huge, many, upload):
        assert response.status_code in (400, 404), response.status_code
        assert_no_internals(response.text)
