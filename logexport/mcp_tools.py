"""The MCP tools, shared by both MCP servers.

One definition of each tool's name, description and JSON input schema, and one dispatcher,
serve two backends:

- ``/mcp`` over streamable HTTP (``logexport.web.mcp``) calls the service functions
  in-process as the caller's principal;
- ``logexport mcp`` over stdio calls a remote API through ``LogExportClient`` and needs no
  database.

Arguments are the snake_case forms of the GraphQL inputs. Results are the GraphQL objects
(camelCase, as ``schema.graphql`` documents them, with the fields ``logexport.shapes``
lists) without ``downloadUrl``: a download link in a model's context could end up anywhere.
``list_organizations`` answers the caller's organizations with their ``role`` and
``permissions`` (GraphQL's ``viewerRole`` and ``viewerPermissions``), so a model can tell
which tools will work before calling them.
Errors come back as tool errors whose text names the code and the argument:
``BAD_USER_INPUT (from_time): …``.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, cast

import jsonschema
import mcp_types as types
from mcp.server import Server, ServerRequestContext

from logexport import shapes
from logexport.client import LogExportClient, graphql_filter, listing_document, request_document
from logexport.errors import LogExportError
from logexport.kinds import LOG_KINDS, ExportKind
from logexport.shapes import JSON, JSONObject

log = logging.getLogger(__name__)

SERVER_NAME = "logexport"
INSTRUCTIONS = (
    "Export and browse an organization's audit log and SCIM provisioning events. Start with "
    "list_organizations for the organization ids and what your role allows. Exports run in "
    "the background: request one, then poll get_log_export until its status is COMPLETED; "
    "the requester receives the download link by email."
)


def package_version() -> str:
    """The installed logexport version, reported as ``serverInfo.version``."""
    try:
        return importlib.metadata.version("logexport")
    except importlib.metadata.PackageNotFoundError:
        # Run from a source tree that was never installed.
        return "0+unknown"


# ---------------------------------------------------------------------------- schemas

_ORGANIZATION: JSONObject = {
    "type": "string",
    "description": "The organization's id (UUID), e.g. 1b4e28ba-2fa1-11d2-883f-0016d3cca427.",
}
_FROM: JSONObject = {
    "type": "string",
    "format": "date-time",
    "description": (
        "Start of the range, inclusive. RFC 3339 with a UTC offset and at most 6 fractional "
        "digits, e.g. 2026-01-01T00:00:00Z."
    ),
}
_TO: JSONObject = {
    "type": "string",
    "format": "date-time",
    "description": (
        "End of the range, exclusive. RFC 3339 with a UTC offset, e.g. 2026-02-01T00:00:00Z "
        "exports all of January 2026. May lie in the future."
    ),
}
_FORMAT: JSONObject = {
    "type": "string",
    "enum": ["JSONL", "CSV"],
    "default": "JSONL",
    "description": "JSONL (one JSON object per line, the default) or CSV (spreadsheet-safe).",
}
_COMPRESSION: JSONObject = {
    "type": "string",
    "enum": ["NONE", "GZIP"],
    "default": "NONE",
    "description": "NONE (the default) or GZIP.",
}
_CSV_BOM: JSONObject = {
    "type": "boolean",
    "default": False,
    "description": "Start a CSV file with a UTF-8 byte order mark (for Excel). CSV only.",
}
_IDEMPOTENCY_KEY: JSONObject = {
    "type": "string",
    "minLength": 1,
    "maxLength": 200,
    "description": (
        "1-200 printable ASCII characters chosen by you, e.g. a UUID. Repeating the same "
        "request with the same key within 24 hours returns the original export instead of "
        "starting another; reuse it when retrying."
    ),
}


def _strings(description: str) -> JSONObject:
    return {
        "type": "array",
        "items": {"type": "string", "minLength": 1},
        "minItems": 1,
        "maxItems": 100,
        "description": description,
    }


_AUDIT_FILTER: JSONObject = {
    "type": "object",
    "additionalProperties": False,
    "description": (
        "Optional. OR within a field, AND across fields; values match exactly and "
        "case-sensitively. Omit a field to not filter on it."
    ),
    "properties": {
        "actions": _strings('Actions, e.g. ["user.login", "iam:audit-log:export"].'),
        "actor_ids": _strings("Actor ids (user or API key ids as recorded)."),
        "resource_types": _strings('Resource types, e.g. ["LogExport"].'),
    },
}
_SCIM_FILTER: JSONObject = {
    "type": "object",
    "additionalProperties": False,
    "description": (
        "Optional. OR within a field, AND across fields. Omit a field to not filter on it."
    ),
    "properties": {
        "methods": _strings('HTTP methods, e.g. ["POST", "PATCH"].'),
        "user_name": {
            "type": "string",
            "minLength": 1,
            "description": "The SCIM userName, matched case-insensitively.",
        },
        "status_codes": {
            "type": "array",
            "items": {"type": "integer", "minimum": 100, "maximum": 599},
            "minItems": 1,
            "maxItems": 100,
            "description": "HTTP status codes of the SCIM responses, e.g. [400, 409].",
        },
    },
}
_FIRST: JSONObject = {
    "type": "integer",
    "minimum": 1,
    "maximum": 100,
    "default": 50,
    "description": "Page size, 1-100 (default 50).",
}
_AFTER: JSONObject = {
    "type": "string",
    "description": (
        "The pageInfo.endCursor of the previous page, to read the next one (with the same "
        "filter, from_time and to_time)."
    ),
}
_LIST_FROM: JSONObject = {
    "type": "string",
    "format": "date-time",
    "description": (
        "Optional start, inclusive: only rows created at or after it. RFC 3339 with a UTC "
        "offset, e.g. 2026-01-01T00:00:00Z."
    ),
}
_LIST_TO: JSONObject = {
    "type": "string",
    "format": "date-time",
    "description": (
        "Optional end, exclusive: only rows created before it. RFC 3339 with a UTC offset, "
        "e.g. 2026-01-02T00:00:00Z (with from_time 2026-01-01T00:00:00Z: all of 1 January)."
    ),
}


def _object(properties: JSONObject, required: list[JSON]) -> JSONObject:
    schema: JSONObject = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    schema["additionalProperties"] = False
    return schema


def _export_schema(filter_schema: JSONObject) -> JSONObject:
    return _object(
        {
            "organization_id": _ORGANIZATION,
            "from_time": _FROM,
            "to_time": _TO,
            "format": _FORMAT,
            "compression": _COMPRESSION,
            "csv_bom": _CSV_BOM,
            "filter": filter_schema,
            "idempotency_key": _IDEMPOTENCY_KEY,
        },
        ["organization_id", "from_time", "to_time"],
    )


def _list_schema(filter_schema: JSONObject | None = None) -> JSONObject:
    properties: JSONObject = {
        "organization_id": _ORGANIZATION,
        "first": _FIRST,
        "after": _AFTER,
    }
    if filter_schema is not None:
        properties |= {"filter": filter_schema, "from_time": _LIST_FROM, "to_time": _LIST_TO}
    return _object(properties, ["organization_id"])


@dataclass(frozen=True)
class ToolSpec:
    name: str
    title: str
    description: str
    input_schema: JSONObject
    read_only: bool
    destructive: bool = False
    # A request without idempotency_key starts a new export each time.
    idempotent: bool = False
    # The argument that names the object, for errors the service raises about its "id".
    subject: str | None = None

    def to_tool(self) -> types.Tool:
        annotations = types.ToolAnnotations(
            title=self.title,
            read_only_hint=self.read_only,
            destructive_hint=self.destructive,
            idempotent_hint=self.read_only or self.idempotent,
            open_world_hint=False,
        )
        return types.Tool(
            name=self.name,
            title=self.title,
            description=self.description,
            input_schema=self.input_schema,
            annotations=annotations,
        )


_EXPORT_RESULT = (
    " Returns the LogExport (id, status PENDING, range, format, …); poll get_log_export with "
    "its id. Needs the export permission (organization OWNER or ADMIN); at most a few exports "
    "may be pending per organization."
)

_EXPORT_ID: JSONObject = {
    "type": "string",
    "description": "The export's id (UUID), e.g. 0c9a4f1e-6d2b-4a8e-9f3c-2b7d5e8a1c40.",
}

TOOLS: tuple[ToolSpec, ...] = (
    ToolSpec(
        "list_organizations",
        "List my organizations",
        "The organizations you belong to, by name: id (the organization_id the other tools "
        "take), name, your role (OWNER, ADMIN or VIEWER) and permissions "
        "(canListAuditLog, canExportAuditLog, canListScimEvents, canExportScimEvents). Also "
        "who you are (viewer) and maxRangeDays, the longest range an export may cover.",
        _object({}, []),
        read_only=True,
    ),
    ToolSpec(
        "request_audit_log_export",
        "Request an audit log export",
        "Start exporting the organization's audit log entries created in [from_time, "
        "to_time) to a JSONL or CSV file; the requester gets an email with a download link "
        "when it is ready." + _EXPORT_RESULT,
        _export_schema(_AUDIT_FILTER),
        read_only=False,
    ),
    ToolSpec(
        "request_scim_event_export",
        "Request a SCIM event export",
        "Start exporting the organization's SCIM provisioning events created in [from_time, "
        "to_time) to a JSONL or CSV file; the requester gets an email with a download link "
        "when it is ready." + _EXPORT_RESULT,
        _export_schema(_SCIM_FILTER),
        read_only=False,
    ),
    ToolSpec(
        "get_log_export",
        "Get a log export",
        "One export by id: status (PENDING, PROCESSING, COMPLETED, EXPIRED, FAILED, CANCELED), "
        "rowsWritten while it runs, then rowCount, byteSize, sha256, fileName, expiresAt and "
        "manifest {sequence, sha256, keyId} (its signed manifest's place in the organization's "
        "chain), or error {code, message} when it failed.",
        _object({"id": _EXPORT_ID}, ["id"]),
        read_only=True,
        subject="id",
    ),
    ToolSpec(
        "cancel_log_export",
        "Cancel a log export",
        "Cancel one export by id and return it with status CANCELED. A PENDING export is "
        "canceled at once; a PROCESSING one stops within seconds and leaves no file; a "
        "COMPLETED one loses its file and its download links. Canceling an export that is "
        "already CANCELED changes nothing; a FAILED or EXPIRED export cannot be canceled. "
        "Needs the organization's OWNER or ADMIN role; an export you may not cancel answers "
        "NOT_FOUND, like a missing one.",
        _object({"id": _EXPORT_ID}, ["id"]),
        read_only=False,
        destructive=True,
        idempotent=True,
        subject="id",
    ),
    ToolSpec(
        "list_log_exports",
        "List log exports",
        "The organization's exports, newest first, as a connection: edges[].node are "
        "LogExports, pageInfo.endCursor feeds `after` for the next page.",
        _list_schema(),
        read_only=True,
    ),
    ToolSpec(
        "list_audit_log_entries",
        "List audit log entries",
        "A page of the organization's audit log, newest first: edges[].node are entries "
        "(createdAt, actorType, actorId, actorEmail, action, resourceType, resourceId, "
        "ipAddress, metadata, …); pageInfo.endCursor feeds `after` for the next page.",
        _list_schema(_AUDIT_FILTER),
        read_only=True,
    ),
    ToolSpec(
        "list_scim_events",
        "List SCIM events",
        "A page of the organization's SCIM provisioning events, newest first: edges[].node are "
        "events (createdAt, method, path, userName, statusCode, errorMessage, bodies with "
        "passwords redacted, …); pageInfo.endCursor feeds `after` for the next page.",
        _list_schema(_SCIM_FILTER),
        read_only=True,
    ),
)

TOOLS_BY_NAME = {tool.name: tool for tool in TOOLS}

# ---------------------------------------------------------------------------- backends


# A tool's result: the GraphQL-shaped object, as JSON.
ToolResult = Mapping[str, object]


@dataclass(frozen=True)
class EntryQuery:
    """A page of audit log entries (``kind`` AUDIT_LOG) or SCIM events (SCIM_EVENT), created
    in [``from_time``, ``to_time``) when either bound is given."""

    kind: str
    organization_id: str
    first: int
    after: str | None
    filter: Mapping[str, object] | None
    from_time: str | None
    to_time: str | None


class ToolBackend(Protocol):
    """What the tools need; each method returns the GraphQL-shaped object."""

    async def list_organizations(self) -> ToolResult:
        """``{viewer, organizations: [{id, name, role, permissions}], maxRangeDays}``."""
        ...

    async def request_export(self, kind: str, arguments: Mapping[str, object]) -> ToolResult:
        """``kind`` is AUDIT_LOG or SCIM_EVENT; ``arguments`` the validated tool arguments."""
        ...

    async def get_export(self, id: str) -> ToolResult: ...

    async def cancel_export(self, id: str) -> ToolResult: ...

    async def list_exports(
        self, organization_id: str, first: int, after: str | None
    ) -> ToolResult: ...

    async def list_entries(self, query: EntryQuery) -> ToolResult: ...


# Each kind's MCP tools, by tool name.
_REQUEST_KINDS: Mapping[str, ExportKind] = {
    row.mcp_request_tool: kind for kind, row in LOG_KINDS.items()
}
_ENTRY_KINDS: Mapping[str, ExportKind] = {
    row.mcp_list_tool: kind for kind, row in LOG_KINDS.items()
}


async def _dispatch(backend: ToolBackend, name: str, args: Mapping[str, Any]) -> ToolResult:
    first = int(args.get("first", 50))
    after = args.get("after")
    if name == "list_organizations":
        return await backend.list_organizations()
    if name in _REQUEST_KINDS:
        return shapes.mcp_log_export(await backend.request_export(_REQUEST_KINDS[name], args))
    if name == "get_log_export":
        return shapes.mcp_log_export(await backend.get_export(str(args["id"])))
    if name == "cancel_log_export":
        return shapes.mcp_log_export(await backend.cancel_export(str(args["id"])))
    if name == "list_log_exports":
        page = await backend.list_exports(str(args["organization_id"]), first, after)
        return _with_export_nodes(page)
    if name in _ENTRY_KINDS:
        query = EntryQuery(
            _ENTRY_KINDS[name],
            str(args["organization_id"]),
            first,
            after,
            args.get("filter"),
            args.get("from_time"),
            args.get("to_time"),
        )
        return await backend.list_entries(query)
    raise LogExportError(f"unknown tool {name}")


def _with_export_nodes(page: ToolResult) -> ToolResult:
    edges = cast(list[Mapping[str, Any]], page["edges"])
    return {
        **page,
        "edges": [{**edge, "node": shapes.mcp_log_export(edge["node"])} for edge in edges],
    }


# ---------------------------------------------------------------------------- errors

_CAMEL = re.compile(r"(?<=[a-z0-9])([A-Z])")
# GraphQL names that appear in service messages, and what an MCP caller knows them as.
_ARGUMENT_NAMES = {
    name: _CAMEL.sub(r"_\1", name).lower()
    for name in (
        "organizationId", "fromTime", "toTime", "csvBom", "idempotencyKey",
        "actorIds", "resourceTypes", "userName", "statusCodes",
    )
}  # fmt: skip
_ARGUMENT_PATTERN = re.compile(r"\b(" + "|".join(_ARGUMENT_NAMES) + r")\b")


def snake_field(field: str) -> str:
    """``filter.actorIds`` → ``filter.actor_ids``: the argument a caller passed."""
    return ".".join(_CAMEL.sub(r"_\1", part).lower() for part in field.split("."))


def _snake_message(message: str) -> str:
    return _ARGUMENT_PATTERN.sub(lambda m: _ARGUMENT_NAMES[m.group(1)], message)


def error_text(code: str, message: str, field: str | None, subject: str | None = None) -> str:
    """``BAD_USER_INPUT (from_time): …`` in the caller's argument names.

    ``subject`` is the tool's argument that names the object (``id``): the service
    speaks of it as ``id``, and a ``NOT_FOUND`` without a field is about it.
    """
    text = _snake_message(message)
    if subject is not None and (field == "id" or (not field and code == "NOT_FOUND")):
        field = subject
    if not field:
        return f"{code}: {text}"
    name = snake_field(field)
    text = text.removeprefix(f"{name}: ")
    return f"{code} ({name}): {text}"


def _schema_error(error: jsonschema.ValidationError) -> LogExportError:
    path = [str(part) for part in error.absolute_path if not isinstance(part, int)]
    field = ".".join(path) or None
    if error.validator == "required":
        missing = re.search(r"'([^']+)' is a required property", error.message)
        name = missing.group(1) if missing else "argument"
        field = ".".join([*path, name])
        message = f"{name} is required"
    elif error.validator == "additionalProperties":
        unknown = re.findall(r"'([^']+)'", error.message)
        name = unknown[0] if unknown else "argument"
        field = ".".join([*path, name])
        message = f"{name} is not a known argument"
    else:
        message = f"{field or 'arguments'}: {error.message}"
    return _BadArguments(message, field=field)


class _BadArguments(LogExportError):
    code = "BAD_USER_INPUT"


def _validate(spec: ToolSpec, arguments: Mapping[str, object]) -> None:
    validator = jsonschema.Draft202012Validator(spec.input_schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(dict(arguments)))
    if error is not None:
        raise _schema_error(error)


def without_download_urls(value: object) -> object:
    """``value`` with every ``downloadUrl`` removed, however deep."""
    if isinstance(value, Mapping):
        return _public_object(value)
    if isinstance(value, list):
        return [without_download_urls(v) for v in value]
    return value


def _public_object(value: Mapping[str, object]) -> dict[str, object]:
    return {k: without_download_urls(v) for k, v in value.items() if k != shapes.DOWNLOAD_URL}


def _error_result(text: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=True)


async def call_tool(
    backend: ToolBackend, name: str, arguments: Mapping[str, object] | None
) -> types.CallToolResult:
    """Validate, run and shape one tool call; user errors become tool errors."""
    spec = TOOLS_BY_NAME.get(name)
    if spec is None:
        return _error_result(f"NOT_FOUND (name): there is no tool named {name}")
    args = dict(arguments or {})
    try:
        _validate(spec, args)
        result = _public_object(await _dispatch(backend, name, args))
    except LogExportError as exc:
        return _error_result(error_text(exc.code, exc.message, exc.field, spec.subject))
    except Exception:
        log.exception("MCP tool %s failed", name)
        return _error_result("INTERNAL: the tool failed unexpectedly; try again later")
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=json.dumps(result, indent=2))],
        structured_content=result,
    )


# ---------------------------------------------------------------------------- server

# The SDK's per-request context; this server keeps no lifespan state of its own.
RequestContext = ServerRequestContext[Any, Any]
BackendFor = Callable[[RequestContext], Awaitable[ToolBackend]]


def build_server(backend_for: BackendFor, *, version: str | None = None) -> Server[Any]:
    """A low-level MCP server with the tools; ``backend_for`` picks the backend per call."""

    async def list_tools(
        ctx: RequestContext, params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[tool.to_tool() for tool in TOOLS])

    async def handle_call(
        ctx: RequestContext, params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        backend = await backend_for(ctx)
        return await call_tool(backend, params.name, params.arguments)

    return Server(
        SERVER_NAME,
        version=package_version() if version is None else version,
        instructions=INSTRUCTIONS,
        on_list_tools=list_tools,
        on_call_tool=handle_call,
    )


# ---------------------------------------------------------------------------- stdio


_UNDERSCORED = re.compile(r"_([a-z])")


def _camel(name: str) -> str:
    """``organization_id`` → ``organizationId``: the GraphQL input field of an argument."""
    return _UNDERSCORED.sub(lambda m: m.group(1).upper(), name)


class GraphQLBackend:
    """The tools as a client of a remote API (``logexport mcp``): no database access.

    Arguments go to the API as the caller wrote them, only renamed to GraphQL's camelCase:
    the client's conveniences for people (a UTC day as a bound) would make this server
    accept what ``/mcp`` refuses.
    """

    def __init__(self, client: LogExportClient) -> None:
        self.client = client

    async def list_organizations(self) -> ToolResult:
        viewer = await self.client.viewer()
        return {
            "viewer": {field.name: viewer[field.name] for field in shapes.VIEWER_FIELDS},
            "organizations": [
                shapes.mcp_organization(organization) for organization in viewer["organizations"]
            ],
            "maxRangeDays": viewer["maxRangeDays"],
        }

    async def request_export(self, kind: str, arguments: Mapping[str, object]) -> ToolResult:
        payload = {_camel(name): value for name, value in arguments.items() if value is not None}
        chosen = payload.get("filter")
        if isinstance(chosen, Mapping):
            payload["filter"] = graphql_filter(chosen)
        row = LOG_KINDS[ExportKind(kind)]
        data = await self.client.execute(request_document(row), {"input": payload})
        return dict(data[row.graphql_request]["logExport"])

    async def get_export(self, id: str) -> ToolResult:
        return await self.client.get_export(id)

    async def cancel_export(self, id: str) -> ToolResult:
        return await self.client.cancel_export(id)

    async def list_exports(self, organization_id: str, first: int, after: str | None) -> ToolResult:
        return await self.client.list_exports(organization_id, first, after)

    async def list_entries(self, query: EntryQuery) -> ToolResult:
        row = LOG_KINDS[ExportKind(query.kind)]
        data = await self.client.execute(
            listing_document(row),
            {
                "organizationId": query.organization_id,
                "first": query.first,
                "after": query.after,
                "filter": graphql_filter(query.filter),
                "fromTime": query.from_time,
                "toTime": query.to_time,
            },
        )
        return dict(data["organization"][row.graphql_connection])


async def serve_stdio(api_url: str, token: str) -> None:
    """Serve the tools on stdin/stdout until the client disconnects."""
    from mcp.server.stdio import stdio_server

    async with LogExportClient(api_url, token) as client:
        backend = GraphQLBackend(client)

        async def backend_for(_ctx: RequestContext) -> ToolBackend:
            return backend

        server = build_server(backend_for)
        async with stdio_server() as (read_stream, write_stream):
            await server.run(read_stream, write_stream, server.create_initialization_options())
