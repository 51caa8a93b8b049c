"""The demo's log stream: an endpoint on 127.0.0.1, a stream to it, and its first delivery
checked the way a customer's receiver would check it.

The organization's owner (streams are managed by owners only) creates an HTTPS stream over
the GraphQL API to an endpoint this process serves; the demo writes a few audit log entries;
the first delivery that arrives is checked: its ``X-Logexport-Signature`` (HMAC-SHA256 of the
body with the stream's secret) and its signed manifest (``X-Logexport-Manifest``) against the
public keys the server publishes, which also covers the body's size, SHA-256 and rows.

The endpoint is plain ``http://`` on loopback, which the server accepts only because the demo
starts it with ``LOGEXPORT_STREAM_ALLOW_PRIVATE=1``. It answers for as long as the demo runs,
so the stream keeps delivering while the server stays up; a stream left by an earlier run
points at a port nobody serves any more and is deleted first.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import hmac
import json
import secrets
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx

from logexport import db, identity, manifests
from logexport.client import LogExportClient
from logexport.entries import record_audit_log_entry
from logexport.policy import Role, role_of

OWNER_EMAIL = "owner@acme.example"
OWNER_NAME = "Olivia Owner"
PATH_PREFIX = "/demo-stream/"
INTERVAL_SECONDS = 5
ENTRIES = 3
DELIVERY_TIMEOUT = 90.0
TOKEN_LIFETIME = timedelta(days=7)


class StreamDemoFailed(Exception):
    """The step could not show a verified delivery; the message says why."""


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class Endpoint:
    """A customer's endpoint: keeps every delivery posted to ``path`` and answers 200."""

    url: str
    path: str
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def first_delivery(self) -> Received | None:
        with self.lock:
            return next(
                (r for r in self.received if r.headers.get("x-logexport-sequence") != "test"),
                None,
            )


def start_endpoint() -> Endpoint:
    """Serve a fresh path on a free port of 127.0.0.1 in a daemon thread (for the life of
    the process)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    path = PATH_PREFIX + secrets.token_hex(4)
    endpoint = Endpoint(f"http://127.0.0.1:{server.server_address[1]}{path}", path)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path != path:
                self.send_response(404)
            else:
                headers = {k.lower(): v for k, v in self.headers.items()}
                with endpoint.lock:
                    endpoint.received.append(Received(headers, body))
                self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server.RequestHandlerClass = Handler
    threading.Thread(target=server.serve_forever, name="demo-stream-endpoint", daemon=True).start()
    return endpoint


async def owner_token(database_url: str, organization_id: UUID) -> str:
    """A new API key of the organization's owner (the user made owner if need be)."""
    conn = await db.connect(database_url)
    try:
        async with conn.transaction():
            owner = await identity.get_user_by_email(conn, OWNER_EMAIL)
            if owner is None:
                owner = await identity.create_user(conn, OWNER_EMAIL, OWNER_NAME)
            current = await role_of(conn, organization_id, owner.id)
            if current is None:
                await identity.add_member(conn, organization_id, owner.id, Role.OWNER)
            elif current is not Role.OWNER:
                await identity.set_role(conn, organization_id, owner.id, Role.OWNER)
            _, token = await identity.create_api_key(conn, owner.id, "demo stream", TOKEN_LIFETIME)
    finally:
        await conn.close()
    return token


async def write_entries(database_url: str, organization_id: UUID) -> None:
    conn = await db.connect(database_url)
    try:
        for n in range(1, ENTRIES + 1):
            await record_audit_log_entry(
                conn,
                organization_id=organization_id,
                action="demo.stream.hello",
                actor_type="SYSTEM",
                metadata={"n": n, "note": "written by logexport demo for its log stream"},
            )
    finally:
        await conn.close()


async def _wait_for_delivery(endpoint: Endpoint, timeout: float) -> Received | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = endpoint.first_delivery()
        if found is not None:
            return found
        await asyncio.sleep(0.2)
    return None


def check_delivery(received: Received, secret: str, keys_document: bytes) -> dict[str, Any]:
    """The delivery's manifest, once its HMAC signature and signed manifest (size, SHA-256,
    rows) have been verified; ``StreamDemoFailed`` naming the check that failed."""
    expected = "sha256=" + hmac.new(secret.encode(), received.body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(received.headers.get("x-logexport-signature", ""), expected):
        raise StreamDemoFailed("the delivery's X-Logexport-Signature does not match its body")
    try:
        envelope = json.loads(manifests.b64url_decode(received.headers["x-logexport-manifest"]))
    except (KeyError, ValueError) as exc:
        raise StreamDemoFailed(f"the delivery carries no readable manifest ({exc})") from None
    keys = manifests.load_jwks(keys_document)
    manifest: dict[str, Any] = envelope.get("manifest", {})
    with tempfile.TemporaryDirectory(prefix="logexport-demo-stream-") as folder:
        path = Path(folder) / str(manifest.get("file_name") or "delivery.jsonl.gz")
        path.write_bytes(received.body)
        try:
            summary = manifests.verify_file(path, envelope, keys, workers=1)
        except manifests.VerificationFailed as failure:
            raise StreamDemoFailed(f"the delivery failed verification: {failure}") from None
    if str(summary.manifest.get("sequence")) != received.headers.get("x-logexport-sequence"):
        raise StreamDemoFailed("the manifest's sequence is not the delivery's")
    return summary.manifest


async def show_stream_delivery(
    base_url: str, database_url: str, organization_id: UUID, detail: Callable[[str], None]
) -> None:
    """Create the stream, write entries, and show its first delivery, verified."""
    token = await owner_token(database_url, organization_id)
    endpoint = start_endpoint()
    secret = secrets.token_urlsafe(24)
    async with LogExportClient(base_url, token) as client:
        for old in await client.list_streams(organization_id, deliveries=1):
            if PATH_PREFIX in str((old.get("destination") or {}).get("url") or ""):
                await client.delete_stream(old["id"])
                detail(f"deleted stream {old['id']} of an earlier demo run")
        stream = await client.create_stream(
            "AUDIT_LOG",
            organization_id,
            https_url=endpoint.url,
            secret=secret,
            interval_seconds=INTERVAL_SECONDS,
        )
        detail(
            f"stream {stream['id']} created as {OWNER_EMAIL} (owner): audit log entries every "
            f"{INTERVAL_SECONDS}s to {endpoint.url}, state {stream['state']}"
        )
        await write_entries(database_url, organization_id)
        detail(f"wrote {ENTRIES} audit log entries (action demo.stream.hello)")
        received = await _wait_for_delivery(endpoint, DELIVERY_TIMEOUT)
        if received is None:
            current = await client.get_stream(stream["id"], organization_id=organization_id)
            raise StreamDemoFailed(
                f"no delivery within {DELIVERY_TIMEOUT:.0f}s (stream {current['state']}, "
                f"last error: {current.get('lastError') or 'none'})"
            )
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        keys = await http.get("/.well-known/logexport-keys.json")
        keys.raise_for_status()
    manifest = check_delivery(received, secret, keys.content)
    rows = [json.loads(line) for line in gzip.decompress(received.body).splitlines()]
    detail(
        f"delivery {received.headers.get('x-logexport-delivery')} arrived: "
        f"POST {endpoint.path}, {len(received.body):,} bytes of gzip NDJSON"
    )
    detail(
        f"sequence {manifest['sequence']}: {manifest['row_count']} rows, HMAC signature "
        f"verified, manifest signed by key {manifest['key_id']} verified"
    )
    for row in rows[: ENTRIES + 1]:
        detail(f"  {row['created_at']}  {row['action']}")
