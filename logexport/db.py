"""The only module that knows asyncpg's set-up: pools, named queries, migrations.

SQL lives in ``sql/``: ``sql/migrations/NNNN_name.sql`` applied in order, and
``sql/queries/*.sql`` holding blocks that start with ``-- name: some_query``.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import asyncpg

_PACKAGE_DIR = Path(__file__).resolve().parent


def sql_dir() -> Path:
    """``sql/`` beside the package in a checkout, or bundled inside it in a wheel."""
    for candidate in (_PACKAGE_DIR.parent / "sql", _PACKAGE_DIR / "_sql"):
        if (candidate / "migrations").is_dir():
            return candidate
    raise RuntimeError("logexport's sql/ directory is missing from this installation")


_NAME = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


def parse_queries(text: str) -> dict[str, str]:
    """Split a file of ``-- name: x`` blocks into ``{"x": "SELECT …"}``."""
    queries: dict[str, str] = {}
    matches = list(_NAME.finditer(text))
    for match, following in zip(matches, [*matches[1:], None]):
        end = following.start() if following else len(text)
        body = text[match.end() : end].strip()
        if match.group(1) in queries:
            raise ValueError(f"query {match.group(1)!r} is defined twice")
        queries[match.group(1)] = body
    return queries


@functools.cache
def queries() -> dict[str, str]:
    """Every named query of ``sql/queries/*.sql``."""
    merged: dict[str, str] = {}
    for path in sorted((sql_dir() / "queries").glob("*.sql")):
        for name, body in parse_queries(path.read_text()).items():
            if name in merged:
                raise ValueError(f"query {name!r} is defined twice ({path.name})")
            merged[name] = body
    return merged


def q(name: str) -> str:
    """The SQL text of a named query."""
    return queries()[name]


def _encode_json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


async def init_connection(conn: asyncpg.Connection) -> None:
    """Session settings every logexport connection relies on."""
    await conn.execute("SET TIME ZONE 'UTC'")
    for type_name in ("json", "jsonb"):
        await conn.set_type_codec(
            type_name, encoder=_encode_json, decoder=json.loads, schema="pg_catalog"
        )


async def connect(dsn: str, *, keepalive: bool = False) -> asyncpg.Connection:
    """A connection of its own, outside any pool, with logexport's session settings.

    ``keepalive`` is for a long-lived connection whose session state matters (a ``LISTEN``,
    a session advisory lock): the server then notices a vanished peer within about 25 s
    instead of the system's default hours, and ends the session with what it holds.
    """
    conn = await asyncpg.connect(dsn)
    try:
        await init_connection(conn)
        if keepalive:
            await conn.fetchval(q("keep_connection_alive"))
    except BaseException:
        conn.terminate()
        raise
    return conn


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        dsn, min_size=min_size, max_size=max_size, init=init_connection
    )
    assert pool is not None
    return pool


# ---------------------------------------------------------------------------- migrations

_MIGRATION_LOCK = 0x6C6F6765  # "loge": one advisory lock id for every logexport instance
_MIGRATION_FILE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


def migration_files() -> list[tuple[str, Path]]:
    found = []
    for path in sorted((sql_dir() / "migrations").glob("*.sql")):
        if not _MIGRATION_FILE.match(path.name):
            raise RuntimeError(f"migration file name {path.name!r} is not NNNN_name.sql")
        found.append((path.stem, path))
    return found


async def _ensure_migrations_table(conn: asyncpg.Connection) -> None:
    await conn.execute(
        """
        CREATE TABLE IF NOT EXISTS logexport_migrations (
            version     text PRIMARY KEY,
            applied_at  timestamptz NOT NULL DEFAULT now()
        )
        """
    )


async def migrate(dsn: str) -> list[str]:
    """Apply pending migrations in order, each once, under an advisory lock.

    Returns the versions applied by this call (empty when already up to date).
    """
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
        try:
            await _ensure_migrations_table(conn)
            applied = {
                r["version"] for r in await conn.fetch("SELECT version FROM logexport_migrations")
            }
            done = []
            for version, path in migration_files():
                if version in applied:
                    continue
                async with conn.transaction():
                    await conn.execute(path.read_text())
                    await conn.execute(
                        "INSERT INTO logexport_migrations (version) VALUES ($1)", version
                    )
                done.append(version)
            return done
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
    finally:
        await conn.close()


async def pending_migrations(conn: asyncpg.Connection) -> list[str]:
    """Migrations this version knows that the database lacks (newer ones are allowed)."""
    exists = await conn.fetchval("SELECT to_regclass('logexport_migrations') IS NOT NULL")
    applied: set[str] = set()
    if exists:
        applied = {
            r["version"] for r in await conn.fetch("SELECT version FROM logexport_migrations")
        }
    return [version for version, _ in migration_files() if version not in applied]
