"""Worker and job-store pieces that need no database: backoff, failure classes, fencing."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from logexport.exports.jobs import Fence, GoneReason, JobGone, liveness_key, retry_delay
from logexport.exports.storage import StorageError
from logexport.exports.worker import _classify, _Failure, _gone_in


@pytest.mark.parametrize("attempt", [1, 2, 3, 4, 5])
def test_retry_delay_doubles_with_jitter_between_half_and_whole_step(attempt: int) -> None:
    step = 2.0 * 2 ** (attempt - 1)
    delays = [retry_delay(attempt, 2.0) for _ in range(200)]
    assert all(step / 2 <= d <= step for d in delays)
    assert len(set(delays)) > 1  # jittered, so workers do not retry in lockstep


def test_retry_delay_is_capped() -> None:
    assert all(150.0 <= retry_delay(40, 2.0, cap=300.0) <= 300.0 for _ in range(50))
    assert all(retry_delay(1000, 1.0, cap=10.0) <= 10.0 for _ in range(50))


def test_retry_delay_treats_attempt_zero_as_the_first() -> None:
    assert all(0.5 <= retry_delay(0, 1.0) <= 1.0 for _ in range(50))


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (StorageError("S3 UploadPart of k failed: secret detail"), "STORAGE_ERROR"),
        (asyncpg.PostgresError("relation missing"), "DATABASE_ERROR"),
        (ConnectionResetError("reset"), "DATABASE_ERROR"),
        (ValueError("boom"), "INTERNAL"),
    ],
)
def test_failures_are_classified_with_messages_safe_for_users(exc: Exception, code: str) -> None:
    failure = _classify(exc)
    assert failure.code == code
    assert "secret" not in failure.message
    assert "relation" not in failure.message
    assert "boom" not in failure.message


def test_a_failure_keeps_its_own_code() -> None:
    failure = _Failure("REQUESTER_NOT_AUTHORIZED", "no longer allowed")
    assert _classify(failure) is failure


@pytest.mark.parametrize("reason", list(GoneReason), ids=["canceled", "lease lost"])
def test_a_job_gone_is_found_inside_nested_exception_groups(reason: GoneReason) -> None:
    gone = JobGone(reason)
    nested = BaseExceptionGroup("outer", [ValueError(), ExceptionGroup("inner", [gone])])
    assert _gone_in(nested) is gone
    assert _gone_in(gone) is gone
    assert _gone_in(ExceptionGroup("g", [ValueError()])) is None
    assert _gone_in(ValueError()) is None


def test_liveness_keys_are_signed_64_bit_stable_and_differ_by_owner_and_salt() -> None:
    keys = {liveness_key(f"host:{pid}:abcd1234", salt) for pid in range(500) for salt in range(4)}
    assert len(keys) == 2000
    assert all(-(2**63) <= key < 2**63 for key in keys)
    assert any(key < 0 for key in keys)  # the whole signed range is used, as bigint needs
    assert liveness_key("host:1:abcd1234") == liveness_key("host:1:abcd1234", 0)


def test_fence_arguments_are_id_owner_and_attempt() -> None:
    export_id = uuid.uuid4()
    assert Fence(export_id, "worker-a", 3).args == (export_id, "worker-a", 3)
