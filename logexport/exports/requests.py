"""Requesting, reading and canceling exports: the service every surface calls.

Authorization and validation happen here once; GraphQL, MCP, the console and the CLI only
translate their input and output.
"""

from __future__ import annotations

import hashlib
import json
import string
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, cast
from uuid import UUID

import asyncpg

from logexport.config import Settings
from logexport.db import q
from logexport.errors import BadUserInput, NotFound, RateLimited
from logexport.exports.audit import record_export_event
from logexport.exports.models import (
    Compression,
    ExportFormat,
    ExportKind,
    ExportStatus,
    LogExport,
)
from logexport.identity import Principal
from logexport.kinds import LOG_KINDS, LogFilter
from logexport.policy import Action, allows, authorize, role_of
from logexport.timeutil import format_rfc3339, parse_rfc3339

IDEMPOTENCY_WINDOW = timedelta(hours=24)
# The driver stores the first and last representable instants as -infinity and infinity,
# which read back as naive datetimes, not instants: bounds must lie strictly inside.
_EARLIEST = datetime.min.replace(tzinfo=UTC)
_LATEST = datetime.max.replace(tzinfo=UTC)
_PRINTABLE_ASCII = frozenset(string.printable) - frozenset("\t\n\r\x0b\x0c")


@dataclass(frozen=True)
class ExportInput:
    """What to export, typed: what a surface asks for (``request_export`` checks its rules
    again) and what the pipeline reads (``ExportInput.of`` a stored export)."""

    organization_id: UUID
    kind: ExportKind
    from_time: datetime
    to_time: datetime
    format: ExportFormat = ExportFormat.JSONL
    compression: Compression = Compression.NONE
    csv_bom: bool = False
    # The kind's filter type (``LOG_KINDS[kind].filter_type``); ``None`` keeps every row.
    filter: LogFilter | None = None
    idempotency_key: str | None = None

    @classmethod
    def of(cls, export: LogExport) -> ExportInput:
        """What ``export`` was asked for, as stored in its ``log_exports`` row."""
        kind = LOG_KINDS[export.kind]
        return cls(
            organization_id=export.organization_id,
            kind=export.kind,
            from_time=export.from_time,
            to_time=export.to_time,
            format=export.format,
            compression=export.compression,
            csv_bom=export.csv_bom,
            filter=kind.filter_type.parse(export.filter),
            idempotency_key=export.idempotency_key,
        )

    def filter_json(self) -> dict[str, Any]:
        """The filter in canonical JSON form (sorted, de-duplicated, camelCase keys)."""
        chosen = self.filter if self.filter is not None else LOG_KINDS[self.kind].filter_type()
        return chosen.to_json()

    def fingerprint(self) -> str:
        """Hash of everything but the key: the same key must mean the same request."""
        canonical = {
            "organization_id": str(self.organization_id),
            "kind": self.kind.value,
            "from_time": format_rfc3339(self.from_time),
            "to_time": format_rfc3339(self.to_time),
            "format": self.format.value,
            "compression": self.compression.value,
            "csv_bom": self.csv_bom,
            "filter": self.filter_json(),
        }
        text = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


def parse_uuid(value: object, field: str) -> UUID:
    if isinstance(value, UUID):
        return value
    try:
        return UUID(str(value))
    except ValueError:
        raise BadUserInput(f"{field} is not a valid id", field=field) from None


_E = TypeVar("_E", ExportFormat, Compression)


def _enum(enum: type[_E], value: object, field: str, default: _E) -> _E:
    if value is None:
        return default
    try:
        return enum(str(value).upper())
    except ValueError:
        allowed = ", ".join(member.value for member in enum)
        raise BadUserInput(f"{field} must be one of {allowed}", field=field) from None


def _datetime(value: object, field: str) -> datetime:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise BadUserInput(f"{field} must include a UTC offset", field=field)
        parsed = value
    else:
        # Anything but text is refused there too, naming the field.
        parsed = parse_rfc3339(cast(str, value), field)
    if not _EARLIEST < parsed < _LATEST:
        raise BadUserInput(
            f"{field} must lie after 0001-01-01T00:00:00Z and before 9999-12-31T23:59:59.999999Z",
            field=field,
        )
    return parsed


def _check_range(settings: Settings, start: datetime, end: datetime) -> None:
    if start >= end:
        raise BadUserInput("fromTime must be earlier than toTime", field="toTime")
    max_span = timedelta(days=settings.max_range_days)
    if end - start > max_span:
        raise BadUserInput(
            f"The range from fromTime to toTime may span at most {settings.max_range_days} days",
            field="toTime",
        )


def _check_bom(export_format: ExportFormat, bom: bool) -> None:
    if bom and export_format is not ExportFormat.CSV:
        raise BadUserInput("csvBom applies to the CSV format only", field="csvBom")


def validate_idempotency_key(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= 200:
        raise BadUserInput("idempotencyKey must be 1 to 200 characters", field="idempotencyKey")
    if not set(value) <= _PRINTABLE_ASCII:
        raise BadUserInput(
            "idempotencyKey may hold printable ASCII characters only", field="idempotencyKey"
        )
    return value


def parse_export_input(
    settings: Settings,
    kind: ExportKind | str,
    *,
    organization_id: object,
    from_time: object,
    to_time: object,
    format: object = None,
    compression: object = None,
    csv_bom: object = None,
    filter: Mapping[str, Any] | None = None,
    idempotency_key: object = None,
) -> ExportInput:
    """An ``ExportInput`` from a surface's values (text or typed), every rule checked in
    turn, each error naming its field as the GraphQL input spells it."""
    start = _datetime(from_time, "fromTime")
    end = _datetime(to_time, "toTime")
    _check_range(settings, start, end)
    export_format = _enum(ExportFormat, format, "format", ExportFormat.JSONL)
    bom = bool(csv_bom) if csv_bom is not None else False
    _check_bom(export_format, bom)
    chosen = LOG_KINDS[ExportKind(kind)]
    return ExportInput(
        organization_id=parse_uuid(organization_id, "organizationId"),
        kind=chosen.kind,
        from_time=start,
        to_time=end,
        format=export_format,
        compression=_enum(Compression, compression, "compression", Compression.NONE),
        csv_bom=bom,
        filter=chosen.filter_type.parse(filter),
        idempotency_key=validate_idempotency_key(idempotency_key),
    )


def check_export_input(settings: Settings, request: ExportInput) -> None:
    """The rules ``parse_export_input`` applies, for a request built in code."""
    _datetime(request.from_time, "fromTime")
    _datetime(request.to_time, "toTime")
    _check_range(settings, request.from_time, request.to_time)
    _check_bom(request.format, request.csv_bom)
    filter_type = LOG_KINDS[request.kind].filter_type
    if request.filter is not None and not isinstance(request.filter, filter_type):
        raise BadUserInput(
            f"filter must be a {filter_type.__name__} for this export", field="filter"
        )
    validate_idempotency_key(request.idempotency_key)


async def request_export(
    pool: asyncpg.Pool,
    settings: Settings,
    principal: Principal,
    request: ExportInput,
    *,
    ip_address: str | None = None,
    user_agent: str | None = None,
) -> LogExport:
    """Queue an export: job row, self-audit entry and ``NOTIFY`` in one transaction."""
    async with pool.acquire() as conn:
        await authorize(
            conn, principal, request.organization_id, LOG_KINDS[request.kind].export_action
        )
        check_export_input(settings, request)
        return await _queue_export(
            conn, settings, principal, request, ip_address=ip_address, user_agent=user_agent
        )


async def request_export_from_values(
    pool: asyncpg.Pool,
    settings: Settings,
    principal: Principal,
    kind: ExportKind | str,
    values: Mapping[str, Any],
    *,
    ip_address: str | None = None,
    user_agent: str | None = None,
) -> LogExport:
    """Queue an export from a surface's values, keyed by ``parse_export_input``'s names.

    The caller's right to export is checked before the values are judged, so someone who
    may not export learns nothing from how their input would have been answered.
    """
    chosen = LOG_KINDS[ExportKind(kind)]
    org_id = parse_uuid(values.get("organization_id"), "organizationId")
    async with pool.acquire() as conn:
        await authorize(conn, principal, org_id, chosen.export_action)
        request = parse_export_input(settings, chosen.kind, **{**values, "organization_id": org_id})
        return await _queue_export(
            conn, settings, principal, request, ip_address=ip_address, user_agent=user_agent
        )


async def _queue_export(
    conn: asyncpg.Connection,
    settings: Settings,
    principal: Principal,
    request: ExportInput,
    *,
    ip_address: str | None,
    user_agent: str | None,
) -> LogExport:
    """The request's transaction, for a caller already authorized to export."""
    org_id = request.organization_id
    export_action = LOG_KINDS[request.kind].export_action
    fingerprint = request.fingerprint()
    async with conn.transaction():
        if request.idempotency_key is not None:
            previous = await _replay(conn, principal, request, fingerprint)
            if previous is not None:
                return previous
        await conn.execute(q("lock_organization_exports"), org_id)
        if request.idempotency_key is not None:
            # A concurrent request with the same key may have committed while we
            # waited for the lock: answer with its export, not a cap check or error.
            previous = await _replay(conn, principal, request, fingerprint)
            if previous is not None:
                return previous
        active = await conn.fetchval(q("count_active_exports"), org_id)
        if active >= settings.max_active_exports_per_org:
            raise RateLimited(
                f"This organization already has {active} exports pending or running; "
                "wait for one to finish before requesting another"
            )
        record = await conn.fetchrow(
            q("insert_export"),
            org_id,
            request.kind.value,
            request.from_time,
            request.to_time,
            request.format.value,
            request.compression.value,
            request.csv_bom,
            request.filter_json(),
            principal.user_id,
            principal.api_key_id,
            request.idempotency_key,
            fingerprint,
        )
        if record is None:
            # A concurrent request with the same key (for another organization, so
            # not serialized by the lock) won the unique index.
            previous = await _replay(conn, principal, request, fingerprint)
            if previous is not None:
                return previous
            raise BadUserInput(
                "idempotencyKey is being used by a concurrent request; retry it",
                field="idempotencyKey",
            )
        export = LogExport.from_record(record)
        await record_export_event(
            conn,
            export,
            export_action.value,
            actor=principal,
            ip_address=ip_address,
            user_agent=user_agent,
        )
        await conn.execute(q("notify_export"), export.id)
    return export


async def _replay(
    conn: asyncpg.Connection, principal: Principal, request: ExportInput, fingerprint: str
) -> LogExport | None:
    """The export an earlier request with this key created, if it is still in its window."""
    record = await conn.fetchrow(
        q("find_export_by_idempotency_key"), principal.user_id, request.idempotency_key
    )
    if record is None:
        return None
    previous = LogExport.from_record(record)
    now = await conn.fetchval("SELECT now()")
    if now - previous.created_at >= IDEMPOTENCY_WINDOW:
        await conn.execute(q("release_idempotency_key"), previous.id)
        return None
    if previous.request_hash != fingerprint:
        raise BadUserInput(
            "idempotencyKey was already used for a different export request",
            field="idempotencyKey",
        )
    return previous


async def _visible_export(
    conn: asyncpg.Connection, principal: Principal, export_id: object, action: Action
) -> LogExport:
    """The export if the principal may act on it; ``NotFound`` alike when missing or hidden."""
    try:
        parsed = parse_uuid(export_id, "id")
    except BadUserInput:
        raise NotFound("No such export") from None
    record = await conn.fetchrow(q("get_export"), parsed)
    if record is None:
        raise NotFound("No such export")
    export = LogExport.from_record(record)
    role = await role_of(conn, export.organization_id, principal.user_id)
    if not allows(role, action):
        raise NotFound("No such export")
    return export


async def get_export(pool: asyncpg.Pool, principal: Principal, export_id: object) -> LogExport:
    async with pool.acquire() as conn:
        return await _visible_export(conn, principal, export_id, Action.LOG_EXPORT_GET)


@dataclass(frozen=True)
class ExportPage:
    items: list[LogExport]
    has_next_page: bool


async def list_exports(
    pool: asyncpg.Pool,
    principal: Principal,
    organization_id: object,
    *,
    first: int = 50,
    after: tuple[datetime, UUID] | None = None,
) -> ExportPage:
    """Newest first; ``after`` is the (created_at, id) of the last export already seen."""
    if not 1 <= first <= 100:
        raise BadUserInput("first must be between 1 and 100", field="first")
    org_id = parse_uuid(organization_id, "organizationId")
    async with pool.acquire() as conn:
        await authorize(conn, principal, org_id, Action.LOG_EXPORT_GET)
        rows = await conn.fetch(
            q("list_exports"),
            org_id,
            after[0] if after else None,
            after[1] if after else None,
            first + 1,
        )
    items = [LogExport.from_record(r) for r in rows[:first]]
    return ExportPage(items=items, has_next_page=len(rows) > first)


async def cancel_export(
    pool: asyncpg.Pool,
    principal: Principal,
    export_id: object,
    *,
    ip_address: str | None = None,
    user_agent: str | None = None,
) -> LogExport:
    """Cancel at once when pending; when processing the worker stops at its next
    heartbeat; a completed export loses its object and links."""
    async with pool.acquire() as conn, conn.transaction():
        export = await _visible_export(conn, principal, export_id, Action.LOG_EXPORT_CANCEL)
        record = await conn.fetchrow(q("get_export_for_update"), export.id)
        export = LogExport.from_record(record)
        if export.status is ExportStatus.CANCELED:
            return export
        if export.status in (ExportStatus.FAILED, ExportStatus.EXPIRED):
            raise BadUserInput(
                f"An export that is {export.status.value.lower()} cannot be canceled", field="id"
            )
        canceled = LogExport.from_record(await conn.fetchrow(q("cancel_export"), export.id))
        # Links die with the status (the download page answers 410 "canceled"), and the
        # object sweeper deletes the object because no live export adopts it any more.
        await record_export_event(
            conn,
            canceled,
            Action.LOG_EXPORT_CANCEL.value,
            actor=principal,
            ip_address=ip_address,
            user_agent=user_agent,
            extra={"previous_status": export.status.value},
        )
    return canceled
