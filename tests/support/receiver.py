"""A log stream's HTTPS endpoint stand-in on 127.0.0.1 that can fail on demand.

It keeps every delivery it receives (headers, body, whether the HMAC signature matched the
secret of its path) and answers with the status it is told to. ``down()`` closes its
listening socket (connections are refused) and ``up()`` opens it again on the same port;
``hold()`` keeps requests waiting (after their body is read) until ``release()``.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import hmac
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    signature_ok: bool
    answered: int

    @property
    def delivery_id(self) -> str:
        return self.headers["x-logexport-delivery"]

    @property
    def sequence(self) -> int:
        return int(self.headers["x-logexport-sequence"])

    def rows(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in gzip.decompress(self.body).splitlines()]

    def envelope(self) -> dict[str, Any]:
        encoded = self.headers["x-logexport-manifest"]
        raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        envelope: dict[str, Any] = json.loads(raw)
        return envelope

    def manifest(self) -> dict[str, Any]:
        manifest: dict[str, Any] = self.envelope()["manifest"]
        return manifest

    def sha256(self) -> str:
        return hashlib.sha256(self.body).hexdigest()


class Receiver:
    def __init__(self, default_secret: str = "", *, tls: ssl.SSLContext | None = None) -> None:
        self.default_secret = default_secret
        self.tls = tls
        self.secrets: dict[str, str] = {}
        self.status = 200
        self._lock = threading.Lock()
        self._received: list[Received] = []
        self._released = threading.Event()
        self._released.set()
        self._held = threading.Condition(self._lock)
        self._holding = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # ------------------------------------------------------------------ control

    def url(self, path: str = "/ingest") -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def received(self, path: str | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self._received if path is None or r.path == path]

    def accepted(self, path: str | None = None) -> list[Received]:
        """Deliveries answered 2xx."""
        return [r for r in self.received(path) if 200 <= r.answered < 300]

    def hold(self) -> None:
        self._released.clear()

    def release(self) -> None:
        self._released.set()

    def holding(self) -> int:
        """Requests waiting in ``hold``."""
        with self._lock:
            return self._holding

    def up(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                secret = receiver.secrets.get(self.path, receiver.default_secret)
                expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
                signature_ok = hmac.compare_digest(
                    expected, headers.get("x-logexport-signature", "")
                )
                with receiver._lock:
                    receiver._holding += 1
                try:
                    receiver._released.wait()
                finally:
                    with receiver._lock:
                        receiver._holding -= 1
                status = receiver.status
                with receiver._lock:
                    receiver._received.append(
                        Received(self.path, headers, body, signature_ok, status)
                    )
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        server = Server(("127.0.0.1", self.port), Handler)
        if self.tls is not None:
            server.socket = self.tls.wrap_socket(server.socket, server_side=True)
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()

    def down(self) -> None:
        """Stop listening: new connections are refused until ``up()``."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def refuses(self) -> bool:
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", self.port)) != 0


@contextmanager
def receiver(default_secret: str = "", *, tls: ssl.SSLContext | None = None) -> Iterator[Receiver]:
    r = Receiver(default_secret, tls=tls)
    r.up()
    try:
        yield r
    finally:
        r.release()
        r.down()
