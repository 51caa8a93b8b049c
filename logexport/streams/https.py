"""The HTTPS destination: one signed gzip NDJSON ``POST`` per delivery.

Each request carries:

    Content-Type: application/x-ndjson      Content-Encoding: gzip
    X-Logexport-Stream: <uuid>              the stream's id, so that one URL can receive many
    X-Logexport-Delivery: <uuid>            the same on every retry of the delivery
    X-Logexport-Sequence: <n>               1, 2, 3, … within the stream ("test" for a test)
    X-Logexport-Signature: sha256=<hex>     HMAC-SHA256 of the body with the stream's secret
    X-Logexport-Manifest: <base64url>       the signed manifest envelope (JSON)

Any 2xx answer means delivered. Before each delivery the host is resolved and every address
checked (no loopback, private, link-local or metadata address; https only) unless private
destinations are allowed, and the request connects to the address that was checked, so a
DNS answer that changes in between cannot redirect it. Redirects are not followed.
"""

from __future__ import annotations

import hashlib
import hmac
import ssl
from urllib.parse import urlsplit, urlunsplit

import httpx

from logexport.config import Settings
from logexport.manifests import b64url_encode
from logexport.streams.destinations import (
    Delivery,
    DeliveryFailed,
    allowed_addresses,
    stream_secret,
)
from logexport.streams.models import LogStream
from logexport.streams.ssrf import IPAddress, Resolver

CONNECT_TIMEOUT = 10.0
REQUEST_TIMEOUT = 60.0
USER_AGENT = "logexport-stream/1"


def signature(secret: str, body: bytes) -> str:
    """The ``X-Logexport-Signature`` value of ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def delivery_headers(delivery: Delivery, secret: str) -> dict[str, str]:
    headers = {
        "Content-Type": "application/x-ndjson",
        "Content-Encoding": "gzip",
        "User-Agent": USER_AGENT,
        "X-Logexport-Stream": str(delivery.stream_id),
        "X-Logexport-Delivery": str(delivery.id),
        "X-Logexport-Sequence": str(delivery.sequence) if delivery.sequence is not None else "test",
        "X-Logexport-Signature": signature(secret, delivery.body),
    }
    if delivery.manifest is not None:
        headers["X-Logexport-Manifest"] = b64url_encode(delivery.manifest)
    return headers


def _pinned_url(url: str, address: IPAddress) -> tuple[str, str, str]:
    """``url`` with its host replaced by ``address``; the Host header and TLS server name to
    send instead."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    literal = f"[{address}]" if address.version == 6 else str(address)
    netloc = literal if parts.port is None else f"{literal}:{parts.port}"
    host_header = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, "")), host_header, host


def _endpoint(url: str, address: IPAddress) -> str:
    """``host:port`` of one connection attempt, and the address tried when the URL names a
    host: a host with several addresses may fail on one and answer on another."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    literal = f"[{address}]" if address.version == 6 else str(address)
    if host.strip("[]") == str(address):
        return f"{literal}:{port}"
    return f"{host}:{port} ({address})"


def _connect_reason(exc: BaseException) -> str:
    """Why a connection failed, from the OS error under httpx's: what the owner can act on."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, TimeoutError):
            return "timed out"
        if isinstance(cause, OSError) and cause.errno is not None and cause.strerror:
            return cause.strerror[:1].lower() + cause.strerror[1:]
        cause = cause.__cause__ or cause.__context__
    return type(exc).__name__


def _tls_failure(exc: BaseException) -> bool:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLError):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


class HttpsDestination:
    def __init__(
        self,
        stream: LogStream,
        settings: Settings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        resolver: Resolver | None = None,
    ) -> None:
        url = stream.url
        if url is None:
            raise DeliveryFailed("the stream has no URL", retryable=False)
        self.url = url
        self.stream = stream
        self._settings = settings
        self._transport = transport
        self._resolver = resolver

    async def deliver(self, delivery: Delivery) -> None:
        secret = stream_secret(
            self._settings, self.stream.id, self.stream.secret, "secret", what="signing secret"
        )
        headers = delivery_headers(delivery, secret)
        addresses = await allowed_addresses(
            self.url, self._settings, self._resolver, label="destination refused: URL"
        )
        timeout = httpx.Timeout(REQUEST_TIMEOUT, connect=CONNECT_TIMEOUT)
        last_error = "no address answered"
        async with httpx.AsyncClient(
            timeout=timeout, follow_redirects=False, trust_env=False, transport=self._transport
        ) as client:
            for address in addresses:
                url, host_header, server_name = _pinned_url(self.url, address)
                try:
                    response = await client.post(
                        url,
                        content=delivery.body,
                        headers={**headers, "Host": host_header},
                        extensions={"sni_hostname": server_name},
                    )
                except httpx.ConnectError as exc:
                    if _tls_failure(exc):
                        raise DeliveryFailed(
                            f"TLS with {server_name} failed: its certificate is not trusted "
                            "for that name"
                        ) from None
                    last_error = (
                        f"could not connect to {_endpoint(self.url, address)}: "
                        f"{_connect_reason(exc)}"
                    )
                    continue
                except httpx.ConnectTimeout:
                    last_error = f"could not connect to {_endpoint(self.url, address)}: timed out"
                    continue
                except httpx.TimeoutException:
                    raise DeliveryFailed(f"{server_name} did not answer in time") from None
                except httpx.HTTPError as exc:
                    raise DeliveryFailed(
                        f"the request to {server_name} failed ({type(exc).__name__})"
                    ) from None
                if 200 <= response.status_code < 300:
                    return
                raise DeliveryFailed(f"{server_name} answered HTTP {response.status_code}")
        raise DeliveryFailed(last_error)
