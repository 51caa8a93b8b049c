"""What a stream delivers, and the destinations it is delivered to.

A destination receives one ``Delivery`` at a time, in sequence order, and either takes it
whole or raises ``DeliveryFailed``. The same delivery (same id, sequence, body and manifest)
may come again after a failure or a crash: destinations write it idempotently (the S3 key
is fixed per sequence; an HTTPS receiver sees the same ``X-Logexport-Delivery`` id).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from uuid import UUID

from logexport.config import Settings
from logexport.kinds import ExportKind
from logexport.streams.models import DestinationType, LogStream
from logexport.streams.secrets import SecretUnsealError, unseal
from logexport.streams.ssrf import (
    DestinationRefused,
    DestinationUnresolved,
    IPAddress,
    Resolver,
    checked_addresses,
)


@dataclass(frozen=True)
class Delivery:
    id: UUID
    stream_id: UUID
    organization_id: UUID
    kind: ExportKind
    # None: a test delivery (no rows, outside the chain).
    sequence: int | None
    # gzip NDJSON, rows encoded exactly as a JSONL export.
    body: bytes
    row_count: int
    # The signed manifest envelope as JSON bytes (None for a test delivery).
    manifest: bytes | None
    # When the delivery was first recorded: stable across retries.
    created_at: datetime

    @property
    def file_name(self) -> str:
        """``<organization>-<sequence>.jsonl.gz``, the name its manifest states."""
        return delivery_file_name(self.organization_id, self.sequence)


def delivery_file_name(organization_id: UUID, sequence: int | None) -> str:
    return f"{organization_id}-{sequence if sequence is not None else 'test'}.jsonl.gz"


class DeliveryFailed(Exception):
    """The destination did not take the delivery. ``message`` is safe to show the owner (no
    secret, no response body); ``retryable`` is False when retrying cannot help by itself
    (a refused address, rejected credentials) — the stream still retries, with backoff."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable


async def allowed_addresses(
    url: str, settings: Settings, resolver: Resolver | None, *, label: str
) -> list[IPAddress]:
    """The addresses a delivery may connect to, checked again before each delivery (DNS
    answers change). A refusal fails the delivery with its reason after ``label``; only a
    host that does not resolve may come right by itself."""
    try:
        return await checked_addresses(
            url, allow_private=settings.stream_allow_private, resolver=resolver
        )
    except DestinationUnresolved as exc:
        raise DeliveryFailed(f"{label} {exc.message}", retryable=True) from None
    except DestinationRefused as exc:
        raise DeliveryFailed(f"{label} {exc.message}", retryable=False) from None


def stream_secret(
    settings: Settings, stream_id: UUID, sealed: bytes | None, name: str, *, what: str
) -> str:
    """The secret ``name`` from the stream's sealed blob; ``what`` names it to the owner
    when it cannot be had."""
    if sealed is None:
        raise DeliveryFailed(f"the stream has no {what}", retryable=False)
    if settings.secret_key is None:
        raise DeliveryFailed(
            f"LOGEXPORT_SECRET_KEY is not set: the stream's {what} cannot be opened",
            retryable=False,
        )
    try:
        values = unseal(settings.secret_key, stream_id, sealed)
    except SecretUnsealError:
        raise DeliveryFailed(
            f"the stream's {what} cannot be opened with this server's secret key",
            retryable=False,
        ) from None
    secret = values.get(name)
    if not secret:
        raise DeliveryFailed(f"the stream's {what} is missing", retryable=False)
    return secret


class Destination(Protocol):
    async def deliver(self, delivery: Delivery) -> None: ...


def open_destination(stream: LogStream, settings: Settings) -> Destination:
    """The destination of ``stream``, with its secrets unsealed."""
    if stream.destination_type is DestinationType.HTTPS:
        from logexport.streams.https import HttpsDestination

        return HttpsDestination(stream, settings)
    from logexport.streams.s3 import S3Destination  # type: ignore[import-not-found,unused-ignore]

    destination: Destination = S3Destination(stream, settings)
    return destination
