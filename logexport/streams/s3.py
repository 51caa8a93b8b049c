"""Stream deliveries into the customer's own S3 bucket (AWS or any S3-compatible store).

Each delivery becomes one object,
``<prefix>/<kind>/YYYY/MM/DD/HH/<organization>-<sequence>.jsonl.gz`` (the hour is the
delivery's, in UTC), followed by its signed manifest beside it as
``<that key>.manifest.json``. The key depends only on the delivery, so a retry rewrites the
same object rather than adding a second one; the manifest goes last, so a manifest in the
bucket always describes an object that is already there.

A test delivery writes one small marker, ``<prefix>/logexport-test/<delivery id>.json``: a
``PutObject`` is exactly the permission deliveries need, whereas ``HeadBucket`` needs
``s3:ListBucket`` and removing the marker needs ``s3:DeleteObject``, which a write-only
policy rightly leaves out.

Credentials are the stream's access key pair, or the temporary credentials of a role the
customer lets logexport assume (STS ``AssumeRole`` with the stream's external id; the call is
made with the stream's key pair when it has one, else with the service's own credentials).
Temporary credentials are kept per process until shortly before they expire.

A customer's own endpoint (MinIO, R2, …) is checked before every delivery like any stream
destination (public addresses, https), addressed path-style so that every request goes to
that host, and connected to at the very addresses the check resolved.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from logexport.config import Settings
from logexport.kinds import ExportKind
from logexport.manifests import manifest_name
from logexport.streams.destinations import (
    Delivery,
    DeliveryFailed,
    allowed_addresses,
    stream_secret,
)
from logexport.streams.models import LogStream
from logexport.streams.ssrf import IPAddress, Resolver

if TYPE_CHECKING:
    import aioboto3
    from aiobotocore.config import AioConfig
    from aiohttp.abc import AbstractResolver

log = logging.getLogger(__name__)

DEFAULT_REGION = "us-east-1"
DATA_CONTENT_TYPE = "application/gzip"
MANIFEST_CONTENT_TYPE = "application/json"
TEST_FOLDER = "logexport-test"
# Temporary credentials are asked for this long, and renewed this long before they expire,
# so that no request is signed with credentials about to lapse mid-upload.
ROLE_SESSION_SECONDS = 3600
ROLE_RENEW_MARGIN = timedelta(minutes=5)
# One delivery (both objects, or the role assumed first) must end within this time; the
# runner then records a retryable failure and backs off.
DELIVERY_TIMEOUT = 120.0

# S3 error codes that more attempts will not fix: the bucket, the credentials or the
# permissions are wrong until the customer changes them.
_PERMANENT = frozenset(
    {
        "AccessDenied", "AllAccessDisabled", "AccountProblem", "AuthorizationHeaderMalformed",
        "InvalidAccessKeyId", "InvalidBucketName", "InvalidClientTokenId", "InvalidRequest",
        "InvalidToken", "MalformedPolicyDocument", "NoSuchBucket", "PermanentRedirect",
        "SignatureDoesNotMatch", "UnrecognizedClientException",
    }
)  # fmt: skip
# Temporary credentials that lapsed early (or were revoked): forget them and try again.
_EXPIRED = frozenset({"ExpiredToken", "ExpiredTokenException", "RequestExpired"})
_RETRYABLE = frozenset(
    {
        "InternalError", "RequestTimeout", "RequestTimeTooSkewed", "ServiceUnavailable",
        "SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded",
    }
)  # fmt: skip


def kind_folder(kind: ExportKind) -> str:
    """The key segment naming the log: ``audit-log``, ``scim-event`` (as the CLI spells it)."""
    return kind.value.lower().replace("_", "-")


def object_key(prefix: str, delivery: Delivery) -> str:
    """Where a numbered delivery's rows go; the same for every attempt of the delivery."""
    if delivery.sequence is None:
        raise ValueError("a test delivery has no data object")
    if delivery.created_at.tzinfo is None:
        raise ValueError("naive datetimes have no defined hour")
    hour = delivery.created_at.astimezone(UTC).strftime("%Y/%m/%d/%H")
    return _join(prefix, kind_folder(delivery.kind), hour, delivery.file_name)


def marker_key(prefix: str, delivery: Delivery) -> str:
    return _join(prefix, TEST_FOLDER, f"{delivery.id}.json")


def _join(prefix: str, *parts: str) -> str:
    cleaned = prefix.strip("/")
    return "/".join([cleaned, *parts]) if cleaned else "/".join(parts)


# ------------------------------------------------------------------------------ credentials


class CredentialsExpired(DeliveryFailed):
    """The store refused temporary credentials as expired: the next try assumes the role
    again."""


@dataclass(frozen=True)
class Credentials:
    access_key_id: str
    secret_access_key: str
    session_token: str | None = None
    expires_at: datetime | None = None


class RoleCredentialCache:
    """Temporary credentials of assumed roles, each kept until shortly before it expires.

    The key names everything the credentials depend on (stream, role, external id, the
    credentials that assumed it, the endpoint), so a changed stream assumes its role anew.
    """

    def __init__(self, now: Callable[[], datetime] | None = None) -> None:
        self._now = now or (lambda: datetime.now(UTC))
        self._entries: dict[tuple[str, ...], Credentials] = {}
        self.fetches = 0

    def get(self, key: tuple[str, ...]) -> Credentials | None:
        found = self._entries.get(key)
        if found is None:
            return None
        if found.expires_at is not None and found.expires_at - ROLE_RENEW_MARGIN <= self._now():
            del self._entries[key]
            return None
        return found

    def put(self, key: tuple[str, ...], credentials: Credentials) -> None:
        now = self._now()
        # Entries of deleted or changed streams are dropped once they lapse.
        for stale in [k for k, c in self._entries.items() if c.expires_at and c.expires_at <= now]:
            del self._entries[stale]
        self._entries[key] = credentials
        self.fetches += 1

    def forget(self, key: tuple[str, ...]) -> None:
        self._entries.pop(key, None)


_ROLE_CREDENTIALS = RoleCredentialCache()


@functools.cache
def _shared_session() -> aioboto3.Session:
    """The process's session for clients given explicit credentials. A session parses the S3
    and STS service models once; a new one per delivery spent about 0.2 s doing it again."""
    import aioboto3

    return aioboto3.Session()


# ------------------------------------------------------------------------------ destination


class S3Destination:
    """A stream's S3 bucket. Every failure is a ``DeliveryFailed`` whose message names the
    operation, the bucket and the store's error code, never a secret."""

    def __init__(
        self,
        stream: LogStream,
        settings: Settings,
        *,
        role_cache: RoleCredentialCache | None = None,
        resolver: Resolver | None = None,
    ) -> None:
        destination = stream.destination
        self.stream_id = stream.id
        self.bucket = str(destination.get("bucket") or "")
        self.prefix = str(destination.get("prefix") or "").strip("/")
        self.region = str(destination.get("region") or DEFAULT_REGION)
        self.endpoint_url: str | None = destination.get("endpoint_url") or None
        self.access_key_id: str | None = destination.get("access_key_id") or None
        self.role_arn: str | None = destination.get("role_arn") or None
        self.external_id: str | None = destination.get("external_id") or None
        self._sealed = stream.secret
        self._settings = settings
        self._roles = role_cache or _ROLE_CREDENTIALS
        self._resolver = resolver
        # The endpoint's addresses as checked for this delivery: connections go to them only.
        self._pinned: AbstractResolver | None = None
        # Every secret this destination has held, scrubbed from failure messages.
        self._secrets: set[str] = set()

    # -------------------------------------------------------------------- delivering

    async def deliver(self, delivery: Delivery) -> None:
        try:
            async with asyncio.timeout(DELIVERY_TIMEOUT):
                await self._deliver(delivery)
        except DeliveryFailed:
            raise
        except TimeoutError:
            raise DeliveryFailed(
                f"S3 delivery to bucket {self.bucket} timed out after {DELIVERY_TIMEOUT:.0f}s",
                retryable=True,
            ) from None

    async def _deliver(self, delivery: Delivery) -> None:
        if not self.bucket:
            raise DeliveryFailed("the S3 destination names no bucket", retryable=False)
        if self.endpoint_url is not None:
            await self._check_endpoint(self.endpoint_url)
        if delivery.sequence is not None and delivery.manifest is None:
            raise DeliveryFailed(f"delivery {delivery.sequence} has no manifest", retryable=False)
        credentials, cache_key = await self._credentials()
        try:
            async with self._client("s3", credentials) as client:
                if delivery.sequence is None:
                    marker = marker_key(self.prefix, delivery)
                    await self._put(client, marker, _test_marker(delivery), MANIFEST_CONTENT_TYPE)
                    return
                assert delivery.manifest is not None
                key = object_key(self.prefix, delivery)
                await self._put(client, key, delivery.body, DATA_CONTENT_TYPE)
                await self._put(
                    client, manifest_name(key), delivery.manifest, MANIFEST_CONTENT_TYPE
                )
        except CredentialsExpired:
            if cache_key is not None:
                self._roles.forget(cache_key)
            raise
        except DeliveryFailed:
            raise
        except Exception as exc:
            # Opening or closing the client (an unusable region, a connection pool error).
            raise self._failure("S3 client", exc) from None

    async def _check_endpoint(self, endpoint_url: str) -> None:
        """Check the endpoint's addresses and pin this delivery's connections to them, so a
        DNS answer that changes after the check cannot send them elsewhere."""
        addresses = await allowed_addresses(
            endpoint_url, self._settings, self._resolver, label="S3 endpoint"
        )
        host = urlsplit(endpoint_url if "://" in endpoint_url else f"https://{endpoint_url}")
        self._pinned = _pinned_resolver(host.hostname or "", addresses)

    async def _put(self, client: Any, key: str, body: bytes, content_type: str) -> None:
        # No ACL: objects stay private to the bucket's owner. Content-MD5 lets the store
        # refuse a body damaged on the way. No Content-Encoding on the data object: it is a
        # gzip file, and a client that decompressed it on download would no longer hold the
        # bytes whose SHA-256 the manifest states.
        digest = base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode()
        try:
            await client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=body,
                ContentType=content_type,
                ContentMD5=digest,
            )
        except Exception as exc:
            raise self._failure("S3 PutObject", exc) from None

    # -------------------------------------------------------------------- credentials

    def _key_pair(self) -> Credentials | None:
        if self.access_key_id is None:
            return None
        secret = stream_secret(
            self._settings,
            self.stream_id,
            self._sealed,
            "secret_access_key",
            what="secret access key",
        )
        self._secrets.add(secret)
        return Credentials(self.access_key_id, secret)

    async def _credentials(self) -> tuple[Credentials | None, tuple[str, ...] | None]:
        """The credentials to write with (None: the service's own, never used without a
        role) and, for an assumed role, the cache key to forget if they prove expired."""
        pair = self._key_pair()
        if self.role_arn is None:
            if pair is None:
                raise DeliveryFailed(
                    "the S3 destination has neither an access key nor a role to assume",
                    retryable=False,
                )
            return pair, None
        if pair is None and self.external_id is None:
            # Without an external id, anyone who learned the role's ARN could have the
            # service's own identity write into that bucket (the confused deputy).
            raise DeliveryFailed(
                "assuming a role with the service's credentials needs an external id",
                retryable=False,
            )
        cache_key = (
            str(self.stream_id),
            self.role_arn,
            self.external_id or "",
            self.access_key_id or "",
            hashlib.sha256(pair.secret_access_key.encode()).hexdigest() if pair else "",
            self.endpoint_url or "",
            self.region,
        )
        cached = self._roles.get(cache_key)
        if cached is None:
            cached = await self._assume_role(pair)
            self._roles.put(cache_key, cached)
        self._secrets.update(filter(None, (cached.secret_access_key, cached.session_token)))
        return cached, cache_key

    async def _assume_role(self, pair: Credentials | None) -> Credentials:
        assert self.role_arn is not None
        params: dict[str, Any] = {
            "RoleArn": self.role_arn,
            "RoleSessionName": f"logexport-{self.stream_id}",
            "DurationSeconds": ROLE_SESSION_SECONDS,
        }
        if self.external_id is not None:
            params["ExternalId"] = self.external_id
        # An endpoint of the customer's own (MinIO, a test server) answers STS too; on AWS
        # the regional STS endpoint does.
        try:
            async with self._client("sts", pair) as sts:
                answer = await sts.assume_role(**params)
        except Exception as exc:
            raise self._failure("STS AssumeRole", exc, subject=f"role {self.role_arn}") from None
        given = answer["Credentials"]
        expires_at = given["Expiration"]
        if isinstance(expires_at, str):
            expires_at = datetime.fromisoformat(expires_at.replace("Z", "+00:00"))
        return Credentials(
            access_key_id=given["AccessKeyId"],
            secret_access_key=given["SecretAccessKey"],
            session_token=given["SessionToken"],
            expires_at=expires_at,
        )

    def _client(self, service: str, credentials: Credentials | None) -> Any:
        """An S3 or STS client signing with ``credentials`` (None: the service's own, read
        afresh from its environment)."""
        import aioboto3  # deferred: HTTPS-only workers need not load the AWS stack

        if credentials is None:
            session = aioboto3.Session(region_name=self.region)
            return session.client(service, endpoint_url=self.endpoint_url, config=self._config())
        return _shared_session().client(
            service,
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=credentials.access_key_id,
            aws_secret_access_key=credentials.secret_access_key,
            aws_session_token=credentials.session_token,
            config=self._config(),
        )

    def _config(self) -> AioConfig:
        from aiobotocore.config import AioConfig

        # Path-style addressing on a customer's endpoint: requests then go to the very host
        # that passed the SSRF check, not to ``<bucket>.<host>``. On AWS, botocore's default.
        style = "path" if self.endpoint_url is not None else "auto"
        pinned = {"resolver": self._pinned} if self._pinned is not None else None
        return AioConfig(
            connector_args=pinned,
            signature_version="s3v4",
            s3={"addressing_style": style},
            retries={"mode": "standard", "max_attempts": 2},
            connect_timeout=10,
            read_timeout=60,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )

    # -------------------------------------------------------------------- errors

    def _failure(self, operation: str, exc: BaseException, subject: str = "") -> DeliveryFailed:
        """``exc`` as a ``DeliveryFailed`` naming the operation and error code, its message
        scrubbed of every secret this destination holds."""
        from botocore.exceptions import ClientError, NoCredentialsError

        where = subject or f"bucket {self.bucket}"
        expired = False
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code") or "")
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            detail = str(error.get("Message") or "")[:200]
            expired = code in _EXPIRED
            retryable = expired or code in _RETRYABLE or status >= 500 or status == 429
            if code in _PERMANENT:
                retryable = False
            text = f"{operation} on {where} failed: {code or status}"
            if detail:
                text += f" ({detail})"
        elif isinstance(exc, NoCredentialsError):
            text = f"{operation} on {where} failed: the service has no AWS credentials"
            retryable = False
        else:
            # Connection refused or reset, timeouts, DNS: the store may be back later.
            text = f"{operation} on {where} failed: {type(exc).__name__}"
            retryable = True
        if expired:
            return CredentialsExpired(_scrub(text, self._secrets), retryable=True)
        return DeliveryFailed(_scrub(text, self._secrets), retryable=retryable)


def _pinned_resolver(host: str, addresses: list[IPAddress]) -> AbstractResolver:
    """A resolver that answers ``host`` with ``addresses`` and no other name at all."""
    import socket

    from aiohttp.abc import AbstractResolver, ResolveResult

    expected = host.lower().rstrip(".")

    class Pinned(AbstractResolver):
        async def resolve(
            self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
        ) -> list[ResolveResult]:
            if host.lower().rstrip(".") != expected:
                raise OSError(f"{host} is not the checked endpoint")
            return [
                ResolveResult(
                    hostname=host,
                    host=str(address),
                    port=port,
                    family=socket.AF_INET6 if address.version == 6 else socket.AF_INET,
                    proto=0,
                    flags=socket.AI_NUMERICHOST,
                )
                for address in addresses
            ]

        async def close(self) -> None:
            pass

    return Pinned()


def _scrub(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[secret]")
    return text


def _test_marker(delivery: Delivery) -> bytes:
    marker = {
        "test": True,
        "delivery_id": str(delivery.id),
        "stream_id": str(delivery.stream_id),
        "organization_id": str(delivery.organization_id),
        "kind": delivery.kind.value,
        "created_at": delivery.created_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    }
    return (json.dumps(marker, sort_keys=True, indent=2) + "\n").encode()
