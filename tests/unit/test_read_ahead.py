"""The slices an export reads ahead: joined in order, the slices after the one being joined
bounded together, and the slice being joined never kept waiting by them."""

from __future__ import annotations

import asyncio

import pytest

from logexport.exports import pipeline
from logexport.exports.pipeline import _ReadAhead


async def _blocked(put: asyncio.Task[None]) -> bool:
    """Whether ``put`` is still waiting once the loop has had every chance to run it."""
    for _ in range(5):
        await asyncio.sleep(0)
    return not put.done()


async def test_later_slices_share_one_bound_and_the_joined_slice_never_waits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pipeline, "QUEUE_BYTES", 10)
    monkeypatch.setattr(pipeline, "READ_AHEAD_BYTES", 10)
    slices = _ReadAhead(3)
    await slices.put(1, b"a" * 6)
    await slices.put(2, b"b" * 6)  # the bound is reached, not passed before this put
    third = asyncio.create_task(slices.put(2, b"c"))
    assert await _blocked(third)
    # The slice being joined has its own room.
    await asyncio.wait_for(slices.put(0, b"x" * 9), timeout=5)
    await slices.put(0, None)

    assert await slices.get() == b"x" * 9
    assert await slices.get() is None
    # Slice 1 is now joined: its bytes no longer count against the later slices' bound.
    await asyncio.wait_for(third, timeout=5)
    await slices.put(1, None)
    await slices.put(2, None)
    assert [await slices.get() for _ in range(5)] == [b"a" * 6, None, b"b" * 6, b"c", None]


async def test_the_joined_slice_waits_for_its_own_room_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pipeline, "QUEUE_BYTES", 4)
    slices = _ReadAhead(1)
    await slices.put(0, b"1234")
    second = asyncio.create_task(slices.put(0, b"5"))
    assert await _blocked(second)
    assert await slices.get() == b"1234"
    await asyncio.wait_for(second, timeout=5)
    await slices.put(0, None)  # the end of a slice never waits
    assert [await slices.get(), await slices.get()] == [b"5", None]


async def test_a_slice_counts_as_joined_once_its_end_is_taken() -> None:
    slices = _ReadAhead(2)
    waiting = asyncio.create_task(slices.joined(0))
    await slices.put(0, b"row\n")
    await slices.put(0, None)
    assert await slices.get() == b"row\n"
    assert await _blocked(waiting)
    assert await slices.get() is None
    await asyncio.wait_for(waiting, timeout=5)
