"""The HTTPS destination on its own: what a request carries, where it connects, what counts
as delivered, and which addresses it refuses."""

from __future__ import annotations

import dataclasses
import gzip
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from uuid import UUID, uuid4

import pytest

from logexport.config import Settings
from logexport.kinds import ExportKind
from logexport.streams.destinations import Delivery, DeliveryFailed
from logexport.streams.https import HttpsDestination
from logexport.streams.models import DestinationType, LogStream, StreamState
from logexport.streams.secrets import seal
from tests.support.receiver import Receiver, receiver

SECRET = "whsec-https-test"


@pytest.fixture
def http() -> Iterator[Receiver]:
    with receiver(SECRET) as r:
        yield r


def _stream(settings: Settings, url: str, secret: str = SECRET) -> LogStream:
    stream_id = uuid4()
    now = datetime.now(UTC)
    return LogStream(
        id=stream_id,
        organization_id=UUID(int=7),
        kind=ExportKind.AUDIT_LOG,
        destination_type=DestinationType.HTTPS,
        destination={"url": url},
        secret=seal(settings.require("secret_key"), stream_id, {"secret": secret}),
        interval_seconds=60,
        filter=None,
        state=StreamState.ACTIVE,
        last_error=None,
        next_run_at=now,
        start_at=now,
        horizon=None,
        range_end=None,
        cursor_created_at=None,
        cursor_id=None,
        last_sequence=0,
        last_manifest_sha256=None,
        failures=0,
        lease_owner=None,
        lease_expires_at=None,
        lease_attempt=0,
        lease_lock_key=None,
        created_by=None,
        created_at=now,
        updated_at=now,
        deleted_at=None,
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
