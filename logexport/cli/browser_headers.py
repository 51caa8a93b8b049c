"""The headers a browser sends when a person submits a page's form, and on the redirect
that follows, derived from the page's own referrer policy.

The demo downloads through the emailed link's page the way a browser does. Sending a
fixed ``Origin`` would pass even where browsers fail (a page under ``no-referrer`` makes
Chromium and Firefox send ``Origin: null``), so the headers are worked out from what the
page says, following the Fetch and Referrer Policy standards for top-level navigations.
"""

from __future__ import annotations

import ipaddress
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

POLICIES = frozenset(
    {
        "no-referrer",
        "no-referrer-when-downgrade",
        "same-origin",
        "origin",
        "strict-origin",
        "origin-when-cross-origin",
        "strict-origin-when-cross-origin",
        "unsafe-url",
    }
)
# What browsers apply when a page names no policy.
DEFAULT_POLICY = "strict-origin-when-cross-origin"
FetchSite = Literal["same-origin", "same-site", "cross-site", "none"]


def page_policy(header: str | None, meta: str | None) -> str:
    """A page's referrer policy: a ``<meta name="referrer">`` overrides the header.

    A header may list several policies; the last one a browser knows wins, so a newer
    policy can be listed after a fallback.
    """
    policy = DEFAULT_POLICY
    for token in (header or "").split(","):
        if token.strip().lower() in POLICIES:
            policy = token.strip().lower()
    if meta is not None and meta.strip().lower() in POLICIES:
        policy = meta.strip().lower()
    return policy


def form_post_headers(page_url: str, policy: str, action_url: str) -> dict[str, str]:
    """What a browser sends when the page's ``<form method="post">`` is submitted."""
    headers = {
        "Origin": _request_origin(policy, page_url, action_url),
        "Content-Type": "application/x-www-form-urlencoded",
        **_navigation(page_url, action_url),
    }
    referer = referrer(policy, page_url, action_url)
    if referer is not None:
        headers["Referer"] = referer
    return headers


def redirect_headers(
    page_url: str, policy: str, redirect_policy: str | None, location: str
) -> dict[str, str]:
    """What a browser sends on the ``GET`` a 303 after that ``POST`` leads to.

    The redirect's own ``Referrer-Policy`` header, if any, replaces the page's for this hop.
    A navigation ``GET`` carries no ``Origin``.
    """
    policy = page_policy(redirect_policy, None) if redirect_policy else policy
    headers = _navigation(page_url, location)
    referer = referrer(policy, page_url, location)
    if referer is not None:
        headers["Referer"] = referer
    return headers


def referrer(policy: str, page_url: str, target_url: str) -> str | None:
    """The ``Referer`` header for a request from ``page_url`` to ``target_url``."""
    same = origin_of(page_url) == origin_of(target_url)
    downgrade = _downgrade(page_url, target_url)
    full = _stripped(page_url)
    origin_only = origin_of(page_url) + "/"
    match policy:
        case "no-referrer":
            return None
        case "unsafe-url":
            return full
        case "origin":
            return origin_only
        case "same-origin":
            return full if same else None
        case "origin-when-cross-origin":
            return full if same else origin_only
        case "strict-origin":
            return None if downgrade else origin_only
        case "no-referrer-when-downgrade":
            return None if downgrade else full
        case _:  # strict-origin-when-cross-origin
            if same:
                return full
            return None if downgrade else origin_only


def fetch_site(page_url: str, target_url: str) -> FetchSite:
    """``Sec-Fetch-Site`` (hosts stand in for registrable domains, enough on loopback)."""
    if origin_of(page_url) == origin_of(target_url):
        return "same-origin"
    page, target = urlsplit(page_url), urlsplit(target_url)
    if page.scheme == target.scheme and page.hostname == target.hostname:
        return "same-site"
    return "cross-site"


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    default = {"http": 80, "https": 443}.get(scheme)
    port = parts.port
    return f"{scheme}://{host}" + (f":{port}" if port and port != default else "")


def _request_origin(policy: str, page_url: str, target_url: str) -> str:
    # A POST always carries Origin; it is "null" wherever the policy would hide the page.
    same = origin_of(page_url) == origin_of(target_url)
    hidden = (
        policy == "no-referrer"
        or (policy == "same-origin" and not same)
        or (
            policy in ("no-referrer-when-downgrade", "strict-origin", DEFAULT_POLICY)
            and _downgrade(page_url, target_url)
        )
    )
    return "null" if hidden else origin_of(page_url)


def _navigation(page_url: str, target_url: str) -> dict[str, str]:
    headers = {"Upgrade-Insecure-Requests": "1"}
    if potentially_trustworthy(target_url):
        headers |= {
            "Sec-Fetch-Site": fetch_site(page_url, target_url),
            "Sec-Fetch-Mode": "navigate",
            "Sec-Fetch-Dest": "document",
            "Sec-Fetch-User": "?1",
        }
    return headers


def potentially_trustworthy(url: str) -> bool:
    """Browsers send ``Sec-Fetch-*`` only to HTTPS and loopback: elsewhere, Origin decides."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme == "https" or host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _downgrade(page_url: str, target_url: str) -> bool:
    return urlsplit(page_url).scheme == "https" and urlsplit(target_url).scheme != "https"


def _stripped(url: str) -> str:
    """A URL as sent in ``Referer``: no credentials, no fragment."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
