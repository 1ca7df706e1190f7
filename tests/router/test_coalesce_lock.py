"""The cross-replica coalescing lock is released only by its owner (compare-and-delete).

Two `Coalescer`s with their own Redis connections stand for two replicas, on the test Redis.
"""

from __future__ import annotations

import asyncio
import time

import pytest
import redis

from router.cache import RedisCache, fingerprint, lock_key
from router.coalesce import Coalescer
from router.redis_state import RedisState
from router.settings import RedisSettings

pytestmark = [pytest.mark.redis, pytest.mark.anyio]


def replica(redis_url: str, lock_ttl_ms: int, events: list[str]) -> tuple[Coalescer, RedisState]:
    settings = RedisSettings(url=redis_url, timeout_s=0.5, lock_ttl_ms=lock_ttl_ms, near_cache_ttl_s=0)
    state = RedisState(settings, events.append)
    return Coalescer(RedisCache(state, events.append), lock_ttl_ms), state


async def test_a_call_that_outlives_the_lock_does_not_release_the_next_owners_lock(
    redis_url: str, redis_db: redis.Redis,
) -> None:
    events: list[str] = []
    a, state_a = replica(redis_url, 100, events)  # A's lock expires while its call still runs
    b, state_b = replica(redis_url, 10_000, events)
    key = fingerprint("sentiment", "a call slower than the lock")
    lock = lock_key(key)
    b_computing, b_may_finish = asyncio.Event(), asyncio.Event()

    async def slow_a() -> bytes:
        await asyncio.sleep(0.4)
        return b"answer from a"

    async def held_b() -> bytes:
        b_computing.set()
        await b_may_finish.wait()
        return b"answer from b"

    try:
        task_a = asyncio.create_task(a.run(key, 60, slow_a))
        deadline = time.monotonic() + 2
        while (token_a := redis_db.get(lock)) is None:
            assert time.monotonic() < deadline, "replica A never took the lock"
            await asyncio.sleep(0.005)
        while redis_db.exists(lock):  # A's TTL runs out while A is still calling
            assert time.monotonic() < deadline, "A's lock did not expire"
            await asyncio.sleep(0.005)
        assert not task_a.done()
        task_b = asyncio.create_task(b.run(key, 60, held_b))
        await asyncio.wait_for(b_computing.wait(), 2)
        token_b = redis_db.get(lock)
        assert token_b is not None and token_b != token_a, "B must hold its own lock"

        assert await task_a == (b"answer from a", True)
        assert redis_db.get(lock) == token_b, "A deleted the lock B now owns"
        assert redis_db.pttl(lock) > 5_000

        b_may_finish.set()
        assert await task_b == (b"answer from b", True)
        assert not redis_db.exists(lock), "the owner releases its own lock"
    finally:
        await state_a.close()
        await state_b.close()
    assert "error" not in events


async def test_release_with_a_foreign_token_keeps_the_lock(redis_url: str, redis_db: redis.Redis) -> None:
    state = RedisState(RedisSettings(url=redis_url, timeout_s=0.5), lambda event: None)
    try:
        token = await state.acquire("gw:v1:lock:{t}", 5_000)
        assert token is not None
        assert await state.acquire("gw:v1:lock:{t}", 5_000) is None, "held: a second acquire fails"
        assert not await state.release("gw:v1:lock:{t}", b"someone-else")
        assert redis_db.get("gw:v1:lock:{t}") == token
        assert await state.release("gw:v1:lock:{t}", token)
        assert not redis_db.exists("gw:v1:lock:{t}")
    finally:
        await state.close()
