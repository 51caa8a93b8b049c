"""The worker's stream loop: claim due streams, run each, at most a few at a time.

A stream is due when it is ACTIVE or FAILING and its ``next_run_at`` has come (for a
FAILING stream, that is after its backoff). A claim leases the stream to this worker, so
one run at a time per stream whatever the number of workers; the lease records the
worker's liveness lock key, so a crashed worker's streams are claimable at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from uuid import UUID

import asyncpg

from logexport.config import Settings
from logexport.metrics import WorkerMetrics
from logexport.streams.runner import RunResult, StreamRunner
from logexport.streams.store import StreamStore

log = logging.getLogger("logexport.streams")

# How often due streams are looked for: the bound it puts on delivery lag beside the interval.
POLL_INTERVAL = 1.0
# Streams one worker runs at once.
CONCURRENCY = 4


class StreamLoop:
    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        *,
        worker_id: str,
        lock_key: Callable[[], int | None] = lambda: None,
        metrics: WorkerMetrics | None = None,
        snapshot_pool: asyncpg.Pool | None = None,
        concurrency: int = CONCURRENCY,
        poll_interval: float | None = None,
    ) -> None:
        self.settings = settings
        self.store = StreamStore(pool)
        self.runner = StreamRunner(
            settings, self.store, snapshot_pool=snapshot_pool or pool, metrics=metrics
        )
        self.worker_id = worker_id
        self.lock_key = lock_key
        self.concurrency = concurrency
        self.poll_interval = poll_interval or min(POLL_INTERVAL, settings.worker_poll_interval)
        self._runs: dict[UUID, asyncio.Task[RunResult]] = {}

    @property
    def busy(self) -> bool:
        """Whether a stream run is in progress."""
        return bool(self._runs)

    def _finished(self, stream_id: UUID, task: asyncio.Task[RunResult]) -> None:
        self._runs.pop(stream_id, None)
        if not task.cancelled() and (error := task.exception()) is not None:
            # The run could not even record its outcome (the database went away): its lease
            # runs out and the stream is claimed again.
            log.warning(
                "stream run ended abruptly",
                extra={"stream_id": str(stream_id), "error": type(error).__name__},
            )

    async def run(self, stopping: Callable[[], bool]) -> None:
        try:
            while not stopping():
                claimed = False
                while len(self._runs) < self.concurrency and not stopping():
                    try:
                        stream = await self.store.claim(
                            self.worker_id,
                            lease=self.settings.worker_lease,
                            lock_key=self.lock_key(),
                        )
                    except Exception as exc:
                        # The loop outlives a database outage: it claims again at the next tick.
                        log.warning("stream claim failed", extra={"error": type(exc).__name__})
                        break
                    if stream is None:
                        break
                    claimed = True
                    task = asyncio.get_running_loop().create_task(
                        self.runner.run(stream, lock_key=self.lock_key),
                        name=f"logexport-stream-{stream.id}",
                    )
                    self._runs[stream.id] = task
                    task.add_done_callback(functools.partial(self._finished, stream.id))
                if not claimed or len(self._runs) >= self.concurrency:
                    await asyncio.sleep(self.poll_interval)
            # Stopping: runs in progress may finish within the shutdown grace (a run cut
            # short has its delivery sent again by the next one, a repeat for the receiver).
            running = list(self._runs.values())
            if running:
                await asyncio.wait(running, timeout=self.settings.shutdown_grace)
        finally:
            runs = list(self._runs.values())
            for task in runs:
                task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.gather(*runs, return_exceptions=True)
