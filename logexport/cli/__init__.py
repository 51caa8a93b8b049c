"""The ``logexport`` command (SPEC §9 CLI).

``main`` is the root click group. Commands live in modules by audience, each exporting a
``COMMANDS`` tuple that is registered at the bottom of this file: ``operator`` (database
and administration), ``client`` (GraphQL client commands) and the process commands.

Exit codes: 0 success, 2 usage or configuration errors, 1 anything else, always with one
line on stderr (a usage error too: the message, then where the command's help is).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, NoReturn, TypeVar

import asyncpg
import click

from logexport.config import ConfigError, Settings
from logexport.errors import LogExportError

T = TypeVar("T")

EXIT_FAILURE = 1
EXIT_USAGE = 2


def fail(message: str, code: int = EXIT_FAILURE) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    raise click.exceptions.Exit(code)


def load_settings(*needs: str) -> Settings:
    """Settings from the environment; a missing or malformed one ends the command (exit 2)."""
    try:
        return Settings.from_env(needs=needs)
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; domain and database errors become one line and exit 1."""
    try:
        return asyncio.run(coroutine)
    except LogExportError as exc:
        fail(exc.message)
    except asyncpg.ClientConfigurationError as exc:
        # Settings only the driver checks (a missing sslrootcert file, say); its messages
        # name files and parameters, never the password.
        fail(f"the database settings were refused: {str(exc).splitlines()[0]}", EXIT_USAGE)
    except asyncpg.PostgresError as exc:
        # Server messages name objects, never connection secrets.
        fail(f"database error: {exc}")
    except OSError as exc:
        fail(f"cannot reach the database ({exc.strerror or type(exc).__name__})")


def usage_line(error: click.UsageError) -> str:
    """A usage error as one line: click's message and the command whose help explains it."""
    message = error.format_message().strip().replace("\n", " ").rstrip(".")
    command = error.ctx.command_path if error.ctx is not None else "logexport"
    return f"{message} (see '{command} --help')"


class _Root(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        # Subcommands parse their arguments inside this call, so their usage errors land
        # here; click would print them as three lines of usage, hint and message.
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            fail(usage_line(exc), EXIT_USAGE)
        except LogExportError as exc:
            fail(exc.message)


@click.group(cls=_Root, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="logexport", message="%(prog)s %(version)s")
def main() -> None:
    """Asynchronous exports of audit logs and SCIM provisioning events."""


# Registration: every command module defines ``COMMANDS``; add new modules to this list.
# Imported here, after ``main`` and the helpers above exist, because the command modules
# import those helpers from this package.
from logexport.cli import client, demo, operator, server  # noqa: E402

COMMAND_MODULES = (operator, client, server, demo)

for _module in COMMAND_MODULES:
    for _command in _module.COMMANDS:
        main.add_command(_command)
