"""Export files as PostgreSQL writes them (sql/migrations/0010_export_lines.sql), read
with COPY, against the Python encoders (exports/encoders.py) on the same rows: byte for
byte, for both kinds and formats, with hostile values in every text field; and the same
bytes whether one connection reads the export or several read its time slices in the one
snapshot."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from logexport import db
from logexport.db import q
from logexport.exports import pipeline
from logexport.exports.encoders import AmbiguousRows, CsvEncoder, JsonlEncoder
from logexport.exports.models import ExportFormat, ExportKind
from logexport.exports.pipeline import ExportResult, run_export
from logexport.exports.requests import ExportInput
from logexport.kinds import LOG_KINDS
from logexport.records import AuditLogFilter
from tests.support.world import build_world

START = datetime(2026, 3, 1, tzinfo=UTC)
END = START + timedelta(days=2)

# Every character Python's str.isspace knows, then each formula character after them.
_SPACES = [chr(c) for c in range(0x110000) if chr(c).isspace()]
HOSTILE = [
    "",
    "plain",
    '=HYPERLINK("http://x","y")',
    "+1 555 0100",
    "-1",
    "@SUM(A1)",
    "|cmd",
    "%APPDATA%",
    "\tTAB first",
    "\rCR first",
    *(space + "=1+1" for space in _SPACES),
    *(space + "|x" for space in _SPACES[:6]),
    "  ",
    'quote " inside',
    '"',
    '""',
    "back\\slash\\",
    "\\",
    "\\v and \\n as text",
    "a, b: c",
    "unit\x1fseparator",
    "\x1e\x1d\x1c",
    "".join(chr(c) for c in range(1, 0x20)),
    "del\x7f",
    "line\u2028sep\u2029para",
    "café ☃ 🎉",
    "x" * 5000,
]
HOSTILE_JSON: list[Any] = [
    {},
    [],
    {"a": "x, y", "b": "k: v", "c": [1, "2, 3"], "d": {"e": None}},
    {"quote": 'say "hi"', "back": "a\\b", "ctl": "\x01\t\n", "uni": "\u2028é"},
    {"num": 1.5, "big": 12345678901234567890, "neg": -3, "exp": 1e300, "t": True},
    {": odd key, ": ": value, "},
    "-starts with minus",
    "=formula",
    -42,
    None,
    [None, "", {"": ""}],
    # Fields holding null, and text that looks like them or like the stand-in for them.
    {"n": None, "s": "a: null, b", "deep": [{"m": None}, None, {"k": [None]}]},
    {"n": None, "sci": "0E0 and 10E05", "s": "x, y: z"},
    {"sci": "0E0", "s": "p: null"},
    {"null": "null", ": null": None, "": None},
    "null",
    "a: null, b",
    [],
    {"e": {}, "a": [], "z": [[], {}]},
]


def _values(i: int) -> Iterator[str | None]:
    """Hostile values for row ``i``, each field a different one, some NULL."""
    for field in range(8):
        pick = (i * 7 + field * 3) % (len(HOSTILE) + 1)
        yield None if pick == len(HOSTILE) else HOSTILE[pick]


async def _insert_audit(conn: asyncpg.Connection, org: uuid.UUID, rows: int) -> None:
    records = []
    for i in range(rows):
        actor_id, email, name, action, rtype, rid, agent, _ = _values(i)
        records.append(
            (
                org,
                START + timedelta(seconds=i * 60 // 7),
                ["USER", "API_KEY", "SYSTEM", "SCIM"][i % 4],
                actor_id,
                email,
                name,
                action or "user.login",
                rtype,
                rid,
                None if i % 3 == 0 else ("203.0.113.5" if i % 2 else "2001:db8::1"),
                agent,
                json.dumps(HOSTILE_JSON[i % len(HOSTILE_JSON)]),
            )
        )
    await conn.executemany(
        "INSERT INTO audit_log_entries (organization_id, created_at, actor_type, actor_id, "
        "actor_email, actor_name, action, resource_type, resource_id, ip_address, "
        "user_agent, metadata) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        records,
    )
    # Slices are planned from the planner's estimate of the rows.
    await conn.execute("ANALYZE audit_log_entries")


async def _insert_scim(conn: asyncpg.Connection, org: uuid.UUID, rows: int) -> None:
    records = []
    for i in range(rows):
        method, path, user, error, agent, *_ = _values(i)
        body = HOSTILE_JSON[i % len(HOSTILE_JSON)]
        records.append(
            (
                org,
                START + timedelta(seconds=i * 60 // 7),
                method or "PATCH",
                path or "/Users/1",
                user,
                [200, 201, 404, 500][i % 4],
                error,
                None if i % 3 else "198.51.100.7",
                agent,
                None if i % 5 == 0 else json.dumps(body),
                None if i % 4 == 0 else json.dumps(HOSTILE_JSON[(i + 3) % len(HOSTILE_JSON)]),
            )
        )
    await conn.executemany(
        "INSERT INTO scim_events (organization_id, created_at, method, path, user_name, "
        "status_code, error_message, ip_address, user_agent, request_body, response_body) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        records,
    )
    await conn.execute("ANALYZE scim_events")


async def _encoded_in_python(
    conn: asyncpg.Connection, spec: ExportInput, *, csv_bom: bool = False
) -> bytes:
    """The same rows through the Python encoders, from the packed rows log streams read."""
    kind = LOG_KINDS[spec.kind]
    audit = spec.kind is ExportKind.AUDIT_LOG
    view = "audit_log_packed_rows" if audit else "scim_event_packed_rows"
    json_columns = "metadata" if audit else "request_body, response_body"
    rows = await conn.fetch(
        f"SELECT packed, {json_columns}, null_mask FROM {view} "
        "WHERE organization_id = $1 AND created_at >= $2 AND created_at < $3 "
        "ORDER BY created_at, id",
        spec.organization_id,
        spec.from_time,
        spec.to_time,
    )
    encoder: JsonlEncoder | CsvEncoder
    if spec.format is ExportFormat.CSV:
        encoder = CsvEncoder(spec.kind, str(spec.organization_id), bom=csv_bom)
    else:
        encoder = JsonlEncoder(spec.kind, str(spec.organization_id))
    try:
        body = encoder.encode(rows)
    except AmbiguousRows as ambiguous:
        exact = await conn.fetch(q(kind.exact_query), ambiguous.ids, spec.organization_id)
        body = encoder.encode(rows, {r[0]: tuple(r) for r in exact})
    return encoder.header() + body


def _audit_spec(
    organization_id: uuid.UUID, format: ExportFormat = ExportFormat.JSONL, **fields: Any
) -> ExportInput:
    """An audit-log export of the test's two days."""
    return ExportInput(
        organization_id=organization_id,
        kind=ExportKind.AUDIT_LOG,
        from_time=START,
        to_time=END,
        format=format,
        **fields,
    )


def _record_slices(monkeypatch: pytest.MonkeyPatch) -> list[list[tuple[datetime, datetime]]]:
    """The time slices each export is planned in, from now on."""
    spans: list[list[tuple[datetime, datetime]]] = []
    plan = pipeline.plan_slices

    async def recorded(*args: Any) -> list[tuple[datetime, datetime]]:
        spans.append(await plan(*args))
        return spans[-1]

    monkeypatch.setattr(pipeline, "plan_slices", recorded)
    return spans


class _Collect:
    def __init__(self) -> None:
        self.data = bytearray()

    async def write(self, data: bytes) -> None:
        self.data += data


async def _export(
    pool: asyncpg.Pool, spec: ExportInput, helpers: int = 0, **kwargs: Any
) -> tuple[bytes, ExportResult]:
    sink = _Collect()
    async with pool.acquire() as conn:
        extra = [await pool.acquire() for _ in range(helpers)]
        try:
            result = await run_export(conn, spec, sink, helpers=extra, **kwargs)
        finally:
            for helper in extra:
                await pool.release(helper)
    return bytes(sink.data), result


@pytest.mark.parametrize("format", ["JSONL", "CSV"])
@pytest.mark.parametrize("kind", ["AUDIT_LOG", "SCIM_EVENT"])
async def test_lines_written_by_postgresql_match_the_python_encoders_byte_for_byte(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch, kind: str, format: str
) -> None:
    world = await build_world(pool)
    rows = 3 * (len(HOSTILE) + 1) * len(HOSTILE_JSON)
    async with pool.acquire() as conn:
        insert = _insert_audit if kind == "AUDIT_LOG" else _insert_scim
        await insert(conn, world.organization_id, rows)
    spec = ExportInput(
        organization_id=world.organization_id,
        kind=ExportKind(kind),
        from_time=START,
        to_time=END,
        format=ExportFormat(format),
        csv_bom=format == "CSV",
    )
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        expected = await _encoded_in_python(conn, spec, csv_bom=spec.csv_bom)
    assert expected.count(b"\n") >= rows  # the oracle read every row

    one, result = await _export(pool, spec)
    assert one == expected
    assert result.row_count == rows

    # Three connections, slices of about 100 rows: the same bytes, rows and marks.
    monkeypatch.setattr(pipeline, "SLICE_ROWS", 100)
    spans = _record_slices(monkeypatch)
    sliced, sliced_result = await _export(pool, spec, helpers=2)
    assert len(spans[0]) >= rows // 200
    assert sliced == expected
    assert sliced_result.row_count == rows
    assert (sliced_result.first_row, sliced_result.last_row) == (result.first_row, result.last_row)


async def test_every_slice_reads_the_snapshot_the_export_took(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows committed after the snapshot, in every slice's time span, are in no slice."""
    world = await build_world(pool)
    async with pool.acquire() as conn:
        await _insert_audit(conn, world.organization_id, 2000)
    monkeypatch.setattr(pipeline, "SLICE_ROWS", 200)
    spans = _record_slices(monkeypatch)

    async def write_more(snapshot_at: datetime) -> None:
        async with pool.acquire() as other:
            await other.executemany(
                "INSERT INTO audit_log_entries (organization_id, created_at, actor_type, "
                "action, metadata) VALUES ($1, $2, 'SYSTEM', 'late.write', '{}')",
                [(world.organization_id, START + timedelta(hours=h)) for h in range(48)],
            )

    spec = _audit_spec(world.organization_id)
    data, result = await _export(pool, spec, helpers=3, on_snapshot=write_more)
    assert len(spans[0]) >= 8  # the export was read in slices, by four connections
    assert result.row_count == 2000
    assert b"late.write" not in data
    ids = [json.loads(line)["id"] for line in data.splitlines()]
    assert len(set(ids)) == 2000

    again, _ = await _export(pool, spec, helpers=3)
    assert again.count(b"late.write") == 48


async def test_filters_apply_in_every_slice(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = await build_world(pool)
    async with pool.acquire() as conn:
        await _insert_audit(conn, world.organization_id, 1500)
        wanted = await conn.fetchval(
            "SELECT count(*) FROM audit_log_entries WHERE organization_id = $1 "
            "AND action = ANY ($2)",
            world.organization_id,
            ["plain", "-1"],
        )
    spec = _audit_spec(
        world.organization_id, ExportFormat.CSV, filter=AuditLogFilter(actions=("plain", "-1"))
    )
    one, result = await _export(pool, spec)
    monkeypatch.setattr(pipeline, "SLICE_ROWS", 10)
    spans = _record_slices(monkeypatch)
    sliced, _ = await _export(pool, spec, helpers=1)
    assert len(spans[0]) > 1
    assert wanted > 0
    assert result.row_count == wanted
    assert sliced == one


async def test_a_slice_that_fails_fails_the_export(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A helper connection lost in the middle of the export: the export raises, it does not
    return a file with slices missing."""
    world = await build_world(pool)
    async with pool.acquire() as conn:
        await _insert_audit(conn, world.organization_id, 3000)
    monkeypatch.setattr(pipeline, "SLICE_ROWS", 100)
    monkeypatch.setattr(pipeline, "COPY_CHUNK_BYTES", 4096)
    spec = _audit_spec(world.organization_id)
    async with pool.acquire() as conn, pool.acquire() as helper:
        backend = await helper.fetchval("SELECT pg_backend_pid()")

        class CutOffHelperOnFirstWrite(_Collect):
            async def write(self, data: bytes) -> None:
                if not self.data:
                    async with pool.acquire() as other:
                        await other.execute("SELECT pg_terminate_backend($1)", backend)
                await super().write(data)

        sink = CutOffHelperOnFirstWrite()
        with pytest.raises(ExceptionGroup) as raised:
            await run_export(conn, spec, sink, helpers=[helper])
    # The helper's COPY dies with the connection: PostgreSQL's error, a closed connection,
    # or the driver's own confusion, depending on where the loss meets it.
    lost = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError)
    assert raised.value.subgroup(lost) is not None
    assert sink.data.count(b"\n") < 3000


async def test_a_connection_that_cannot_join_the_snapshot_is_left_out(
    pool: asyncpg.Pool, empty_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A helper that reaches another database (as one behind a load balancer might) cannot
    import the snapshot: the export is read without it, whole and in order."""
    world = await build_world(pool)
    async with pool.acquire() as conn:
        await _insert_audit(conn, world.organization_id, 800)
    spec = _audit_spec(world.organization_id)
    expected, _ = await _export(pool, spec)
    monkeypatch.setattr(pipeline, "SLICE_ROWS", 50)
    spans = _record_slices(monkeypatch)
    elsewhere = await db.connect(empty_database_url)
    sink = _Collect()
    try:
        async with pool.acquire() as conn:
            result = await run_export(conn, spec, sink, helpers=[elsewhere])
    finally:
        await elsewhere.close()
    assert len(spans[0]) > 1
    assert result.row_count == 800
    assert bytes(sink.data) == expected


async def test_export_queries_are_not_compiled(pool: asyncpg.Pool) -> None:
    """JIT would compile a large export's query and gain nothing; the export turns it off
    for its own transaction."""
    world = await build_world(pool)
    spec = _audit_spec(world.organization_id)
    query, params = pipeline.export_query(spec, LOG_KINDS[spec.kind].jsonl_query)

    async def plan(*, export_settings: bool) -> dict[str, Any]:
        async with pool.acquire() as conn, conn.transaction():
            # Any query would be compiled, however small.
            await conn.execute("SET LOCAL jit = on; SET LOCAL jit_above_cost = 0")
            if export_settings:
                await conn.execute(q("export_plan_settings"))
            explained = await conn.fetchval("EXPLAIN (ANALYZE, FORMAT JSON) " + query, *params)
            return dict(explained[0])

    if "JIT" not in await plan(export_settings=False):
        pytest.skip("this PostgreSQL server has no JIT")
    assert "JIT" not in await plan(export_settings=True)
