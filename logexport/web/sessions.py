"""Console sessions: an API key exchanged for a signed cookie (SPEC §9 "Console").

The cookie holds the API key id, the user id and a CSRF secret, signed (not encrypted) with
``LOGEXPORT_SECRET_KEY`` and valid for at most 12 hours. It names the key rather than the
user so that every use can re-check the key: revoking or expiring the key ends the session.

Writes are protected by double submit: the page receives the CSRF secret in a ``<meta>``
tag and echoes it in ``X-CSRF-Token`` (or a ``csrf_token`` form field); it must equal the
secret inside the signed cookie, which a cross-site page can neither read nor forge.

App state used: ``settings`` and ``pool``.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from logexport import identity
from logexport.config import Settings
from logexport.identity import Principal

COOKIE_NAME = "logexport_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FORM_FIELD = "csrf_token"
SESSION_MAX_AGE = 12 * 3600  # seconds
# A distinct salt keeps these signatures from being valid for any other use of the key.
_SALT = "logexport.console.session.v1"
_STATE_SESSION = "console_session"
_STATE_PRINCIPAL = "console_principal"
_UNSET = object()


@dataclass(frozen=True)
class Session:
    api_key_id: UUID
    user_id: UUID
    csrf_token: str


def _serializer(settings: Settings) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(settings.secret_key, salt=_SALT)


def _secure(settings: Settings) -> bool:
    return str(settings.base_url).lower().startswith("https://")


def new_session(principal: Principal) -> Session:
    if principal.api_key_id is None:
        raise ValueError("a console session needs an API key")
    return Session(principal.api_key_id, principal.user_id, secrets.token_urlsafe(32))


def encode_session(settings: Settings, session: Session) -> str:
    payload = {"k": str(session.api_key_id), "u": str(session.user_id), "c": session.csrf_token}
    value = _serializer(settings).dumps(payload)
    assert isinstance(value, str)
    return value


def decode_session(settings: Settings, value: str) -> Session | None:
    """The session in a cookie value; ``None`` when tampered with, malformed or too old."""
    try:
        payload: Any = _serializer(settings).loads(value, max_age=SESSION_MAX_AGE)
        return Session(UUID(payload["k"]), UUID(payload["u"]), str(payload["c"]))
    except (BadSignature, KeyError, TypeError, ValueError):
        return None


def set_session_cookie(response: Response, settings: Settings, session: Session) -> None:
    response.set_cookie(
        COOKIE_NAME,
        encode_session(settings, session),
        max_age=SESSION_MAX_AGE,
        path="/",
        secure=_secure(settings),
        httponly=True,
        samesite="strict",
    )


def clear_session_cookie(response: Response, settings: Settings) -> None:
    response.delete_cookie(
        COOKIE_NAME, path="/", secure=_secure(settings), httponly=True, samesite="strict"
    )


def read_session(conn: HTTPConnection) -> Session | None:
    """The signed session in the request's cookie, without checking the key in the database."""
    cached = getattr(conn.state, _STATE_SESSION, _UNSET)
    if cached is not _UNSET:
        assert cached is None or isinstance(cached, Session)
        return cached
    value = conn.cookies.get(COOKIE_NAME)
    session = None if not value else decode_session(conn.app.state.settings, value)
    setattr(conn.state, _STATE_SESSION, session)
    return session


async def principal_from_session(request: Request) -> Principal | None:
    """The principal of a live console session, or ``None``.

    Checked on every use: the key must still be active and still belong to the user.
    """
    cached = getattr(request.state, _STATE_PRINCIPAL, _UNSET)
    if cached is not _UNSET:
        assert cached is None or isinstance(cached, Principal)
        return cached
    principal = await _load_principal(request)
    setattr(request.state, _STATE_PRINCIPAL, principal)
    return principal


async def _load_principal(request: Request) -> Principal | None:
    session = read_session(request)
    if session is None:
        return None
    async with request.app.state.pool.acquire() as conn:
        key = await identity.get_api_key(conn, session.api_key_id)
        if key is None or not key.is_active() or key.user_id != session.user_id:
            return None
        user = await identity.get_user(conn, session.user_id)
    if user is None:
        return None
    return user.as_principal(api_key_id=key.id)


def check_csrf(request: Request, form_token: str | None = None) -> bool:
    """Whether the request echoes its session's CSRF secret.

    The ``X-CSRF-Token`` header is used for ``fetch()`` calls; HTML forms pass the value of
    their ``csrf_token`` field as ``form_token`` (the form body must be read asynchronously).
    """
    session = read_session(request)
    if session is None:
        return False
    supplied = request.headers.get(CSRF_HEADER) or form_token
    if not supplied:
        return False
    return hmac.compare_digest(supplied.encode(), session.csrf_token.encode())
