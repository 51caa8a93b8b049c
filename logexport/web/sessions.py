"""Console sessions: an API key exchanged for a server-side session named by a signed cookie.

Signing in stores a session row (``console_sessions``): the user, the API key, creation,
expiry (12 hours) and revocation times. The cookie carries only the session's random id,
signed with ``LOGEXPORT_SECRET_KEY``; the table keeps the id's SHA-256, never the id. Every
use looks the row up again: a session ends when it is signed out (revoked), when the user
signs out everywhere (all their rows revoked), when it expires, and when its key is revoked
or expires. A copy of the cookie stops working at the same moment as the original.

Writes are protected by double submit: the page receives the session's CSRF token in a
``<meta>`` tag and echoes it in ``X-CSRF-Token`` (or a ``csrf_token`` form field); it must
equal the token derived from the session id in the signed cookie (an HMAC under the secret
key), which a cross-site page can neither read nor forge.

Expired and revoked rows open nothing; ``purge_sessions`` deletes them once they are old.

App state used: ``settings`` and ``pool``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from uuid import UUID

import asyncpg
from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from logexport.config import Settings
from logexport.db import q
from logexport.identity import Principal

COOKIE_NAME = "logexport_session"
CSRF_HEADER = "X-CSRF-Token"
SESSION_LIFETIME = timedelta(hours=12)
SESSION_MAX_AGE = int(SESSION_LIFETIME.total_seconds())  # seconds, for the cookie
# A distinct salt keeps these signatures from being valid for any other use of the key;
# v2 cookies name a server-side session (v1 cookies held the key id and stop working).
_SALT = "logexport.console.session.v2"
_CSRF_CONTEXT = b"logexport.console.csrf.v1:"
_ID_BYTES = 32
_STATE_SESSION = "console_session"
_STATE_PRINCIPAL = "console_principal"
_UNSET = object()


@dataclass(frozen=True)
class Session:
    """A session as its cookie names it; whether it is still live is up to the database."""

    id: str
    csrf_token: str


def _serializer(settings: Settings) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(settings.require("secret_key"), salt=_SALT)


def _secure(settings: Settings) -> bool:
    return (settings.base_url or "").lower().startswith("https://")


def _id_hash(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode()).digest()


def _csrf_token(settings: Settings, session_id: str) -> str:
    key = settings.require("secret_key").encode()
    mac = hmac.digest(key, _CSRF_CONTEXT + session_id.encode(), "sha256")
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def _session(settings: Settings, session_id: str) -> Session:
    return Session(session_id, _csrf_token(settings, session_id))


# ---------------------------------------------------------------------------- the rows


async def start_session(
    conn: asyncpg.Connection, settings: Settings, principal: Principal
) -> Session:
    """A new session for ``principal``, who signed in with an API key."""
    if principal.api_key_id is None:
        raise ValueError("a console session needs an API key")
    session_id = secrets.token_urlsafe(_ID_BYTES)
    await conn.execute(
        q("create_console_session"),
        _id_hash(session_id),
        principal.user_id,
        principal.api_key_id,
        SESSION_LIFETIME,
    )
    return _session(settings, session_id)


async def session_principal(conn: asyncpg.Connection, session: Session) -> Principal | None:
    """Who a live session acts for; ``None`` once it or its key is revoked or expired."""
    row = await conn.fetchrow(q("console_session_principal"), _id_hash(session.id))
    if row is None:
        return None
    return Principal(row["user_id"], row["email"], row["full_name"], row["api_key_id"])


async def end_session(conn: asyncpg.Connection, session: Session) -> None:
    """Sign out: the session (and every copy of its cookie) stops working."""
    await conn.execute(q("revoke_console_session"), _id_hash(session.id))


async def end_user_sessions(conn: asyncpg.Connection, user_id: UUID) -> int:
    """Sign a user out everywhere; returns how many live sessions were ended."""
    ended: int = await conn.fetchval(q("revoke_user_console_sessions"), user_id)
    return ended


async def purge_sessions(conn: asyncpg.Connection, older_than: timedelta) -> int:
    """Delete rows expired or revoked more than ``older_than`` ago; returns how many."""
    purged: int = await conn.fetchval(q("purge_console_sessions"), older_than)
    return purged


# ---------------------------------------------------------------------------- the cookie


def encode_session(settings: Settings, session: Session) -> str:
    value = _serializer(settings).dumps({"s": session.id})
    assert isinstance(value, str)
    return value


def decode_session(settings: Settings, value: str) -> Session | None:
    """The session a cookie names; ``None`` when tampered with, malformed or too old."""
    try:
        payload: object = _serializer(settings).loads(value, max_age=SESSION_MAX_AGE)
    except (BadSignature, TypeError, ValueError):
        return None
    session_id = payload.get("s") if isinstance(payload, dict) else None
    if not isinstance(session_id, str) or not session_id:
        return None
    return _session(settings, session_id)


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


# ---------------------------------------------------------------------------- requests


def read_session(conn: HTTPConnection) -> Session | None:
    """The session the request's cookie names, without asking the database if it is live."""
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

    Checked on every request: the session must be neither revoked nor expired, and its key
    must still be active and still belong to the user.
    """
    cached = getattr(request.state, _STATE_PRINCIPAL, _UNSET)
    if cached is not _UNSET:
        assert cached is None or isinstance(cached, Principal)
        return cached
    session = read_session(request)
    principal = None
    if session is not None:
        async with request.app.state.pool.acquire() as conn:
            principal = await session_principal(conn, session)
    setattr(request.state, _STATE_PRINCIPAL, principal)
    return principal


def check_csrf(request: Request, form_token: str | None = None) -> bool:
    """Whether the request echoes its session's CSRF token.

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
