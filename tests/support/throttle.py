"""A bandwidth-limited TCP relay on 127.0.0.1, so that an upload takes long enough to be
interrupted on purpose however fast the machine is."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Future

from devtools.services import free_port

_CHUNK = 64 * 1024


class _Bucket:
    """A shared token bucket: ``rate`` bytes a second across every connection."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._next = time.monotonic()
        self._lock = asyncio.Lock()

    async def spend(self, size: int) -> None:
        async with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + size / self.rate
            delay = start - now
        if delay > 0:
            await asyncio.sleep(delay)


class ThrottledRelay:
    """Relays 127.0.0.1:``port`` to ``target_port``; client → server bytes are rate-limited."""

    def __init__(self, target_port: int, bytes_per_second: float) -> None:
        self.target_port = target_port
        self.bytes_per_second = bytes_per_second
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ThrottledRelay:
        self._thread.start()
        started: Future[None] = asyncio.run_coroutine_threadsafe(self._listen(), self._loop)
        started.result(timeout=10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _listen(self) -> None:
        self._bucket = _Bucket(self.bytes_per_second)
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_w.close()
            return

        async def pipe(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter, limited: bool
        ) -> None:
            try:
                while data := await reader.read(_CHUNK):
                    if limited:
                        await self._bucket.spend(len(data))
                    writer.write(data)
                    await writer.drain()
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()

        await asyncio.gather(
            pipe(client_r, server_w, True), pipe(server_r, client_w, False), return_exceptions=True
        )
