"""Organizations, users, memberships and API keys.

API tokens are ``lex_`` followed by 32 random bytes in base64url. Only their SHA-256 is
stored, so a database leak does not leak usable tokens; the token is shown once.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

import asyncpg

from logexport.db import q
from logexport.errors import BadUserInput, NotFound
from logexport.policy import Role
from logexport.timeutil import utc_now
from logexport.tokens import hash_token

TOKEN_PREFIX = "lex_"  # noqa: S105 - a public prefix, not a secret
_TOKEN_BYTES = 32
# base64url of 32 bytes without padding is exactly 43 characters.
_TOKEN_SHAPE = re.compile(r"^lex_[A-Za-z0-9_-]{43}$")
# Authenticated requests refresh last_used_at at most this often: a busy key must not turn
# every read into a write.
LAST_USED_RESOLUTION = timedelta(minutes=1)

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


@dataclass(frozen=True)
class Principal:
    """The authenticated caller every service function acts for."""

    user_id: UUID
    email: str
    full_name: str
    api_key_id: UUID | None


@dataclass(frozen=True)
class Organization:
    id: UUID
    name: str
    created_at: datetime


@dataclass(frozen=True)
class User:
    id: UUID
    email: str
    full_name: str
    created_at: datetime

    def as_principal(self, api_key_id: UUID | None = None) -> Principal:
        return Principal(self.id, self.email, self.full_name, api_key_id)


@dataclass(frozen=True)
class Membership:
    organization_id: UUID
    user_id: UUID
    role: Role
    created_at: datetime


@dataclass(frozen=True)
class ApiKey:
    id: UUID
    user_id: UUID
    name: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    def is_active(self, now: datetime | None = None) -> bool:
        moment = now or utc_now()
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > moment)


def _membership(row: asyncpg.Record) -> Membership:
    return Membership(row["organization_id"], row["user_id"], Role(row["role"]), row["created_at"])


# ---------------------------------------------------------------------------- validation


def validate_email(email: str) -> str:
    """A plausible address: one ``@``, no whitespace or control characters, 3..320 chars."""
    if not isinstance(email, str):
        raise BadUserInput("email must be text", field="email")
    email = email.strip()
    local, at, domain = email.partition("@")
    if (
        not 3 <= len(email) <= 320
        or not at
        or not local
        or not domain
        or "@" in domain
        or _CONTROL.search(email)
        or any(c.isspace() for c in email)
    ):
        raise BadUserInput("email is not a valid email address", field="email")
    return email


def validate_name(value: str, field: str, *, allow_empty: bool = False) -> str:
    """Names are shown in emails, pages and CSV files: 1..200 chars, no control chars."""
    if not isinstance(value, str):
        raise BadUserInput(f"{field} must be text", field=field)
    value = value.strip()
    if not value and not allow_empty:
        raise BadUserInput(f"{field} must not be empty", field=field)
    if len(value) > 200:
        raise BadUserInput(f"{field} must be at most 200 characters", field=field)
    if _CONTROL.search(value):
        raise BadUserInput(f"{field} must not contain control characters", field=field)
    return value


def _role(role: Role | str) -> Role:
    try:
        return Role(role.upper() if isinstance(role, str) else role)
    except ValueError:
        raise BadUserInput(
            f"role must be one of {', '.join(r.value for r in Role)}", field="role"
        ) from None


# ---------------------------------------------------------------------------- organizations


async def create_organization(conn: asyncpg.Connection, name: str) -> Organization:
    row = await conn.fetchrow(q("create_organization"), validate_name(name, "name"))
    return Organization(**dict(row))


async def get_organization(conn: asyncpg.Connection, organization_id: UUID) -> Organization | None:
    row = await conn.fetchrow(q("get_organization"), organization_id)
    return None if row is None else Organization(**dict(row))


async def list_organizations_for(conn: asyncpg.Connection, user_id: UUID) -> list[Organization]:
    """The organizations the user belongs to, by name (for ``Query.viewer``)."""
    rows = await conn.fetch(q("list_organizations_for_user"), user_id)
    return [Organization(**dict(r)) for r in rows]


# ---------------------------------------------------------------------------- users


async def create_user(conn: asyncpg.Connection, email: str, full_name: str) -> User:
    row = await conn.fetchrow(
        q("create_user"),
        validate_email(email),
        validate_name(full_name, "name", allow_empty=True),
    )
    if row is None:
        raise BadUserInput("a user with this email already exists", field="email")
    return User(**dict(row))


async def get_user(conn: asyncpg.Connection, user_id: UUID) -> User | None:
    row = await conn.fetchrow(q("get_user"), user_id)
    return None if row is None else User(**dict(row))


async def get_user_by_email(conn: asyncpg.Connection, email: str) -> User | None:
    """Emails match case-insensitively, as the unique index does."""
    row = await conn.fetchrow(q("get_user_by_email"), email.strip())
    return None if row is None else User(**dict(row))


# ---------------------------------------------------------------------------- memberships


async def add_member(
    conn: asyncpg.Connection, organization_id: UUID, user_id: UUID, role: Role | str
) -> Membership:
    checked = _role(role)
    if await get_organization(conn, organization_id) is None:
        raise NotFound("organization not found")
    if await get_user(conn, user_id) is None:
        raise NotFound("user not found")
    row = await conn.fetchrow(q("add_member"), organization_id, user_id, checked.value)
    if row is None:
        raise BadUserInput("the user is already a member of this organization", field="email")
    return _membership(row)


async def set_role(
    conn: asyncpg.Connection, organization_id: UUID, user_id: UUID, role: Role | str
) -> Membership:
    """Change a member's role; demoting the organization's last OWNER is refused."""
    checked = _role(role)
    async with conn.transaction():
        previous = await _lock_membership(conn, organization_id, user_id)
        if previous is Role.OWNER and checked is not Role.OWNER:
            await _keep_an_owner(conn, organization_id, user_id, "demote")
        row = await conn.fetchrow(q("set_member_role"), organization_id, user_id, checked.value)
    return _membership(row)


async def remove_member(
    conn: asyncpg.Connection, organization_id: UUID, user_id: UUID
) -> Membership:
    """Remove a member; removing the organization's last OWNER is refused."""
    async with conn.transaction():
        previous = await _lock_membership(conn, organization_id, user_id)
        if previous is Role.OWNER:
            await _keep_an_owner(conn, organization_id, user_id, "remove")
        row = await conn.fetchrow(q("remove_member"), organization_id, user_id)
    return _membership(row)


async def _lock_membership(conn: asyncpg.Connection, organization_id: UUID, user_id: UUID) -> Role:
    """The member's role, read under the organization's lock (held until the transaction ends).

    Without the lock, two owners demoting each other at once would each see the other still
    OWNER and both succeed, leaving none.
    """
    await conn.fetchval(q("lock_organization"), organization_id)
    role = await conn.fetchval(q("membership_role"), organization_id, user_id)
    if role is None:
        raise NotFound("the user is not a member of this organization")
    return Role(role)


async def _keep_an_owner(
    conn: asyncpg.Connection, organization_id: UUID, user_id: UUID, verb: str
) -> None:
    if await conn.fetchval(q("count_other_owners"), organization_id, user_id) == 0:
        raise BadUserInput(
            f"cannot {verb} the organization's last OWNER: "
            "give another member the OWNER role first",
            field="role" if verb == "demote" else None,
        )


# ---------------------------------------------------------------------------- API keys


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(_TOKEN_BYTES)


async def create_api_key(
    conn: asyncpg.Connection, user_id: UUID, name: str, expires_in: timedelta | None = None
) -> tuple[ApiKey, str]:
    """A new key and its token. The token exists only in this return value."""
    if expires_in is not None and expires_in <= timedelta(0):
        raise BadUserInput("expires_in must be positive", field="expires_in")
    if await get_user(conn, user_id) is None:
        raise NotFound("user not found")
    token = new_token()
    row = await conn.fetchrow(
        q("create_api_key"), user_id, validate_name(name, "name"), hash_token(token), expires_in
    )
    return ApiKey(**dict(row)), token


async def authenticate(conn: asyncpg.Connection, token: str) -> Principal | None:
    """The principal a bearer token stands for; ``None`` when it is not a live key."""
    if not isinstance(token, str) or not _TOKEN_SHAPE.match(token):
        return None
    row = await conn.fetchrow(q("authenticate_api_key"), hash_token(token))
    if row is None:
        return None
    last_used = row["last_used_at"]
    if last_used is None or utc_now() - last_used >= LAST_USED_RESOLUTION:
        await conn.execute(q("touch_api_key"), row["api_key_id"])
    return Principal(row["user_id"], row["email"], row["full_name"], row["api_key_id"])


async def api_key_is_active(conn: asyncpg.Connection, api_key_id: UUID) -> bool:
    """Neither revoked nor expired (console sessions end with their key)."""
    return bool(await conn.fetchval(q("api_key_is_active"), api_key_id))


async def get_api_key(conn: asyncpg.Connection, api_key_id: UUID) -> ApiKey | None:
    row = await conn.fetchrow(q("get_api_key"), api_key_id)
    return None if row is None else ApiKey(**dict(row))


async def revoke_api_key(conn: asyncpg.Connection, api_key_id: UUID) -> ApiKey:
    """Revoke a key; revoking a revoked key keeps its first revocation time."""
    row = await conn.fetchrow(q("revoke_api_key"), api_key_id)
    if row is None:
        raise NotFound("API key not found")
    return ApiKey(**dict(row))


async def list_api_keys(conn: asyncpg.Connection, user_id: UUID) -> list[ApiKey]:
    return [ApiKey(**dict(r)) for r in await conn.fetch(q("list_api_keys"), user_id)]
