"""The HTTPS destination on its own: what a request carries, where it connects, what counts
as delivered, and which addresses it refuses."""

from __future__ import annotations

import dataclasses
import gzip
import json
import socket
import ssl
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID, uuid4

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from devtools import services
from logexport.config import Settings
from logexport.streams import https as https_destination
from logexport.streams.destinations import Delivery, DeliveryFailed
from logexport.streams.https import HttpsDestination
from logexport.streams.models import DestinationType, LogStream
from logexport.streams.secrets import seal
from tests.support.receiver import Receiver, receiver
from tests.support.stream_checks import unsaved_stream

SECRET = "whsec-https-test"


@pytest.fixture
def http() -> Iterator[Receiver]:
    with receiver(SECRET) as r:
        yield r


def _stream(settings: Settings, url: str, secret: str = SECRET) -> LogStream:
    stream_id = uuid4()
    return unsaved_stream(
        stream_id,
        UUID(int=7),
        DestinationType.HTTPS,
        {"url": url},
        seal(settings.require("secret_key"), stream_id, {"secret": secret}),
    )


def _delivery(stream: LogStream) -> Delivery:
    body = gzip.compress(b'{"id":"a"}\n', mtime=0)
    return Delivery(
        id=uuid4(),
        stream_id=stream.id,
        organization_id=stream.organization_id,
        kind=stream.kind,
        sequence=4,
        body=body,
        row_count=1,
        manifest=json.dumps({"manifest": {"sequence": 4}}).encode(),
        created_at=datetime.now(UTC),
    )


def _private(settings: Settings) -> Settings:
    return dataclasses.replace(settings, stream_allow_private=True)


async def test_a_delivery_is_a_signed_gzip_ndjson_post_sent_to_the_checked_address(settings, http):
    """The host name resolves (here, by a resolver standing in for DNS) once, to the
    address that is checked; the request connects there and still names the host."""
    stream = _stream(settings, f"http://receiver.example.test:{http.port}/in?x=1")
    resolved: list[str] = []

    async def resolver(host: str, port: int) -> list[str]:
        resolved.append(host)
        return ["127.0.0.1"]

    delivery = _delivery(stream)
    await HttpsDestination(stream, _private(settings), resolver=resolver).deliver(delivery)

    assert resolved == ["receiver.example.test"]
    [got] = http.received()
    assert got.path == "/in?x=1"
    assert got.headers["host"] == f"receiver.example.test:{http.port}"
    assert got.signature_ok
    assert got.headers["x-logexport-delivery"] == str(delivery.id)
    assert got.headers["x-logexport-sequence"] == "4"
    assert got.headers["content-type"] == "application/x-ndjson"
    assert got.headers["content-encoding"] == "gzip"
    assert got.envelope() == {"manifest": {"sequence": 4}}
    assert got.body == delivery.body


async def test_a_wrong_secret_gives_a_signature_the_receiver_rejects(settings, http):
    stream = _stream(settings, http.url("/in"), secret="another-secret")
    await HttpsDestination(stream, _private(settings)).deliver(_delivery(stream))
    [got] = http.received()
    assert not got.signature_ok


@pytest.mark.parametrize("status", [500, 302, 400])
async def test_only_a_2xx_answer_counts_as_delivered(settings, http, status):
    http.status = status
    stream = _stream(settings, http.url("/in"))
    with pytest.raises(DeliveryFailed) as failed:
        await HttpsDestination(stream, _private(settings)).deliver(_delivery(stream))
    assert failed.value.message == f"127.0.0.1 answered HTTP {status}"
    assert len(http.received()) == 1


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://169.254.169.254/latest", "a cloud metadata address"),
        ("https://10.1.2.3/in", "a private address"),
        ("https://127.0.0.1:9/in", "a loopback address"),
        ("https://[::1]:9/in", "a loopback address"),
        ("http://203.0.113.9/in", "must use https://"),
    ],
)
async def test_private_and_metadata_addresses_and_plain_http_are_refused_without_opt_in(
    settings, url, reason
):
    stream = _stream(settings, url)
    with pytest.raises(DeliveryFailed) as failed:
        await HttpsDestination(stream, settings).deliver(_delivery(stream))
    assert failed.value.message.startswith("destination refused: URL")
    assert reason in failed.value.message
    assert SECRET not in failed.value.message


def _certificate(tmp_path: Path, host: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_over_tls_the_pinned_connection_verifies_the_certificate_of_the_url_host(
    settings, tmp_path
):
    """Connecting to the checked IP address must not weaken TLS: the server name sent and
    verified is the URL's host, so a certificate for another name fails."""
    cert, key = _certificate(tmp_path, "receiver.example.test")
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)
    client_tls = ssl.create_default_context(cafile=str(cert))

    async def resolver(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    with receiver(SECRET, tls=server_tls) as https:
        good = _stream(settings, f"https://receiver.example.test:{https.port}/in")
        await HttpsDestination(
            good,
            _private(settings),
            resolver=resolver,
            transport=httpx.AsyncHTTPTransport(verify=client_tls),
        ).deliver(_delivery(good))
        [got] = https.received()
        assert got.signature_ok and got.headers["host"] == f"receiver.example.test:{https.port}"

        other = _stream(settings, f"https://other.example.test:{https.port}/in")
        with pytest.raises(DeliveryFailed, match=r"TLS with other\.example\.test failed"):
            await HttpsDestination(
                other,
                _private(settings),
                resolver=resolver,
                transport=httpx.AsyncHTTPTransport(verify=client_tls),
            ).deliver(_delivery(other))
        assert len(https.received()) == 1


async def test_every_delivery_names_its_stream_so_one_url_can_serve_several(settings, http):
    first, second = _stream(settings, http.url("/in")), _stream(settings, http.url("/in"))
    await HttpsDestination(first, _private(settings)).deliver(_delivery(first))
    await HttpsDestination(second, _private(settings)).deliver(_delivery(second))
    # A test delivery (no sequence, no rows) carries it too.
    trial = dataclasses.replace(_delivery(first), sequence=None, manifest=None)
    await HttpsDestination(first, _private(settings)).deliver(trial)
    got = http.received()
    assert [r.headers["x-logexport-stream"] for r in got] == [
        str(first.id),
        str(second.id),
        str(first.id),
    ]
    assert got[2].headers["x-logexport-sequence"] == "test"


async def test_a_refused_connection_names_the_address_port_and_reason(settings):
    port = services.free_port()  # nothing listens there
    stream = _stream(settings, f"http://127.0.0.1:{port}/in")
    with pytest.raises(DeliveryFailed) as failed:
        await HttpsDestination(stream, _private(settings)).deliver(_delivery(stream))
    assert failed.value.message == f"could not connect to 127.0.0.1:{port}: connection refused"


async def test_a_connection_that_is_never_accepted_names_the_host_port_and_a_timeout(
    settings, monkeypatch
):
    monkeypatch.setattr(https_destination, "CONNECT_TIMEOUT", 0.5)

    async def resolver(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    # A listener that never accepts, its queue already full: new connections get no answer.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        queued = []
        for _ in range(4):
            waiting = socket.socket()
            waiting.setblocking(False)
            waiting.connect_ex(("127.0.0.1", port))
            queued.append(waiting)
        try:
            stream = _stream(settings, f"http://receiver.example.test:{port}/in")
            with pytest.raises(DeliveryFailed) as failed:
                await HttpsDestination(stream, _private(settings), resolver=resolver).deliver(
                    _delivery(stream)
                )
        finally:
            for waiting in queued:
                waiting.close()
    assert failed.value.message == (
        f"could not connect to receiver.example.test:{port} (127.0.0.1): timed out"
    )
