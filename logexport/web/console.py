"""The console: web pages over the GraphQL API (README.md, "The console").

The server renders page shells (navigation, headings, empty tables, the export dialog);
small ES modules in ``static/console`` fill them through ``fetch('/graphql')`` with the
session cookie and the ``X-CSRF-Token`` header. No inline script or style exists, so the
Content-Security-Policy can forbid both.

Sign-in exchanges an API key for a session cookie (``sessions``). The sign-in form is
protected against login CSRF by a pre-session token (a cookie echoed in a hidden field)
and, when the browser sends one, an ``Origin`` check.

App state used: ``settings`` and ``pool``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import quote
from uuid import UUID

import jinja2
import markupsafe
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from logexport import identity, policy
from logexport.config import Settings
from logexport.errors import NotFound
from logexport.exports import downloads, requests
from logexport.exports.filenames import content_disposition
from logexport.identity import Principal
from logexport.kinds import console_kinds
from logexport.manifests import manifest_name
from logexport.web import sessions
from logexport.web.origins import same_origin

CONSOLE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)
_HEADERS = {
    "Content-Security-Policy": CONSOLE_CSP,
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}
SIGN_IN_COOKIE = "logexport_sign_in"
_SIGN_IN_PATH = "/console/sign-in"
# Only console pages may be the target after sign-in: anything else would be an open redirect.
_SAFE_NEXT = re.compile(r"^/console(/[A-Za-z0-9_-]+)*/?$")
_MAX_KEY_CHARS = 200
# The sign-in and sign-out forms have three small fields and no files; anything larger is
# refused while it is parsed rather than buffered (sign-in needs no authentication).
_FORM_LIMITS: dict[str, Any] = {"max_files": 0, "max_fields": 8, "max_part_size": 4096}
_SIGN_IN_TOKEN = re.compile(r"^[A-Za-z0-9_-]{43}$")

_HERE = Path(__file__).resolve().parent
_STATIC = _HERE / "static" / "console"
_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(_HERE / "templates" / "console"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _asset_version() -> str:
    """A digest of the static files, appended to their URLs so a deploy busts caches."""
    digest = hashlib.sha256()
    for path in sorted(_STATIC.iterdir()):
        if path.is_file():
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


_env.globals["asset_version"] = _asset_version()


def _breakable(address: str) -> markupsafe.Markup:
    """An e-mail address (escaped) that may wrap only before its ``@`` or after a ``.``,
    never inside a word: its parts are kept whole, as ``breakable`` in api.js does."""
    parts = re.split(r"(?=@)|(?<=\.)", address)
    return markupsafe.Markup("<wbr>").join(
        markupsafe.Markup('<span class="whole">{}</span>').format(part) for part in parts
    )


_env.filters["breakable"] = _breakable

_PAGES = {
    "audit-log": ("Audit Log", "audit_log.html.j2"),
    "scim-events": ("SCIM Events", "scim_events.html.j2"),
    "exports": ("Exports", "exports.html.j2"),
    "streams": ("Streams", "streams.html.j2"),
}


def _render(template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    context.setdefault("organization", None)
    context.setdefault("page", None)
    html = _env.get_template(template).render(**context)
    return HTMLResponse(html, status_code=status_code, headers=_HEADERS)


def _redirect(url: str) -> RedirectResponse:
    # 303 so that a redirect after a POST is followed with a GET.
    return RedirectResponse(url, status_code=303, headers=_HEADERS)


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _secure(settings: Settings) -> bool:
    return settings.require("base_url").lower().startswith("https://")


def _origin_allowed(request: Request) -> bool:
    """A present ``Origin`` must be this service's; browsers omit it on some same-origin posts."""
    origin = request.headers.get("origin")
    return origin is None or same_origin(origin, _settings(request).require("base_url"))


def _safe_next(value: str | None) -> str | None:
    if value and _SAFE_NEXT.match(value) and not value.startswith(_SIGN_IN_PATH):
        return value
    return None


def _sign_in_url(next_path: str | None = None) -> str:
    safe = _safe_next(next_path)
    return _SIGN_IN_PATH if safe is None else f"{_SIGN_IN_PATH}?next={quote(safe, safe='/')}"


def _signed_out(request: Request) -> RedirectResponse:
    """Back to sign-in; a stale cookie (expired or revoked key) is removed on the way."""
    response = _redirect(_sign_in_url(request.url.path))
    if sessions.COOKIE_NAME in request.cookies:
        sessions.clear_session_cookie(response, _settings(request))
    return response


def _user_context(principal: Principal, session: sessions.Session) -> dict[str, Any]:
    return {
        "user": {"email": principal.email, "name": principal.full_name or principal.email},
        "csrf_token": session.csrf_token,
    }


# ---------------------------------------------------------------------------- sign-in


def _sign_in_page(
    request: Request, *, error: str | None = None, status_code: int = 200, next_path: str = ""
) -> HTMLResponse:
    settings = _settings(request)
    # Keep an existing token so that sign-in pages open in several tabs all stay usable.
    token = request.cookies.get(SIGN_IN_COOKIE, "")
    if not _SIGN_IN_TOKEN.match(token):
        token = secrets.token_urlsafe(32)
    response = _render(
        "sign_in.html.j2",
        status_code=status_code,
        title="Sign in",
        error=error,
        form_token=token,
        next_path=_safe_next(next_path) or "",
    )
    response.set_cookie(
        SIGN_IN_COOKIE,
        token,
        max_age=3600,
        path=_SIGN_IN_PATH,
        secure=_secure(settings),
        httponly=True,
        samesite="strict",
    )
    return response


async def sign_in_form(request: Request) -> Response:
    if await sessions.principal_from_session(request) is not None:
        return _redirect(_safe_next(request.query_params.get("next")) or "/console")
    return _sign_in_page(request, next_path=request.query_params.get("next", ""))


async def sign_in(request: Request) -> Response:
    form = await request.form(**_FORM_LIMITS)
    next_path = str(form.get("next") or "")
    expected = request.cookies.get(SIGN_IN_COOKIE, "")
    supplied = str(form.get("csrf_token") or "")
    if (
        not expected
        or not hmac.compare_digest(expected.encode(), supplied.encode())
        or not _origin_allowed(request)
    ):
        return _sign_in_page(
            request,
            error="The sign-in form expired. Please enter your API key again.",
            status_code=403,
            next_path=next_path,
        )
    api_key = str(form.get("api_key") or "").strip()[:_MAX_KEY_CHARS]
    principal = None
    if api_key:
        async with request.app.state.pool.acquire() as conn:
            principal = await identity.authenticate(conn, api_key)
    if principal is None:
        return _sign_in_page(
            request,
            error="That API key is not valid. Check that it is complete, not revoked and "
            "not expired.",
            status_code=401,
            next_path=next_path,
        )
    async with request.app.state.pool.acquire() as conn:
        session = await sessions.start_session(conn, _settings(request), principal)
    response = _redirect(_safe_next(next_path) or "/console")
    sessions.set_session_cookie(response, _settings(request), session)
    response.delete_cookie(SIGN_IN_COOKIE, path=_SIGN_IN_PATH)
    return response


async def sign_out(request: Request) -> Response:
    form = await request.form(**_FORM_LIMITS)
    session = sessions.read_session(request)
    # With no valid session there is nothing to protect; just drop whatever cookie is left.
    if session is not None and not sessions.check_csrf(
        request, form_token=str(form.get("csrf_token") or "")
    ):
        return _render(
            "problem.html.j2",
            status_code=403,
            title="Sign-out not confirmed",
            message="The sign-out request did not come from this console. Reload the page "
            "and try again.",
        )
    if session is not None:
        # Ended on the server, so a copy of the cookie stops working too.
        async with request.app.state.pool.acquire() as conn:
            await sessions.end_session(conn, session)
    response = _redirect(_SIGN_IN_PATH)
    sessions.clear_session_cookie(response, _settings(request))
    return response


async def sign_out_everywhere(request: Request) -> Response:
    """End every console session of the signed-in user, in any browser."""
    form = await request.form(**_FORM_LIMITS)
    principal = await sessions.principal_from_session(request)
    if principal is None:
        response = _redirect(_SIGN_IN_PATH)
        sessions.clear_session_cookie(response, _settings(request))
        return response
    if not sessions.check_csrf(request, form_token=str(form.get("csrf_token") or "")):
        return _render(
            "problem.html.j2",
            status_code=403,
            title="Sign-out not confirmed",
            message="The sign-out request did not come from this console. Reload the page "
            "and try again.",
        )
    async with request.app.state.pool.acquire() as conn:
        await sessions.end_user_sessions(conn, principal.user_id)
    response = _redirect(_SIGN_IN_PATH)
    sessions.clear_session_cookie(response, _settings(request))
    return response


# ---------------------------------------------------------------------------- pages


async def index(request: Request) -> Response:
    principal = await sessions.principal_from_session(request)
    if principal is None:
        return _signed_out(request)
    async with request.app.state.pool.acquire() as conn:
        organizations = await identity.list_organizations_for(conn, principal.user_id)
    if len(organizations) == 1:
        return _redirect(f"/console/orgs/{organizations[0].id}/audit-log")
    return _redirect("/console/orgs")


async def organizations_page(request: Request) -> Response:
    principal = await sessions.principal_from_session(request)
    session = sessions.read_session(request)
    if principal is None or session is None:
        return _signed_out(request)
    async with request.app.state.pool.acquire() as conn:
        organizations = await identity.list_organizations_for(conn, principal.user_id)
    return _render(
        "organizations.html.j2",
        title="Organizations",
        organizations=organizations,
        **_user_context(principal, session),
    )


def _organization_page(page: str) -> Any:
    async def endpoint(request: Request) -> Response:
        return await organization_page(request, page)

    endpoint.__name__ = f"{page.replace('-', '_')}_page"
    return endpoint


async def organization_page(request: Request, page: str) -> Response:
    principal = await sessions.principal_from_session(request)
    session = sessions.read_session(request)
    if principal is None or session is None:
        return _signed_out(request)
    title, template = _PAGES[page]
    organization = None
    held: frozenset[policy.Action] = frozenset()
    try:
        organization_id = UUID(request.path_params["organization_id"])
    except ValueError:
        organization_id = None
    if organization_id is not None:
        async with request.app.state.pool.acquire() as conn:
            # Non-members (who hold nothing) see the same page for an existing and a
            # missing organization.
            held = await policy.permissions(conn, principal, organization_id)
            if held:
                organization = await identity.get_organization(conn, organization_id)
    if organization is None:
        return _render(
            "problem.html.j2",
            status_code=404,
            title="Organization not available",
            message=policy.NO_ACCESS_MESSAGE + ".",
            **_user_context(principal, session),
        )
    return _render(
        template,
        title=title,
        organization=organization,
        page=page,
        # Shown only to those who may cancel; the API checks again on every cancel.
        can_cancel=policy.Action.LOG_EXPORT_CANCEL in held,
        # Streams are listed to every member; only owners see the controls that manage them.
        can_manage_streams=policy.Action.LOG_STREAM_MANAGE in held,
        stream_min_interval=_settings(request).stream_min_interval,
        log_kinds=console_kinds(),
        **_user_context(principal, session),
    )


async def export_manifest(request: Request) -> Response:
    """An export's signed manifest as ``<file name>.manifest.json``, to those who may
    download its file (the Exports page's Manifest button). Reading it changes nothing."""
    principal = await sessions.principal_from_session(request)
    session = sessions.read_session(request)
    if principal is None or session is None:
        return _signed_out(request)
    export = None
    try:
        found = await requests.get_export(
            request.app.state.pool, principal, request.path_params["export_id"]
        )
        async with request.app.state.pool.acquire() as conn:
            if await downloads.may_download(conn, found.organization_id, principal.user_id):
                export = found
    except NotFound:
        pass
    if export is None or export.manifest is None or export.file_name is None:
        return _render(
            "problem.html.j2",
            status_code=404,
            title="No manifest",
            message="There is no signed manifest for this export that you may download.",
            **_user_context(principal, session),
        )
    return Response(
        export.manifest.encode(),
        media_type="application/json",
        headers=_HEADERS
        | {
            "Content-Disposition": content_disposition(manifest_name(export.file_name)),
            "Content-Security-Policy": "sandbox; default-src 'none'",
        },
    )


async def root(_request: Request) -> Response:
    """The service has no page of its own at ``/``: people arriving there want the console."""
    return RedirectResponse("/console", status_code=302, headers=_HEADERS)


def console_routes() -> list[BaseRoute]:
    return [
        Route("/", root, methods=["GET"]),
        Route("/console", index, methods=["GET"]),
        Route("/console/", index, methods=["GET"]),
        Route(_SIGN_IN_PATH, sign_in_form, methods=["GET"]),
        Route(_SIGN_IN_PATH, sign_in, methods=["POST"]),
        Route("/console/sign-out", sign_out, methods=["POST"]),
        Route("/console/sign-out-everywhere", sign_out_everywhere, methods=["POST"]),
        Route("/console/orgs", organizations_page, methods=["GET"]),
        Route("/console/exports/{export_id}/manifest", export_manifest, methods=["GET"]),
        *(
            Route(f"/console/orgs/{{organization_id}}/{page}", _organization_page(page))
            for page in _PAGES
        ),
        Mount("/console/static", app=StaticFiles(directory=_STATIC), name="console-static"),
    ]
