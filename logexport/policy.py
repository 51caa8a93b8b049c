"""Who may do what: one role → actions table and one ``authorize`` for every surface."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Protocol
from uuid import UUID

import asyncpg

from logexport.actions import Action, Role
from logexport.db import q
from logexport.errors import Forbidden
from logexport.kinds import LOG_KINDS

# ``Role`` and ``Action`` are defined in ``logexport.actions`` and offered here with the
# rules that use them.
__all__ = [
    "NO_ACCESS_MESSAGE",
    "ROLE_ACTIONS",
    "Action",
    "Caller",
    "Role",
    "allows",
    "authorize",
    "permissions",
    "role_of",
]


class Caller(Protocol):
    """Whoever asks: policy needs only their user id (``identity.Principal`` is one)."""

    @property
    def user_id(self) -> UUID: ...


ROLE_ACTIONS: Mapping[Role, frozenset[Action]] = MappingProxyType(
    {
        Role.OWNER: frozenset(Action),
        # Streams send the organization's logs outside: only owners point them somewhere.
        Role.ADMIN: frozenset(Action) - {Action.LOG_STREAM_MANAGE},
        # A viewer may read every log, and export none.
        Role.VIEWER: frozenset(row.list_action for row in LOG_KINDS.values()),
    }
)

# One message for "no such organization" and "not a member": telling them apart would let
# anyone probe which organization ids exist.
NO_ACCESS_MESSAGE = "You do not have access to this organization"


def allows(role: Role | None, action: Action) -> bool:
    return role is not None and action in ROLE_ACTIONS[role]


async def role_of(conn: asyncpg.Connection, organization_id: UUID, user_id: UUID) -> Role | None:
    value = await conn.fetchval(q("membership_role"), organization_id, user_id)
    return None if value is None else Role(value)


async def authorize(
    conn: asyncpg.Connection, principal: Caller, organization_id: UUID, action: Action
) -> Role:
    """The principal's role in the organization, if it grants ``action``; else ``Forbidden``."""
    role = await role_of(conn, organization_id, principal.user_id)
    if role is None:
        raise Forbidden(NO_ACCESS_MESSAGE)
    if not allows(role, action):
        raise Forbidden(f"Your role ({role}) does not include the permission {action}")
    return role


async def permissions(
    conn: asyncpg.Connection, principal: Caller, organization_id: UUID
) -> frozenset[Action]:
    """Every action the principal holds in the organization (empty for non-members)."""
    role = await role_of(conn, organization_id, principal.user_id)
    return frozenset() if role is None else ROLE_ACTIONS[role]
