"""The ``logexport`` command.

``main`` is the root click group. Commands live in modules by audience: ``operator``
(database and administration), ``client`` (GraphQL client commands), ``server`` (the
processes) and ``demo``. ``SUBCOMMANDS`` names where each one is and the summary
``logexport --help`` lists, so a module is imported only when one of its commands runs or
shows its own help: the help of the root stays fast and needs neither the server nor the
database driver. Shared helpers live in ``logexport.cli.common``.

Exit codes: 0 success, 2 usage or configuration errors, 1 anything else, always with one
line on stderr (a usage error too: the message, then where the command's help is).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

import click

from logexport.cli.common import EXIT_USAGE, fail
from logexport.errors import LogExportError


@dataclass(frozen=True)
class Subcommand:
    """A command of the root: ``module:attribute`` of its click object, and its summary.

    The summary is the first paragraph of the command's docstring (a test keeps them equal).
    """

    target: str
    summary: str


# Add a new command here, with its module and the first paragraph of its docstring.
SUBCOMMANDS: dict[str, Subcommand] = {
    "migrate": Subcommand(
        "logexport.cli.operator:migrate",
        "Apply pending database migrations (safe to run concurrently).",
    ),
    "admin": Subcommand(
        "logexport.cli.operator:admin",
        "Manage organizations, users, memberships and API keys; load synthetic data.",
    ),
    "whoami": Subcommand(
        "logexport.cli.client:whoami",
        "The user the token belongs to, and each organization's id, name and role.",
    ),
    "audit-log": Subcommand(
        "logexport.cli.client:audit_log",
        "Browse and export an organization's audit log.",
    ),
    "scim-event": Subcommand(
        "logexport.cli.client:scim_event",
        "Browse and export an organization's SCIM provisioning events.",
    ),
    "export": Subcommand(
        "logexport.cli.client:export_group",
        "Show, list, cancel and download exports.",
    ),
    "stream": Subcommand(
        "logexport.cli.streams:stream_group",
        "Create and manage log streams: continuous delivery to an HTTPS endpoint or S3 bucket.",
    ),
    "login": Subcommand(
        "logexport.cli.client:login",
        "Check an API token and save it with the API URL for the client commands.",
    ),
    "mcp": Subcommand(
        "logexport.cli.client:mcp_command",
        "Serve the MCP tools over stdio, as a client of LOGEXPORT_API_URL.",
    ),
    "serve": Subcommand(
        "logexport.cli.server:serve",
        "Serve the GraphQL API, console, MCP endpoint and download links.",
    ),
    "worker": Subcommand(
        "logexport.cli.server:worker",
        "Process exports until SIGTERM or SIGINT, then finish or hand back running ones.",
    ),
    "verify": Subcommand(
        "logexport.cli.verify:verify",
        "Check an exported file, or a chain of manifests, against the signed manifests, offline.",
    ),
    "keys": Subcommand(
        "logexport.cli.keys:keys_group",
        "Make a manifest signing key; print the public keys that verify manifests.",
    ),
    "demo": Subcommand(
        "logexport.cli.demo:demo",
        "Run an audit log export end to end against local servers: request, email, download.",
    ),
}


def load_subcommand(name: str) -> click.Command:
    """Import the module of one of ``SUBCOMMANDS`` and return its click command."""
    module, _, attribute = SUBCOMMANDS[name].target.partition(":")
    command = getattr(importlib.import_module(module), attribute)
    if not isinstance(command, click.Command):
        raise TypeError(f"{SUBCOMMANDS[name].target} is not a click command")
    return command


def usage_line(error: click.UsageError) -> str:
    """A usage error as one line: click's message and the command whose help explains it."""
    message = error.format_message().strip().replace("\n", " ").rstrip(".")
    command = error.ctx.command_path if error.ctx is not None else "logexport"
    return f"{message} (see '{command} --help')"


class _Root(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *SUBCOMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in SUBCOMMANDS:
            self.add_command(load_subcommand(cmd_name), cmd_name)
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Lists each command from its summary, as click would from the command itself,
        # without importing modules that were not needed yet.
        listing = {
            name: self.commands.get(name) or click.Command(name, help=SUBCOMMANDS[name].summary)
            for name in self.list_commands(ctx)
        }
        click.Group(commands=listing).format_commands(ctx, formatter)

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
