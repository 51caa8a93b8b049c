"""Stream destination secrets, sealed at rest.

A stream's secrets (the HTTPS signing secret, an S3 secret access key) are stored as one
AES-GCM blob. The key is derived from ``LOGEXPORT_SECRET_KEY`` with HKDF-SHA256 under a
purpose label of its own, so it never equals the key that signs console sessions. The
stream id is bound as associated data: a blob copied onto another stream's row does not
open there.
"""

from __future__ import annotations

import json
import os
from uuid import UUID

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_NONCE_BYTES = 12
_KEY_INFO = b"logexport log-stream secrets v1"


class SecretUnsealError(Exception):
    """The blob was not sealed for this stream with this key, or it was altered."""


def _cipher(secret_key: str) -> AESGCM:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_KEY_INFO).derive(
        secret_key.encode()
    )
    return AESGCM(key)


def seal(secret_key: str, stream_id: UUID, values: dict[str, str]) -> bytes:
    """Encrypt ``values`` for the stream ``stream_id``: 12-byte nonce, then ciphertext."""
    nonce = os.urandom(_NONCE_BYTES)
    plaintext = json.dumps(values, separators=(",", ":"), sort_keys=True).encode()
    return nonce + _cipher(secret_key).encrypt(nonce, plaintext, stream_id.bytes)


def unseal(secret_key: str, stream_id: UUID, blob: bytes) -> dict[str, str]:
    """Decrypt a blob made by :func:`seal` for the same stream and key."""
    if len(blob) <= _NONCE_BYTES:
        raise SecretUnsealError("the sealed secret is truncated")
    nonce, ciphertext = blob[:_NONCE_BYTES], blob[_NONCE_BYTES:]
    try:
        plaintext = _cipher(secret_key).decrypt(nonce, ciphertext, stream_id.bytes)
    except InvalidTag:
        raise SecretUnsealError(
            "the sealed secret does not open with this key for this stream"
        ) from None
    values = json.loads(plaintext)
    if not isinstance(values, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in values.items()
    ):
        raise SecretUnsealError("the sealed secret is not a map of strings")
    return values
