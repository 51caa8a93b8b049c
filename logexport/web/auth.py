"""Who is calling: a bearer API token, or else a console session cookie.

Cookies ride along on cross-site requests, so a cookie-authenticated write must also echo
the session's CSRF secret. Bearer tokens are never sent automatically and need no such check.
"""

from __future__ import annotations

from starlette.requests import Request

from logexport import identity
from logexport.errors import Forbidden, Unauthenticated
from logexport.identity import Principal
from logexport.web import sessions

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
BAD_TOKEN_MESSAGE = "The API token is missing, malformed, revoked or expired"  # noqa: S105


def bearer_token(request: Request) -> str | None:
    """The token of ``Authorization: Bearer …``; ``""`` for any other Authorization value."""
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return ""
    return token.strip()


async def request_principal(request: Request) -> Principal | None:
    """The caller, or ``None`` when the request carries no credentials at all.

    A presented but unusable token raises ``Unauthenticated`` rather than falling back to
    the cookie: a client that sends a token means that token. A cookie-authenticated
    write without a valid CSRF token raises ``Forbidden``.
    """
    token = bearer_token(request)
    if token is not None:
        async with request.app.state.pool.acquire() as conn:
            principal = await identity.authenticate(conn, token)
        if principal is None:
            raise Unauthenticated(BAD_TOKEN_MESSAGE)
        return principal
    principal = await sessions.principal_from_session(request)
    if principal is None:
        return None
    if request.method not in _SAFE_METHODS and not sessions.check_csrf(request):
        raise Forbidden("The request lacks a valid CSRF token; reload the page and try again")
    return principal


async def require_principal(request: Request) -> Principal:
    principal = await request_principal(request)
    if principal is None:
        raise Unauthenticated("Authentication required: send Authorization: Bearer lex_…")
    return principal
