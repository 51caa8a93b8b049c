"""``/exports/{id}/download``: the page behind an emailed link, and the download itself.

- ``GET`` with an ``EMAIL`` token shows the file and a **Download** button and changes
  nothing: mail scanners and link previews open links.
- ``POST`` (the button; token in the form body, same origin only) and ``GET`` with a
  ``DIRECT`` token download: they redirect to a short-lived presigned URL (S3) or stream
  the file (local directory backend).

The page also offers the file's signed manifest (``<file name>.manifest.json``): its own
button posts the same token to ``/exports/{id}/manifest``, which answers with the manifest
as stored in the database, under the same checks as the file. The manifest describes the
file; fetching it is not a download of the file and is not recorded.

Whether a token may download, and recording that it did, is ``exports.downloads``'s
business; this module parses the request and maps each answer to a page, a redirect or
the file, with their headers.

The token sits in the page's URL and in its form, so it must never reach another origin:
the page's referrer policy is ``same-origin``. That policy, not ``no-referrer``, is also
what lets the button work: under ``no-referrer`` browsers send ``Origin: null`` with the
form's POST, which is indistinguishable from a POST made by a sandboxed or foreign page.

App state used: ``settings``, ``pool`` (asyncpg) and ``storage``. The token and the query
string are never logged.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

import jinja2
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from logexport.config import Settings
from logexport.exports import downloads
from logexport.exports.describe import format_label, human_size
from logexport.exports.downloads import Refusal
from logexport.exports.filenames import content_disposition
from logexport.exports.models import LogExport
from logexport.kinds import LOG_KINDS
from logexport.manifests import KEYS_PATH, manifest_name
from logexport.timeutil import format_readable, format_rfc3339
from logexport.web.forwarded import request_client_ip
from logexport.web.origins import same_origin

DOWNLOAD_PATH = "/exports/{export_id}/download"
MANIFEST_PATH = "/exports/{export_id}/manifest"

_HERE = Path(__file__).resolve().parent
_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(_HERE / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
# The stylesheet is inlined and allowed by its hash, so the page needs no static route and
# the CSP can still forbid every inline style an attacker might inject.
_CSS = (_HERE / "static" / "download.css").read_text()
_CSS_HASH = base64.b64encode(hashlib.sha256(_CSS.encode()).digest()).decode()
# No form-action: browsers apply it to the redirect that follows the POST, which goes to
# the bucket's origin. The form posts to LOGEXPORT_BASE_URL, and the POST checks Origin.
PAGE_CSP = (
    f"default-src 'none'; style-src 'sha256-{_CSS_HASH}'; base-uri 'none'; frame-ancestors 'none'"
)
FILE_CSP = "sandbox; default-src 'none'"
# Pages: the button's POST goes to this origin with the real Origin (and the page URL as
# Referer); nothing the page leads to on another origin learns the URL. The redirect to the
# bucket and the file itself need no referrer at all.
_PAGE_REFERRER_POLICY = "same-origin"
_COMMON_HEADERS = {
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}


@dataclass(frozen=True)
class _Problem:
    status_code: int
    heading: str
    message: str
    status_label: str | None = None


_NOT_FOUND = _Problem(
    404,
    "Link not found",
    "This download link is not valid. Check that you copied the whole link from the email.",
)
_CROSS_ORIGIN = _Problem(
    403, "Access denied", "Downloads must be started from the download page itself."
)
_REFUSALS: dict[Refusal, _Problem] = {
    Refusal.NOT_FOUND: _NOT_FOUND,
    Refusal.FORBIDDEN: _Problem(
        403,
        "Access denied",
        "You no longer have permission to download exports in this organization.",
    ),
    Refusal.CANCELED: _Problem(
        410,
        "Export canceled",
        "This export was canceled, so its file is no longer available. "
        "You can request a new export.",
        "canceled",
    ),
    Refusal.FAILED: _Problem(
        410,
        "Export failed",
        "This export failed and produced no file. You can request a new export.",
        "failed",
    ),
    Refusal.EXPORT_EXPIRED: _Problem(
        410,
        "Export expired",
        "This export has expired and its file has been deleted. You can request a new export.",
        "expired",
    ),
    Refusal.LINK_EXPIRED: _Problem(
        410,
        "Link expired",
        "This download link has expired. Open the export again to get a new link.",
        "expired",
    ),
    Refusal.UNREADABLE: _Problem(
        503,
        "Download unavailable",
        "The file could not be read right now. Please try again in a minute.",
    ),
}


_NO_MANIFEST = _Problem(
    404,
    "No manifest",
    "This export has no signed manifest. Its SHA-256 on the download page still identifies "
    "the file.",
)


def download_routes() -> list[Route]:
    return [
        Route(DOWNLOAD_PATH, download_endpoint, methods=["GET", "POST"]),
        Route(MANIFEST_PATH, manifest_endpoint, methods=["POST"]),
    ]


async def download_endpoint(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    try:
        export_id = UUID(request.path_params["export_id"])
    except ValueError:
        return _page(_NOT_FOUND)
    if request.method == "POST":
        if not started_on_this_origin(request.headers, settings.require("base_url")):
            return _page(_CROSS_ORIGIN)
        form = await request.form(max_files=0, max_fields=8)
        token = form.get("token")
    else:
        token = request.query_params.get("token")
    if not isinstance(token, str) or not token or len(token) > downloads.MAX_TOKEN_CHARS:
        return _page(_NOT_FOUND)

    try:
        async with request.app.state.pool.acquire() as conn:
            grant = await downloads.check_download(conn, export_id, token)
            # HEAD never downloads: only the button's POST, and GET on a one-step link.
            if not (
                request.method == "POST"
                or (request.method == "GET" and grant.downloads_when_opened)
            ):
                return _ready_page(settings, grant.export, token)
            download = await downloads.start_download(
                conn,
                request.app.state.storage,
                grant,
                ip_address=request_client_ip(request, settings.trusted_proxies or ()),
                user_agent=request.headers.get("user-agent") or None,
            )
    except downloads.DownloadRefused as refused:
        return _page(_refusal_page(refused))

    if download.url is not None:
        return RedirectResponse(download.url, status_code=303, headers=_COMMON_HEADERS)
    assert download.body is not None
    byte_size = download.export.byte_size
    return StreamingResponse(
        download.body,
        media_type=download.content_type,
        headers=_COMMON_HEADERS
        | {
            "Content-Disposition": content_disposition(download.file_name),
            "Content-Security-Policy": FILE_CSP,
            **({"Content-Length": str(byte_size)} if byte_size is not None else {}),
        },
    )


async def manifest_endpoint(request: Request) -> Response:
    """The signed manifest of the file the token may download (the page's Manifest button)."""
    settings: Settings = request.app.state.settings
    try:
        export_id = UUID(request.path_params["export_id"])
    except ValueError:
        return _page(_NOT_FOUND)
    if not started_on_this_origin(request.headers, settings.require("base_url")):
        return _page(_CROSS_ORIGIN)
    form = await request.form(max_files=0, max_fields=8)
    token = form.get("token")
    if not isinstance(token, str) or not token or len(token) > downloads.MAX_TOKEN_CHARS:
        return _page(_NOT_FOUND)
    try:
        async with request.app.state.pool.acquire() as conn:
            grant = await downloads.check_download(conn, export_id, token)
    except downloads.DownloadRefused as refused:
        return _page(_refusal_page(refused))
    export = grant.export
    if export.manifest is None or export.file_name is None:
        return _page(_NO_MANIFEST)
    return Response(
        export.manifest.encode(),
        media_type="application/json",
        headers=_COMMON_HEADERS
        | {
            "Content-Disposition": content_disposition(manifest_name(export.file_name)),
            "Content-Security-Policy": FILE_CSP,
        },
    )


def _refusal_page(refused: downloads.DownloadRefused) -> _Problem:
    if refused.reason is Refusal.NOT_READY and refused.export is not None:
        status = refused.export.status.value.lower()
        return _Problem(
            409,
            "Export not ready",
            f"This export is still {status}. You will receive an email when it is ready.",
            status,
        )
    return _REFUSALS.get(refused.reason, _NOT_FOUND)


def _ready_page(settings: Settings, export: LogExport, token: str) -> Response:
    assert export.expires_at is not None and export.file_name is not None
    file = {
        "name": export.file_name,
        "kind_label": LOG_KINDS[export.kind].rows_title,
        "from_rfc3339": format_rfc3339(export.from_time, fraction="if_any"),
        "to_rfc3339": format_rfc3339(export.to_time, fraction="if_any"),
        "format_label": format_label(export.format.value, export.compression.value, export.csv_bom),
        "row_count": f"{export.row_count or 0:,}",
        "size_human": human_size(export.byte_size or 0),
        "size_bytes": f"{export.byte_size or 0:,}",
        "sha256": export.sha256 or "",
        "expires_rfc3339": format_rfc3339(export.expires_at, fraction="if_any"),
        "expires_readable": format_readable(export.expires_at),
    }
    base_url = settings.require("base_url")
    manifest = None
    if export.manifest is not None:
        manifest = {
            "name": manifest_name(export.file_name),
            "sequence": export.manifest_sequence,
            "action": f"{base_url.rstrip('/')}/exports/{export.id}/manifest",
            "keys_url": base_url.rstrip("/") + KEYS_PATH,
        }
    return _render(
        200,
        heading="Your export is ready",
        message="Check the details below, then download the file.",
        status_label=None,
        file=file,
        manifest=manifest,
        token=token,
        form_action=downloads.download_path(base_url, export.id),
    )


def _page(problem: _Problem) -> Response:
    return _render(
        problem.status_code,
        heading=problem.heading,
        message=problem.message,
        status_label=problem.status_label,
        file=None,
        manifest=None,
        token=None,
        form_action=None,
    )


def _render(status_code: int, **context: object) -> Response:
    html = _env.get_template("download.html.j2").render(css=Markup(_CSS), **context)  # noqa: S704 - our own stylesheet
    return HTMLResponse(
        html,
        status_code=status_code,
        headers=_COMMON_HEADERS
        | {
            "Referrer-Policy": _PAGE_REFERRER_POLICY,
            "Content-Security-Policy": PAGE_CSP,
            "X-Frame-Options": "DENY",
        },
    )


def started_on_this_origin(headers: Mapping[str, str], base_url: str) -> bool:
    """Whether a POST came from a page of ``base_url``'s origin (the download page).

    ``Sec-Fetch-Site``, where a browser sends it, says so directly and cannot be set by a
    page's scripts. Otherwise ``Origin`` decides: it must be ``base_url``'s origin, or
    absent (older browsers, command-line clients); ``null`` is what sandboxed frames,
    ``data:`` pages and pages under a ``no-referrer`` policy send, so it proves nothing.
    """
    origin = headers.get("origin")
    if origin is not None and origin != "null" and not same_origin(origin, base_url):
        return False
    site = headers.get("sec-fetch-site")
    if site is not None:
        return site == "same-origin"
    return origin != "null"
