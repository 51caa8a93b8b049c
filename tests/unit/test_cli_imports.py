"""``logexport --help`` and a group's help import only what they show, in a fresh interpreter.

Each check runs the installed ``logexport`` script under ``python -X importtime`` and reads
the modules it imported from that report: structural, not a timing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

from logexport.cli import SUBCOMMANDS, load_subcommand

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 60

# The server, the database driver, S3, GraphQL, MCP, HTTP and mail stacks.
HEAVY = frozenset(
    {
        "aioboto3",
        "aiobotocore",
        "aiosmtplib",
        "ariadne",
        "asyncpg",
        "botocore",
        "httpx",
        "jinja2",
        "mcp",
        "starlette",
        "uvicorn",
    }
)


def _command() -> list[str]:
    script = Path(sys.prefix) / "bin" / "logexport"
    if script.is_file():
        return [sys.executable, "-X", "importtime", str(script)]
    return [sys.executable, "-X", "importtime", "-c", "from logexport.cli import main; main()"]


def _environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGEXPORT_")}
    env["COLUMNS"] = "80"
    return env


def imported_by(*args: str) -> tuple[str, set[str]]:
    """``logexport ARGS`` in a fresh interpreter: its stdout and every module it imported."""
    result = subprocess.run(
        [*_command(), *args],
        capture_output=True,
        text=True,
        env=_environment(),
        cwd=REPO,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    modules = set()
    for line in result.stderr.splitlines():
        # "import time:  self [us] | cumulative | name", the name indented by its depth
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name != "package":
                modules.add(name)
    assert "logexport.cli" in modules, result.stderr[-2000:]
    return result.stdout, modules


def _roots(modules: set[str]) -> set[str]:
    return {name.split(".")[0] for name in modules}


def test_root_help_imports_no_command_module_and_no_heavy_dependency():
    output, modules = imported_by("--help")
    assert "Commands:" in output
    assert not _roots(modules) & HEAVY, sorted(_roots(modules) & HEAVY)
    ours = {name for name in modules if name.startswith("logexport.")}
    assert ours <= {"logexport.cli", "logexport.cli.common", "logexport.config", "logexport.errors"}
    # The development servers are not part of the command at all.
    assert "devtools" not in _roots(modules)


@pytest.mark.parametrize(
    ("group", "needed"),
    [
        ("serve", set()),
        ("worker", set()),
        # The client commands need the HTTP client; never the database or the server.
        ("export", {"httpx"}),
        ("audit-log", {"httpx"}),
    ],
)
def test_a_commands_help_imports_only_what_that_command_needs(group: str, needed: set[str]):
    output, modules = imported_by(group, "--help")
    assert f"Usage: logexport {group}" in output
    assert _roots(modules) & HEAVY <= needed, sorted(_roots(modules) & HEAVY - needed)
    assert not {name for name in modules if name.startswith(("logexport.exports", "logexport.web"))}


# What talks to PostgreSQL; a command's help is read before any database is at hand.
DATABASE_DRIVERS = frozenset({"asyncpg", "psycopg", "psycopg2"})


@pytest.mark.parametrize(
    "command",
    [
        ("admin",),
        ("admin", "create-api-key"),
        ("admin", "seed"),
        ("migrate",),
        ("stream",),
        ("stream", "create"),
        ("verify",),
        ("keys",),
        ("keys", "public"),
        ("demo",),
    ],
    ids=" ".join,
)
def test_a_commands_help_imports_no_database_driver(command: tuple[str, ...]):
    output, modules = imported_by(*command, "--help")
    assert f"Usage: logexport {' '.join(command)}" in output
    assert not _roots(modules) & DATABASE_DRIVERS, sorted(_roots(modules) & DATABASE_DRIVERS)
    assert "logexport.db" not in modules


def test_root_help_lists_each_command_as_the_loaded_command_would():
    lazy, _ = imported_by("--help")
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from logexport.cli import SUBCOMMANDS, main; "
            "[main.get_command(None, name) for name in SUBCOMMANDS]; "
            "assert 'logexport.cli.client' in sys.modules; "
            "main(['--help'], prog_name='logexport')",
        ],
        capture_output=True,
        text=True,
        env=_environment(),
        cwd=REPO,
        timeout=TIMEOUT,
        check=False,
    )
    assert loaded.returncode == 0, loaded.stderr
    assert lazy == loaded.stdout


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_each_listed_command_is_named_and_summarized_as_its_module_says(name: str):
    command = load_subcommand(name)
    assert command.name == name
    assert command.help is not None
    # Equal untruncated short help means equal listings at every terminal width.
    listed = click.Command(name, help=SUBCOMMANDS[name].summary)
    assert listed.get_short_help_str(10_000) == command.get_short_help_str(10_000)


def test_demo_outside_a_source_checkout_fails_with_one_line():
    # An installed wheel has no devtools package; None in sys.modules makes it unimportable.
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; sys.modules['devtools'] = None; from logexport.cli import main; "
            "sys.exit(main(['demo', '--no-keep-running'], prog_name='logexport'))",
        ],
        capture_output=True,
        text=True,
        env=_environment(),
        cwd=REPO,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: logexport demo runs from a source checkout")


def test_import_logexport_is_light_and_every_public_name_resolves():
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, logexport; print(' '.join(sorted(sys.modules)))",
        ],
        capture_output=True,
        text=True,
        env=_environment(),
        cwd=REPO,
        timeout=TIMEOUT,
        check=True,
    )
    loaded = set(result.stdout.split())
    assert not _roots(loaded) & HEAVY, sorted(_roots(loaded) & HEAVY)
    assert {name for name in loaded if name.startswith("logexport.")} == set()

    import logexport

    for name in logexport.__all__:
        assert getattr(logexport, name) is not None, name
    assert logexport.Worker.__name__ == "Worker"
    assert logexport.LogExportClient.__name__ == "LogExportClient"
