"""Client commands: talk to a logexport API over GraphQL.

``audit-log``, ``scim-event`` and ``export`` act through ``LogExportClient`` with
``LOGEXPORT_API_URL`` and ``LOGEXPORT_TOKEN`` (or what ``logexport login`` saved);
``mcp`` serves the MCP tools over stdio the same way. None of them touches a database.

Exit codes: 0 success, 2 usage or configuration errors, 1 anything else (refused, failed,
canceled, unauthenticated, unreachable, checksum mismatch), 130 when Ctrl-C stops
``--wait`` (the export itself carries on). Errors are one line on stderr and name the
command's own flags (``--to``, ``--org``), never the API's input fields.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import sys
import tempfile
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TypedDict, TypeVar, Unpack, cast

import click

from logexport import shapes, timeutil
from logexport.cli.common import EXIT_USAGE, fail, load_settings
from logexport.cli.progress import ProgressReporter
from logexport.client import ApiError, ApiUnreachable, ChainManifest, LogExportClient
from logexport.errors import BadUserInput
from logexport.kinds import log_kind

T = TypeVar("T")
Decorated = TypeVar("Decorated", bound=Callable[..., None])

# An object in the API's answer as the commands read it: any field may be absent or null.
ApiRecord = Mapping[str, object]

DEFAULT_API_URL = "http://127.0.0.1:8000"
EXIT_INTERRUPTED = 130
REQUEST_ATTEMPTS = 3

# ---------------------------------------------------------------------------- --from / --to


def parse_time_bound(text: str, *, end: bool) -> datetime:
    """A ``--from``/``--to`` value as an aware UTC datetime (``ValueError`` if unreadable).

    A date (``2026-01-31``) is a UTC day: ``--from`` starts at its midnight, ``--to``
    includes the whole day, so it ends at the next midnight (exclusive). Anything else
    must be an RFC 3339 timestamp with an offset and is taken exactly. The library client
    reads its bounds with the same parser.
    """
    option = "--to" if end else "--from"
    try:
        return timeutil.parse_time_bound(text, option, end=end)
    except BadUserInput as exc:
        raise ValueError(exc.message.removeprefix(f"{option}: ")) from None


class TimeBound(click.ParamType[datetime]):
    name = "DATE|TIMESTAMP"

    def __init__(self, *, end: bool) -> None:
        self.end = end

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            return parse_time_bound(str(value), end=self.end)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


# ---------------------------------------------------------------------------- configuration


def config_path() -> Path:
    """Where ``logexport login`` keeps the API URL and token."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "logexport" / "config.json"


def _saved_login() -> dict[str, object]:
    path = config_path()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        fail(f"cannot read {path}; run `logexport login` again", EXIT_USAGE)
    return data if isinstance(data, dict) else {}


def save_login(api_url: str, token: str) -> Path:
    """Write the login file readable by its owner only (0600, in a 0700 directory)."""
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"api_url": api_url, "token": token}, handle)
        handle.write("\n")
    os.replace(temporary, path)
    return path


@dataclass(frozen=True)
class Connection:
    api_url: str
    token: str


def connection() -> Connection:
    """API URL and token: the environment first, then the login file, then the default URL."""
    settings = load_settings()
    saved = _saved_login()
    api_url = (
        settings.api_url
        if os.environ.get("LOGEXPORT_API_URL")
        else str(saved.get("api_url") or DEFAULT_API_URL)
    )
    token = settings.token or saved.get("token")
    if not token:
        fail("LOGEXPORT_TOKEN is not set (or run `logexport login`)", EXIT_USAGE)
    return Connection(api_url, str(token))


# ---------------------------------------------------------------------------- plumbing

# The API's input fields as the flags of the client commands. An error from the API names
# the field it refuses (``toTime``, ``filter.actions``); the user typed a flag, so every
# error is reworded through this one table before it is shown.
FLAGS_FOR_FIELDS: dict[str, str] = {
    "organizationId": "--org",
    "fromTime": "--from",
    "toTime": "--to",
    "format": "--format",
    "compression": "--gzip",
    "csvBom": "--csv-bom",
    "filter.actions": "--action",
    "filter.actorIds": "--actor-id",
    "filter.resourceTypes": "--resource-type",
    "filter.methods": "--method",
    "filter.userName": "--user-name",
    "filter.statusCodes": "--status-code",
    "idempotencyKey": "--idempotency-key",
    "first": "--first",
    "after": "--after",
    "id": "ID",
}


def _field_pattern(field: str) -> re.Pattern[str]:
    if re.fullmatch(r"[a-z]+", field):
        # An ordinary word ("id", "first", "format") is a field name only where the
        # message starts with it: "format must be one of …", not "the CSV format only".
        return re.compile(rf"^{re.escape(field)}\b")
    return re.compile(rf"(?<![\w.$-]){re.escape(field)}(?![\w])")


def flag_message(error: ApiError, flags: Mapping[str, str] | None = None) -> str:
    """The error's text with API field names replaced by the command's flags.

    ``flags`` adds or overrides entries of ``FLAGS_FOR_FIELDS`` for one command (for
    ``export list`` the organization's ``id`` is ``--org``).
    """
    table = {**FLAGS_FOR_FIELDS, **(flags or {})}
    text = error.message
    field = error.field
    if field and text.startswith(f"{field}:"):
        text = text[len(field) + 1 :].lstrip()
    # Longest names first, so "filter.actions" is replaced before anything shorter.
    for name in sorted(table, key=len, reverse=True):
        text = _field_pattern(name).sub(table[name], text)
    if field:
        flag = table.get(field, field)
        if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text):
            text = f"{flag}: {text}"
    return text


# Errors about the object a command acts on rather than about one input field.
_REFUSALS = frozenset({"FORBIDDEN", "NOT_FOUND"})


def _with_client(
    work: Callable[[LogExportClient], Awaitable[T]],
    *,
    flags: Mapping[str, str] | None = None,
    about: str | None = None,
) -> T:
    """Run ``work`` with a client; an API, network or file error is one line and exit 1.

    ``about`` is what the command acts on (``--org ID``, ``export ID``): a refusal that
    names no field is about it, and says so; an error about that same flag shows the value
    given (``--org acme is not a valid id``).
    """
    conn = connection()

    async def main() -> T:
        async with LogExportClient(conn.api_url, conn.token) as client:
            return await work(client)

    try:
        return asyncio.run(main())
    except ApiError as exc:
        message = flag_message(exc, flags)
        if about is not None and exc.code in _REFUSALS and not exc.field:
            message = f"{about}: {message}"
        elif (
            about is not None
            and exc.field
            and message.startswith(about.split(" ")[0] + " ")
            # A message that already names the value given must not name it twice.
            and not message.startswith(about + " ")
        ):
            message = about + message[len(about.split(" ")[0]) :]
        fail(message)
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        fail(f"cannot write{where}: {exc.strerror or type(exc).__name__}")


# BigInt fields travel as strings (GraphQL's Int is 32-bit); --json prints them as numbers.
_COUNT_FIELDS = frozenset({"rowCount", "rowsWritten", "byteSize"})


def json_counts(value: object) -> object:
    """``value`` with every ``rowCount``/``rowsWritten``/``byteSize`` as a JSON number."""
    if isinstance(value, dict):
        return {
            key: (
                int(item)
                if key in _COUNT_FIELDS and isinstance(item, str) and item.isdigit()
                else json_counts(item)
            )
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [json_counts(item) for item in value]
    return value


def _print_json(value: object) -> None:
    click.echo(json.dumps(json_counts(value), indent=2, ensure_ascii=False))


def _print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Rows under a header, columns padded to their widest cell; the last is not padded."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    for row in [headers, *rows]:
        cells = [str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)]
        click.echo("  ".join(cells).rstrip())


def _filter(**values: object) -> dict[str, object] | None:
    chosen = {k: (list(v) if isinstance(v, tuple) else v) for k, v in values.items()}
    chosen = {k: v for k, v in chosen.items() if v not in (None, [])}
    return chosen or None


def _record(value: object) -> ApiRecord:
    """A nested object of an answer (``requestedBy``, ``pageInfo``); empty when null."""
    return value if isinstance(value, dict) else {}


def _records(value: object) -> list[ApiRecord]:
    """A list of objects in an answer (``edges``, ``organizations``); empty when null."""
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _when(value: object) -> str:
    """A DateTime as ``2026-01-31 12:00:00Z``: easier on the eye, still exact to the second."""
    if not isinstance(value, str) or not value:
        return "-"
    return value.replace("T", " ").replace(".000000Z", "Z")


def _when_to_the_second(value: object) -> str:
    """A moment for a table column (``2026-01-31 12:00:05Z``): the fraction dropped."""
    return re.sub(r"\.\d+Z$", "Z", _when(value))


def _count(value: object) -> int | None:
    """A count as the API sends it (a BigInt is a decimal string); ``None`` when unknown."""
    if not isinstance(value, int | float | str):
        return None
    try:
        return int(value)
    except ValueError:
        return None


def _number(value: object) -> str:
    count = _count(value)
    return "-" if count is None else f"{count:,}"


def human_size(value: object) -> str:
    """``1.5 MiB``: a byte count in binary units, ``-`` when unknown."""
    count = _count(value)
    if count is None:
        return "-"
    size = float(count)
    if size < 1024:
        return f"{int(size)} B"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        size /= 1024
        if size < 1024 or unit == "TiB":
            break
    return f"{size:.1f} {unit}"


def _file_format(export: ApiRecord) -> str:
    """``csv.gz``, ``jsonl``: the format as the file's extension reads."""
    text = str(export.get("format") or "-").lower()
    if export.get("compression") == "GZIP":
        text += ".gz"
    return text


def describe_export(export: ApiRecord) -> str:
    kind = log_kind(str(export.get("kind"))).label
    lines = [f"{kind} export {export['id']}: {export['status']}"]
    fmt = str(export.get("format"))
    if export.get("compression") == "GZIP":
        fmt += ", gzip"
    if export.get("csvBom"):
        fmt += ", BOM"
    rows: list[tuple[str, str]] = [
        ("range", f"{_when(export.get('fromTime'))} to {_when(export.get('toTime'))} (exclusive)"),
        ("format", fmt),
    ]
    if export.get("filter"):
        rows.append(("filter", json.dumps(export["filter"], separators=(",", ":"))))
    requester = _record(export.get("requestedBy")).get("email", "")
    rows.append(("requested", f"{_when(export.get('createdAt'))} by {requester}"))
    status = export.get("status")
    if status == "PROCESSING":
        rows.append(("progress", f"{_number(export.get('rowsWritten'))} rows written"))
    if export.get("fileName"):
        size = f"{human_size(export.get('byteSize'))}, {_number(export.get('byteSize'))} bytes"
        rows.append(("file", f"{export['fileName']} ({size})"))
        rows.append(("rows", _number(export.get("rowCount"))))
        rows.append(("sha256", str(export.get("sha256"))))
    summary = _record(shapes.manifest_summary(cast(shapes.JSON, export.get(shapes.MANIFEST))))
    if summary:
        rows.append(
            ("manifest", f"sequence {summary['sequence']}, signed by key {summary['keyId']}")
        )
    if export.get("completedAt"):
        rows.append(("completed", _when(export["completedAt"])))
    if export.get("expiresAt"):
        rows.append(("expires", _when(export["expiresAt"])))
    if export.get("emailedAt"):
        rows.append(("emailed", _when(export["emailedAt"])))
    error = _record(export.get("error"))
    if error:
        rows.append(("error", f"{error.get('code')}: {error.get('message')}"))
    lines += [f"  {label:<10} {value}" for label, value in rows]
    return "\n".join(lines)


def _export_failure(export: ApiRecord) -> str:
    error = _record(export.get("error"))
    detail = f": {error.get('code')}: {error.get('message')}" if error else ""
    return f"export {export['id']} is {export['status']}{detail}"


def check_writable_target(path: Path) -> None:
    """Refuse a download target that could not be written, before anything is requested.

    The file is written beside its target and renamed into place, so what matters is that
    the target's directory exists and takes a new file; ``ValueError`` says why not.
    """
    if path.is_dir():
        raise ValueError(f"{path} is a directory; give a file name")
    if path.exists() and not path.is_file():
        # The finished file is renamed over the target: that would replace a device or a
        # pipe (/dev/null, /dev/stdout) with a regular file.
        raise ValueError(f"{path} is not a regular file")
    directory = path.parent
    if not directory.exists():
        raise ValueError(f"the directory {directory} does not exist")
    if not directory.is_dir():
        raise ValueError(f"{directory} is not a directory")
    try:
        # Creating a file is the only check that holds for root, ACLs and read-only mounts.
        with tempfile.NamedTemporaryFile(dir=directory, prefix=f".{path.name}.", suffix=".probe"):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ValueError(f"cannot write to the directory {directory} ({reason})") from None


def _writable_target(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    if value is None:
        return None
    try:
        check_writable_target(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None
    return value


_TARGET = click.Path(path_type=Path)


async def _request_with_retries(
    call: Callable[[], Awaitable[ApiRecord]],
) -> ApiRecord:
    # Safe to repeat: every attempt carries the same idempotency key, so an attempt whose
    # answer was lost returns the export it created instead of starting another.
    for attempt in range(1, REQUEST_ATTEMPTS + 1):
        try:
            return await call()
        except ApiUnreachable:
            if attempt == REQUEST_ATTEMPTS:
                raise
            await asyncio.sleep(0.5 * 2**attempt)
    raise AssertionError("unreachable")


async def wait_for_export(
    client: LogExportClient, export: ApiRecord, reporter: ProgressReporter, interval: float
) -> ApiRecord:
    """Poll until the export reaches a final status, showing progress; returns it."""

    async def redraw() -> None:
        # The library reports changes only; a terminal line also shows elapsed time.
        while True:
            await asyncio.sleep(interval)
            reporter.tick()

    reporter.update(export)
    ticker = asyncio.create_task(redraw()) if reporter.interactive else None
    try:
        return await client.wait_for_export(
            str(export["id"]),
            on_progress=reporter.update,
            interval=interval,
            max_interval=interval * 4,
        )
    finally:
        if ticker is not None:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
        reporter.finish()


# ---------------------------------------------------------------------------- export


@dataclass
class _Run:
    """What an interrupted ``--wait`` needs to tell the user."""

    export_id: str | None = None


def _export_command(
    kind: str,
    *,
    org: str,
    from_time: datetime,
    to_time: datetime,
    format: str | None,
    gzip: bool,
    csv_bom: bool,
    filter: Mapping[str, object] | None,
    idempotency_key: str | None,
    wait: bool,
    download: Path | None,
    as_json: bool,
) -> None:
    key = idempotency_key or str(uuid.uuid4())
    wait = wait or download is not None
    state = _Run()
    interactive = sys.stderr.isatty()

    async def work(client: LogExportClient) -> ApiRecord:
        export = await _request_with_retries(
            lambda: client.request_export(
                kind,
                org,
                from_time,
                to_time,
                format=format,
                compression="GZIP" if gzip else None,
                csv_bom=True if csv_bom else None,
                filter=filter,
                idempotency_key=key,
            )
        )
        state.export_id = str(export["id"])
        if not wait:
            return export
        if not as_json:
            click.echo(f"export {export['id']} requested; waiting (Ctrl-C stops waiting)", err=True)
        reporter = ProgressReporter(sys.stderr, interactive=interactive)
        export = await wait_for_export(client, export, reporter, 0.5 if interactive else 1.0)
        if export["status"] != "COMPLETED":
            raise ApiError("EXPORT_NOT_COMPLETED", _export_failure(export))
        if download is not None:
            await client.download_export(str(export["id"]), download)
        return export

    try:
        export = _with_client(work, about=f"--org {org}")
    except KeyboardInterrupt:
        if state.export_id is None:
            fail("interrupted", EXIT_INTERRUPTED)
        click.echo(
            f"\nstopped waiting; export {state.export_id} carries on. "
            f"Check on it with: logexport export show {state.export_id}",
            err=True,
        )
        raise click.exceptions.Exit(EXIT_INTERRUPTED) from None
    if as_json:
        _print_json(export)
        return
    click.echo(describe_export(export))
    if not wait:
        click.echo(f"  {'key':<10} {key}")
        click.echo(f"Follow it with: logexport export show {export['id']}")
    if download is not None:
        _print_saved(download, export)


def _print_saved(path: Path, export: ApiRecord) -> None:
    """What was saved and how it was checked: the manifest's summary line when it has one."""
    size = human_size(export.get("byteSize"))
    manifest_text = export.get("manifest")
    if not isinstance(manifest_text, str):
        click.echo(f"saved {path} ({size}, SHA-256 verified; the export has no signed manifest)")
        return
    from logexport import manifests

    click.echo(f"saved {path} ({size}) and {manifests.manifest_name(path.name)} beside it")
    envelope = json.loads(manifest_text)
    click.echo(manifests.FileSummary(path.name, envelope["manifest"]).line())


_export_json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print the LogExport as JSON (counts as numbers)."
)


def _print_export(export: ApiRecord, as_json: bool) -> None:
    if as_json:
        _print_json(export)
    else:
        click.echo(describe_export(export))


_FORMAT = click.Choice(["jsonl", "csv"], case_sensitive=False)

_ORG_OPTION = click.option(
    "--org", "org", required=True, metavar="ID", help="Organization id (see `logexport whoami`)."
)


def _apply(command: Decorated, options: Sequence[Callable[[Decorated], Decorated]]) -> Decorated:
    for option in reversed(options):
        command = option(command)
    return command


class _ExportOptions(TypedDict):
    """The flags every ``export`` command shares, as click passes them."""

    org: str
    from_time: datetime
    to_time: datetime
    format: str | None
    gzip: bool
    csv_bom: bool
    idempotency_key: str | None
    wait: bool
    download: Path | None
    as_json: bool


def _common_export_options(command: Decorated) -> Decorated:
    options: list[Callable[[Decorated], Decorated]] = [
        _ORG_OPTION,
        click.option(
            "--from",
            "from_time",
            required=True,
            type=TimeBound(end=False),
            help="Start, inclusive: a UTC date (2026-01-01) or an RFC 3339 timestamp with offset.",
        ),
        click.option(
            "--to",
            "to_time",
            required=True,
            type=TimeBound(end=True),
            help="End: a UTC date includes that whole day; an RFC 3339 timestamp is exclusive.",
        ),
        click.option("--format", "format", type=_FORMAT, help="jsonl (default) or csv."),
        click.option("--gzip", is_flag=True, help="Compress the file with gzip."),
        click.option("--csv-bom", is_flag=True, help="Start a CSV file with a UTF-8 BOM."),
        click.option(
            "--idempotency-key",
            metavar="KEY",
            help="Running the command again with the same key returns the same export "
            "instead of a new one (default: a new key per run).",
        ),
        click.option(
            "--wait", is_flag=True, help="Wait until the export finishes, showing progress."
        ),
        click.option(
            "--download",
            type=_TARGET,
            callback=_writable_target,
            metavar="PATH",
            help="Wait, then save the file at PATH and its signed manifest at "
            "PATH.manifest.json, the file checked against it. The directory must exist and "
            "be writable.",
        ),
        _export_json_option,
    ]
    return _apply(command, options)


def _list_options(command: Decorated) -> Decorated:
    options: list[Callable[[Decorated], Decorated]] = [
        _ORG_OPTION,
        click.option(
            "--first",
            type=click.IntRange(1, 100),
            default=50,
            show_default=True,
            help="Page size, 1 to 100.",
        ),
        click.option("--after", metavar="CURSOR", help="The endCursor of the previous page."),
        click.option(
            "--json", "as_json", is_flag=True, help="Print the page as JSON (counts as numbers)."
        ),
    ]
    return _apply(command, options)


def _audit_filter_options(command: Decorated) -> Decorated:
    options: list[Callable[[Decorated], Decorated]] = [
        click.option(
            "--action",
            "actions",
            multiple=True,
            metavar="A",
            help="Only entries with this action, e.g. user.login; repeatable.",
        ),
        click.option(
            "--actor-id",
            "actor_ids",
            multiple=True,
            metavar="A",
            help="Only entries by this actor id; repeatable.",
        ),
        click.option(
            "--resource-type",
            "resource_types",
            multiple=True,
            metavar="R",
            help="Only entries about this resource type; repeatable.",
        ),
    ]
    return _apply(command, options)


def _scim_filter_options(command: Decorated) -> Decorated:
    options: list[Callable[[Decorated], Decorated]] = [
        click.option(
            "--method",
            "methods",
            multiple=True,
            metavar="M",
            help="Only events with this HTTP method, e.g. POST; repeatable.",
        ),
        click.option(
            "--user-name",
            metavar="U",
            help="Only events about this userName (case-insensitive).",
        ),
        click.option(
            "--status-code",
            "status_codes",
            multiple=True,
            type=click.IntRange(100, 599),
            metavar="N",
            help="Only events answered with this HTTP status code; repeatable.",
        ),
    ]
    return _apply(command, options)


def _print_page(connection: ApiRecord, line: Callable[[ApiRecord], str]) -> None:
    edges = _records(connection.get("edges"))
    for edge in edges:
        click.echo(line(_record(edge["node"])))
    if not edges:
        click.echo("(none)")
    _print_more(connection)


def _print_more(connection: ApiRecord) -> None:
    page = _record(connection.get("pageInfo"))
    if page.get("hasNextPage"):
        click.echo(f"more: --after {page.get('endCursor')}")


# Within the list commands the organization's ``id`` argument is the --org flag.
_LIST_FLAGS = {"id": "--org", "organizationId": "--org"}


def _list_command(
    org: str,
    as_json: bool,
    fetch: Callable[[LogExportClient], Awaitable[ApiRecord]],
    line: Callable[[ApiRecord], str],
) -> None:
    """Fetch one page of an organization's entries; print it as JSON or a line per node."""
    page = _with_client(fetch, flags=_LIST_FLAGS, about=f"--org {org}")
    if as_json:
        _print_json(page)
    else:
        _print_page(page, line)


# ---------------------------------------------------------------------------- audit-log


@click.group("audit-log")
def audit_log() -> None:
    """Browse and export an organization's audit log."""


@audit_log.command("export")
@_common_export_options
@_audit_filter_options
def audit_log_export(
    actions: tuple[str, ...],
    actor_ids: tuple[str, ...],
    resource_types: tuple[str, ...],
    **options: Unpack[_ExportOptions],
) -> None:
    """Export audit log entries from --from (inclusive) to --to."""
    chosen = _filter(actions=actions, actor_ids=actor_ids, resource_types=resource_types)
    _export_command("AUDIT_LOG", filter=chosen, **options)


@audit_log.command("list")
@_list_options
@_audit_filter_options
def audit_log_list(
    org: str,
    first: int,
    after: str | None,
    as_json: bool,
    actions: tuple[str, ...],
    actor_ids: tuple[str, ...],
    resource_types: tuple[str, ...],
) -> None:
    """Audit log entries, newest first."""
    chosen = _filter(actions=actions, actor_ids=actor_ids, resource_types=resource_types)
    _list_command(
        org,
        as_json,
        lambda client: client.list_audit_log_entries(org, first, after, chosen),
        _audit_log_line,
    )


def _audit_log_line(node: ApiRecord) -> str:
    actor = node.get("actorEmail") or node.get("actorId") or node.get("actorType")
    resource = ":".join(str(node[k]) for k in ("resourceType", "resourceId") if node.get(k))
    return f"{_when(node.get('createdAt'))}  {node.get('action')}  {actor}  {resource}".rstrip()


# ---------------------------------------------------------------------------- scim-event


@click.group("scim-event")
def scim_event() -> None:
    """Browse and export an organization's SCIM provisioning events."""


@scim_event.command("export")
@_common_export_options
@_scim_filter_options
def scim_event_export(
    methods: tuple[str, ...],
    user_name: str | None,
    status_codes: tuple[int, ...],
    **options: Unpack[_ExportOptions],
) -> None:
    """Export SCIM events from --from (inclusive) to --to."""
    chosen = _filter(methods=methods, user_name=user_name, status_codes=status_codes)
    _export_command("SCIM_EVENT", filter=chosen, **options)


@scim_event.command("list")
@_list_options
@_scim_filter_options
def scim_event_list(
    org: str,
    first: int,
    after: str | None,
    as_json: bool,
    methods: tuple[str, ...],
    user_name: str | None,
    status_codes: tuple[int, ...],
) -> None:
    """SCIM events, newest first."""
    chosen = _filter(methods=methods, user_name=user_name, status_codes=status_codes)
    _list_command(
        org,
        as_json,
        lambda client: client.list_scim_events(org, first, after, chosen),
        _scim_event_line,
    )


def _scim_event_line(node: ApiRecord) -> str:
    who = node.get("userName") or ""
    return (
        f"{_when(node.get('createdAt'))}  {node.get('method')} {node.get('path')}  "
        f"{node.get('statusCode')}  {who}"
    ).rstrip()


# ---------------------------------------------------------------------------- export


@click.group("export")
def export_group() -> None:
    """Show, list, cancel and download exports."""


class _About(TypedDict):
    flags: Mapping[str, str]
    about: str


def _about_export(export_id: str) -> _About:
    """``_with_client``'s arguments for a command on one export: errors name ``export ID``."""
    subject = f"export {export_id}"
    return {"flags": {"id": subject}, "about": subject}


@export_group.command("show")
@click.argument("export_id", metavar="ID")
@_export_json_option
def export_show(export_id: str, as_json: bool) -> None:
    """One export's status and result."""
    export = _with_client(lambda client: client.get_export(export_id), **_about_export(export_id))
    _print_export(export, as_json)


EXPORT_LIST_HEADERS = ("ID", "KIND", "STATUS", "FORMAT", "FROM", "TO", "ROWS", "SIZE", "CREATED")


def _export_row(export: ApiRecord) -> tuple[str, ...]:
    rows = export.get("rowCount") or export.get("rowsWritten")
    return (
        str(export["id"]),
        str(export.get("kind")),
        str(export.get("status")),
        _file_format(export),
        _when(export.get("fromTime")),
        _when(export.get("toTime")),
        _number(rows) if export.get("status") != "PENDING" else "-",
        human_size(export.get("byteSize")),
        _when_to_the_second(export.get("createdAt")),
    )


@export_group.command("list")
@_list_options
def export_list(org: str, first: int, after: str | None, as_json: bool) -> None:
    """The organization's exports, newest first (TO is exclusive)."""
    page = _with_client(
        lambda client: client.list_exports(org, first, after),
        flags=_LIST_FLAGS,
        about=f"--org {org}",
    )
    if as_json:
        _print_json(page)
        return
    exports = [_record(edge["node"]) for edge in _records(page.get("edges"))]
    if not exports:
        click.echo("(none)")
    else:
        _print_table(EXPORT_LIST_HEADERS, [_export_row(export) for export in exports])
    _print_more(page)


@export_group.command("cancel")
@click.argument("export_id", metavar="ID")
@_export_json_option
def export_cancel(export_id: str, as_json: bool) -> None:
    """Cancel an export (a pending or running one stops; a completed one's file is revoked)."""
    export = _with_client(
        lambda client: client.cancel_export(export_id), **_about_export(export_id)
    )
    _print_export(export, as_json)


@export_group.command("download")
@click.argument("export_id", metavar="ID")
@click.option(
    "-o",
    "--output",
    "output",
    required=True,
    type=_TARGET,
    callback=_writable_target,
    metavar="PATH",
    help="Where to save the file; the directory must exist and be writable.",
)
@click.option(
    "--keys",
    "keys_source",
    metavar="JWKS_FILE_OR_URL",
    help="Trust these public keys (a JWKS file or URL) instead of the server's "
    "/.well-known/logexport-keys.json.",
)
@_export_json_option
def export_download(export_id: str, output: Path, keys_source: str | None, as_json: bool) -> None:
    """Save a completed export's file and its signed manifest (PATH.manifest.json).

    The file is checked against the manifest as 'logexport verify' checks it (signature,
    size, SHA-256, every row), with the public keys the server publishes or those of
    --keys; on any mismatch nothing is kept and the failed check is named.
    """
    keys = None
    if keys_source is not None:
        from logexport.cli.verify import load_keys

        keys = load_keys(keys_source)
    export = _with_client(
        lambda client: client.download_export(export_id, output, keys=keys),
        **_about_export(export_id),
    )
    if as_json:
        _print_json(export)
    else:
        _print_saved(output, export)


_MANIFEST_KINDS = {"audit-log": "AUDIT_LOG", "scim-event": "SCIM_EVENT"}


def _chain_of(path: Path) -> tuple[object, object, object] | None:
    """The (organization, kind, stream) a manifest file in the folder belongs to, or None
    when it is not a readable envelope."""
    try:
        manifest = json.loads(path.read_bytes())["manifest"]
        return (manifest["organization_id"], manifest["kind"], manifest.get("stream_id"))
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _save_manifests(
    directory: Path, organization_id: str, kind: str, found: Sequence[ChainManifest]
) -> tuple[int, int]:
    """Write each envelope into ``directory``; (written, already there with the same bytes).

    Everything is checked before the first file is written: a file of that name with other
    bytes, or a manifest of another chain in the folder, stops the command and nothing is
    written, so ``verify --chain`` on the folder always checks one chain.
    """
    from logexport.manifests import MANIFEST_SUFFIX, manifest_name

    targets = {
        directory / f"{item.sequence:06d}-{manifest_name(item.file_name)}": item.envelope.encode()
        for item in found
    }
    if directory.exists():
        for path in sorted(directory.rglob("*" + MANIFEST_SUFFIX)):
            shown = path.relative_to(directory).as_posix()
            if path in targets:
                if path.read_bytes() != targets[path]:
                    fail(f"{shown} is already in {directory} with other contents; not replaced")
                continue
            chain = _chain_of(path)
            if chain is None or chain[:2] != (organization_id, kind) or chain[2] is not None:
                fail(
                    f"{directory} holds {shown}, which is not a manifest of organization "
                    f"{organization_id}'s {kind} exports; use an empty folder per chain"
                )
    directory.mkdir(parents=True, exist_ok=True)
    written = 0
    for path, data in targets.items():
        if path.exists():
            continue
        partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.part")
        try:
            partial.write_bytes(data)
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
        written += 1
    return written, len(targets) - written


@export_group.command("manifests")
@_ORG_OPTION
@click.option(
    "--kind", type=click.Choice(sorted(_MANIFEST_KINDS)), required=True, help="Which chain."
)
@click.option(
    "-o",
    "--output",
    "output",
    required=True,
    type=_TARGET,
    metavar="DIR",
    help="The folder to write the manifests to (created if missing).",
)
def export_manifests(org: str, kind: str, output: Path) -> None:
    """Save every signed manifest of the organization's exports of one kind into DIR.

    Each is written as DIR/<sequence, 6 digits>-<file name>.manifest.json, canceled and
    expired exports included (a cancel revokes the file, never its manifest), so that
    'logexport verify --chain DIR' checks the whole chain offline. Files already there
    with the same contents are kept; a file with other contents, or a manifest of another
    chain, stops the command before anything is written.
    """
    if output.exists() and not output.is_dir():
        raise click.BadParameter(f"{output} is not a folder", param_hint="'-o' / '--output'")
    found = _with_client(
        lambda client: client.chain_manifests(org, kind),
        flags=_LIST_FLAGS,
        about=f"--org {org}",
    )
    if not found:
        fail(f"--org {org}: no {kind} export has a signed manifest yet")
    organization_id = json.loads(found[0].envelope)["manifest"]["organization_id"]
    try:
        written, kept = _save_manifests(output, str(organization_id), _MANIFEST_KINDS[kind], found)
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        fail(f"cannot write{where}: {exc.strerror or type(exc).__name__}")
    first, last = found[0].sequence, found[-1].sequence
    already = f" ({kept} already there)" if kept else ""
    click.echo(
        f"{written} manifest{'' if written == 1 else 's'} written to {output}{already}: "
        f"{len(found)} of organization {organization_id}'s {kind} chain, "
        f"sequences {first} to {last}; check them with: logexport verify --chain {output}"
    )


# ---------------------------------------------------------------------------- whoami, login


def _print_viewer(viewer: ApiRecord) -> None:
    """The user, then each organization's id, name and the user's role in it."""
    click.echo(f"{viewer.get('fullName')} <{viewer.get('email')}>  user {viewer.get('id')}")
    organizations = _records(viewer.get("organizations"))
    if not organizations:
        click.echo("(no organizations)")
        return
    rows = [
        (str(org.get("id")), str(org.get("name")), str(org.get("viewerRole")))
        for org in organizations
    ]
    _print_table(("ORGANIZATION", "NAME", "ROLE"), rows)


@click.command("whoami")
@click.option("--json", "as_json", is_flag=True, help="Print the user and organizations as JSON.")
def whoami(as_json: bool) -> None:
    """The user the token belongs to, and each organization's id, name and role."""
    viewer = _with_client(lambda client: client.viewer())
    if as_json:
        _print_json(viewer)
    else:
        _print_viewer(viewer)


@click.command("login")
@click.option("--api-url", metavar="URL", help=f"The API's base URL (default {DEFAULT_API_URL}).")
@click.option(
    "--token",
    prompt="API token",
    hide_input=True,
    envvar="LOGEXPORT_TOKEN",
    help="An API token (lex_…); asked for when not given.",
)
def login(api_url: str | None, token: str) -> None:
    """Check an API token and save it with the API URL for the client commands."""
    url = (api_url or os.environ.get("LOGEXPORT_API_URL") or DEFAULT_API_URL).rstrip("/")
    if not re.match(r"^https?://[^/]+", url):
        fail("--api-url must be an http:// or https:// URL", EXIT_USAGE)
    token = token.strip()

    async def check() -> ApiRecord:
        async with LogExportClient(url, token) as client:
            return await client.viewer()

    try:
        viewer = asyncio.run(check())
    except ApiError as exc:
        fail(flag_message(exc, {"token": "--token"}))
    path = save_login(url, token)
    click.echo(f"logged in to {url}; saved to {path}")
    _print_viewer(viewer)


@click.command("mcp")
def mcp_command() -> None:
    """Serve the MCP tools over stdio, as a client of LOGEXPORT_API_URL."""
    from logexport.mcp_tools import serve_stdio

    conn = connection()
    asyncio.run(serve_stdio(conn.api_url, conn.token))


COMMANDS: tuple[click.Command, ...] = (
    whoami,
    audit_log,
    scim_event,
    export_group,
    login,
    mcp_command,
)
