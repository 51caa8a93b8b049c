"""Part sizes of the S3 multipart writer: every file fits in S3's 10,000 parts."""

import pytest

from logexport.exports.storage.base import MiB
from logexport.exports.storage.multipart import (
    DEFAULT_PART_SIZE,
    initial_part_size,
    part_size_after,
)


def test_part_size_starts_at_8_mib_and_grows_for_known_large_files() -> None:
    assert DEFAULT_PART_SIZE == 8 * MiB
    assert initial_part_size(8 * MiB, None) == 8 * MiB
    assert initial_part_size(8 * MiB, 1 << 30) == 8 * MiB
    # 1 TiB / 10,000 = 104.9 MiB, rounded up to a whole MiB.
    assert initial_part_size(8 * MiB, 1 << 40) == 105 * MiB


@pytest.mark.parametrize("expected_size", [None, 1 << 30, 5 << 40])
def test_a_5_tib_file_never_needs_more_than_10000_parts(expected_size: int | None) -> None:
    size = initial_part_size(8 * MiB, expected_size)
    total, parts = 0, 0
    while total < 5 << 40:
        parts += 1
        assert size <= 5 << 30
        total += size
        size = part_size_after(parts, size)
    assert parts <= 10_000
