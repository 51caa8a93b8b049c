"""Managing log streams: the service every surface calls to create, change, test, delete and
list them.

Owners alone point a stream somewhere (``iam:log-stream:manage``); any member may list
streams, which never carry a secret. Each input error names its field as the GraphQL input
spells it (``destination.https.url``, ``intervalSeconds``, ``filter.actions``). A
destination is checked against the network rules before anything is stored, its secrets
are sealed with the stream's id, and the row and its self-audit entry commit together.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import asyncpg

from logexport.config import Settings
from logexport.db import q
from logexport.errors import BadUserInput, Forbidden, NotFound, RateLimited
from logexport.exports.audit import record_user_action
from logexport.exports.requests import parse_uuid
from logexport.identity import Principal
from logexport.kinds import LOG_KINDS, ExportKind
from logexport.policy import NO_ACCESS_MESSAGE, Action, authorize, role_of
from logexport.streams.destinations import Delivery, DeliveryFailed, open_destination
from logexport.streams.models import DestinationType, LogStream, StreamDelivery, StreamState
from logexport.streams.secrets import seal
from logexport.streams.ssrf import DestinationRefused, DestinationUnresolved, check_destination
from logexport.streams.store import insert_stream
from logexport.timeutil import parse_rfc3339

CREATE_ACTION = "iam:log-stream:create"
UPDATE_ACTION = "iam:log-stream:update"
DELETE_ACTION = "iam:log-stream:delete"

DEFAULT_INTERVAL_SECONDS = 300
MAX_INTERVAL_SECONDS = 24 * 3600
MAX_STREAMS_PER_ORG = 50
MIN_SECRET_LENGTH = 16
MAX_SECRET_LENGTH = 1024
MAX_URL_LENGTH = 2048
# A test delivery answers the owner who clicked: it may not hang their request.
TEST_DELIVERY_TIMEOUT = 30.0

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_REGION = re.compile(r"[a-z0-9-]{1,32}")
_ROLE_ARN = re.compile(r"arn:aws[a-z-]*:iam::[0-9]{12}:role/[\w+=,.@/-]{1,512}")
_EXTERNAL_ID = re.compile(r"[\w+=,.@:/-]{2,1224}")
_ACCESS_KEY_ID = re.compile(r"[A-Za-z0-9]{4,128}")

_log = logging.getLogger("logexport.streams")


@dataclass(frozen=True)
class NewDestination:
    """A checked destination: what is stored in the open, and what is sealed."""

    type: DestinationType
    public: dict[str, Any]
    secrets: dict[str, str]


# ---------------------------------------------------------------------------- validation


def _text(value: object, field: str, *, required: bool, max_length: int = 1024) -> str | None:
    if value is None or (isinstance(value, str) and value.strip() == "" and not required):
        if required:
            raise BadUserInput(f"{field} is required", field=field)
        return None
    if not isinstance(value, str):
        raise BadUserInput(f"{field} must be text", field=field)
    value = value.strip()
    if not value:
        raise BadUserInput(f"{field} is required", field=field)
    if len(value) > max_length:
        raise BadUserInput(f"{field} may hold at most {max_length} characters", field=field)
    return value


def _matching(value: object, field: str, pattern: re.Pattern[str], what: str) -> str | None:
    text = _text(value, field, required=False)
    if text is not None and not pattern.fullmatch(text):
        raise BadUserInput(f"{field} is not {what}", field=field)
    return text


def _secret(value: object, field: str) -> str:
    if not isinstance(value, str) or value == "":
        raise BadUserInput(f"{field} is required", field=field)
    if not MIN_SECRET_LENGTH <= len(value) <= MAX_SECRET_LENGTH:
        raise BadUserInput(
            f"{field} must be {MIN_SECRET_LENGTH} to {MAX_SECRET_LENGTH} characters",
            field=field,
        )
    return value


async def _checked_url(settings: Settings, value: object, field: str) -> str:
    url = _text(value, field, required=True, max_length=MAX_URL_LENGTH)
    assert url is not None
    # The network check reads a bare "host:port/path" as https, but the URL is stored and
    # used as given: without its scheme no delivery could ever be sent to it.
    if not re.match(r"(?i)https?://", url):
        raise BadUserInput(f"{field} must start with https://", field=field)
    try:
        await check_destination(url, allow_private=settings.stream_allow_private)
    except DestinationRefused as refused:
        hint = (
            ""
            if settings.stream_allow_private or isinstance(refused, DestinationUnresolved)
            else "; only public https destinations are allowed"
        )
        raise BadUserInput(f"{field} {refused.message}{hint}", field=field) from None
    return url


def min_interval_seconds(settings: Settings) -> int:
    return max(1, math.ceil(settings.stream_min_interval))


def parse_interval(settings: Settings, value: object) -> int:
    if value is None:
        return max(DEFAULT_INTERVAL_SECONDS, min_interval_seconds(settings))
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadUserInput("intervalSeconds must be a whole number", field="intervalSeconds")
    lowest = min_interval_seconds(settings)
    if not lowest <= value <= MAX_INTERVAL_SECONDS:
        raise BadUserInput(
            f"intervalSeconds must be between {lowest} and {MAX_INTERVAL_SECONDS} seconds",
            field="intervalSeconds",
        )
    return value


def parse_filter(kind: ExportKind, value: object) -> dict[str, Any] | None:
    """The filter in the canonical form an export of ``kind`` stores; None keeps every row."""
    if value is not None and not isinstance(value, Mapping):
        raise BadUserInput("filter must be an object", field="filter")
    canonical = LOG_KINDS[kind].filter_type.parse(value, "filter").to_json()
    return canonical or None


def _kind(value: object) -> ExportKind:
    try:
        return ExportKind(str(value).upper().replace("-", "_"))
    except ValueError:
        allowed = ", ".join(kind.value for kind in ExportKind)
        raise BadUserInput(f"kind must be one of {allowed}", field="kind") from None


def _start_at(value: object) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise BadUserInput("startAt must include a UTC offset", field="startAt")
        return value.astimezone(UTC)
    if not isinstance(value, str):
        raise BadUserInput("startAt must be an RFC 3339 timestamp", field="startAt")
    return parse_rfc3339(value, "startAt")


async def parse_destination(settings: Settings, value: object) -> NewDestination:
    """Exactly one of ``https`` or ``s3``, every field checked, hosts resolved and checked."""
    if not isinstance(value, Mapping):
        raise BadUserInput("destination is required", field="destination")
    chosen = [name for name in ("https", "s3") if value.get(name) is not None]
    if len(chosen) != 1:
        raise BadUserInput("destination must have exactly one of https or s3", field="destination")
    unknown = sorted(set(value) - {"https", "s3"})
    if unknown:
        raise BadUserInput(f"destination.{unknown[0]} is not a destination", field="destination")
    if chosen == ["https"]:
        return await _https_destination(settings, value["https"])
    return await _s3_destination(settings, value["s3"])


def _fields(value: object, field: str, known: set[str]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise BadUserInput(f"{field} must be an object", field=field)
    for name in value:
        if name not in known:
            raise BadUserInput(f"{field}.{name} is not a known field", field=f"{field}.{name}")
    return value


async def _https_destination(settings: Settings, value: object) -> NewDestination:
    https = _fields(value, "destination.https", {"url", "secret"})
    secret = _secret(https.get("secret"), "destination.https.secret")
    url = await _checked_url(settings, https.get("url"), "destination.https.url")
    return NewDestination(DestinationType.HTTPS, {"url": url}, {"secret": secret})


_S3_FIELDS = {
    "bucket": "bucket",
    "prefix": "prefix",
    "region": "region",
    "endpointUrl": "endpoint_url",
    "accessKeyId": "access_key_id",
    "secretAccessKey": "secret_access_key",
    "roleArn": "role_arn",
    "externalId": "external_id",
}


async def _s3_destination(settings: Settings, value: object) -> NewDestination:
    field = "destination.s3"
    given = _fields(value, field, set(_S3_FIELDS) | set(_S3_FIELDS.values()))
    s3 = {name: given.get(name, given.get(snake)) for name, snake in _S3_FIELDS.items()}
    bucket = _text(s3["bucket"], f"{field}.bucket", required=True, max_length=63)
    if bucket is None or not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise BadUserInput(
            f"{field}.bucket is not a valid bucket name (3-63 lowercase letters, digits, "
            "dots and hyphens)",
            field=f"{field}.bucket",
        )
    prefix = _text(s3["prefix"], f"{field}.prefix", required=False, max_length=512)
    if prefix is not None:
        prefix = prefix.strip("/") or None
    if prefix is not None and (".." in prefix.split("/") or "//" in prefix):
        raise BadUserInput(f"{field}.prefix is not a valid key prefix", field=f"{field}.prefix")
    region = _matching(s3["region"], f"{field}.region", _REGION, "a region name")
    access_key_id = _matching(
        s3["accessKeyId"], f"{field}.accessKeyId", _ACCESS_KEY_ID, "an access key id"
    )
    secret_value = s3["secretAccessKey"]
    secret_access_key = None if secret_value in (None, "") else secret_value
    role_arn = _matching(s3["roleArn"], f"{field}.roleArn", _ROLE_ARN, "an IAM role ARN")
    external_id = _matching(
        s3["externalId"], f"{field}.externalId", _EXTERNAL_ID, "a valid external id"
    )
    if access_key_id is not None and secret_access_key is None:
        raise BadUserInput(
            f"{field}.secretAccessKey is required with accessKeyId",
            field=f"{field}.secretAccessKey",
        )
    if secret_access_key is not None:
        if access_key_id is None:
            raise BadUserInput(
                f"{field}.accessKeyId is required with secretAccessKey",
                field=f"{field}.accessKeyId",
            )
        if not isinstance(secret_access_key, str) or not 1 <= len(secret_access_key) <= 256:
            raise BadUserInput(
                f"{field}.secretAccessKey must be 1 to 256 characters",
                field=f"{field}.secretAccessKey",
            )
    if access_key_id is None and role_arn is None:
        # Without either, deliveries would write with logexport's own credentials.
        raise BadUserInput(
            f"{field} needs accessKeyId and secretAccessKey, or roleArn with externalId",
            field=f"{field}.accessKeyId",
        )
    if role_arn is not None and external_id is None:
        raise BadUserInput(
            f"{field}.externalId is required with roleArn", field=f"{field}.externalId"
        )
    if external_id is not None and role_arn is None:
        raise BadUserInput(f"{field}.roleArn is required with externalId", field=f"{field}.roleArn")
    endpoint_url = None
    if s3["endpointUrl"] not in (None, ""):
        endpoint_url = await _checked_url(settings, s3["endpointUrl"], f"{field}.endpointUrl")
    public = {
        "bucket": bucket,
        "prefix": prefix,
        "region": region,
        "endpoint_url": endpoint_url,
        "access_key_id": access_key_id,
        "role_arn": role_arn,
        "external_id": external_id,
    }
    secrets = {} if secret_access_key is None else {"secret_access_key": secret_access_key}
    return NewDestination(DestinationType.S3, public, secrets)


# ---------------------------------------------------------------------------- self-audit


def destination_view(stream: LogStream) -> dict[str, Any]:
    """The destination as every surface shows it: type, URL, bucket and prefix; no secret."""
    return {
        "type": stream.destination_type.value,
        "url": stream.destination.get("url"),
        "bucket": stream.destination.get("bucket"),
        "prefix": stream.destination.get("prefix"),
    }


def _metadata(stream: LogStream) -> dict[str, object]:
    public = {k: v for k, v in stream.destination.items() if v is not None}
    return {
        "kind": stream.kind.value,
        "destination_type": stream.destination_type.value,
        "destination": public,
        "interval_seconds": stream.interval_seconds,
        "filter": stream.filter,
        "state": stream.state.value,
    }


async def _audit(
    conn: asyncpg.Connection,
    stream: LogStream,
    action: str,
    actor: Principal,
    *,
    ip_address: str | None,
    user_agent: str | None,
    extra: Mapping[str, object] | None = None,
) -> None:
    metadata = _metadata(stream)
    if extra:
        metadata.update(extra)
    await record_user_action(
        conn,
        actor,
        organization_id=stream.organization_id,
        action=action,
        resource_type="LogStream",
        resource_id=str(stream.id),
        metadata=metadata,
        ip_address=ip_address,
        user_agent=user_agent,
    )


# ---------------------------------------------------------------------------- service


async def create_stream(
    pool: asyncpg.Pool,
    settings: Settings,
    principal: Principal,
    arguments: Mapping[str, Any],
    *,
    ip_address: str | None = None,
    user_agent: str | None = None,
) -> LogStream:
    """Create a stream from ``arguments`` keyed as the GraphQL input (``organizationId``,
    ``kind``, ``intervalSeconds``, ``filter``, ``startAt``, ``destination``)."""
    organization_id = parse_uuid(arguments.get("organizationId"), "organizationId")
    async with pool.acquire() as conn:
        await authorize(conn, principal, organization_id, Action.LOG_STREAM_MANAGE)
    kind = _kind(arguments.get("kind"))
    interval = parse_interval(settings, arguments.get("intervalSeconds"))
    stream_filter = parse_filter(kind, arguments.get("filter"))
    start_at = _start_at(arguments.get("startAt"))
    destination = await parse_destination(settings, arguments.get("destination"))
    stream_id = uuid4()
    sealed = (
        seal(settings.require("secret_key"), stream_id, destination.secrets)
        if destination.secrets
        else None
    )
    async with pool.acquire() as conn, conn.transaction():
        # Membership may have changed while the destination was being resolved.
        await authorize(conn, principal, organization_id, Action.LOG_STREAM_MANAGE)
        await conn.execute(q("lock_organization_streams"), organization_id)
        live = await conn.fetchval(q("count_live_streams"), organization_id)
        if live >= MAX_STREAMS_PER_ORG:
            raise RateLimited(
                f"This organization already has {live} log streams; "
                f"delete one before creating another (at most {MAX_STREAMS_PER_ORG})"
            )
        if destination.type is DestinationType.S3:
            await _refuse_shared_object_names(conn, organization_id, kind, destination)
        stream = await insert_stream(
            conn,
            stream_id=stream_id,
            organization_id=organization_id,
            kind=kind.value,
            destination_type=destination.type.value,
            destination=destination.public,
            secret=sealed,
            interval_seconds=interval,
            filter=stream_filter,
            start_at=start_at,
            created_by=principal.user_id,
        )
        await _audit(
            conn,
            stream,
            CREATE_ACTION,
            principal,
            ip_address=ip_address,
            user_agent=user_agent,
            extra={"start_at": stream.start_at.isoformat()},
        )
    _log.info(
        "log stream created",
        extra={"stream_id": str(stream.id), "organization_id": str(organization_id)},
    )
    return stream


async def _refuse_shared_object_names(
    conn: asyncpg.Connection, organization_id: UUID, kind: ExportKind, destination: NewDestination
) -> None:
    public = destination.public
    other = await conn.fetchval(
        q("s3_stream_sharing_keys"),
        organization_id,
        kind.value,
        public["bucket"],
        public["prefix"],
        public["endpoint_url"],
    )
    if other is not None:
        where = f"s3://{public['bucket']}" + (f"/{public['prefix']}" if public["prefix"] else "")
        raise BadUserInput(
            f"destination.s3.prefix is taken: log stream {other} of this organization writes "
            f"its {kind.value} objects to {where} (or did within the hour), and objects are "
            "named by organization and sequence, so the two would overwrite each other; "
            "choose another prefix",
            field="destination.s3.prefix",
        )


async def _managed_stream(
    conn: asyncpg.Connection, principal: Principal, stream_id: object
) -> LogStream:
    """The live stream if the caller may manage it. Outsiders get ``NotFound`` whether or
    not it exists; members who may see it but not manage it get ``Forbidden``."""
    stream = await visible_stream(conn, principal, stream_id)
    await authorize(conn, principal, stream.organization_id, Action.LOG_STREAM_MANAGE)
    return stream


async def visible_stream(
    conn: asyncpg.Connection, principal: Principal, stream_id: object
) -> LogStream:
    """The live stream if the caller belongs to its organization; else ``NotFound``."""
    try:
        parsed = parse_uuid(stream_id, "id")
    except BadUserInput:
        raise NotFound("No such log stream") from None
    record = await conn.fetchrow(q("find_log_stream"), parsed)
    if record is None:
        raise NotFound("No such log stream")
    stream = LogStream.from_record(record)
    if await role_of(conn, stream.organization_id, principal.user_id) is None:
        raise NotFound("No such log stream")
    return stream


async def update_stream(
    pool: asyncpg.Pool,
    settings: Settings,
    principal: Principal,
    arguments: Mapping[str, Any],
    *,
    ip_address: str | None = None,
    user_agent: str | None = None,
) -> LogStream:
    """Pause (``state`` PAUSED), resume (ACTIVE), change ``intervalSeconds`` or ``filter``.

    A field left out of ``arguments`` stays as it is; ``filter`` given as None clears it.
    """
    async with pool.acquire() as conn, conn.transaction():
        found = await _managed_stream(conn, principal, arguments.get("id"))
        record = await conn.fetchrow(q("lock_log_stream"), found.id, found.organization_id)
        if record is None:
            raise NotFound("No such log stream")
        stream = LogStream.from_record(record)
        state = stream.state
        resumed = False
        requested_state = arguments.get("state")
        if requested_state is not None:
            wanted = str(requested_state).upper()
            if wanted not in (StreamState.ACTIVE, StreamState.PAUSED):
                raise BadUserInput("state must be ACTIVE or PAUSED", field="state")
            if wanted == StreamState.PAUSED:
                state = StreamState.PAUSED
            elif stream.state is StreamState.PAUSED:
                # Paused while its destination was failing, it has not been seen to work
                # since: it resumes FAILING, its last error shown, until a delivery succeeds.
                failing = stream.last_error is not None
                state = StreamState.FAILING if failing else StreamState.ACTIVE
                resumed = True
            elif stream.state is StreamState.FAILING:
                # The owner says the destination is fixed: try again now, not after the
                # backoff; the state and the error stay until a delivery succeeds.
                resumed = True
        interval = stream.interval_seconds
        if arguments.get("intervalSeconds") is not None:
            interval = parse_interval(settings, arguments["intervalSeconds"])
        stream_filter = stream.filter
        if "filter" in arguments:
            stream_filter = parse_filter(stream.kind, arguments["filter"])
        changes: dict[str, object] = {}
        if state is not stream.state:
            changes["state"] = {"from": stream.state.value, "to": state.value}
        if interval != stream.interval_seconds:
            changes["interval_seconds"] = {"from": stream.interval_seconds, "to": interval}
        if stream_filter != stream.filter:
            changes["filter"] = {"from": stream.filter, "to": stream_filter}
        if resumed and state is stream.state:
            changes["retry"] = "now"
        if not changes:
            return stream
        updated = LogStream.from_record(
            await conn.fetchrow(
                q("update_log_stream"),
                stream.id,
                stream.organization_id,
                state.value,
                interval,
                stream_filter,
                resumed,
            )
        )
        await _audit(
            conn,
            updated,
            UPDATE_ACTION,
            principal,
            ip_address=ip_address,
            user_agent=user_agent,
            extra={"changes": changes},
        )
    return updated


async def delete_stream(
    pool: asyncpg.Pool,
    principal: Principal,
    stream_id: object,
    *,
    ip_address: str | None = None,
    user_agent: str | None = None,
) -> LogStream:
    """Stop the stream for good; its deliveries stay on record."""
    async with pool.acquire() as conn, conn.transaction():
        stream = await _managed_stream(conn, principal, stream_id)
        record = await conn.fetchrow(q("delete_log_stream"), stream.id, stream.organization_id)
        if record is None:
            raise NotFound("No such log stream")
        deleted = LogStream.from_record(record)
        await _audit(
            conn, deleted, DELETE_ACTION, principal, ip_address=ip_address, user_agent=user_agent
        )
    return deleted


async def list_streams(
    pool: asyncpg.Pool, principal: Principal, organization_id: object
) -> list[LogStream]:
    """The organization's live streams, newest first; for any member."""
    org_id = parse_uuid(organization_id, "organizationId")
    async with pool.acquire() as conn:
        await _member(conn, principal, org_id)
        rows = await conn.fetch(q("list_log_streams"), org_id)
    return [LogStream.from_record(row) for row in rows]


async def get_stream(pool: asyncpg.Pool, principal: Principal, stream_id: object) -> LogStream:
    async with pool.acquire() as conn:
        return await visible_stream(conn, principal, stream_id)


async def _member(conn: asyncpg.Connection, principal: Principal, organization_id: UUID) -> None:
    if await role_of(conn, organization_id, principal.user_id) is None:
        raise Forbidden(NO_ACCESS_MESSAGE)


@dataclass(frozen=True)
class DeliveryPage:
    items: list[StreamDelivery]
    has_next_page: bool


async def list_deliveries(
    pool: asyncpg.Pool,
    stream: LogStream,
    *,
    first: int,
    after: tuple[datetime, UUID] | None = None,
) -> DeliveryPage:
    """A page of ``stream``'s deliveries, newest first (the caller has checked access)."""
    if not 1 <= first <= 100:
        raise BadUserInput("first must be between 1 and 100", field="first")
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            q("list_stream_deliveries"),
            stream.id,
            stream.organization_id,
            after[0] if after else None,
            after[1] if after else None,
            first + 1,
        )
    items = [StreamDelivery.from_record(row) for row in rows[:first]]
    return DeliveryPage(items=items, has_next_page=len(rows) > first)


async def test_stream(
    pool: asyncpg.Pool, settings: Settings, principal: Principal, stream_id: object
) -> LogStream:
    """Send one delivery with no rows now and record its outcome.

    The delivery is stored first (``test``, no sequence), then sent outside any
    transaction; its status and error, and the stream's last error, say how it went.
    """
    async with pool.acquire() as conn:
        stream = await _managed_stream(conn, principal, stream_id)
        record = await conn.fetchrow(
            q("insert_test_delivery"), uuid4(), stream.id, stream.organization_id
        )
    delivery_row = StreamDelivery.from_record(record)
    body = gzip.compress(b"", mtime=0)
    error: str | None = None
    try:
        destination = open_destination(stream, settings)
        await asyncio.wait_for(
            destination.deliver(
                Delivery(
                    id=delivery_row.id,
                    stream_id=stream.id,
                    organization_id=stream.organization_id,
                    kind=stream.kind,
                    sequence=None,
                    body=body,
                    row_count=0,
                    manifest=None,
                    created_at=delivery_row.created_at,
                )
            ),
            TEST_DELIVERY_TIMEOUT,
        )
    except DeliveryFailed as failed:
        error = failed.message
    except DestinationRefused as refused:
        error = f"the destination is refused: {refused.message}"
    except TimeoutError:
        error = f"the destination did not answer within {TEST_DELIVERY_TIMEOUT:.0f} seconds"
    status = "DELIVERED" if error is None else "FAILED"
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            q("finish_test_delivery"),
            delivery_row.id,
            stream.organization_id,
            status,
            error,
            len(body),
            hashlib.sha256(body).hexdigest(),
        )
        updated = await conn.fetchrow(
            q("record_test_result"),
            stream.id,
            stream.organization_id,
            None if error is None else f"Test delivery failed: {error}",
        )
    _log.info(
        "log stream test delivery",
        extra={"stream_id": str(stream.id), "status": status},
    )
    if updated is None:
        # Deleted while the test ran: the answer is the stream as it was.
        return stream
    return LogStream.from_record(updated)
