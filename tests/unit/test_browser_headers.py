"""The demo's model of what a browser sends with a form POST, per referrer policy.

The browser tests check the model against Chromium itself for ``same-origin`` and
``no-referrer``; these cover the rest of the policy table.
"""

from __future__ import annotations

import pytest

from logexport.cli.browser_headers import (
    form_post_headers,
    origin_of,
    page_policy,
    potentially_trustworthy,
    redirect_headers,
    referrer,
)

PAGE = "https://logs.example/exports/e1/download?token=secret#top"
SAME = "https://logs.example/exports/e1/download"
OTHER = "https://bucket.example/object?X-Amz-Signature=x"
PLAIN = "http://bucket.example/object"


def test_meta_overrides_header_and_the_last_known_header_policy_wins() -> None:
    assert page_policy(None, None) == "strict-origin-when-cross-origin"
    assert page_policy("no-referrer", None) == "no-referrer"
    assert page_policy("no-referrer, same-origin", None) == "same-origin"
    assert page_policy("same-origin, made-up", None) == "same-origin"
    assert page_policy("no-referrer", "same-origin") == "same-origin"
    assert page_policy("no-referrer", "made-up") == "no-referrer"


@pytest.mark.parametrize(
    ("policy", "same", "other", "plain"),
    [
        ("no-referrer", None, None, None),
        ("same-origin", "full", None, None),
        ("origin", "origin", "origin", "origin"),
        ("strict-origin", "origin", "origin", None),
        ("origin-when-cross-origin", "full", "origin", "origin"),
        ("strict-origin-when-cross-origin", "full", "origin", None),
        ("no-referrer-when-downgrade", "full", "full", None),
        ("unsafe-url", "full", "full", "full"),
    ],
)
def test_referer_per_policy(policy: str, same: str, other: str, plain: str) -> None:
    shown = {
        None: None,
        "full": "https://logs.example/exports/e1/download?token=secret",
        "origin": "https://logs.example/",
    }
    assert referrer(policy, PAGE, SAME) == shown[same]
    assert referrer(policy, PAGE, OTHER) == shown[other]
    assert referrer(policy, PAGE, PLAIN) == shown[plain]


def test_same_origin_post_carries_the_real_origin_under_same_origin() -> None:
    headers = form_post_headers(PAGE, "same-origin", SAME)
    assert headers["Origin"] == "https://logs.example"
    assert headers["Sec-Fetch-Site"] == "same-origin"
    assert headers["Sec-Fetch-Mode"] == "navigate"
    assert headers["Sec-Fetch-Dest"] == "document"
    assert headers["Referer"] == "https://logs.example/exports/e1/download?token=secret"


def test_no_referrer_post_carries_origin_null_and_no_referer() -> None:
    headers = form_post_headers(PAGE, "no-referrer", SAME)
    assert headers["Origin"] == "null"
    assert "Referer" not in headers


def test_no_sec_fetch_headers_to_plain_http_off_loopback() -> None:
    page = "http://logs.example/exports/e1/download?token=secret"
    headers = form_post_headers(page, "same-origin", "http://logs.example/exports/e1/download")
    assert not any(name.startswith("Sec-Fetch-") for name in headers)
    assert headers["Origin"] == "http://logs.example"


@pytest.mark.parametrize(
    ("url", "trustworthy"),
    [
        ("https://logs.example/", True),
        ("http://127.0.0.1:8000/", True),
        ("http://127.1.2.3/", True),
        ("http://[::1]:8000/", True),
        ("http://localhost:8000/", True),
        ("http://app.localhost/", True),
        ("http://logs.example/", False),
        ("http://10.0.0.1/", False),
    ],
)
def test_potentially_trustworthy_urls(url: str, trustworthy: bool) -> None:
    assert potentially_trustworthy(url) is trustworthy


def test_redirect_to_the_bucket_carries_no_token() -> None:
    for page_policy_name in ("same-origin", "no-referrer", "strict-origin-when-cross-origin"):
        for redirect_policy in ("no-referrer", None):
            headers = redirect_headers(PAGE, page_policy_name, redirect_policy, OTHER)
            assert "Origin" not in headers
            assert not any("secret" in value for value in headers.values())
            assert headers["Sec-Fetch-Site"] == "cross-site"


def test_origins_are_normalized() -> None:
    assert origin_of("HTTPS://Logs.Example:443/x?y") == "https://logs.example"
    assert origin_of("http://127.0.0.1:8000/x") == "http://127.0.0.1:8000"
    assert origin_of("http://[::1]:80/") == "http://[::1]"
