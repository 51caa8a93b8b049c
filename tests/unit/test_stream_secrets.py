"""Stream secrets open only with the same key, for the same stream, unaltered."""

from __future__ import annotations

from uuid import uuid4

import pytest

from logexport.streams.secrets import SecretUnsealError, seal, unseal

KEY = "stream-secret-test-key-0123456789abcdef-0123456789"


def test_sealed_values_round_trip_and_hide_the_secret() -> None:
    stream_id = uuid4()
    blob = seal(KEY, stream_id, {"secret": "hmac-secret-value"})
    assert b"hmac-secret-value" not in blob
    assert unseal(KEY, stream_id, blob) == {"secret": "hmac-secret-value"}


def test_each_seal_uses_a_fresh_nonce() -> None:
    stream_id = uuid4()
    first = seal(KEY, stream_id, {"secret": "s"})
    second = seal(KEY, stream_id, {"secret": "s"})
    assert first[:12] != second[:12]
    assert first != second


def test_a_blob_copied_to_another_stream_does_not_open() -> None:
    blob = seal(KEY, uuid4(), {"secret_access_key": "aws-secret"})
    with pytest.raises(SecretUnsealError):
        unseal(KEY, uuid4(), blob)


def test_another_key_does_not_open_the_blob() -> None:
    stream_id = uuid4()
    blob = seal(KEY, stream_id, {"secret": "s"})
    with pytest.raises(SecretUnsealError):
        unseal(KEY + "-other", stream_id, blob)


@pytest.mark.parametrize("position", [0, 12, -1])
def test_a_tampered_blob_does_not_open(position: int) -> None:
    stream_id = uuid4()
    blob = bytearray(seal(KEY, stream_id, {"secret": "s"}))
    blob[position] ^= 0x01
    with pytest.raises(SecretUnsealError):
        unseal(KEY, stream_id, bytes(blob))


def test_a_truncated_blob_does_not_open() -> None:
    stream_id = uuid4()
    with pytest.raises(SecretUnsealError):
        unseal(KEY, stream_id, seal(KEY, stream_id, {"secret": "s"})[:12])
