"""One origin comparison for the console, ``/mcp`` and the download page."""

from __future__ import annotations

import pytest

from logexport.web.origins import origin_of, same_origin


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://logs.example.com", "http://logs.example.com"),
        ("http://logs.example.com:80", "http://logs.example.com"),
        ("https://logs.example.com:443", "https://logs.example.com"),
        ("https://logs.example.com:80", "https://logs.example.com:80"),
        ("http://logs.example.com:443", "http://logs.example.com:443"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("HTTPS://Logs.Example.COM", "https://logs.example.com"),
        ("https://logs.example.com/", "https://logs.example.com"),
        ("https://logs.example.com/logexport/?next=/x", "https://logs.example.com"),
        ("  https://logs.example.com  ", "https://logs.example.com"),
        ("https://user:secret@logs.example.com", "https://logs.example.com"),
        ("http://[::1]:8000", "http://[::1]:8000"),
        ("http://[::1]:80", "http://[::1]"),
    ],
)
def test_origin_is_normalized(url: str, expected: str) -> None:
    assert origin_of(url) == expected


@pytest.mark.parametrize(
    "url",
    ["null", "", "logs.example.com", "file:///etc/passwd", "ftp://logs.example.com",
     "https://", "https://logs.example.com:port", "https://logs.example.com:99999"],
)  # fmt: skip
def test_what_has_no_web_origin_is_none(url: str) -> None:
    assert origin_of(url) is None


@pytest.mark.parametrize(
    ("header", "base_url"),
    [
        ("http://logs.example.com", "http://logs.example.com:80"),
        ("http://logs.example.com:80", "http://logs.example.com"),
        ("https://logs.example.com", "https://logs.example.com:443/"),
        ("https://LOGS.example.com", "https://logs.EXAMPLE.com"),
        ("https://logs.example.com", "https://logs.example.com/"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080/"),
    ],
)
def test_same_origin_despite_spelling(header: str, base_url: str) -> None:
    assert same_origin(header, base_url)


@pytest.mark.parametrize(
    ("header", "base_url"),
    [
        ("null", "https://logs.example.com"),
        ("null", "null"),
        ("", "https://logs.example.com"),
        ("http://logs.example.com", "https://logs.example.com"),
        ("https://logs.example.com:8443", "https://logs.example.com"),
        ("https://logs.example.com.evil.test", "https://logs.example.com"),
        ("https://evil.test", "https://logs.example.com"),
        ("https://logs.example.com:bad", "https://logs.example.com"),
        ("https://logs.example.com", "not a url"),
    ],
)
def test_other_origins_differ(header: str, base_url: str) -> None:
    assert not same_origin(header, base_url)
