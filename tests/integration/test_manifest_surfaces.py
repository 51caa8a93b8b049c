"""Signed manifests where people read them: ``LogExport.manifest`` over GraphQL, the
public keys at ``/.well-known/logexport-keys.json``, and the manifest's place in its chain
as MCP's ``get_log_export`` reports it — each over HTTP against the application with its
in-process worker, which signs every completed export."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import httpx2
import pytest
import pytest_asyncio
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from logexport import manifests
from logexport.client import LogExportClient, ManifestMismatch
from logexport.config import Settings
from logexport.entries import AuditLogEntryInput, record_audit_log_entries
from tests.support.app import running_app
from tests.support.graphql import graphql
from tests.support.world import World, build_world, eventually, export_status, wait_for_status

START = datetime(2026, 1, 1, tzinfo=UTC)
SIGNING_KEY = manifests.generate_signing_key()
RETIRED_KEY = manifests.generate_signing_key()

FIELDS = "id status sha256 fileName manifest"
REQUEST = (
    "mutation($input: RequestAuditLogExportInput!) {"
    f" requestAuditLogExport(input: $input) {{ logExport {{ {FIELDS} }} }} }}"
)
GET = f"query($id: ID!) {{ logExport(id: $id) {{ {FIELDS} }} }}"


def public_half(seed: str) -> str:
    key = manifests.parse_signing_key(seed).public_key()
    return manifests.b64url_encode(manifests.raw_public_key(key))


def kid(seed: str) -> str:
    return manifests.key_id(manifests.parse_signing_key(seed).public_key())


@pytest_asyncio.fixture(loop_scope="session")
async def signed_settings(settings: Settings) -> Settings:
    return settings.derive(signing_key=SIGNING_KEY, verify_keys=public_half(RETIRED_KEY))


@pytest_asyncio.fixture(loop_scope="session")
async def served(pool, signed_settings) -> AsyncIterator[str]:
    async with running_app(signed_settings, pool) as base_url:
        yield base_url


@pytest_asyncio.fixture(loop_scope="session")
async def world(pool) -> World:
    world = await build_world(pool)
    entries = [
        AuditLogEntryInput(
            organization_id=world.organization_id,
            action="user.login",
            actor_type="USER",
            actor_id=f"u{i}",
            created_at=START + timedelta(minutes=13 * i),
        )
        for i in range(40)
    ]
    async with pool.acquire() as conn:
        await record_audit_log_entries(conn, entries)
    return world


async def request_export(base_url: str, world: World) -> dict[str, Any]:
    body = await graphql(
        base_url,
        world.admin.token,
        REQUEST,
        {
            "input": {
                "organizationId": str(world.organization_id),
                "fromTime": "2026-01-01T00:00:00Z",
                "toTime": "2026-01-02T00:00:00Z",
            }
        },
    )
    assert "errors" not in body, body
    export: dict[str, Any] = body["data"]["requestAuditLogExport"]["logExport"]
    return export


async def manifest_stored(pool, export_id: str) -> dict[str, Any]:
    """The export's row once its manifest's copy beside the object is written."""

    async def probe() -> dict[str, Any] | None:
        row = await export_status(pool, export_id)
        return row if row["manifest_stored_at"] is not None else None

    return await eventually(probe, timeout=30, what="the manifest stored beside the file")


async def test_keys_document_is_public_short_lived_jwks_of_current_and_retired_keys(served):
    async with httpx.AsyncClient() as http:
        response = await http.get(served + manifests.KEYS_PATH)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/jwk-set+json")
    cache = response.headers["cache-control"]
    assert "public" in cache and "max-age=300" in cache
    document = response.json()
    assert [key["kid"] for key in document["keys"]] == [kid(SIGNING_KEY), kid(RETIRED_KEY)]
    assert {(key["kty"], key["crv"]) for key in document["keys"]} == {("OKP", "Ed25519")}
    assert set(manifests.load_jwks(response.content)) == {kid(SIGNING_KEY), kid(RETIRED_KEY)}


async def test_keys_document_of_a_server_without_keys_is_empty(pool, settings):
    unsigned = settings.derive(signing_key=None, verify_keys=None)
    async with running_app(unsigned, pool, run_worker=False) as url:
        async with httpx.AsyncClient() as http:
            response = await http.get(url + manifests.KEYS_PATH)
    assert response.status_code == 200
    assert response.json() == {"keys": []}


async def test_manifest_is_null_until_completed_then_the_stored_signed_envelope(
    pool, served, world, s3
):
    requested = await request_export(served, world)
    assert requested["manifest"] is None

    row = await wait_for_status(pool, requested["id"], "COMPLETED", "FAILED")
    assert row["status"] == "COMPLETED", row
    row = await manifest_stored(pool, requested["id"])
    body = await graphql(served, world.admin.token, GET, {"id": requested["id"]})
    export = body["data"]["logExport"]

    # The very bytes stored beside the object, signed by the current key.
    stored = s3.get(f"exports/{row['storage_key']}{manifests.MANIFEST_SUFFIX}")
    assert export["manifest"] == stored.decode()
    async with httpx.AsyncClient() as http:
        keys = manifests.load_jwks((await http.get(served + manifests.KEYS_PATH)).content)
    manifest = manifests.verify_envelope(json.loads(export["manifest"]), keys)
    assert manifest["export_id"] == export["id"]
    assert manifest["sha256"] == export["sha256"]
    assert manifest["file_name"] == export["fileName"]
    assert manifest["key_id"] == kid(SIGNING_KEY)
    assert manifest["sequence"] == row["manifest_sequence"] == 1

    # A viewer may not see exports at all: the manifest is no exception.
    hidden = await graphql(served, world.viewer.token, GET, {"id": requested["id"]})
    assert hidden["data"] == {"logExport": None}
    assert hidden["errors"][0]["extensions"]["code"] == "NOT_FOUND"


async def test_mcp_get_log_export_reports_the_manifests_sequence_and_sha256(pool, served, world):
    first = await request_export(served, world)
    await wait_for_status(pool, first["id"], "COMPLETED", "FAILED")
    second = await request_export(served, world)
    await wait_for_status(pool, second["id"], "COMPLETED", "FAILED")

    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {world.admin.token}"})
    async with Client(streamable_http_client(f"{served}/mcp", http_client=http)) as client:
        shown = await client.call_tool("get_log_export", {"id": second["id"]})
        pending = await client.call_tool(
            "request_audit_log_export",
            {
                "organization_id": str(world.organization_id),
                "from_time": "2026-01-03T00:00:00Z",
                "to_time": "2026-01-04T00:00:00Z",
            },
        )

    assert not shown.is_error, shown.content
    row = await export_status(pool, second["id"])
    assert shown.structured_content["manifest"] == {
        "sequence": 2,
        "sha256": row["manifest_sha256"],
        "keyId": kid(SIGNING_KEY),
    }
    # The chain link: the next manifest carries this SHA-256 of the one before.
    previous = await export_status(pool, first["id"])
    envelope = json.loads(row["manifest"])
    assert envelope["manifest"]["previous_manifest_sha256"] == previous["manifest_sha256"]
    assert row["manifest_sha256"] == manifests.manifest_sha256(envelope["manifest"])
    assert pending.structured_content["manifest"] is None


async def test_library_download_names_the_failed_check_and_keeps_nothing(
    pool, served, world, s3, tmp_path
):
    requested = await request_export(served, world)
    await wait_for_status(pool, requested["id"], "COMPLETED", "FAILED")
    row = await manifest_stored(pool, requested["id"])
    key = f"exports/{row['storage_key']}"
    genuine = s3.get(key)
    flipped = bytearray(genuine)
    flipped[-1] ^= 0x01
    other_keys = {kid(RETIRED_KEY): manifests.parse_signing_key(RETIRED_KEY).public_key()}

    async with LogExportClient(served, world.admin.token) as client:
        kept = await client.download_export(requested["id"], tmp_path / "kept.jsonl")
        with pytest.raises(ManifestMismatch) as untrusted:
            await client.download_export(requested["id"], tmp_path / "a.jsonl", keys=other_keys)
        s3.client().put_object(Bucket=s3.bucket, Key=key, Body=bytes(flipped))
        with pytest.raises(ManifestMismatch) as altered:
            await client.download_export(requested["id"], tmp_path / "b.jsonl")

    assert kept["id"] == requested["id"]
    assert (tmp_path / "kept.jsonl").read_bytes() == genuine
    assert (tmp_path / "kept.jsonl.manifest.json").read_text() == row["manifest"]
    assert untrusted.value.check == "signature"
    assert altered.value.check == "sha256"
    assert altered.value.code == "MANIFEST_MISMATCH"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.jsonl", "kept.jsonl.manifest.json"]
