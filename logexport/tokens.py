"""Bearer secrets (API keys, download links) are stored only as their SHA-256."""

from __future__ import annotations

import hashlib


def hash_token(token: str) -> bytes:
    """What the database keeps of a token: a leaked row does not give the token back."""
    return hashlib.sha256(token.encode()).digest()
