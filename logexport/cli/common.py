"""What every ``logexport`` command shares: exit codes, one-line errors, settings, running.

Exit codes: 0 success, 2 usage or configuration errors, 1 anything else, always with one
line on stderr.

``logexport --help`` imports this module, so it stays light: the event loop and the
database driver are imported by ``run``, when a command actually does its work.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import NoReturn, TypeVar

import click

from logexport.config import ConfigError, Settings
from logexport.errors import LogExportError

T = TypeVar("T")

EXIT_FAILURE = 1
EXIT_USAGE = 2


def fail(message: str, code: int = EXIT_FAILURE) -> NoReturn:
    """End the command: ``error: message`` on stderr, then exit with ``code``."""
    click.echo(f"error: {message}", err=True)
    raise click.exceptions.Exit(code)


def load_settings(*needs: str) -> Settings:
    """Settings from the environment; a missing or malformed one ends the command (exit 2)."""
    try:
        return Settings.from_env(needs=needs)
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)


def run(coroutine: Coroutine[object, object, T]) -> T:
    """Run a command's coroutine; domain and database errors become one line and exit 1."""
    import asyncio

    import asyncpg

    try:
        return asyncio.run(coroutine)
    except LogExportError as exc:
        fail(exc.message)
    except asyncpg.ClientConfigurationError as exc:
        # Settings only the driver checks (a missing sslrootcert file, say); its messages
        # name files and parameters, never the password.
        fail(f"the database settings were refused: {str(exc).splitlines()[0]}", EXIT_USAGE)
    except asyncpg.UndefinedTableError as exc:
        # The usual cause is a database nobody has migrated yet (or not since an upgrade).
        fail(f"database error: {exc}; the schema is missing or out of date: run logexport migrate")
    except asyncpg.PostgresError as exc:
        # Server messages name objects, never connection secrets.
        fail(f"database error: {exc}")
    except OSError as exc:
        fail(f"cannot reach the database ({exc.strerror or type(exc).__name__})")
