"""``POST /graphql``: authenticate, bound, parse, validate, execute, map errors.

The bounds are described in README.md, "Query cost limits".

Every error leaves with ``extensions.code``:

- a service error (``errors.LogExportError``) keeps its code, and ``extensions.field``
  when it names an input field;
- a request the schema rejects (syntax, validation, variable values) is ``BAD_USER_INPUT``,
  with ``extensions.field`` when the offending input field can be told;
- anything else is ``INTERNAL`` with a generic message; the stack goes to the log only.

Responses are ``200`` with a GraphQL body, except: ``401`` without usable credentials,
``403`` for a cookie-authenticated request without its CSRF token, ``400`` for a body that
is not a GraphQL request, ``413`` for a body over ``MAX_BODY_BYTES``. Each still carries
``{"errors": [...]}``.

A query whose estimated cost is over ``graphql_limits.MAX_COST`` is refused with
``QUERY_TOO_COMPLEX`` before anything executes, and so is an answer that would exceed
``MAX_RESPONSE_BYTES`` once encoded. Parsing, pricing and validating a request, executing
a query that only introspects, and encoding the answer are CPU work with no I/O: they run
in a worker thread, one at a time, so that one large request does not hold up the event
loop (health checks, other requests, the worker's heartbeats) while it is worked on.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import logging
import re
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ParamSpec, TypeVar

from ariadne import load_schema_from_path, make_executable_schema
from ariadne.explorer import ExplorerGraphiQL
from graphql import (
    DocumentNode,
    ExecutionResult,
    FieldNode,
    GraphQLError,
    GraphQLSchema,
    OperationDefinitionNode,
    execute,
    parse,
    recommended_rules,
    specified_rules,
    validate,
)
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from logexport.errors import LogExportError, Unauthenticated
from logexport.web import auth
from logexport.web.graphql_limits import (
    MAX_COST,
    QueryLimits,
    input_field_of,
    query_cost,
    too_complex_message,
)
from logexport.web.graphql_resolvers import BINDABLES, Context
from logexport.web.graphql_streams import STREAM_BINDABLES

log = logging.getLogger("logexport.graphql")

MAX_BODY_BYTES = 64 * 1024
MAX_RESPONSE_BYTES = 32 * 1024 * 1024
# Parsing is linear in tokens and happens before any other check; the standard
# introspection query has under 200 tokens, the largest query the console sends about 150.
MAX_TOKENS = 5_000
MAX_COMMENTS = 1_000
# GraphQL's tokens, comments included, counted by the regular-expression engine: a document
# far over the limits is refused in a few milliseconds, before graphql-core's lexer (about
# 5 µs a token) reads it. Strings and "..." count once, as the lexer counts them; commas,
# white space and byte order marks are not tokens.
_TOKEN = re.compile(
    r'"""(?:[^"\\]|\\.|"(?!""))*"""|"(?:[^"\\\n\r]|\\.)*"|#[^\n\r]*|\.\.\.|[-+.\w]+|[^\s,\ufeff]'
)
# Worker threads one event loop gives to GraphQL's CPU work at a time: more would only
# compete with the loop's own thread for the interpreter.
_CPU_THREADS = 1
# Containers nested deeper than this are encoded in one piece; above it, piece by piece, so
# that the encoding thread lets go of the interpreter between pieces and can stop early.
_SPLIT_DEPTH = 8
INTERNAL_MESSAGE = "Something went wrong on our side; please try again later"
_PACKAGE_DIR = Path(__file__).resolve().parent.parent
_RULES = (*specified_rules, *recommended_rules, QueryLimits)
_TOO_COMPLEX = {"code": "QUERY_TOO_COMPLEX"}
# GraphiQL loads its scripts and styles from a CDN; only the debug explorer page gets this.
_EXPLORER_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' 'unsafe-eval' https://unpkg.com; "
    "style-src 'self' 'unsafe-inline' https://unpkg.com; img-src 'self' data: https:; "
    "font-src 'self' data: https://unpkg.com; connect-src 'self'; frame-ancestors 'none'"
)


def schema_path() -> Path:
    """``schema.graphql`` beside the package in a checkout, or bundled inside it in a wheel."""
    for candidate in (_PACKAGE_DIR.parent / "schema.graphql", _PACKAGE_DIR / "_schema.graphql"):
        if candidate.is_file():
            return candidate
    raise RuntimeError("logexport's schema.graphql is missing from this installation")


@functools.cache
def executable_schema() -> GraphQLSchema:
    return make_executable_schema(
        load_schema_from_path(str(schema_path())), *BINDABLES, *STREAM_BINDABLES
    )


class _RequestError(Exception):
    def __init__(self, status_code: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message


def graphql_routes(*, debug: bool = False) -> list[Route]:
    methods = ["GET", "POST"] if debug else ["POST"]
    return [Route("/graphql", functools.partial(graphql_endpoint, debug=debug), methods=methods)]


async def graphql_endpoint(request: Request, *, debug: bool = False) -> Response:
    if request.method == "GET":
        return HTMLResponse(
            ExplorerGraphiQL(title="logexport API").html(None) or "",
            headers={"Content-Security-Policy": _EXPLORER_CSP},
        )
    try:
        body = await _read_body(request)
        try:
            principal = await auth.require_principal(request)
        except LogExportError as exc:
            status = 401 if isinstance(exc, Unauthenticated) else 403
            raise _RequestError(status, exc.code, exc.message) from None
        payload = _parse_payload(body)
    except _RequestError as exc:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
        return JSONResponse(
            {"errors": [{"message": exc.message, "extensions": {"code": exc.code}}]},
            status_code=exc.status_code,
            headers=headers,
        )
    context = Context(
        request=request,
        settings=request.app.state.settings,
        pool=request.app.state.pool,
        principal=principal,
    )
    result = await run_query(executable_schema(), payload, context)
    encoded = await _off_loop(encode_json, result, MAX_RESPONSE_BYTES)
    if encoded is None:
        message = (
            f"The answer would be larger than {MAX_RESPONSE_BYTES:,} bytes. "
            "Select fewer fields or smaller pages (first)."
        )
        encoded = encode_json({"errors": [{"message": message, "extensions": _TOO_COMPLEX}]})
        assert encoded is not None
    return Response(encoded, media_type="application/json")


async def _read_body(request: Request) -> bytes:
    too_large = _RequestError(
        413, "BAD_USER_INPUT", f"The request body is larger than {MAX_BODY_BYTES} bytes"
    )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise too_large
    return bytes(body)


@dataclass(frozen=True)
class GraphQLRequest:
    """The parts of a GraphQL request body that execution reads."""

    query: str
    variables: dict[str, object] | None = None
    operation_name: str | None = None


def _parse_payload(body: bytes) -> GraphQLRequest:
    def bad(message: str) -> _RequestError:
        return _RequestError(400, "BAD_USER_INPUT", message)

    try:
        payload: object = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise bad("The request body is not JSON") from None
    if not isinstance(payload, dict):
        raise bad("The request body must be one JSON object with a query")
    query, variables, operation_name = (
        payload.get("query"),
        payload.get("variables"),
        payload.get("operationName"),
    )
    if not isinstance(query, str):
        raise bad("The request has no query string")
    if variables is not None and not isinstance(variables, dict):
        raise bad("variables must be a JSON object")
    if operation_name is not None and not isinstance(operation_name, str):
        raise bad("operationName must be a string")
    return GraphQLRequest(query, variables, operation_name)


async def run_query(
    schema: GraphQLSchema, payload: GraphQLRequest, context: Context
) -> dict[str, object]:
    """Execute one GraphQL request and return its JSON-ready response body."""
    prepared = await _off_loop(_prepare, schema, payload)
    if not isinstance(prepared, DocumentNode):
        return prepared
    document = prepared
    run = functools.partial(
        execute,
        schema,
        document,
        context_value=context,
        variable_values=payload.variables,
        operation_name=payload.operation_name,
    )
    # Introspection resolvers are plain functions over the schema: no I/O, no event loop.
    outcome = (
        await _off_loop(run)
        if _introspection_only(document, payload.operation_name)
        else run()
    )
    result = await outcome if inspect.isawaitable(outcome) else outcome
    assert isinstance(result, ExecutionResult)
    body: dict[str, object] = {}
    if result.errors:
        body["errors"] = [format_error(e, document) for e in result.errors]
    # Variable values that do not fit the schema stop the request before execution: like
    # validation errors, those leave no "data". Once execution ran, "data" is present.
    executed = result.data is not None or not result.errors
    if executed or any(e.path is not None for e in result.errors or ()):
        body["data"] = result.data
    return body


def _prepare(schema: GraphQLSchema, payload: GraphQLRequest) -> DocumentNode | dict[str, object]:
    """The parsed document, priced and validated; or the response body refusing it."""
    too_large = (
        f"The query is too large: it has more than {MAX_TOKENS:,} tokens or "
        f"{MAX_COMMENTS:,} comments."
    )
    tokens = sum(1 for _ in _TOKEN.finditer(payload.query))
    if tokens > MAX_TOKENS + MAX_COMMENTS:
        return {"errors": [{"message": too_large, "extensions": _TOO_COMPLEX}]}
    try:
        document = parse(payload.query, max_lexical_tokens=MAX_TOKENS, max_comments=MAX_COMMENTS)
    except GraphQLError as error:
        if "Document contains more than" in error.message:
            return {"errors": [{"message": too_large, "extensions": _TOO_COMPLEX}]}
        return {"errors": [format_error(error, None)]}
    # Priced before validation: validating an enormous document is itself expensive.
    cost = query_cost(schema, document, payload.operation_name, payload.variables)
    if cost is None or cost > MAX_COST:
        message = too_complex_message(cost)
        return {"errors": [{"message": message, "extensions": _TOO_COMPLEX}]}
    problems = validate(schema, document, _RULES)
    if problems:
        return {"errors": [format_error(e, document) for e in problems]}
    return document


def _introspection_only(document: DocumentNode, operation_name: str | None) -> bool:
    operations = [
        d
        for d in document.definitions
        if isinstance(d, OperationDefinitionNode)
        and (operation_name is None or (d.name is not None and d.name.value == operation_name))
    ]
    return len(operations) == 1 and all(
        isinstance(s, FieldNode) and s.name.value.startswith("__")
        for s in operations[0].selection_set.selections
    )


_T = TypeVar("_T")
_P = ParamSpec("_P")
_cpu_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


async def _off_loop(function: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """``function(*args)`` in a worker thread, at most ``_CPU_THREADS`` at once per loop."""
    loop = asyncio.get_running_loop()
    slots = _cpu_slots.get(loop)
    if slots is None:
        slots = _cpu_slots[loop] = asyncio.Semaphore(_CPU_THREADS)
    async with slots:
        return await asyncio.to_thread(function, *args, **kwargs)


def encode_json(value: object, limit: int = MAX_RESPONSE_BYTES) -> bytes | None:
    """``value`` as compact UTF-8 JSON, or None once it grows past ``limit`` bytes."""
    parts: list[bytes] = []
    size = 0
    for part in _json_parts(value, 0):
        size += len(part)
        if size > limit:
            return None
        parts.append(part)
    return b"".join(parts)


def _json_parts(value: object, depth: int) -> Iterator[bytes]:
    if depth < _SPLIT_DEPTH and isinstance(value, dict) and value:
        separator = b"{"
        for key, item in value.items():
            yield separator + _dumps(str(key)) + b":"
            yield from _json_parts(item, depth + 1)
            separator = b","
        yield b"}"
    elif depth < _SPLIT_DEPTH and isinstance(value, list) and value:
        separator = b"["
        for item in value:
            yield separator
            yield from _json_parts(item, depth + 1)
            separator = b","
        yield b"]"
    else:
        yield _dumps(value)


def _dumps(value: object) -> bytes:
    # The same text Starlette's JSONResponse writes.
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def _cause(error: GraphQLError) -> BaseException | None:
    original: BaseException | None = error.original_error
    while isinstance(original, GraphQLError) and original.original_error is not None:
        original = original.original_error
    return original


def format_error(error: GraphQLError, document: DocumentNode | None) -> dict[str, object]:
    formatted: dict[str, object] = {"message": error.message}
    if error.locations:
        formatted["locations"] = [
            {"line": loc.line, "column": loc.column} for loc in error.locations
        ]
    if error.path is not None:
        formatted["path"] = list(error.path)
    cause = _cause(error)
    if isinstance(cause, LogExportError):
        formatted["message"] = cause.message
        extensions: dict[str, str] = {"code": cause.code}
        if cause.field:
            extensions["field"] = cause.field
    elif error.path is None:
        # Raised before any resolver ran: the document or its variables are wrong.
        extensions = {"code": "BAD_USER_INPUT"}
        field = input_field_of(error, document)
        if field:
            extensions["field"] = field
    else:
        log.error(
            "GraphQL resolver failed",
            extra={"path": ".".join(str(p) for p in error.path)},
            exc_info=(type(cause), cause, cause.__traceback__) if cause is not None else None,
        )
        formatted["message"] = INTERNAL_MESSAGE
        extensions = {"code": "INTERNAL"}
    formatted["extensions"] = extensions
    return formatted
