"""Stream deliveries into a customer's bucket: a moto server of the customer's own, with IAM
enforced, other credentials than the service's storage, and a role behind an external id."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import secrets
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest

from devtools import services
from devtools.customer_aws import CustomerAccount, KeyPair, customer_account
from logexport import manifests
from logexport.config import Settings
from logexport.kinds import ExportKind
from logexport.streams.destinations import Delivery, DeliveryFailed
from logexport.streams.models import DestinationType, LogStream
from logexport.streams.s3 import (
    CredentialsExpired,
    RoleCredentialCache,
    S3Destination,
    marker_key,
    object_key,
)
from logexport.streams.secrets import seal
from tests.support.stream_checks import unsaved_stream

SECRET_KEY = "stream-test-secret-key-0123456789abcdef-0123456789"
SIGNING_KEY = manifests.generate_signing_key()
ORG = UUID("5b0c4c1e-0d7e-4d4f-9a43-7c1d2f3e4a5b")
CREATED = datetime(2026, 11, 30, 23, 41, 7, 123456, tzinfo=UTC)


@pytest.fixture(scope="module")
def customer() -> Iterator[CustomerAccount]:
    with customer_account(
        log_file=services.run_dir() / f"moto-customer-{os.getpid()}.log"
    ) as account:
        yield account


@pytest.fixture
def prefix(customer: CustomerAccount) -> str:
    """A folder of the customer's bucket private to the test."""
    return f"logs/{secrets.token_hex(4)}"


@pytest.fixture
def service_identity(monkeypatch: pytest.MonkeyPatch, customer: CustomerAccount) -> KeyPair:
    """The credentials the service runs with (its default chain reads the environment)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", customer.service.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", customer.service.secret_access_key)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return customer.service


def stream_settings(*, allow_private: bool = True) -> Settings:
    return Settings(secret_key=SECRET_KEY).derive(stream_allow_private=allow_private)


def make_stream(
    customer: CustomerAccount,
    prefix: str,
    *,
    keys: KeyPair | None = None,
    role: bool = False,
    external_id: str | None = None,
    bucket: str | None = None,
    endpoint_url: str | None = None,
) -> LogStream:
    stream_id = uuid4()
    destination: dict[str, Any] = {
        "bucket": bucket or customer.bucket,
        "prefix": prefix,
        "region": customer.region,
        "endpoint_url": endpoint_url or customer.endpoint_url,
        "access_key_id": keys.access_key_id if keys else None,
        "role_arn": customer.role_arn if role else None,
        "external_id": (external_id or customer.external_id) if role else None,
    }
    sealed = (
        seal(SECRET_KEY, stream_id, {"secret_access_key": keys.secret_access_key}) if keys else None
    )
    return unsaved_stream(stream_id, ORG, DestinationType.S3, destination, sealed)


def rows(count: int) -> list[dict[str, Any]]:
    start = CREATED - timedelta(minutes=5)
    return [
        {
            "id": f"{i:08d}-0000-4000-8000-000000000000",
            "organization_id": str(ORG),
            "created_at": (start + timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "actor_type": "user",
            "actor_id": "usr_1",
            "actor_email": "ada@example.test",
            "actor_name": "Ada",
            "action": "user.login",
            "resource_type": None,
            "resource_id": None,
            "ip_address": "203.0.113.7",
            "user_agent": "test",
            "metadata": {"n": i},
        }
        for i in range(count)
    ]


def make_delivery(stream: LogStream, sequence: int | None, count: int = 3) -> Delivery:
    delivery_id = uuid4()
    if sequence is None:
        return Delivery(
            id=delivery_id, stream_id=stream.id, organization_id=stream.organization_id,
            kind=stream.kind, sequence=None, body=b"", row_count=0, manifest=None,
            created_at=CREATED,
        )  # fmt: skip
    entries = rows(count)
    body = gzip.compress(b"".join(json.dumps(r).encode() + b"\n" for r in entries), mtime=0)
    key = manifests.parse_signing_key(SIGNING_KEY)
    manifest = manifests.build_manifest(
        organization_id=str(stream.organization_id),
        kind=stream.kind.value,
        from_time=CREATED - timedelta(hours=1),
        to_time=CREATED,
        filter=None,
        format="JSONL",
        compression="GZIP",
        file_name=f"{stream.organization_id}-{sequence}.jsonl.gz",
        row_count=count,
        byte_size=len(body),
        sha256=hashlib.sha256(body).hexdigest(),
        snapshot_at=CREATED,
        first_row=manifests.RowMark(entries[0]["created_at"], entries[0]["id"]),
        last_row=manifests.RowMark(entries[-1]["created_at"], entries[-1]["id"]),
        sequence=sequence,
        previous_manifest_sha256=None,
        key_id=manifests.key_id(key.public_key()),
        stream_id=str(stream.id),
    )
    envelope = manifests.envelope_bytes(manifests.sign_manifest(manifest, key))
    return Delivery(
        id=delivery_id, stream_id=stream.id, organization_id=stream.organization_id,
        kind=stream.kind, sequence=sequence, body=body, row_count=count, manifest=envelope,
        created_at=CREATED,
    )  # fmt: skip


def verify_downloaded(customer: CustomerAccount, key: str, tmp_path: Path) -> dict[str, Any]:
    """Download the object and its manifest as an auditor would and verify them offline."""
    data = tmp_path / key.rsplit("/", 1)[1]
    data.write_bytes(customer.get(key))
    envelope = json.loads(customer.get(key + manifests.MANIFEST_SUFFIX))
    public = manifests.parse_signing_key(SIGNING_KEY).public_key()
    summary = manifests.verify_file(data, envelope, {manifests.key_id(public): public})
    return summary.manifest


# ------------------------------------------------------------------------------ keys


def test_object_key_is_prefix_kind_utc_hour_organization_and_sequence() -> None:
    stream_like = Delivery(
        id=uuid4(), stream_id=uuid4(), organization_id=ORG, kind=ExportKind.SCIM_EVENT,
        sequence=42, body=b"", row_count=0, manifest=b"{}",
        created_at=datetime(2026, 12, 1, 1, 30, tzinfo=timezone(timedelta(hours=2))),
    )  # fmt: skip
    expected = f"scim-event/2026/11/30/23/{ORG}-42.jsonl.gz"
    assert object_key("", stream_like) == expected
    assert object_key("/audit/trail/", stream_like) == f"audit/trail/{expected}"


# ------------------------------------------------------------------------------ access keys


async def test_delivery_with_access_keys_lands_at_its_key_with_a_verifiable_manifest(
    customer: CustomerAccount, prefix: str, tmp_path: Path
) -> None:
    stream = make_stream(customer, prefix, keys=customer.writer)
    delivery = make_delivery(stream, sequence=1, count=3)

    await S3Destination(stream, stream_settings()).deliver(delivery)

    key = f"{prefix}/audit-log/2026/11/30/23/{ORG}-1.jsonl.gz"
    assert customer.keys(prefix) == [key, key + ".manifest.json"]
    assert customer.get(key) == delivery.body
    head = customer.head(key)
    assert head["ContentType"] == "application/gzip"
    assert "ContentEncoding" not in head
    assert customer.head(key + ".manifest.json")["ContentType"] == "application/json"
    grants = customer.client().get_object_acl(Bucket=customer.bucket, Key=key)["Grants"]
    assert [g["Permission"] for g in grants] == ["FULL_CONTROL"]
    assert all(g["Grantee"].get("Type") == "CanonicalUser" for g in grants)
    manifest = verify_downloaded(customer, key, tmp_path)
    assert manifest["stream_id"] == str(stream.id)
    assert manifest["sequence"] == 1
    assert manifest["row_count"] == 3


async def test_retried_delivery_rewrites_the_same_object(
    customer: CustomerAccount, prefix: str, tmp_path: Path
) -> None:
    stream = make_stream(customer, prefix, keys=customer.writer)
    first = make_delivery(stream, sequence=7, count=2)
    destination = S3Destination(stream, stream_settings())

    await destination.deliver(first)
    await destination.deliver(first)
    await S3Destination(stream, stream_settings()).deliver(first)

    key = f"{prefix}/audit-log/2026/11/30/23/{ORG}-7.jsonl.gz"
    assert customer.keys(prefix) == [key, key + ".manifest.json"]
    assert verify_downloaded(customer, key, tmp_path)["sequence"] == 7


async def test_manifest_is_never_written_before_its_object(
    customer: CustomerAccount, prefix: str
) -> None:
    # A key pair that may write manifests only: the data object is refused, and then no
    # manifest may be found describing an object that is not there.
    iam = customer.client("iam")
    name = f"manifests-only-{secrets.token_hex(4)}"
    iam.create_user(UserName=name)
    iam.put_user_policy(
        UserName=name,
        PolicyName="manifests",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Action": "s3:PutObject",
                        "Resource": f"arn:aws:s3:::{customer.bucket}/*.manifest.json",
                    }
                ],
            }
        ),
    )
    key = iam.create_access_key(UserName=name)["AccessKey"]
    stream = make_stream(customer, prefix, keys=KeyPair(key["AccessKeyId"], key["SecretAccessKey"]))

    with pytest.raises(DeliveryFailed) as caught:
        await S3Destination(stream, stream_settings()).deliver(make_delivery(stream, 1))

    assert "AccessDenied" in caught.value.message
    assert customer.keys(prefix) == []


async def test_consecutive_deliveries_are_objects_of_their_own(
    customer: CustomerAccount, prefix: str
) -> None:
    stream = make_stream(customer, prefix, keys=customer.writer)
    destination = S3Destination(stream, stream_settings())
    for sequence in (1, 2, 3):
        await destination.deliver(make_delivery(stream, sequence))
    data = [k for k in customer.keys(prefix) if k.endswith(".jsonl.gz")]
    assert [k.rsplit("-", 1)[1] for k in data] == ["1.jsonl.gz", "2.jsonl.gz", "3.jsonl.gz"]


async def test_test_delivery_writes_one_marker_object(
    customer: CustomerAccount, prefix: str
) -> None:
    stream = make_stream(customer, prefix, keys=customer.writer)
    delivery = make_delivery(stream, sequence=None)

    await S3Destination(stream, stream_settings()).deliver(delivery)

    assert customer.keys(prefix) == [f"{prefix}/logexport-test/{delivery.id}.json"]
    assert marker_key(prefix, delivery) == f"{prefix}/logexport-test/{delivery.id}.json"
    marker = json.loads(customer.get(marker_key(prefix, delivery)))
    assert marker["test"] is True
    assert marker["stream_id"] == str(stream.id)


async def test_wrong_secret_key_fails_for_good_and_the_message_holds_no_secret(
    customer: CustomerAccount, prefix: str
) -> None:
    wrong = KeyPair(customer.writer.access_key_id, "wrong-" + secrets.token_urlsafe(24))
    stream = make_stream(customer, prefix, keys=wrong)

    with pytest.raises(DeliveryFailed) as caught:
        await S3Destination(stream, stream_settings()).deliver(make_delivery(stream, 1))

    failure = caught.value
    assert failure.retryable is False
    assert "SignatureDoesNotMatch" in failure.message
    assert customer.bucket in failure.message
    assert wrong.secret_access_key not in str(failure)
    assert customer.keys(prefix) == []


async def test_unknown_access_key_fails_for_good(customer: CustomerAccount, prefix: str) -> None:
    stream = make_stream(customer, prefix, keys=KeyPair("AKIAUNKNOWN000000000", "nope-" * 8))
    with pytest.raises(DeliveryFailed) as caught:
        await S3Destination(stream, stream_settings()).deliver(make_delivery(stream, 1))
    assert caught.value.retryable is False
    assert "InvalidAccessKeyId" in caught.value.message
    assert "nope-" not in caught.value.message


async def test_key_pair_without_write_permission_is_access_denied(
    customer: CustomerAccount, prefix: str
) -> None:
    # The service identity may only assume the role, not write itself.
    stream = make_stream(customer, prefix, keys=customer.service)
    with pytest.raises(DeliveryFailed) as caught:
        await S3Destination(stream, stream_settings()).deliver(make_delivery(stream, 1))
    assert caught.value.retryable is False
    assert "AccessDenied" in caught.value.message
    assert customer.service.secret_access_key not in caught.value.message


async def test_missing_bucket_fails_for_good(customer: CustomerAccount, prefix: str) -> None:
    stream = make_stream(customer, prefix, keys=customer.writer, bucket="no-such-bucket-here")
    with pytest.raises(DeliveryFailed) as caught:
        await S3Destination(stream, stream_settings()).deliver(make_delivery(stream, 1))
    assert caught.value.retryable is False
    assert "no-such-bucket-here" in caught.value.message


async def test_unreachable_endpoint_is_retryable(customer: CustomerAccount, prefix: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    stream = make_stream(
        customer, prefix, keys=customer.writer, endpoint_url=f"http://127.0.0.1:{closed_port}"
    )
    with pytest.raises(DeliveryFailed) as caught:
        await S3Destination(stream, stream_settings()).deliver(make_delivery(stream, 1))
    assert caught.value.retryable is True
    assert customer.writer.secret_access_key not in caught.value.message


async def test_connections_go_to_the_addresses_the_endpoint_check_resolved(
    customer: CustomerAccount, prefix: str
) -> None:
    # The system resolver knows no "customer-store": the delivery can only reach the bucket
    # by connecting to the address the check resolved it to, not by resolving it again.
    asked: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        asked.append(host)
        return ["127.0.0.1"] if host == "customer-store" else []

    port = customer.endpoint_url.rsplit(":", 1)[1]
    stream = make_stream(
        customer, prefix, keys=customer.writer, endpoint_url=f"http://customer-store:{port}"
    )
    destination = S3Destination(stream, stream_settings(), resolver=resolve)

    await destination.deliver(make_delivery(stream, 1))
    await destination.deliver(make_delivery(stream, 2))

    assert asked == ["customer-store", "customer-store"]  # checked again per delivery
    assert len(customer.keys(prefix)) == 4


@contextmanager
def failing_store(status: int, code: str) -> Iterator[str]:
    """An S3 endpoint on 127.0.0.1 that answers every request with ``status`` and an S3
    error document carrying ``code``; yields its URL."""

    class Handler(BaseHTTPRequestHandler):
        # HTTP/1.1: the client's "Expect: 100-continue" is answered before its body is read.
        protocol_version = "HTTP/1.1"

        def _fail(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = (
                f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code>"
                f"<Message>{code} from the test store</Message></Error>"
            ).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_PUT = do_POST = do_GET = do_HEAD = _fail

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


async def test_store_answering_5xx_is_retryable(customer: CustomerAccount, prefix: str) -> None:
    with failing_store(502, "BadGateway") as url:
        stream = make_stream(customer, prefix, keys=customer.writer, endpoint_url=url)
        with pytest.raises(DeliveryFailed) as caught:
            await S3Destination(stream, stream_settings()).deliver(make_delivery(stream, 1))
    assert caught.value.retryable is True
    assert "BadGateway" in caught.value.message


async def test_credentials_refused_as_expired_are_retryable(
    customer: CustomerAccount, prefix: str
) -> None:
    # Temporary credentials can lapse early (revoked sessions): the next try assumes the
    # role again, so the failure is not final.
    with failing_store(400, "ExpiredToken") as url:
        stream = make_stream(customer, prefix, keys=customer.writer, endpoint_url=url)
        with pytest.raises(CredentialsExpired) as caught:
            await S3Destination(stream, stream_settings()).deliver(make_delivery(stream, 1))
    assert caught.value.retryable is True
    assert "ExpiredToken" in caught.value.message


async def test_loopback_endpoint_is_refused_without_the_private_opt_in(
    customer: CustomerAccount, prefix: str
) -> None:
    stream = make_stream(customer, prefix, keys=customer.writer)
    with pytest.raises(DeliveryFailed) as caught:
        await S3Destination(stream, stream_settings(allow_private=False)).deliver(
            make_delivery(stream, 1)
        )
    assert caught.value.retryable is False
    assert "http://" in caught.value.message or "loopback" in caught.value.message
    assert customer.keys(prefix) == []


async def test_https_endpoint_resolving_to_loopback_is_refused(
    customer: CustomerAccount, prefix: str
) -> None:
    stream = make_stream(
        customer, prefix, keys=customer.writer, endpoint_url="https://localhost:9/"
    )
    with pytest.raises(DeliveryFailed) as caught:
        await S3Destination(stream, stream_settings(allow_private=False)).deliver(
            make_delivery(stream, 1)
        )
    assert caught.value.retryable is False
    assert "loopback" in caught.value.message


# ------------------------------------------------------------------------------ roles


async def test_role_assumed_with_the_service_identity_and_external_id(
    customer: CustomerAccount, prefix: str, service_identity: KeyPair, tmp_path: Path
) -> None:
    stream = make_stream(customer, prefix, role=True)
    cache = RoleCredentialCache()
    destination = S3Destination(stream, stream_settings(), role_cache=cache)

    await destination.deliver(make_delivery(stream, 1))
    await S3Destination(stream, stream_settings(), role_cache=cache).deliver(
        make_delivery(stream, 2)
    )

    key = f"{prefix}/audit-log/2026/11/30/23/{ORG}-2.jsonl.gz"
    assert verify_downloaded(customer, key, tmp_path)["sequence"] == 2
    assert len(customer.keys(prefix)) == 4
    assert cache.fetches == 1  # the temporary credentials served both deliveries


async def test_role_assumed_with_the_streams_key_pair(
    customer: CustomerAccount, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The service's own identity is unknown to the customer's account: the stream's keys
    # must be the ones that assume the role.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIASERVICEUNKNOWN00")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "unknown")
    stream = make_stream(customer, prefix, keys=customer.writer, role=True)
    cache = RoleCredentialCache()

    await S3Destination(stream, stream_settings(), role_cache=cache).deliver(
        make_delivery(stream, 1)
    )

    assert len(customer.keys(prefix)) == 2
    assert cache.fetches == 1


async def test_wrong_external_id_is_refused_for_good(
    customer: CustomerAccount, prefix: str, service_identity: KeyPair
) -> None:
    stream = make_stream(customer, prefix, role=True, external_id="not-the-customers-id")
    with pytest.raises(DeliveryFailed) as caught:
        await S3Destination(stream, stream_settings(), role_cache=RoleCredentialCache()).deliver(
            make_delivery(stream, 1)
        )
    assert caught.value.retryable is False
    assert "AssumeRole" in caught.value.message
    assert "AccessDenied" in caught.value.message
    assert service_identity.secret_access_key not in caught.value.message
    assert customer.keys(prefix) == []


async def test_role_without_external_id_is_not_assumed_with_the_service_identity(
    customer: CustomerAccount, prefix: str, service_identity: KeyPair
) -> None:
    stream = make_stream(customer, prefix, role=True)
    stream.destination["external_id"] = None
    with pytest.raises(DeliveryFailed) as caught:
        await S3Destination(stream, stream_settings(), role_cache=RoleCredentialCache()).deliver(
            make_delivery(stream, 1)
        )
    assert caught.value.retryable is False
    assert "external id" in caught.value.message
    assert customer.keys(prefix) == []


async def test_destination_without_keys_or_role_never_uses_the_service_identity(
    customer: CustomerAccount, prefix: str, service_identity: KeyPair
) -> None:
    stream = make_stream(customer, prefix)
    with pytest.raises(DeliveryFailed) as caught:
        await S3Destination(stream, stream_settings()).deliver(make_delivery(stream, 1))
    assert caught.value.retryable is False
    assert customer.keys(prefix) == []


async def test_role_credentials_are_renewed_shortly_before_they_expire(
    customer: CustomerAccount, prefix: str, service_identity: KeyPair
) -> None:
    clock = [datetime.now(UTC)]
    cache = RoleCredentialCache(now=lambda: clock[0])
    stream = make_stream(customer, prefix, role=True)

    await S3Destination(stream, stream_settings(), role_cache=cache).deliver(
        make_delivery(stream, 1)
    )
    clock[0] += timedelta(minutes=50)
    await S3Destination(stream, stream_settings(), role_cache=cache).deliver(
        make_delivery(stream, 2)
    )
    assert cache.fetches == 1
    clock[0] += timedelta(minutes=6)  # under five minutes left of the hour
    await S3Destination(stream, stream_settings(), role_cache=cache).deliver(
        make_delivery(stream, 3)
    )
    assert cache.fetches == 2
    assert len(customer.keys(prefix)) == 6
