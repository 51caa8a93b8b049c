"""The service's manifest keys, read from its settings.

``LOGEXPORT_SIGNING_KEY`` signs every manifest; its public half and the retired keys of
``LOGEXPORT_VERIFY_KEYS`` are what the service publishes, so that files signed before a
rotation still verify.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from logexport import manifests
from logexport.config import Settings


def signing_key(settings: Settings) -> Ed25519PrivateKey:
    """The key that signs manifests; ``ConfigError`` naming the variable when it is unset."""
    return manifests.parse_signing_key(settings.require("signing_key"))


def published_keys(settings: Settings) -> list[Ed25519PublicKey]:
    """The current signing key's public half (when set), then the retired keys; each once."""
    keys: list[Ed25519PublicKey] = []
    if settings.signing_key is not None:
        keys.append(manifests.parse_signing_key(settings.signing_key).public_key())
    if settings.verify_keys is not None:
        keys.extend(manifests.parse_verify_keys(settings.verify_keys))
    unique: dict[str, Ed25519PublicKey] = {}
    for key in keys:
        unique.setdefault(manifests.key_id(key), key)
    return list(unique.values())
