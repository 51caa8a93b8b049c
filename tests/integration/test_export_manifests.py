"""Signed manifests made by the worker, on real PostgreSQL and S3 (moto): each completed
export's file verifies offline against its manifest and the published keys, the copy beside
the object is the manifest on the row, concurrent completions make a gap-free chain per
organization and kind, a lost fence takes no number, and a key rotation keeps old files
verifiable."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import pytest
import pytest_asyncio

from logexport import db, manifests, signing
from logexport.config import Settings
from logexport.exports.jobs import Fence, JobStore, SignedManifest, StoredFile
from logexport.exports.models import ExportKind, LogExport
from logexport.exports.requests import cancel_export
from logexport.exports.sealing import manifest_key, sign_export_manifest, store_manifest_copy
from logexport.exports.storage import Storage, StorageError, storage_from_settings
from logexport.exports.worker import Worker
from tests.support.exports import request_export
from tests.support.keys import NEXT_SIGNING_KEY, TEST_SIGNING_KEY
from tests.support.world import World, build_world, eventually, export_status, wait_for_status

DAY = datetime(2026, 3, 1, tzinfo=UTC)

_AUDIT_ROWS = """
INSERT INTO audit_log_entries (organization_id, created_at, actor_type, actor_id, action,
                               actor_name, metadata)
SELECT $1::uuid, $2::timestamptz + make_interval(secs => (i / 2) * 30), 'USER', 'usr_' || i,
       'user.login', CASE WHEN i % 7 = 0 THEN '=cmd()' END, jsonb_build_object('n', i)
FROM generate_series(0, $3::int - 1) AS i
"""
_SCIM_ROWS = """
INSERT INTO scim_events (organization_id, created_at, method, path, status_code, user_name)
SELECT $1::uuid, $2::timestamptz + make_interval(secs => i), 'POST', '/Users', 201,
       'user' || i || '@acme.test'
FROM generate_series(0, $3::int - 1) AS i
"""


@pytest_asyncio.fixture(loop_scope="session")
async def world(pool: asyncpg.Pool) -> World:
    world = await build_world(pool)
    async with pool.acquire() as conn:
        # Two rows every 30 seconds: the id breaks ties in the file's order.
        await conn.execute(_AUDIT_ROWS, world.organization_id, DAY, 400)
        await conn.execute(_SCIM_ROWS, world.organization_id, DAY, 50)
        await conn.execute(_AUDIT_ROWS, world.other_organization_id, DAY, 30)
    return world


@pytest.fixture
def roomy(settings: Settings) -> Settings:
    """Settings that let one organization queue and run many exports at once."""
    return settings.derive(max_active_exports_per_org=60, max_running_exports_per_org=60)


async def request(
    pool: asyncpg.Pool,
    settings: Settings,
    world: World,
    *,
    kind: ExportKind = ExportKind.AUDIT_LOG,
    minutes: int = 60,
    **arguments: Any,
) -> LogExport:
    return await request_export(
        pool,
        settings,
        world.admin.principal,
        kind,
        organization_id=world.organization_id,
        from_time=DAY.isoformat(),
        to_time=(DAY + timedelta(minutes=minutes)).isoformat(),
        **arguments,
    )


async def manifest_stored(pool: asyncpg.Pool, export_id: UUID) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        row = await export_status(pool, export_id)
        return row if row["manifest_stored_at"] is not None else None

    return await eventually(probe, what="the manifest copy to be stored")


async def download(s3: Any, row: dict[str, Any], folder: Path) -> tuple[Path, Path]:
    """The export's file and its manifest copy, from the bucket, as an auditor keeps them
    (exports of the same days share a name: the sequence number tells them apart)."""
    key = f"exports/{row['storage_key']}"
    data = await asyncio.to_thread(s3.get, key)
    copy_data = await asyncio.to_thread(s3.get, key + manifests.MANIFEST_SUFFIX)
    name = f"{row['manifest_sequence']:03d}-{row['file_name']}"
    return await asyncio.to_thread(keep, folder, name, data, copy_data)


def keep(folder: Path, name: str, data: bytes, copy_data: bytes) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    file, copy = folder / name, folder / manifests.manifest_name(name)
    file.write_bytes(data)
    copy.write_bytes(copy_data)
    return file, copy


def published(settings: Settings) -> dict[str, Any]:
    """The keys an auditor holds: the service's JWKS document, read back from its JSON."""
    document = json.dumps(manifests.jwks(signing.published_keys(settings)))
    return manifests.load_jwks(document)


def verify(file: Path, copy: Path, keys: dict[str, Any]) -> manifests.FileSummary:
    return manifests.verify_file(file, manifests.read_envelope(copy), keys)


async def bucket_keys(s3: Any) -> list[str]:
    keys: list[str] = await asyncio.to_thread(s3.keys)
    return sorted(keys)


async def chain_heads(pool: asyncpg.Pool) -> dict[str, tuple[int, str]]:
    async with pool.acquire() as conn:
        records = await conn.fetch(
            "SELECT kind, last_sequence, last_manifest_sha256 FROM manifest_chains"
        )
    return {r["kind"]: (r["last_sequence"], r["last_manifest_sha256"]) for r in records}


# ------------------------------------------------------------------------------ one export


@pytest.mark.parametrize(
    ("format", "compression"), [("JSONL", "GZIP"), ("CSV", "NONE"), ("CSV", "GZIP")]
)
async def test_an_exported_file_verifies_against_the_manifest_stored_beside_it(
    pool, settings, s3, world, tmp_path, format, compression
):
    export = await request(
        pool, settings, world, format=format, compression=compression, minutes=50
    )
    async with Worker(settings, retry_base=0.1, sweep_interval=3600):
        await wait_for_status(pool, export.id, "COMPLETED")
        row = await manifest_stored(pool, export.id)
    file, copy = await download(s3, row, tmp_path)

    # The copy beside the object is the manifest on the row, byte for byte.
    assert copy.read_text() == row["manifest"]
    summary = verify(file, copy, published(settings))
    assert summary.row_count == row["row_count"] == 200
    envelope = json.loads(row["manifest"])
    manifest = envelope["manifest"]
    async with pool.acquire() as conn:
        first, last = await conn.fetch(
            "(SELECT created_at, id FROM audit_log_entries WHERE organization_id = $1"
            " ORDER BY created_at, id LIMIT 1) UNION ALL"
            " (SELECT created_at, id FROM audit_log_entries WHERE organization_id = $1"
            "  AND created_at < $2 ORDER BY created_at DESC, id DESC LIMIT 1)",
            world.organization_id,
            DAY + timedelta(minutes=50),
        )
    assert manifest["first_row"] == {
        "created_at": stamp(first["created_at"]),
        "id": str(first["id"]),
    }
    assert manifest["last_row"] == {"created_at": stamp(last["created_at"]), "id": str(last["id"])}
    assert (manifest["format"], manifest["compression"]) == (format, compression)
    assert manifest["snapshot_at"] == stamp(row["snapshot_at"])
    assert manifest["filter"] == row["filter"]
    assert (manifest["sequence"], manifest["previous_manifest_sha256"]) == (1, None)
    assert manifest["key_id"] == envelope["key_id"]
    assert manifests.manifest_sha256(manifest) == row["manifest_sha256"]
    assert row["manifest_sequence"] == 1
    # Private like the file, and offered as an attachment under its own name.
    head = await asyncio.to_thread(
        s3.client().head_object, Bucket=s3.bucket, Key=f"exports/{manifest_key(row['storage_key'])}"
    )
    assert head["ContentType"] == "application/json"
    assert manifests.manifest_name(row["file_name"]) in head["ContentDisposition"]
    acl = await asyncio.to_thread(
        s3.client().get_object_acl,
        Bucket=s3.bucket,
        Key=f"exports/{manifest_key(row['storage_key'])}",
    )
    assert not [g for g in acl["Grants"] if "URI" in g["Grantee"]], acl["Grants"]


def stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def test_local_storage_keeps_the_manifest_beside_the_file_until_the_file_goes(
    pool, settings, world, tmp_path
):
    root = tmp_path / "store"
    local = settings.derive(storage_url=f"file://{root}")
    export = await request(pool, local, world, compression="GZIP")
    async with Worker(local, retry_base=0.1, sweep_interval=3600):
        row = await manifest_stored(pool, export.id)
    file = root / row["storage_key"]
    copy = root / manifest_key(row["storage_key"])
    assert copy.read_text() == row["manifest"]
    assert verify(file, copy, published(local)).row_count == row["row_count"] > 0
    assert copy.stat().st_mode & 0o777 == file.stat().st_mode & 0o777 == 0o600

    await cancel_export(pool, world.admin.principal, export.id)
    async with storage_from_settings(local) as storage:
        await Worker(local, pool=pool, storage=storage).sweep(settle=0)
    assert list(root.rglob("*")) == []


async def test_an_empty_export_has_a_manifest_without_first_and_last_rows(
    pool, settings, s3, world, tmp_path
):
    export = await request_export(
        pool,
        settings,
        world.admin.principal,
        ExportKind.AUDIT_LOG,
        organization_id=world.organization_id,
        from_time="2025-01-01T00:00:00Z",
        to_time="2025-01-02T00:00:00Z",
    )
    async with Worker(settings, retry_base=0.1, sweep_interval=3600):
        row = await manifest_stored(pool, export.id)
    file, copy = await download(s3, row, tmp_path)
    assert verify(file, copy, published(settings)).row_count == 0
    manifest = json.loads(row["manifest"])["manifest"]
    assert (manifest["first_row"], manifest["last_row"]) == (None, None)


# ------------------------------------------------------------------------------ the chain


async def test_concurrent_completions_make_one_gap_free_chain_per_organization_and_kind(
    pool, roomy, s3, world, tmp_path
):
    audit = [await request(pool, roomy, world, minutes=20 + n) for n in range(24)]
    scim = [
        await request(pool, roomy, world, kind=ExportKind.SCIM_EVENT, minutes=1 + n)
        for n in range(6)
    ]
    workers = [
        Worker(roomy, concurrency=8, worker_id=f"worker-{n}", retry_base=0.1, sweep_interval=3600)
        for n in range(4)
    ]
    running_at_once = 0

    async def sample() -> None:
        nonlocal running_at_once
        async with pool.acquire() as conn:
            while True:
                n = await conn.fetchval(
                    "SELECT count(*) FROM log_exports WHERE status = 'PROCESSING'"
                )
                running_at_once = max(running_at_once, n)
                await asyncio.sleep(0.01)

    sampler = asyncio.create_task(sample())
    try:
        async with workers[0], workers[1], workers[2], workers[3]:
            rows = [await manifest_stored(pool, e.id) for e in [*audit, *scim]]
    finally:
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)
    # Attempts were in flight together, so their commits contended for the head.
    assert running_at_once >= 4, running_at_once
    # No attempt failed (a number taken twice would fail a commit, then retry): some may
    # have lost their lease on a busy machine, and their commits then took no number.
    failures = [
        line
        for worker in workers
        for line in worker.metrics.render()
        if line.startswith("logexport_export_failures_total")
    ]
    assert failures and all(line.endswith(" 0") or line.endswith(" 0.0") for line in failures)

    keys = published(roomy)
    by_kind: dict[str, list[dict[str, Any]]] = {"AUDIT_LOG": rows[:24], "SCIM_EVENT": rows[24:]}
    for kind, chain in by_kind.items():
        chain.sort(key=lambda r: r["manifest_sequence"])
        assert [r["manifest_sequence"] for r in chain] == list(range(1, len(chain) + 1))
        stated = [json.loads(r["manifest"])["manifest"] for r in chain]
        links = [m["previous_manifest_sha256"] for m in stated]
        assert links == [None, *(r["manifest_sha256"] for r in chain[:-1])]
        folder = tmp_path / kind
        for row in chain:
            file, copy = await download(s3, row, folder)
            verify(file, copy, keys)
            file.unlink()  # the folder holds the chain's manifests only
        summary = manifests.verify_chain(folder, keys)
        assert (summary.kind, summary.first_sequence, summary.last_sequence) == (
            kind,
            1,
            len(chain),
        )
    assert await chain_heads(pool) == {
        kind: (len(chain), chain[-1]["manifest_sha256"]) for kind, chain in by_kind.items()
    }


def sign_by_test_key(
    export: LogExport,
    sequence: int,
    previous: str | None,
    *,
    first_row: tuple[str, str] | None,
) -> SignedManifest:
    return sign_export_manifest(
        export,
        sequence=sequence,
        previous_sha256=previous,
        snapshot_at=DAY,
        first_row=first_row,
        last_row=first_row,
        key=manifests.parse_signing_key(TEST_SIGNING_KEY),
    )


async def test_commits_racing_for_a_new_chain_take_numbers_one_by_one(pool, roomy, world):
    """Every completing transaction is open and past its fence before any takes a number:
    all of them contend for the head at once, the first ones for a head not yet created."""
    store = JobStore(pool)
    count = 20
    for n in range(count):
        await request(pool, roomy, world, minutes=20 + n)
    claims = []
    for n in range(count):
        claim = await store.claim(f"w{n}", lease=60, per_org_cap=count, lock_key=None)
        assert claim is not None
        claims.append(claim.export)
    arrived = 0
    all_in = asyncio.Event()

    async def together(_conn: asyncpg.Connection) -> None:
        nonlocal arrived
        arrived += 1
        if arrived == count:
            all_in.set()
        await asyncio.wait_for(all_in.wait(), 30)

    wide = await db.create_pool(roomy.database_url, min_size=count, max_size=count)
    try:
        racing = JobStore(wide)
        done = await asyncio.gather(
            *(
                racing.complete(
                    Fence(e.id, f"w{n}", e.attempts),
                    StoredFile(f"{e.id}/k", "audit.jsonl", "application/x-ndjson", 9, 1, "cd" * 32),
                    link_ttl=60,
                    before_commit=together,
                    sign=functools.partial(sign_by_test_key, first_row=("t", "a")),
                )
                for n, e in enumerate(claims)
            )
        )
    finally:
        await wide.close()
    chain = sorted(done, key=lambda e: e.manifest_sequence or 0)
    assert [e.manifest_sequence for e in chain] == list(range(1, count + 1))
    stated = [json.loads(e.manifest or "")["manifest"] for e in chain]
    assert [m["previous_manifest_sha256"] for m in stated] == [
        None,
        *(e.manifest_sha256 for e in chain[:-1]),
    ]
    assert await chain_heads(pool) == {"AUDIT_LOG": (count, chain[-1].manifest_sha256)}


# ------------------------------------------------------------------------------ lost fences


class PausedAtCommit(Worker):
    """A worker that stops just before its commit (at the requester's re-check) until
    ``resume`` is set."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.at_commit = asyncio.Event()
        self.resume = asyncio.Event()
        self._checks = 0

    async def _requester_may_export(self, conn: asyncpg.Connection, export: LogExport) -> bool:
        self._checks += 1
        if self._checks == 2:
            self.at_commit.set()
            await self.resume.wait()
        return await super()._requester_may_export(conn, export)


async def test_an_export_canceled_just_before_its_commit_takes_no_number(pool, settings, s3, world):
    canceled = await request(pool, settings, world)
    paused = PausedAtCommit(settings, worker_id="paused", retry_base=0.1, sweep_interval=3600)
    async with paused:
        await asyncio.wait_for(paused.at_commit.wait(), 20)
        await cancel_export(pool, world.admin.principal, canceled.id)
        paused.resume.set()
        await eventually(
            lambda: asyncio.sleep(0, not paused.running_exports),
            what="the canceled attempt to give up",
        )
    row = await export_status(pool, canceled.id)
    assert (row["status"], row["manifest"], row["manifest_sequence"]) == ("CANCELED", None, None)
    assert await chain_heads(pool) == {}
    assert await bucket_keys(s3) == []

    after = await request(pool, settings, world)
    async with Worker(settings, retry_base=0.1, sweep_interval=3600):
        row = await manifest_stored(pool, after.id)
    manifest = json.loads(row["manifest"])["manifest"]
    assert (manifest["sequence"], manifest["previous_manifest_sha256"]) == (1, None)


# ------------------------------------------------------------------------------ the copy


class NoManifestCopies:
    """Storage whose writes of manifest copies fail (an outage right after the commit)."""

    def __init__(self, inner: Storage) -> None:
        self.inner = inner
        self.refused = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def open_writer(self, key: str, **kwargs: Any) -> Any:
        if key.endswith(manifests.MANIFEST_SUFFIX):
            self.refused += 1
            raise StorageError("SlowDown: the store is unavailable")
        return await self.inner.open_writer(key, **kwargs)


@pytest_asyncio.fixture(loop_scope="session")
async def storage(settings: Settings) -> AsyncIterator[Storage]:
    async with storage_from_settings(settings) as opened:
        yield opened


async def test_a_manifest_copy_that_could_not_be_written_is_written_by_a_sweep(
    pool, settings, s3, world, storage, tmp_path
):
    export = await request(pool, settings, world)
    failing = NoManifestCopies(storage)
    async with Worker(settings, storage=failing, retry_base=0.1, sweep_interval=3600) as worker:
        row = await wait_for_status(pool, export.id, "COMPLETED")
        await eventually(
            lambda: asyncio.sleep(0, not worker.running_exports), what="the attempt to end"
        )
    assert failing.refused == 1
    # Committed all the same, with its manifest on the row.
    row = await export_status(pool, export.id)
    assert (row["manifest_sequence"], row["manifest_stored_at"]) == (1, None)
    assert await bucket_keys(s3) == [f"exports/{row['storage_key']}"]

    sweeper = Worker(settings, pool=pool, storage=storage)
    await sweeper.sweep(manifest_after=3600)  # too recent: the completing worker's to write
    assert (await export_status(pool, export.id))["manifest_stored_at"] is None
    await sweeper.sweep(manifest_after=0)
    row = await export_status(pool, export.id)
    assert row["manifest_stored_at"] is not None
    file, copy = await download(s3, row, tmp_path)
    assert copy.read_text() == row["manifest"]
    verify(file, copy, published(settings))


async def test_a_copy_written_after_the_export_ended_is_removed_again(
    pool, settings, s3, world, storage
):
    export = await request(pool, settings, world)
    async with Worker(settings, retry_base=0.1, sweep_interval=3600):
        row = await manifest_stored(pool, export.id)
    await cancel_export(pool, world.admin.principal, export.id)
    # A late writer (a sweep that read the export before the cancel) writes the copy now.
    kept = await store_manifest_copy(
        storage,
        JobStore(pool),
        export_id=export.id,
        storage_key=row["storage_key"],
        file_name=row["file_name"],
        text=row["manifest"],
        sha256=row["manifest_sha256"],
    )
    assert not kept
    assert await bucket_keys(s3) == [f"exports/{row['storage_key']}"]
    await Worker(settings, pool=pool, storage=storage).sweep(settle=0)
    assert await bucket_keys(s3) == []
    # The record of the manifest stays: a cancel revokes the file only.
    assert (await export_status(pool, export.id))["manifest"] == row["manifest"]


# ------------------------------------------------------------------------------ rotation


async def test_files_signed_before_a_key_rotation_verify_with_the_published_keys(
    pool, settings, s3, world, tmp_path
):
    old = settings.derive(signing_key=TEST_SIGNING_KEY, verify_keys=None)
    public_old = manifests.b64url_encode(
        manifests.raw_public_key(manifests.parse_signing_key(TEST_SIGNING_KEY).public_key())
    )
    new = settings.derive(signing_key=NEXT_SIGNING_KEY, verify_keys=public_old)
    rows = []
    for current, minutes in ((old, 30), (old, 40), (new, 50), (new, 60)):
        export = await request(pool, current, world, minutes=minutes)
        async with Worker(current, retry_base=0.1, sweep_interval=3600):
            rows.append(await manifest_stored(pool, export.id))

    keys = published(new)
    kid = {manifests.key_id(signing.signing_key(s).public_key()) for s in (old, new)}
    assert set(keys) == kid
    signed_by = [json.loads(r["manifest"])["key_id"] for r in rows]
    assert signed_by[0] == signed_by[1] != signed_by[2] == signed_by[3]
    for row in rows:
        file, copy = await download(s3, row, tmp_path / "files")
        verify(file, copy, keys)
        (tmp_path / "chain").mkdir(exist_ok=True)
        copy.rename(tmp_path / "chain" / copy.name)
    summary = manifests.verify_chain(tmp_path / "chain", keys)
    assert (summary.first_sequence, summary.last_sequence, summary.count) == (1, 4, 4)

    # Without the retired key, the files signed before the rotation are refused.
    only_new = published(new.derive(verify_keys=None))
    file = tmp_path / "files" / rows[0]["file_name"]
    with pytest.raises(manifests.VerificationFailed) as refused:
        manifests.verify_file(file, json.loads(rows[0]["manifest"]), only_new)
    assert refused.value.check == "signature"
