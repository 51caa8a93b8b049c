"""Record and list audit log entries and SCIM events.

Writers validate, redact and size-limit every row, whichever form is used: one row per
INSERT, or many through ``COPY`` for bulk loads. Listings are newest first with keyset
pagination; their cursors are opaque and bound to the organization and the filter.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import ipaddress
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from itertools import islice
from typing import Any, Generic, TypeVar, cast
from uuid import UUID

import asyncpg

from logexport.db import q
from logexport.errors import BadUserInput
from logexport.identity import Principal
from logexport.kinds import LOG_KINDS, ExportKind, LogFilter
from logexport.policy import authorize
from logexport.records import (
    AuditLogEntry,
    AuditLogFilter,
    ScimEvent,
    ScimEventFilter,
)
from logexport.redaction import MAX_JSON_BYTES, limit_json_size, redact_scim_body, to_compact_json
from logexport.timeutil import format_rfc3339, parse_rfc3339

ACTOR_TYPES = frozenset({"USER", "API_KEY", "SYSTEM", "SCIM"})
COPY_BATCH_SIZE = 50_000
MAX_PAGE_SIZE = 100
_MAX_TEXT = 10_000

T = TypeVar("T")
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# ---------------------------------------------------------------------------- records

# The records a listing reads back, and the filters, are plain data in ``logexport.records``.


# Input records are built by the million in bulk loads; plain slotted dataclasses cost a
# third of frozen ones to construct.
@dataclass(slots=True)
class AuditLogEntryInput:
    organization_id: UUID
    action: str
    actor_type: str
    actor_id: str | None = None
    actor_email: str | None = None
    actor_name: str | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    ip_address: str | IpAddress | None = None
    user_agent: str | None = None
    metadata: Any = None
    created_at: datetime | None = None


@dataclass(slots=True)
class ScimEventInput:
    organization_id: UUID
    method: str
    path: str
    status_code: int
    user_name: str | None = None
    error_message: str | None = None
    ip_address: str | IpAddress | None = None
    user_agent: str | None = None
    request_body: Any = None
    response_body: Any = None
    created_at: datetime | None = None


_AUDIT_COPY_COLUMNS = (
    "organization_id", "created_at", "actor_type", "actor_id", "actor_email",
    "actor_name", "action", "resource_type", "resource_id", "ip_address", "user_agent",
    "metadata",
)  # fmt: skip
_SCIM_COPY_COLUMNS = (
    "organization_id", "created_at", "method", "path", "user_name", "status_code",
    "error_message", "ip_address", "user_agent", "request_body", "response_body",
)  # fmt: skip

# ---------------------------------------------------------------------------- validation


def _text(value: str | None, field: str, *, required: bool = False) -> str | None:
    if value is None:
        if required:
            raise BadUserInput(f"{field} is required", field=field)
        return None
    if not isinstance(value, str):
        raise BadUserInput(f"{field} must be text", field=field)
    if required and not value:
        raise BadUserInput(f"{field} must not be empty", field=field)
    if len(value) > _MAX_TEXT or "\x00" in value:
        raise BadUserInput(f"{field} is too long or contains NUL", field=field)
    return value


def _ip(value: str | IpAddress | None) -> bytes | None:
    """The address in packed form, which is what the driver's ``inet`` encoder parses fastest.

    Handing it an address object or text costs a string round trip per row, the largest
    single cost of a bulk load.
    """
    if value is None:
        return None
    if isinstance(value, IpAddress):
        return value.packed
    try:
        return ipaddress.ip_address(value).packed
    except ValueError:
        raise BadUserInput("ip_address is not an IP address", field="ip_address") from None


class PreparedJson:
    """A JSON value already size-limited and encoded for ``jsonb``'s binary wire format.

    Batch writers accept it in place of ``metadata`` and SCIM bodies, so a value shared by
    many rows (a seed pool, a repeated body) is checked and serialized once. Build it with
    ``prepare_json`` or ``prepare_scim_body`` only: they apply the storage rules.
    """

    __slots__ = ("value", "wire")

    def __init__(self, value: Any, wire: bytes) -> None:
        self.value = value
        self.wire = wire


def prepare_json(value: Any) -> PreparedJson:
    """``value`` cut to the 64 KiB limit (see ``redaction.limit_json_size``), encoded once."""
    if isinstance(value, PreparedJson):
        return value
    encoded = to_compact_json(value).encode()
    if len(encoded) > MAX_JSON_BYTES:
        value = limit_json_size(value)
        encoded = to_compact_json(value).encode()
    # jsonb's binary wire format: a version byte (1) followed by the JSON text.
    return PreparedJson(value, b"\x01" + encoded)


def prepare_scim_body(value: Any, *, method: str, path: str) -> PreparedJson | None:
    """A SCIM body with its secrets redacted, then prepared like ``prepare_json``."""
    if value is None:
        return None
    if isinstance(value, PreparedJson):
        return value
    return prepare_json(redact_scim_body(value, method=method, path=path))


def _audit_values(entry: AuditLogEntryInput) -> tuple[Any, ...]:
    """The validated column values after ``id`` and ``organization_id``, ``created_at``."""
    if entry.actor_type not in ACTOR_TYPES:
        raise BadUserInput(
            f"actor_type must be one of {', '.join(sorted(ACTOR_TYPES))}", field="actor_type"
        )
    metadata = prepare_json({} if entry.metadata is None else entry.metadata)
    return (
        entry.actor_type,
        _text(entry.actor_id, "actor_id"),
        _text(entry.actor_email, "actor_email"),
        _text(entry.actor_name, "actor_name"),
        _text(entry.action, "action", required=True),
        _text(entry.resource_type, "resource_type"),
        _text(entry.resource_id, "resource_id"),
        _ip(entry.ip_address),
        _text(entry.user_agent, "user_agent"),
        metadata,
    )


def _scim_values(event: ScimEventInput) -> tuple[Any, ...]:
    method = _text(event.method, "method", required=True)
    path = _text(event.path, "path", required=True)
    assert method is not None and path is not None
    if (
        isinstance(event.status_code, bool)
        or not isinstance(event.status_code, int)
        or not (100 <= event.status_code <= 599)
    ):
        raise BadUserInput("status_code must be an HTTP status code", field="status_code")

    return (
        method,
        path,
        _text(event.user_name, "user_name"),
        event.status_code,
        _text(event.error_message, "error_message"),
        _ip(event.ip_address),
        _text(event.user_agent, "user_agent"),
        prepare_scim_body(event.request_body, method=method, path=path),
        prepare_scim_body(event.response_body, method=method, path=path),
    )


# ---------------------------------------------------------------------------- writers


def _plain(values: tuple[Any, ...]) -> tuple[Any, ...]:
    """Prepared JSON back to plain values, for statements that use the text codec."""
    return tuple(v.value if isinstance(v, PreparedJson) else v for v in values)


async def record_audit_log_entry(
    conn: asyncpg.Connection,
    *,
    organization_id: UUID,
    action: str,
    actor_type: str,
    actor_id: str | None = None,
    actor_email: str | None = None,
    actor_name: str | None = None,
    resource_type: str | None = None,
    resource_id: str | None = None,
    ip_address: str | None = None,
    user_agent: str | None = None,
    metadata: Any = None,
    created_at: datetime | None = None,
) -> UUID:
    """Insert one entry (``created_at`` defaults to the transaction time)."""
    entry = AuditLogEntryInput(
        organization_id, action, actor_type, actor_id, actor_email, actor_name,
        resource_type, resource_id, ip_address, user_agent, metadata, created_at,
    )  # fmt: skip
    new_id: UUID = await conn.fetchval(
        q("insert_audit_log_entry"), organization_id, created_at, *_plain(_audit_values(entry))
    )
    return new_id


async def record_scim_event(
    conn: asyncpg.Connection,
    *,
    organization_id: UUID,
    method: str,
    path: str,
    status_code: int,
    user_name: str | None = None,
    error_message: str | None = None,
    ip_address: str | None = None,
    user_agent: str | None = None,
    request_body: Any = None,
    response_body: Any = None,
    created_at: datetime | None = None,
) -> UUID:
    """Insert one SCIM event; passwords in the bodies are redacted first."""
    event = ScimEventInput(
        organization_id, method, path, status_code, user_name, error_message,
        ip_address, user_agent, request_body, response_body, created_at,
    )  # fmt: skip
    new_id: UUID = await conn.fetchval(
        q("insert_scim_event"), organization_id, created_at, *_plain(_scim_values(event))
    )
    return new_id


def _encode_jsonb_binary(value: Any) -> bytes:
    return prepare_json(value).wire


def _decode_jsonb_binary(data: bytes) -> Any:
    return json.loads(data[1:])


async def _use_binary_jsonb(conn: asyncpg.Connection) -> None:
    """Let COPY carry ``jsonb``: it moves rows in binary, which a text codec cannot serve.

    Values still go in and come out as Python objects, exactly as with the text codec
    that ``db.init_connection`` installs.
    """
    await conn.set_type_codec(
        "jsonb",
        encoder=_encode_jsonb_binary,
        decoder=_decode_jsonb_binary,
        schema="pg_catalog",
        format="binary",
    )


async def _copy(
    conn: asyncpg.Connection,
    table: str,
    columns: tuple[str, ...],
    items: Iterable[Any],
    values: Callable[[Any], tuple[Any, ...]],
) -> int:
    """COPY ``items`` in batches, preparing the next batch while the server loads one.

    Validation and encoding are Python work and loading is server work; overlapping them
    roughly halves the time of a large load. Items are therefore drawn from ``items`` in
    a worker thread, one batch at a time (never concurrently).
    """
    await _use_binary_jsonb(conn)
    # ``id`` is left out so that Postgres fills it from its default; ``created_at`` is
    # listed (callers usually set it), so its default, the transaction time, is supplied.
    now: datetime = await conn.fetchval(q("transaction_now"))
    iterator = iter(items)

    def next_batch() -> list[tuple[Any, ...]]:
        return [
            (item.organization_id, item.created_at or now, *values(item))
            for item in islice(iterator, COPY_BATCH_SIZE)
        ]

    total = 0
    rows = await asyncio.to_thread(next_batch)
    while rows:
        copying = asyncio.ensure_future(
            conn.copy_records_to_table(table, records=rows, columns=columns)
        )
        try:
            following = await asyncio.to_thread(next_batch)
        except BaseException:
            copying.cancel()
            await asyncio.gather(copying, return_exceptions=True)
            raise
        await copying
        total += len(rows)
        rows = following
    return total


async def record_audit_log_entries(
    conn: asyncpg.Connection, entries: Iterable[AuditLogEntryInput]
) -> int:
    """Bulk-insert entries with ``COPY`` in batches; returns how many were written.

    Each batch is its own statement: wrap the call in a transaction for all-or-nothing.
    """
    return await _copy(conn, "audit_log_entries", _AUDIT_COPY_COLUMNS, entries, _audit_values)


async def record_scim_events(conn: asyncpg.Connection, events: Iterable[ScimEventInput]) -> int:
    """Bulk-insert SCIM events with ``COPY`` (bodies redacted); returns the count."""
    return await _copy(conn, "scim_events", _SCIM_COPY_COLUMNS, events, _scim_values)


# ---------------------------------------------------------------------------- pages


@dataclass(frozen=True)
class Edge(Generic[T]):
    node: T
    cursor: str


@dataclass(frozen=True)
class Page(Generic[T]):
    edges: list[Edge[T]]
    has_next_page: bool
    end_cursor: str | None

    @property
    def items(self) -> list[T]:
        return [edge.node for edge in self.edges]


@dataclass(frozen=True)
class TimeRange:
    """Rows created in [``start``, ``end``); a missing bound leaves that side open."""

    start: datetime | None = None
    end: datetime | None = None

    @classmethod
    def parse(
        cls,
        from_time: Any,
        to_time: Any,
        *,
        from_field: str = "fromTime",
        to_field: str = "toTime",
    ) -> TimeRange:
        """Bounds as RFC 3339 text (or aware datetimes); errors name the offending field."""
        start = _bound(from_time, from_field)
        end = _bound(to_time, to_field)
        if start is not None and end is not None and start >= end:
            raise BadUserInput(f"{from_field} must be earlier than {to_field}", field=from_field)
        return cls(start, end)

    def to_json(self) -> dict[str, str]:
        """The bounds that are set, for binding cursors to the listing they came from."""
        out = {}
        if self.start is not None:
            out["fromTime"] = format_rfc3339(self.start)
        if self.end is not None:
            out["toTime"] = format_rfc3339(self.end)
        return out


def _bound(value: Any, field: str) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise BadUserInput(f"{field}: the timestamp has no UTC offset", field=field)
        return value
    return parse_rfc3339(value, field)


def _filter_hash(kind: str, filter_json: Mapping[str, Any]) -> str:
    canonical = json.dumps([kind, filter_json], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def encode_cursor(
    kind: str, organization_id: UUID, filter_hash: str, row_time: datetime, row_id: UUID
) -> str:
    payload = {
        "k": kind,
        "o": str(organization_id),
        "f": filter_hash,
        "t": format_rfc3339(row_time),
        "i": str(row_id),
    }
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(
    cursor: str, kind: str, organization_id: UUID, filter_hash: str
) -> tuple[datetime, UUID]:
    """The (created_at, id) a cursor points after, if it belongs to this very listing."""
    invalid = BadUserInput("after is not a cursor of this list", field="after")
    if not isinstance(cursor, str) or len(cursor) > 1000:
        raise invalid
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        payload = json.loads(raw)
        bound = (payload["k"], payload["o"], payload["f"]) == (
            kind,
            str(organization_id),
            filter_hash,
        )
        position = parse_rfc3339(payload["t"], "after"), UUID(payload["i"])
    except (binascii.Error, ValueError, TypeError, KeyError, BadUserInput):
        raise invalid from None
    if not bound:
        raise invalid
    return position


def _page_size(first: int) -> int:
    if isinstance(first, bool) or not isinstance(first, int) or not 1 <= first <= MAX_PAGE_SIZE:
        raise BadUserInput(f"first must be between 1 and {MAX_PAGE_SIZE}", field="first")
    return first


async def _list(
    conn: asyncpg.Connection,
    *,
    kind: str,
    query: str,
    record: type[Any],
    organization_id: UUID,
    first: int,
    after: str | None,
    time_range: TimeRange,
    filter_json: dict[str, Any],
    filter_args: tuple[Any, ...],
) -> Page[Any]:
    limit = _page_size(first)
    if (
        time_range.start is not None
        and time_range.end is not None
        and time_range.start >= time_range.end
    ):
        raise BadUserInput("fromTime must be earlier than toTime", field="fromTime")
    # A cursor resumes only the listing it came from: same filter and same time range.
    fhash = _filter_hash(kind, {**filter_json, **time_range.to_json()})
    after_time, after_id = (None, None)
    if after is not None:
        after_time, after_id = decode_cursor(after, kind, organization_id, fhash)
    rows = await conn.fetch(
        q(query),
        organization_id,
        after_time,
        after_id,
        time_range.start,
        time_range.end,
        *filter_args,
        limit + 1,
    )
    names = [f.name for f in fields(record)]
    edges = [
        Edge(
            record(**{n: row[n] for n in names}),
            encode_cursor(kind, organization_id, fhash, row["created_at"], row["id"]),
        )
        for row in rows[:limit]
    ]
    return Page(edges, len(rows) > limit, edges[-1].cursor if edges else None)


async def list_entries(
    conn: asyncpg.Connection,
    principal: Principal,
    kind: ExportKind,
    organization_id: UUID,
    *,
    first: int = 50,
    after: str | None = None,
    filter: LogFilter | None = None,
    time_range: TimeRange | None = None,
) -> Page[AuditLogEntry] | Page[ScimEvent]:
    """A page of the organization's log of ``kind``, newest first, within ``time_range``.

    The caller needs the kind's list action; ``filter`` must be the kind's filter type.
    """
    row = LOG_KINDS[kind]
    await authorize(conn, principal, organization_id, row.list_action)
    chosen = row.filter_type() if filter is None else filter
    if not isinstance(chosen, row.filter_type):
        raise BadUserInput(f"filter must be a {row.filter_type.__name__}", field="filter")
    return await _list(
        conn,
        kind=row.cursor_tag,
        query=row.list_query,
        record=row.record_type,
        organization_id=organization_id,
        first=first,
        after=after,
        time_range=time_range or TimeRange(),
        filter_json=chosen.to_json(),
        filter_args=chosen.sql_args(),
    )


async def list_audit_log_entries(
    conn: asyncpg.Connection,
    principal: Principal,
    organization_id: UUID,
    *,
    first: int = 50,
    after: str | None = None,
    filter: AuditLogFilter | None = None,
    time_range: TimeRange | None = None,
) -> Page[AuditLogEntry]:
    """``list_entries`` of the audit log."""
    page = await list_entries(
        conn, principal, ExportKind.AUDIT_LOG, organization_id,
        first=first, after=after, filter=filter, time_range=time_range,
    )  # fmt: skip
    return cast(Page[AuditLogEntry], page)


async def list_scim_events(
    conn: asyncpg.Connection,
    principal: Principal,
    organization_id: UUID,
    *,
    first: int = 50,
    after: str | None = None,
    filter: ScimEventFilter | None = None,
    time_range: TimeRange | None = None,
) -> Page[ScimEvent]:
    """``list_entries`` of the SCIM events."""
    page = await list_entries(
        conn, principal, ExportKind.SCIM_EVENT, organization_id,
        first=first, after=after, filter=filter, time_range=time_range,
    )  # fmt: skip
    return cast(Page[ScimEvent], page)
