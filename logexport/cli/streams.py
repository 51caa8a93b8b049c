"""``logexport stream …``: log streams through the GraphQL API, as the client commands do.

Secrets never travel as plain flag values that shell history keeps: an S3 secret access key
comes from ``LOGEXPORT_STREAM_SECRET_ACCESS_KEY``, and an HTTPS stream's HMAC secret may be
given as ``--secret -`` to read it from standard input.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime

import click

from logexport.cli.client import (
    ApiRecord,
    TimeBound,
    _audit_filter_options,
    _filter,
    _print_json,
    _print_table,
    _record,
    _records,
    _scim_filter_options,
    _when,
    _when_to_the_second,
    _with_client,
    human_size,
)
from logexport.cli.common import EXIT_USAGE, fail
from logexport.client import LogExportClient
from logexport.config import parse_duration

SECRET_ACCESS_KEY_VARIABLE = "LOGEXPORT_STREAM_SECRET_ACCESS_KEY"  # noqa: S105 (a name)

# The API's input fields as this command's flags, for its error messages.
STREAM_FLAGS: dict[str, str] = {
    "organizationId": "--org",
    "kind": "--kind",
    "intervalSeconds": "--interval",
    "startAt": "--start-at",
    "destination": "--https-url or --s3-bucket",
    "destination.https": "--https-url",
    "destination.https.url": "--https-url",
    "destination.https.secret": "--secret",
    "destination.s3": "--s3-bucket",
    "destination.s3.bucket": "--s3-bucket",
    "destination.s3.prefix": "--s3-prefix",
    "destination.s3.region": "--s3-region",
    "destination.s3.endpointUrl": "--s3-endpoint-url",
    "destination.s3.accessKeyId": "--access-key-id",
    "destination.s3.secretAccessKey": SECRET_ACCESS_KEY_VARIABLE,
    "destination.s3.roleArn": "--role-arn",
    "destination.s3.externalId": "--external-id",
}

_KINDS = {"audit-log": "AUDIT_LOG", "scim-event": "SCIM_EVENT"}
_AUDIT_FILTERS = ("actions", "actor_ids", "resource_types")
_SCIM_FILTERS = ("methods", "user_name", "status_codes")

_json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print the stream as JSON (counts as numbers)."
)


def interval_text(seconds: object) -> str:
    """``5m``, ``1h``, ``90s``: an interval as ``--interval`` takes it."""
    if not isinstance(seconds, int) or seconds <= 0:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def destination_text(stream: ApiRecord) -> str:
    """``https://…`` or ``s3://bucket/prefix``."""
    destination = _record(stream.get("destination"))
    if destination.get("type") == "S3":
        prefix = destination.get("prefix")
        return f"s3://{destination.get('bucket')}" + (f"/{prefix}" if prefix else "")
    return str(destination.get("url") or "-")


def describe_stream(stream: ApiRecord) -> list[str]:
    kind = {v: k for k, v in _KINDS.items()}.get(str(stream.get("kind")), str(stream.get("kind")))
    lines = [
        f"{kind} stream {stream.get('id')}: {stream.get('state')}",
        f"  destination: {destination_text(stream)}",
        f"  interval: {interval_text(stream.get('intervalSeconds'))}",
    ]
    if stream.get("filter"):
        lines.append(f"  filter: {_filter_text(_record(stream.get('filter')))}")
    lines.append(f"  streams entries from: {_when(stream.get('startAt'))}")
    if stream.get("nextRunAt"):
        lines.append(f"  next run: {_when_to_the_second(stream.get('nextRunAt'))}")
    if stream.get("lastError"):
        lines.append(f"  last error: {stream.get('lastError')}")
    lines.append(f"  created: {_when_to_the_second(stream.get('createdAt'))}")
    return lines


def _filter_text(stream_filter: Mapping[str, object]) -> str:
    parts = []
    for key, value in stream_filter.items():
        values = value if isinstance(value, list) else [value]
        parts.append(f"{key}={','.join(str(v) for v in values)}")
    return " ".join(parts)


DELIVERY_HEADERS = ("SEQUENCE", "STATUS", "ROWS", "SIZE", "ATTEMPTS", "DELIVERED", "ERROR")


def _delivery_row(delivery: ApiRecord) -> tuple[str, ...]:
    sequence = delivery.get("sequence")
    return (
        "test" if sequence is None else str(sequence),
        str(delivery.get("status")),
        str(delivery.get("rowCount")),
        human_size(delivery.get("byteSize")),
        str(delivery.get("attempts")),
        _when_to_the_second(delivery.get("deliveredAt")),
        str(delivery.get("error") or ""),
    )


def _deliveries(stream: ApiRecord) -> list[ApiRecord]:
    connection = _record(stream.get("deliveries"))
    return [_record(edge.get("node")) for edge in _records(connection.get("edges"))]


def _print_stream(stream: ApiRecord, as_json: bool, *, deliveries: bool = False) -> None:
    if as_json:
        _print_json(stream)
        return
    for line in describe_stream(stream):
        click.echo(line)
    if deliveries:
        rows = [_delivery_row(d) for d in _deliveries(stream)]
        click.echo("recent deliveries:" if rows else "recent deliveries: (none)")
        if rows:
            _print_table(DELIVERY_HEADERS, rows)


def _on_stream(
    stream_id: str, work: Callable[[LogExportClient], Awaitable[dict[str, object]]]
) -> dict[str, object]:
    subject = f"stream {stream_id}"
    return _with_client(work, flags={**STREAM_FLAGS, "id": subject}, about=subject)


@click.group("stream")
def stream_group() -> None:
    """Create and manage log streams: continuous delivery to an HTTPS endpoint or S3 bucket."""


def _read_secret(value: str | None) -> str | None:
    if value != "-":
        return value
    if sys.stdin is None or sys.stdin.isatty():
        click.echo("HMAC secret: ", nl=False, err=True)
    secret = sys.stdin.readline().rstrip("\r\n") if sys.stdin is not None else ""
    if not secret:
        fail("--secret -: nothing was read from standard input", EXIT_USAGE)
    return secret


def _interval_seconds(value: str | None) -> int | None:
    if value is None:
        return None
    if value.strip().isdigit():
        # A bare number reads as seconds to the parser, rarely what was meant by "5".
        fail(
            f"--interval {value}: give a unit, e.g. {value.strip()}m or {value.strip()}s",
            EXIT_USAGE,
        )
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        fail(f"--interval {value}: {exc}", EXIT_USAGE)
    if seconds != int(seconds) or seconds <= 0:
        fail(f"--interval {value}: expected a whole number of seconds", EXIT_USAGE)
    return int(seconds)


def _stream_filter(kind: str, values: Mapping[str, object]) -> dict[str, object] | None:
    wrong = _SCIM_FILTERS if kind == "AUDIT_LOG" else _AUDIT_FILTERS
    for name in wrong:
        if values.get(name) not in (None, ()):
            flag = "--" + name.rstrip("s").replace("_", "-")
            article = "an" if kind == "AUDIT_LOG" else "a"
            fail(
                f"{flag} does not apply to {article} {kind.lower().replace('_', '-')} stream",
                EXIT_USAGE,
            )
    chosen = _AUDIT_FILTERS if kind == "AUDIT_LOG" else _SCIM_FILTERS
    return _filter(**{name: values.get(name) for name in chosen})


@stream_group.command("create")
@click.option("--org", "org", required=True, metavar="ID", help="Organization id.")
@click.option("--kind", type=click.Choice(sorted(_KINDS)), required=True, help="What to stream.")
@click.option("--https-url", metavar="URL", help="HTTPS endpoint receiving signed POSTs.")
@click.option(
    "--secret",
    metavar="S",
    help="HMAC secret signing each POST (16+ characters); '-' reads it from standard input.",
)
@click.option("--s3-bucket", metavar="B", help="The bucket to write objects to.")
@click.option("--s3-prefix", metavar="P", help="Key prefix in the bucket.")
@click.option("--s3-region", metavar="R", help="The bucket's region.")
@click.option("--s3-endpoint-url", metavar="U", help="An S3-compatible endpoint (https).")
@click.option(
    "--access-key-id",
    metavar="K",
    help=f"Access key id; its secret comes from {SECRET_ACCESS_KEY_VARIABLE}.",
)
@click.option("--role-arn", metavar="A", help="A role to assume (with --external-id).")
@click.option("--external-id", metavar="E", help="The external id the role requires.")
@click.option(
    "--interval",
    metavar="DURATION",
    help="Time between deliveries, with its unit: 30s, 5m, 1h (default 5m).",
)
@click.option(
    "--start-at",
    type=TimeBound(end=False),
    help="Stream entries created from then on: a UTC date or RFC 3339 timestamp (default now).",
)
@_audit_filter_options
@_scim_filter_options
@_json_option
def stream_create(
    org: str,
    kind: str,
    https_url: str | None,
    secret: str | None,
    s3_bucket: str | None,
    s3_prefix: str | None,
    s3_region: str | None,
    s3_endpoint_url: str | None,
    access_key_id: str | None,
    role_arn: str | None,
    external_id: str | None,
    interval: str | None,
    start_at: datetime | None,
    as_json: bool,
    **filters: object,
) -> None:
    """Create a log stream to an HTTPS endpoint or an S3 bucket (owners only)."""
    api_kind = _KINDS[kind]
    if (https_url is None) == (s3_bucket is None):
        fail("give exactly one of --https-url or --s3-bucket", EXIT_USAGE)
    s3_flags = {
        "--s3-prefix": s3_prefix,
        "--s3-region": s3_region,
        "--s3-endpoint-url": s3_endpoint_url,
        "--access-key-id": access_key_id,
        "--role-arn": role_arn,
        "--external-id": external_id,
    }
    if https_url is not None:
        used = [flag for flag, value in s3_flags.items() if value is not None]
        if used:
            fail(f"{used[0]} applies to an S3 stream, not with --https-url", EXIT_USAGE)
        if secret is None:
            fail("--secret is required with --https-url", EXIT_USAGE)
    elif secret is not None:
        fail(
            f"--secret applies to an HTTPS stream; an S3 secret access key comes from "
            f"{SECRET_ACCESS_KEY_VARIABLE}",
            EXIT_USAGE,
        )
    secret_access_key = os.environ.get(SECRET_ACCESS_KEY_VARIABLE) or None
    if access_key_id is not None and secret_access_key is None:
        fail(f"{SECRET_ACCESS_KEY_VARIABLE} is not set (needed with --access-key-id)", EXIT_USAGE)
    interval_seconds = _interval_seconds(interval)
    stream_filter = _stream_filter(api_kind, filters)
    https_secret = _read_secret(secret)
    s3 = None
    if s3_bucket is not None:
        s3 = {
            "bucket": s3_bucket,
            "prefix": s3_prefix,
            "region": s3_region,
            "endpointUrl": s3_endpoint_url,
            "accessKeyId": access_key_id,
            "secretAccessKey": secret_access_key if access_key_id is not None else None,
            "roleArn": role_arn,
            "externalId": external_id,
        }
    stream = _with_client(
        lambda client: client.create_stream(
            api_kind,
            org,
            https_url=https_url,
            secret=https_secret,
            s3=s3,
            interval_seconds=interval_seconds,
            filter=stream_filter,
            start_at=start_at,
        ),
        flags=STREAM_FLAGS,
        about=f"--org {org}",
    )
    _print_stream(stream, as_json)


LIST_HEADERS = ("ID", "KIND", "STATE", "INTERVAL", "DESTINATION", "NEXT RUN", "CREATED")


@stream_group.command("list")
@click.option("--org", "org", required=True, metavar="ID", help="Organization id.")
@click.option("--json", "as_json", is_flag=True, help="Print the streams as JSON.")
def stream_list(org: str, as_json: bool) -> None:
    """The organization's log streams, newest first, with any last error."""
    streams = _with_client(
        lambda client: client.list_streams(org),
        flags={**STREAM_FLAGS, "id": "--org"},
        about=f"--org {org}",
    )
    if as_json:
        _print_json(streams)
        return
    if not streams:
        click.echo("(none)")
        return
    rows = [
        (
            str(s["id"]),
            str(s.get("kind")),
            str(s.get("state")),
            interval_text(s.get("intervalSeconds")),
            destination_text(s),
            _when_to_the_second(s.get("nextRunAt")),
            _when_to_the_second(s.get("createdAt")),
        )
        for s in streams
    ]
    _print_table(LIST_HEADERS, rows)
    for s in streams:
        if s.get("lastError"):
            click.echo(f"{s['id']}: {s['lastError']}")


@stream_group.command("show")
@click.argument("stream_id", metavar="ID")
@_json_option
def stream_show(stream_id: str, as_json: bool) -> None:
    """One stream's state, destination, last error and recent deliveries."""
    stream = _on_stream(stream_id, lambda client: client.get_stream(stream_id))
    _print_stream(stream, as_json, deliveries=True)


@stream_group.command("pause")
@click.argument("stream_id", metavar="ID")
@_json_option
def stream_pause(stream_id: str, as_json: bool) -> None:
    """Pause a stream: nothing is delivered until it is resumed, and nothing is lost."""
    _print_stream(_on_stream(stream_id, lambda c: c.pause_stream(stream_id)), as_json)


@stream_group.command("resume")
@click.argument("stream_id", metavar="ID")
@_json_option
def stream_resume(stream_id: str, as_json: bool) -> None:
    """Resume a paused stream: it catches up from where it stopped.

    A stream paused while its destination was failing comes back FAILING, its last error
    shown, until a delivery succeeds. Resuming a FAILING stream tries it again now instead
    of after its backoff.
    """
    _print_stream(_on_stream(stream_id, lambda c: c.resume_stream(stream_id)), as_json)


@stream_group.command("update")
@click.argument("stream_id", metavar="ID")
@click.option(
    "--interval",
    metavar="DURATION",
    help="Time between deliveries, with its unit: 30s, 5m, 1h.",
)
@click.option(
    "--every-entry",
    is_flag=True,
    help="Drop the filter: stream every entry of the log from now on.",
)
@_audit_filter_options
@_scim_filter_options
@_json_option
def stream_update(
    stream_id: str, interval: str | None, every_entry: bool, as_json: bool, **filters: object
) -> None:
    """Change a stream's interval or filter; it goes on from its checkpoint, with no gap.

    A filter given here replaces the stream's filter for the entries delivered from now on.
    """
    interval_seconds = _interval_seconds(interval)
    filtered = any(value not in (None, ()) for value in filters.values())
    if every_entry and filtered:
        fail("--every-entry drops the filter: give it without filter flags", EXIT_USAGE)
    if interval_seconds is None and not filtered and not every_entry:
        fail("give --interval, a filter flag or --every-entry to change", EXIT_USAGE)
    stream_filter = None
    if filtered:
        # Which filter flags apply depends on the stream's log.
        current = _on_stream(stream_id, lambda client: client.get_stream(stream_id))
        stream_filter = _stream_filter(str(current.get("kind")), filters)
    updated = _on_stream(
        stream_id,
        lambda client: client.update_stream(
            stream_id,
            interval_seconds=interval_seconds,
            filter=stream_filter,
            clear_filter=every_entry,
        ),
    )
    _print_stream(updated, as_json)


@stream_group.command("delete")
@click.argument("stream_id", metavar="ID")
@_json_option
def stream_delete(stream_id: str, as_json: bool) -> None:
    """Delete a stream; its deliveries stay on record."""
    stream = _on_stream(stream_id, lambda c: c.delete_stream(stream_id))
    if as_json:
        _print_json(stream)
    else:
        click.echo(f"stream {stream['id']} deleted")


@stream_group.command("test")
@click.argument("stream_id", metavar="ID")
@_json_option
def stream_test(stream_id: str, as_json: bool) -> None:
    """Send one test delivery (no rows) now; exit 1 when the destination refuses it."""
    stream = _on_stream(stream_id, lambda c: c.test_stream(stream_id))
    latest = next(iter(_deliveries(stream)), {})
    if as_json:
        _print_json(stream)
    elif latest:
        click.echo(f"test delivery {latest.get('id')}: {latest.get('status')}")
    if latest.get("status") != "DELIVERED":
        fail(f"the test delivery failed: {latest.get('error') or 'no answer recorded'}")
