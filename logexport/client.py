"""A GraphQL client of a remote logexport API, for scripts, the CLI and ``logexport mcp``.

It needs no database: every call is one GraphQL request to ``{api_url}/graphql`` with the
bearer token. Results are the GraphQL objects as plain dicts (camelCase keys; ``BigInt``
fields are decimal strings). No message ever includes the token.

Errors: each GraphQL ``extensions.code`` raises its own class, all subclasses of
``ApiError`` (``code``, ``message``, ``field``): ``Unauthenticated``, ``Forbidden``,
``NotFound``, ``BadUserInput``, ``RateLimited``, ``QueryTooComplex``, ``InternalError``.
The first five also subclass the library's own errors of the same name
(``logexport.NotFound`` …), so one ``except logexport.NotFound`` serves the remote client
and the in-process API alike. A network failure raises ``ApiUnreachable``; a downloaded
file that is not the one its signed manifest describes raises ``ManifestMismatch``.

Range bounds take what the CLI takes: a UTC day (``"2026-01-31"`` or a ``date``; as
``to_time`` it includes the whole day), an aware ``datetime``, or an RFC 3339 string with
an offset.

    async with LogExportClient("https://logexport.example.com", token) as client:
        export = await client.request_export("AUDIT_LOG", org_id, "2026-01-01", "2026-01-31")
        export = await client.wait_for_export(export["id"], timeout=600)
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import os
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO, Self, TypeAlias
from urllib.parse import urlsplit, urlunsplit
from uuid import UUID

import httpx

from logexport import errors, shapes
from logexport.errors import LogExportError
from logexport.kinds import LOG_KINDS, ExportKind, LogKind, log_kind
from logexport.timeutil import format_rfc3339, parse_time_bound

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

# Every selection comes from ``logexport.shapes``, the list the server's resolvers and MCP
# answers are built from, so this client reads exactly what ``/mcp`` shows.
LOG_EXPORT_FRAGMENT = f"""
fragment LogExportFields on LogExport {{ {shapes.selection(shapes.LOG_EXPORT_FIELDS)} }}
"""

_PAGE_INFO = f"pageInfo {{ {shapes.selection(shapes.PAGE_INFO_FIELDS)} }}"

GET_LOG_EXPORT = (
    """
query LogExport($id: ID!) { logExport(id: $id) { ...LogExportFields } }
"""
    + LOG_EXPORT_FRAGMENT
)

# A separate query: each downloadUrl is a fresh link (a stored token), so it is asked for
# only when the caller is about to download.
GET_LOG_EXPORT_DOWNLOAD = (
    f"""
query LogExportDownload($id: ID!) {{
  logExport(id: $id) {{ ...LogExportFields {shapes.DOWNLOAD_URL} }}
}}
"""
    + LOG_EXPORT_FRAGMENT
)

LIST_LOG_EXPORTS = (
    f"""
query LogExports($organizationId: ID!, $first: Int, $after: String) {{
  organization(id: $organizationId) {{
    logExports(first: $first, after: $after) {{
      edges {{ cursor node {{ ...LogExportFields }} }}
      {_PAGE_INFO}
    }}
  }}
}}
"""
    + LOG_EXPORT_FRAGMENT
)

CANCEL_LOG_EXPORT = (
    """
mutation CancelLogExport($input: CancelLogExportInput!) {
  cancelLogExport(input: $input) { logExport { ...LogExportFields } }
}
"""
    + LOG_EXPORT_FRAGMENT
)


def request_document(row: LogKind) -> str:
    """The mutation that queues an export of ``row``'s kind."""
    operation = row.graphql_request_operation
    return (
        f"""
mutation {operation}($input: {operation}Input!) {{
  {row.graphql_request}(input: $input) {{ logExport {{ ...LogExportFields }} }}
}}
"""
        + LOG_EXPORT_FRAGMENT
    )


def listing_document(row: LogKind) -> str:
    """The query of a page of ``row``'s entries."""
    return f"""
query {row.graphql_list_operation}(
  $organizationId: ID!, $first: Int, $after: String, $filter: {row.graphql_filter},
  $fromTime: DateTime, $toTime: DateTime
) {{
  organization(id: $organizationId) {{
    {row.graphql_connection}(
      first: $first, after: $after, filter: $filter, fromTime: $fromTime, toTime: $toTime
    ) {{
      edges {{ cursor node {{ {shapes.selection(shapes.ENTRY_FIELDS[row.graphql_node])} }} }}
      {_PAGE_INFO}
    }}
  }}
}}
"""


VIEWER = f"""
query Viewer {{
  viewer {{
    {shapes.selection(shapes.VIEWER_FIELDS)}
    organizations {{ {shapes.selection(shapes.MEMBER_ORGANIZATION_FIELDS)} }}
  }}
  maxRangeDays
}}
"""


# Log streams: a stream never carries a secret back; its deliveries are a short page.
LOG_STREAM_FRAGMENT = """
fragment LogStreamFields on LogStream {
  id kind state intervalSeconds filter lastError nextRunAt startAt createdAt
  destination { type url bucket prefix }
  deliveries(first: $deliveries) {
    edges { node { id sequence rowCount byteSize status attempts deliveredAt error } }
    pageInfo { hasNextPage endCursor }
  }
}
"""

LIST_LOG_STREAMS = (
    """
query LogStreams($organizationId: ID!, $deliveries: Int = 5) {
  organization(id: $organizationId) { logStreams { ...LogStreamFields } }
}
"""
    + LOG_STREAM_FRAGMENT
)


def stream_mutation_document(name: str) -> str:
    """``createLogStream``, ``updateLogStream``, ``deleteLogStream`` or ``testLogStream``."""
    operation = name[:1].upper() + name[1:]
    return (
        f"""
mutation {operation}($input: {operation}Input!, $deliveries: Int = 5) {{
  {name}(input: $input) {{ logStream {{ ...LogStreamFields }} }}
}}
"""
        + LOG_STREAM_FRAGMENT
    )


STREAM_MUTATIONS = ("createLogStream", "updateLogStream", "deleteLogStream", "testLogStream")


# Every document this client sends, so a test can validate them against schema.graphql.
DOCUMENTS = {
    **{row.graphql_request: request_document(row) for row in LOG_KINDS.values()},
    "logExport": GET_LOG_EXPORT,
    "logExportDownload": GET_LOG_EXPORT_DOWNLOAD,
    "logExports": LIST_LOG_EXPORTS,
    "cancelLogExport": CANCEL_LOG_EXPORT,
    **{row.graphql_connection: listing_document(row) for row in LOG_KINDS.values()},
    "viewer": VIEWER,
    "logStreams": LIST_LOG_STREAMS,
    **{name: stream_mutation_document(name) for name in STREAM_MUTATIONS},
}

# Python and MCP callers spell filter keys in snake_case; GraphQL wants camelCase.
_FILTER_KEYS = {
    "actor_ids": "actorIds",
    "resource_types": "resourceTypes",
    "user_name": "userName",
    "status_codes": "statusCodes",
}

# S3 destination fields as Python callers spell them → the GraphQL input's.
_S3_KEYS = {
    "endpoint_url": "endpointUrl",
    "access_key_id": "accessKeyId",
    "secret_access_key": "secretAccessKey",
    "role_arn": "roleArn",
    "external_id": "externalId",
}

_CHUNK = 64 * 1024
# Exports per page when collecting a chain's manifests (the API's largest page).
_MANIFEST_PAGE = 100
_MAX_KEYS_DOCUMENT = 1 << 20

# A GraphQL object as decoded from the response: its fields are those ``schema.graphql``
# documents (and ``logexport.shapes`` lists), the values whatever JSON holds.
ApiObject: TypeAlias = dict[str, Any]
# An id as the caller holds it: the API's string or a UUID.
Id: TypeAlias = str | UUID


class ApiError(LogExportError):
    """The API refused a request. ``code`` is the GraphQL ``extensions.code``."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.code = code

    def __str__(self) -> str:
        if self.field and not self.message.startswith(f"{self.field}:"):
            return f"{self.field}: {self.message}"
        return self.message


class _CodedApiError(ApiError):
    """An ``ApiError`` whose class fixes its code."""

    error_code = "INTERNAL"

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(self.error_code, message, field)


class Unauthenticated(_CodedApiError, errors.Unauthenticated):
    """The token is missing, malformed, unknown, expired or revoked."""

    error_code = "UNAUTHENTICATED"


class Forbidden(_CodedApiError, errors.Forbidden):
    """The token's user may not do this in that organization (or it does not exist)."""

    error_code = "FORBIDDEN"


class NotFound(_CodedApiError, errors.NotFound):
    """No such export, or one the token's user may not see."""

    error_code = "NOT_FOUND"


class BadUserInput(_CodedApiError, errors.BadUserInput):
    """An argument breaks a rule; ``field`` names it (``toTime``, ``filter.actions`` …)."""

    error_code = "BAD_USER_INPUT"


class RateLimited(_CodedApiError, errors.RateLimited):
    """Too many active exports in the organization; retry once some have finished."""

    error_code = "RATE_LIMITED"


class QueryTooComplex(_CodedApiError):
    """The query's cost or response size is over the server's budget."""

    error_code = "QUERY_TOO_COMPLEX"


class InternalError(_CodedApiError):
    """The server failed; the message is generic and the details are in its log."""

    error_code = "INTERNAL"


ERROR_CLASSES: dict[str, type[_CodedApiError]] = {
    cls.error_code: cls
    for cls in (
        Unauthenticated,
        Forbidden,
        NotFound,
        BadUserInput,
        RateLimited,
        QueryTooComplex,
        InternalError,
    )
}


def api_error(code: str, message: str, field: str | None = None) -> ApiError:
    """The exception for an ``extensions.code``: its own class, or ``ApiError`` if unknown."""
    cls = ERROR_CLASSES.get(code)
    return cls(message, field) if cls is not None else ApiError(code, message, field)


class ApiUnreachable(ApiError):
    """The request never got a usable answer: connection refused, timeout, not GraphQL."""

    def __init__(self, message: str) -> None:
        super().__init__("NETWORK", message)


class ManifestMismatch(ApiError):
    """The downloaded file does not match its signed manifest; nothing was kept.

    ``check`` names the first check that failed (``signature``, ``size``, ``sha256``,
    ``row``, ``content`` …), as ``logexport verify`` reports it."""

    def __init__(self, check: str, detail: str) -> None:
        super().__init__(
            "MANIFEST_MISMATCH",
            f"the file does not match its signed manifest: {detail}; nothing was kept",
        )
        self.check = check
        self.detail = detail


class KeysUnavailable(ApiError):
    """The server's public keys (``/.well-known/logexport-keys.json``) could not be read."""

    def __init__(self, message: str) -> None:
        super().__init__("KEYS_UNAVAILABLE", message)


class ChecksumMismatch(ApiError):
    """The downloaded file's SHA-256 is not the one the API recorded; nothing was kept."""

    def __init__(self, expected: str, actual: str) -> None:
        super().__init__(
            "CHECKSUM_MISMATCH",
            f"the downloaded file's SHA-256 is {actual}, expected {expected}; it was removed",
        )
        self.expected = expected
        self.actual = actual


TERMINAL_STATUSES = frozenset({"COMPLETED", "FAILED", "CANCELED", "EXPIRED"})

ProgressCallback = Callable[[ApiObject], Awaitable[None] | None]

# Consecutive failed polls tolerated by ``wait_for_export`` before it gives up.
_POLL_ATTEMPTS = 3


def _public_url(url: str) -> str:
    """``url`` without user info or query, safe to show in a message."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _bound(value: str | date | datetime, field: str, *, end: bool) -> str:
    try:
        return format_rfc3339(parse_time_bound(value, field, end=end))
    except errors.BadUserInput as exc:
        raise BadUserInput(exc.message, exc.field) from None


def graphql_filter(raw: Mapping[str, object] | None) -> dict[str, object] | None:
    """A filter with snake_case keys turned into the GraphQL input's camelCase."""
    if raw is None:
        return None
    return {_FILTER_KEYS.get(key, key): value for key, value in raw.items()}


def _log_kind(kind: str) -> LogKind:
    try:
        return log_kind(kind)
    except ValueError:
        raise ValueError(f"kind must be {' or '.join(LOG_KINDS)}") from None


class LogExportClient:
    """One API endpoint and token; reuse it for many calls, close it when done."""

    def __init__(
        self,
        api_url: str,
        token: str,
        *,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self._graphql_url = f"{self.api_url}/graphql"
        self._http = httpx.AsyncClient(
            headers={"Authorization": f"Bearer {token}", "User-Agent": "logexport-client"},
            timeout=timeout,
            transport=transport,
        )
        # Downloads go to a link that carries its own token (and may redirect to object
        # storage), so the API token is never sent with them.
        self._download_http = httpx.AsyncClient(
            headers={"User-Agent": "logexport-client"},
            timeout=timeout,
            follow_redirects=True,
            transport=transport,
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()
        await self._download_http.aclose()

    # ---------------------------------------------------------------------------- transport

    async def execute(
        self, document: str, variables: Mapping[str, object] | None = None
    ) -> ApiObject:
        """Run one GraphQL document; the ``data`` object, or ``ApiError`` for any error."""
        try:
            response = await self._http.post(
                self._graphql_url, json={"query": document, "variables": dict(variables or {})}
            )
        except httpx.TimeoutException:
            raise ApiUnreachable(
                f"the logexport API at {_public_url(self.api_url)} did not answer in time"
            ) from None
        except httpx.HTTPError as exc:
            reason = type(exc).__name__
            raise ApiUnreachable(
                f"cannot reach the logexport API at {_public_url(self.api_url)} ({reason})"
            ) from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and body.get("errors"):
            raise _error_from(body["errors"][0])
        if response.status_code == 401:
            raise Unauthenticated("the API token was not accepted")
        data = body.get("data") if isinstance(body, dict) else None
        if response.status_code != 200 or not isinstance(data, dict):
            raise ApiUnreachable(
                f"the logexport API at {_public_url(self.api_url)} answered HTTP "
                f"{response.status_code} without a GraphQL result"
            )
        return data

    # ---------------------------------------------------------------------------- exports

    async def request_export(
        self,
        kind: str,
        organization_id: Id,
        from_time: str | date | datetime,
        to_time: str | date | datetime,
        format: str | None = None,
        compression: str | None = None,
        csv_bom: bool | None = None,
        filter: Mapping[str, object] | None = None,
        idempotency_key: str | None = None,
    ) -> ApiObject:
        """Queue an export (``kind`` ``AUDIT_LOG`` or ``SCIM_EVENT``); the new LogExport.

        ``from_time`` is inclusive, ``to_time`` exclusive; a day as ``to_time`` includes
        that whole UTC day. A bound that cannot be read raises ``BadUserInput`` before
        anything is sent.
        """
        row = _log_kind(kind)
        payload: dict[str, object] = {
            "organizationId": str(organization_id),
            "fromTime": _bound(from_time, "fromTime", end=False),
            "toTime": _bound(to_time, "toTime", end=True),
        }
        optional = {
            "format": format.upper() if format else None,
            "compression": compression.upper() if compression else None,
            "csvBom": csv_bom,
            "filter": graphql_filter(filter),
            "idempotencyKey": idempotency_key,
        }
        payload.update({k: v for k, v in optional.items() if v is not None})
        data = await self.execute(request_document(row), {"input": payload})
        return dict(data[row.graphql_request]["logExport"])

    async def get_export(self, id: Id, *, download_url: bool = False) -> ApiObject:
        """The LogExport; ``download_url=True`` adds a fresh ``downloadUrl`` (when COMPLETED)."""
        document = GET_LOG_EXPORT_DOWNLOAD if download_url else GET_LOG_EXPORT
        data = await self.execute(document, {"id": str(id)})
        if data.get("logExport") is None:
            raise NotFound("No such export", "id")
        return dict(data["logExport"])

    async def wait_for_export(
        self,
        id: Id,
        *,
        timeout: float | None = None,
        on_progress: ProgressCallback | None = None,
        interval: float = 0.5,
        max_interval: float = 5.0,
    ) -> ApiObject:
        """Poll the export until it is COMPLETED, FAILED, CANCELED or EXPIRED; return it.

        ``on_progress`` (a function or a coroutine function) gets the LogExport on the
        first poll and each time its ``rowsWritten`` or ``status`` changes. Polls start
        ``interval`` seconds apart and back off to ``max_interval`` while nothing changes.
        Raises ``TimeoutError`` when ``timeout`` seconds pass first; the export itself
        carries on. A failed export is returned, not raised: check ``status``.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = interval
        seen: tuple[object, object] | None = None
        failures = 0
        while True:
            try:
                export = await self.get_export(id)
            except ApiUnreachable:
                failures += 1
                if failures >= _POLL_ATTEMPTS:
                    raise
            else:
                failures = 0
                progress = (export.get("status"), export.get("rowsWritten"))
                if progress != seen:
                    seen = progress
                    delay = interval
                    if on_progress is not None:
                        outcome = on_progress(export)
                        if inspect.isawaitable(outcome):
                            await outcome
                if export["status"] in TERMINAL_STATUSES:
                    return export
            pause = delay
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    status = seen[0] if seen else "unknown"
                    raise TimeoutError(f"export {id} is still {status} after {timeout:g} seconds")
                pause = min(pause, remaining)
            await asyncio.sleep(pause)
            delay = min(delay * 1.5, max_interval)

    async def list_exports(
        self, organization_id: Id, first: int = 50, after: str | None = None
    ) -> ApiObject:
        """A LogExportConnection (``edges``, ``pageInfo``), newest first."""
        data = await self.execute(
            LIST_LOG_EXPORTS,
            {"organizationId": str(organization_id), "first": first, "after": after},
        )
        return dict(data["organization"]["logExports"])

    async def chain_manifests(self, organization_id: Id, kind: str) -> list[ChainManifest]:
        """Every signed manifest of the organization's exports of ``kind`` (``audit-log`` or
        ``AUDIT_LOG``, ``scim-event``…), in chain order.

        Canceled and expired exports keep their manifests, so they are included: a chain
        without them would show gaps. Exports that never completed have none. Each envelope
        is the JSON text exactly as stored, ready for ``logexport verify --chain``.
        """
        wanted = _log_kind(kind.replace("-", "_")).kind.value
        found: list[ChainManifest] = []
        after: str | None = None
        while True:
            page = await self.list_exports(organization_id, _MANIFEST_PAGE, after)
            for edge in page.get("edges") or ():
                export = edge["node"]
                text = export.get(shapes.MANIFEST)
                if export.get("kind") != wanted or not isinstance(text, str):
                    continue
                found.append(_chain_manifest(export, text))
            info = page.get("pageInfo") or {}
            if not info.get("hasNextPage") or not info.get("endCursor"):
                break
            after = str(info["endCursor"])
        found.sort(key=lambda item: item.sequence)
        return found

    async def cancel_export(self, id: Id) -> ApiObject:
        data = await self.execute(CANCEL_LOG_EXPORT, {"input": {"id": str(id)}})
        return dict(data["cancelLogExport"]["logExport"])

    # ---------------------------------------------------------------------------- entries

    async def list_entries(
        self,
        kind: str,
        organization_id: Id,
        first: int = 50,
        after: str | None = None,
        filter: Mapping[str, object] | None = None,
    ) -> ApiObject:
        """An AuditLogEntryConnection or ScimEventConnection (``kind``), newest first."""
        row = _log_kind(kind)
        data = await self.execute(
            listing_document(row),
            {
                "organizationId": str(organization_id),
                "first": first,
                "after": after,
                "filter": graphql_filter(filter),
            },
        )
        return dict(data["organization"][row.graphql_connection])

    async def list_audit_log_entries(
        self,
        organization_id: Id,
        first: int = 50,
        after: str | None = None,
        filter: Mapping[str, object] | None = None,
    ) -> ApiObject:
        """An AuditLogEntryConnection, newest first."""
        return await self.list_entries(ExportKind.AUDIT_LOG, organization_id, first, after, filter)

    async def list_scim_events(
        self,
        organization_id: Id,
        first: int = 50,
        after: str | None = None,
        filter: Mapping[str, object] | None = None,
    ) -> ApiObject:
        """A ScimEventConnection, newest first."""
        return await self.list_entries(ExportKind.SCIM_EVENT, organization_id, first, after, filter)

    async def viewer(self) -> ApiObject:
        """The authenticated user, their organizations, and ``maxRangeDays``."""
        data = await self.execute(VIEWER)
        return {**data["viewer"], "maxRangeDays": data["maxRangeDays"]}

    # ---------------------------------------------------------------------------- streams

    async def list_streams(self, organization_id: Id, *, deliveries: int = 5) -> list[ApiObject]:
        """The organization's LogStreams, newest first, each with its latest ``deliveries``."""
        data = await self.execute(
            LIST_LOG_STREAMS,
            {"organizationId": str(organization_id), "deliveries": deliveries},
        )
        return [dict(stream) for stream in data["organization"]["logStreams"]]

    async def get_stream(
        self, id: Id, *, organization_id: Id | None = None, deliveries: int = 20
    ) -> ApiObject:
        """One LogStream, with the ``organizationId`` it belongs to; looked for in
        ``organization_id``, or else in each of the viewer's organizations. ``NotFound``
        when none of them has it."""
        if organization_id is not None:
            organizations = [str(organization_id)]
        else:
            organizations = [org["id"] for org in (await self.viewer())["organizations"]]
        for organization in organizations:
            for stream in await self.list_streams(organization, deliveries=deliveries):
                if stream["id"] == str(id):
                    return {**stream, "organizationId": organization}
        raise NotFound("No such log stream")

    async def _stream_mutation(self, name: str, payload: Mapping[str, object]) -> ApiObject:
        data = await self.execute(stream_mutation_document(name), {"input": dict(payload)})
        return dict(data[name]["logStream"])

    async def create_stream(
        self,
        kind: str,
        organization_id: Id,
        *,
        https_url: str | None = None,
        secret: str | None = None,
        s3: Mapping[str, object] | None = None,
        interval_seconds: int | None = None,
        filter: Mapping[str, object] | None = None,
        start_at: str | date | datetime | None = None,
    ) -> ApiObject:
        """Create a stream (``kind`` ``AUDIT_LOG`` or ``SCIM_EVENT``) to an HTTPS endpoint
        (``https_url`` and its HMAC ``secret``) or to an S3 bucket (``s3``: the
        ``S3DestinationInput`` fields, camelCase or snake_case); the new LogStream.

        ``start_at`` (a UTC day or an instant; default now): entries created before it
        are not streamed.
        """
        row = _log_kind(kind)
        destination: dict[str, object] = {}
        if https_url is not None or secret is not None:
            destination["https"] = {"url": https_url, "secret": secret}
        if s3 is not None:
            destination["s3"] = {_S3_KEYS.get(k, k): v for k, v in s3.items() if v is not None}
        payload: dict[str, object] = {
            "organizationId": str(organization_id),
            "kind": row.kind.value,
            "destination": destination,
        }
        if interval_seconds is not None:
            payload["intervalSeconds"] = interval_seconds
        if filter is not None:
            payload["filter"] = graphql_filter(filter)
        if start_at is not None:
            payload["startAt"] = _bound(start_at, "startAt", end=False)
        return await self._stream_mutation("createLogStream", payload)

    async def update_stream(
        self,
        id: Id,
        *,
        state: str | None = None,
        interval_seconds: int | None = None,
        filter: Mapping[str, object] | None = None,
        clear_filter: bool = False,
    ) -> ApiObject:
        """Pause (``state="PAUSED"``), resume (``"ACTIVE"``), or change the interval or the
        filter (``clear_filter=True`` streams every entry again); the LogStream."""
        payload: dict[str, object] = {"id": str(id)}
        if state is not None:
            payload["state"] = state.upper()
        if interval_seconds is not None:
            payload["intervalSeconds"] = interval_seconds
        if filter is not None or clear_filter:
            payload["filter"] = graphql_filter(filter)
        return await self._stream_mutation("updateLogStream", payload)

    async def pause_stream(self, id: Id) -> ApiObject:
        return await self.update_stream(id, state="PAUSED")

    async def resume_stream(self, id: Id) -> ApiObject:
        return await self.update_stream(id, state="ACTIVE")

    async def delete_stream(self, id: Id) -> ApiObject:
        """Stop the stream for good (its deliveries stay on record); the LogStream."""
        return await self._stream_mutation("deleteLogStream", {"id": str(id)})

    async def test_stream(self, id: Id) -> ApiObject:
        """Send one test delivery (no rows) now; the LogStream, the test's outcome first
        in its ``deliveries``."""
        return await self._stream_mutation("testLogStream", {"id": str(id)})

    # ---------------------------------------------------------------------------- download

    async def public_keys(self) -> dict[str, Ed25519PublicKey]:
        """The public keys the server publishes at ``/.well-known/logexport-keys.json``,
        by key id; ``KeysUnavailable`` (or ``ApiUnreachable``) when they cannot be read."""
        from logexport import manifests

        url = self.api_url + manifests.KEYS_PATH
        shown = _public_url(url)
        try:
            async with self._download_http.stream("GET", url) as response:
                if response.status_code != 200:
                    raise KeysUnavailable(f"{shown} answered HTTP {response.status_code}")
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > _MAX_KEYS_DOCUMENT:
                        raise KeysUnavailable(f"{shown} is larger than a keys document can be")
        except httpx.HTTPError as exc:
            raise ApiUnreachable(
                f"cannot fetch the public keys from {shown} ({type(exc).__name__})"
            ) from None
        try:
            return manifests.load_jwks(bytes(body))
        except manifests.KeyFormatError as exc:
            raise KeysUnavailable(f"{shown}: {exc}") from None

    async def download_export(
        self,
        id: Id,
        path: str | os.PathLike[str],
        *,
        keys: Mapping[str, Ed25519PublicKey] | None = None,
    ) -> ApiObject:
        """Save a completed export's file at ``path`` and its signed manifest beside it at
        ``path.manifest.json``, the file verified against the manifest.

        The manifest's signature must be by one of ``keys`` (by default, the keys the
        server publishes: ``public_keys()``; pass an auditor's own keys file to trust
        nothing the server says now); then the file's size, SHA-256 and every row are
        checked as ``logexport verify`` checks them, and ``ManifestMismatch`` names the
        first check that failed. The file's SHA-256 must also be the one the API reports
        (``ChecksumMismatch``); an export that has no manifest is checked against that
        alone, and no manifest file is written.

        Both files go to temporary files beside their targets, renamed into place only
        once every check passed; on any failure (including cancellation) they are removed
        and the targets are left as they were. Returns the LogExport.
        """
        export = await self.get_export(id, download_url=True)
        if export["status"] != "COMPLETED" or not export.get("downloadUrl"):
            raise BadUserInput(
                f"export {export['id']} is {export['status']}; only a COMPLETED export "
                "can be downloaded",
                "id",
            )
        from logexport.manifests import manifest_name

        manifest_text = export.get(shapes.MANIFEST)
        if isinstance(manifest_text, str) and keys is None:
            keys = await self.public_keys()
        target = Path(path)
        partial = _PartialFile.beside(target)
        partial_manifest: _PartialFile | None = None
        try:
            digest = hashlib.sha256()
            async with self._download_http.stream("GET", export["downloadUrl"]) as response:
                if response.status_code != 200:
                    raise ApiError(
                        "DOWNLOAD_FAILED",
                        f"the download link answered HTTP {response.status_code}",
                    )
                async for chunk in response.aiter_bytes(_CHUNK):
                    digest.update(chunk)
                    partial.write(chunk)
            partial.close()
            if isinstance(manifest_text, str):
                assert keys is not None
                await _verify_against_manifest(partial.path, manifest_text, keys)
            expected = str(export.get("sha256") or "")
            if digest.hexdigest() != expected.lower():
                raise ChecksumMismatch(expected, digest.hexdigest())
            if isinstance(manifest_text, str):
                manifest_target = target.with_name(manifest_name(target.name))
                partial_manifest = _PartialFile.beside(manifest_target)
                partial_manifest.write(manifest_text.encode())
                partial_manifest.commit(manifest_target)
            partial.commit(target)
        except httpx.HTTPError as exc:
            partial.discard()
            if partial_manifest is not None:
                partial_manifest.discard()
            raise ApiUnreachable(f"the download failed ({type(exc).__name__})") from None
        except BaseException:
            partial.discard()
            if partial_manifest is not None:
                partial_manifest.discard()
            raise
        return export


async def _verify_against_manifest(
    path: Path, manifest_text: str, keys: Mapping[str, Ed25519PublicKey]
) -> None:
    """``ManifestMismatch`` unless the file at ``path`` is the one the manifest signs."""
    import json

    from logexport import manifests

    try:
        envelope = json.loads(manifest_text)
    except ValueError:
        raise ManifestMismatch("manifest", "manifest: the API's manifest is not JSON") from None
    if not isinstance(envelope, dict):
        raise ManifestMismatch("manifest", "manifest: the API's manifest is not a JSON object")
    try:
        # Every row is read again: minutes of CPU for a large file, off the event loop.
        await asyncio.to_thread(manifests.verify_file, path, envelope, keys)
    except manifests.VerificationFailed as failed:
        raise ManifestMismatch(failed.check, failed.message) from None


@dataclass(frozen=True)
class ChainManifest:
    """One export's signed manifest: its place in the chain and the envelope's JSON text."""

    sequence: int
    export_id: str
    file_name: str
    envelope: str


def _chain_manifest(export: ApiObject, text: str) -> ChainManifest:
    import json

    try:
        manifest = json.loads(text)["manifest"]
        sequence = manifest["sequence"]
        file_name = manifest["file_name"]
    except (ValueError, TypeError, KeyError):
        raise ApiError(
            "BAD_MANIFEST", f"export {export.get('id')}: the API's manifest is not an envelope"
        ) from None
    if not isinstance(sequence, int) or not isinstance(file_name, str):
        raise ApiError(
            "BAD_MANIFEST", f"export {export.get('id')}: the API's manifest has no sequence"
        )
    return ChainManifest(sequence, str(export.get("id")), file_name, text)


class _PartialFile:
    """A temporary file beside its target, renamed into place only when complete."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: BinaryIO | None = path.open("xb")

    @classmethod
    def beside(cls, target: Path) -> _PartialFile:
        name = f".{target.name}.{secrets.token_hex(4)}.part"
        return cls(target.parent / name)

    def write(self, chunk: bytes) -> None:
        assert self._file is not None
        self._file.write(chunk)

    def close(self) -> None:
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None

    def commit(self, target: Path) -> None:
        self.close()
        os.replace(self.path, target)

    def discard(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self.path.unlink(missing_ok=True)


def _error_from(error: object) -> ApiError:
    if not isinstance(error, dict):
        return InternalError("the API reported an error")
    extensions = error.get("extensions") or {}
    code = str(extensions.get("code") or "GRAPHQL_ERROR")
    message = str(error.get("message") or code)
    field = extensions.get("field")
    if not field:
        # Variable coercion errors name the field only in their text ("… at 'input.toTime'").
        match = _COERCION_FIELD.search(message)
        field = match.group(1) if match else None
    return api_error(code, message, str(field) if field else None)


_COERCION_FIELD = re.compile(r"at '(?:input\.)?([A-Za-z0-9_.]+)'")
