"""Where export files go: S3-compatible object storage or a local directory.

The pipeline streams a file through ``Storage.open_writer`` without knowing which backend
it talks to: ``base`` holds that contract and its errors, ``local`` and ``s3`` the two
backends, ``multipart`` the S3 writer. ``storage_from_settings`` picks the backend that
``LOGEXPORT_STORAGE_URL`` names.
"""

from __future__ import annotations

from typing import Unpack
from urllib.parse import urlsplit

from logexport.config import Settings
from logexport.exports.storage.base import (
    GiB,
    InvalidKey,
    MiB,
    ObjectNotFound,
    ObjectWriter,
    Storage,
    StorageError,
    StoredObject,
    validate_key,
)
from logexport.exports.storage.local import LocalStorage
from logexport.exports.storage.multipart import (
    DEFAULT_PART_SIZE,
    S3_MAX_OBJECT_SIZE,
    S3_MAX_PART_SIZE,
    S3_MAX_PARTS,
    S3_MIN_PART_SIZE,
    initial_part_size,
    part_size_after,
)
from logexport.exports.storage.s3 import S3Options, S3Storage

__all__ = [
    "DEFAULT_PART_SIZE",
    "S3_MAX_OBJECT_SIZE",
    "S3_MAX_PARTS",
    "S3_MAX_PART_SIZE",
    "S3_MIN_PART_SIZE",
    "GiB",
    "InvalidKey",
    "LocalStorage",
    "MiB",
    "ObjectNotFound",
    "ObjectWriter",
    "S3Options",
    "S3Storage",
    "Storage",
    "StorageError",
    "StoredObject",
    "initial_part_size",
    "part_size_after",
    "storage_from_settings",
    "validate_key",
]


def storage_from_settings(settings: Settings, **options: Unpack[S3Options]) -> Storage:
    """The backend named by ``LOGEXPORT_STORAGE_URL``; ``options`` tune the S3 backend."""
    url = settings.storage_url
    if not url:
        raise StorageError("no storage URL configured")
    parts = urlsplit(url)
    if parts.scheme == "file":
        return LocalStorage.from_url(url)
    if parts.scheme == "s3":
        return S3Storage.from_settings(settings, **options)
    raise StorageError("storage URL must start with s3:// or file://")
