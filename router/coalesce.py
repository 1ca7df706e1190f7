"""Request coalescing: identical concurrent escalations make one foundation call.

Within a process, later callers await the first caller's future. Across replicas, the first
takes a short Redis lock (`lock_key`, with a random owner token) and stores the answer in the
cache before releasing it (compare-and-delete: only the owner's token deletes it);
replicas that find the lock held wait for the cached answer (polling), and call the foundation
model themselves only if the lock disappears without an answer or the wait runs out. With Redis
unreachable, coalescing is per process only (fails open).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from .cache import ResponseCache, lock_key

__all__ = ["Coalescer"]

_POLL_S = 0.02


class Coalescer:
    def __init__(self, cache: ResponseCache, lock_ttl_ms: int) -> None:
        self._cache = cache
        self._lock_ttl_ms = lock_ttl_ms
        self._inflight: dict[str, asyncio.Task[tuple[bytes, bool]]] = {}

    async def run(self, key: str, ttl_s: int, compute: Callable[[], Awaitable[bytes]]) -> tuple[bytes, bool]:
        """The cache record for `key`, and whether this caller computed it (False = shared).

        `compute` returns the record to cache (stored here with `ttl_s`) or raises; the exception
        reaches every waiter. The work runs in its own task, so a caller that goes away (client
        disconnect) does not cancel it for the others.
        """
        task = self._inflight.get(key)
        leader = task is None
        if task is None:
            task = asyncio.get_running_loop().create_task(self._run_shared(key, ttl_s, compute))
            self._inflight[key] = task
            task.add_done_callback(lambda t: self._done(key, t))
        record, computed = await asyncio.shield(task)
        return record, computed and leader

    def _done(self, key: str, task: asyncio.Task[tuple[bytes, bool]]) -> None:
        self._inflight.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved here, so a failure nobody awaited is not reported as lost

    async def _run_shared(self, key: str, ttl_s: int, compute: Callable[[], Awaitable[bytes]]) -> tuple[bytes, bool]:
        state = self._cache.state
        if state is None or ttl_s <= 0:
            return await self._compute_and_store(key, ttl_s, compute), True
        lock = lock_key(key)
        token = await state.acquire(lock, self._lock_ttl_ms)
        if token is not None or not state.available():
            try:
                return await self._compute_and_store(key, ttl_s, compute), True
            finally:
                if token is not None:
                    # Only our own lock: if the call outlived the TTL, another replica may hold it now.
                    await state.release(lock, token)
        deadline = time.monotonic() + self._lock_ttl_ms / 1000
        while time.monotonic() < deadline:
            await asyncio.sleep(_POLL_S)
            reached, value = await state.get(key)
            if value is not None:
                return value, False
            if not reached:
                if not state.available():
                    break  # Redis is gone (breaker open): answer ourselves
                continue  # a slow poll: keep waiting for the holder
            if await state.exists(lock) is False:
                break  # the holder finished without an answer (it failed): answer ourselves
        return await self._compute_and_store(key, ttl_s, compute), True

    async def _compute_and_store(self, key: str, ttl_s: int, compute: Callable[[], Awaitable[bytes]]) -> bytes:
        record = await compute()
        if ttl_s > 0:
            await self._cache.set(key, record, ttl_s)
        return record
