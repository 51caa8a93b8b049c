"""A database migrated part of the way, to test what a later migration does to old data."""

from __future__ import annotations

import asyncpg

from logexport import db


async def migrate_through(dsn: str, last_version: str) -> None:
    """Apply the migrations up to and including ``last_version``, as ``db.migrate`` would."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS logexport_migrations ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for version, path in db.migration_files():
            async with conn.transaction():
                await conn.execute(path.read_text())
                await conn.execute(
                    "INSERT INTO logexport_migrations (version) VALUES ($1)", version
                )
            if version == last_version:
                return
    finally:
        await conn.close()
    raise AssertionError(f"no migration {last_version}")
