"""A small organization with people in each role, for engine and surface tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from uuid import UUID

import asyncpg

from logexport import identity
from logexport.identity import Principal
from logexport.policy import Role

T = TypeVar("T")


@dataclass
class Person:
    principal: Principal
    token: str

    @property
    def user_id(self) -> UUID:
        return self.principal.user_id


@dataclass
class World:
    organization_id: UUID
    other_organization_id: UUID
    owner: Person
    admin: Person
    viewer: Person
    outsider: Person


async def _person(conn: asyncpg.Connection, email: str, name: str) -> Person:
    user = await identity.create_user(conn, email, name)
    key, token = await identity.create_api_key(conn, user.id, "tests", None)
    return Person(principal=user.as_principal(key.id), token=token)


async def build_world(pool: asyncpg.Pool) -> World:
    async with pool.acquire() as conn:
        org = await identity.create_organization(conn, "Acme Corp")
        other = await identity.create_organization(conn, "Globex")
        owner = await _person(conn, "olivia.owner@acme.test", "Olivia Owner")
        admin = await _person(conn, "adam.admin@acme.test", "Adam Admin")
        viewer = await _person(conn, "vera.viewer@acme.test", "Vera Viewer")
        outsider = await _person(conn, "oscar.outsider@globex.test", "Oscar Outsider")
        await identity.add_member(conn, org.id, owner.user_id, Role.OWNER)
        await identity.add_member(conn, org.id, admin.user_id, Role.ADMIN)
        await identity.add_member(conn, org.id, viewer.user_id, Role.VIEWER)
        await identity.add_member(conn, other.id, outsider.user_id, Role.OWNER)
    return World(org.id, other.id, owner, admin, viewer, outsider)


async def eventually(
    probe: Callable[[], Awaitable[T | None]],
    *,
    timeout: float = 20.0,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    """Poll ``probe`` until it returns something truthy, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


async def export_status(pool: asyncpg.Pool, export_id: UUID) -> dict[str, Any]:
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT * FROM log_exports WHERE id = $1", export_id)
    assert row is not None
    return dict(row)


async def wait_for_status(
    pool: asyncpg.Pool, export_id: UUID, *statuses: str, timeout: float = 30.0
) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        row = await export_status(pool, export_id)
        return row if row["status"] in statuses else None

    return await eventually(probe, timeout=timeout, what=f"export status in {statuses}")
