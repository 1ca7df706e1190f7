"""Response cache: request fingerprint <-> stored answer, in Redis or in process. Fails open.

The only module that imports redis. Keys are ``gw:v1:resp:<sha256>``; the hash covers the route,
the normalized input, the specialist version, the policy version and the foundation alias (see
`fingerprint`). Values are opaque bytes (the gateway stores orjson). Any Redis error or timeout
is counted and treated as a miss; after `breaker_failures` consecutive errors the breaker opens
and Redis is not asked at all for `breaker_reset_s`, so a dead Redis costs no latency.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Literal, Protocol

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from .settings import RedisSettings

__all__ = ["ResponseCache", "RedisCache", "MemoryCache", "build_cache", "fingerprint", "KEY_PREFIX"]

log = logging.getLogger("router.cache")

KEY_PREFIX = "gw:v1:resp:"
CacheEvent = Literal["hit", "miss", "store", "error", "skipped"]
EventSink = Callable[[CacheEvent], None]


def fingerprint(*parts: str) -> str:
    """Cache key over the canonical request parts (joined with a separator no part can hold)."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\x1f")
    return KEY_PREFIX + h.hexdigest()


class ResponseCache(Protocol):
    backend: str

    async def get(self, key: str) -> bytes | None: ...
    async def set(self, key: str, value: bytes, ttl_s: int) -> None: ...
    async def state(self) -> str: ...
    async def close(self) -> None: ...


class MemoryCache:
    """In-process LRU with per-entry expiry: the default when no Redis URL is configured."""

    backend = "memory"

    def __init__(self, max_entries: int, on_event: EventSink, max_value_bytes: int) -> None:
        self._data: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._max = max_entries
        self._max_value = max_value_bytes
        self._on_event = on_event

    async def get(self, key: str) -> bytes | None:
        item = self._data.get(key)
        if item is None or item[0] < time.monotonic():
            if item is not None:
                del self._data[key]
            self._on_event("miss")
            return None
        self._data.move_to_end(key)
        self._on_event("hit")
        return item[1]

    async def set(self, key: str, value: bytes, ttl_s: int) -> None:
        if ttl_s <= 0 or self._max == 0 or len(value) > self._max_value:
            return
        self._data[key] = (time.monotonic() + ttl_s, value)
        self._data.move_to_end(key)
        while len(self._data) > self._max:
            self._data.popitem(last=False)
        self._on_event("store")

    async def state(self) -> str:
        return "memory"

    async def close(self) -> None:
        self._data.clear()


class RedisCache:
    """Redis-backed cache with a short timeout and a consecutive-failure circuit breaker."""

    backend = "redis"

    def __init__(self, settings: RedisSettings, on_event: EventSink) -> None:
        assert settings.url is not None
        self._settings = settings
        self._on_event = on_event
        self._client = aioredis.Redis.from_url(
            settings.url.get_secret_value(),
            socket_timeout=settings.timeout_s,
            socket_connect_timeout=settings.timeout_s,
            retry=Retry(NoBackoff(), 0),
            max_connections=64,
        )
        self._failures = 0
        self._open_until = 0.0

    def _available(self) -> bool:
        if self._failures < self._settings.breaker_failures:
            return True
        # Open: skip Redis until the reset time, then let requests probe it again (half-open).
        return time.monotonic() >= self._open_until

    def _failed(self, exc: BaseException) -> None:
        self._failures += 1
        self._on_event("error")
        if self._failures == self._settings.breaker_failures:
            log.warning("redis unavailable (%s); cache breaker open for %.1fs",
                        type(exc).__name__, self._settings.breaker_reset_s)
        if self._failures >= self._settings.breaker_failures:
            self._open_until = time.monotonic() + self._settings.breaker_reset_s

    def _succeeded(self) -> None:
        if self._failures >= self._settings.breaker_failures:
            log.info("redis reachable again; cache breaker closed")
        self._failures = 0

    async def get(self, key: str) -> bytes | None:
        if not self._available():
            self._on_event("skipped")
            return None
        try:
            value: bytes | None = await self._client.get(key)
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed(exc)
            return None
        self._succeeded()
        self._on_event("hit" if value is not None else "miss")
        return value

    async def set(self, key: str, value: bytes, ttl_s: int) -> None:
        if ttl_s <= 0 or len(value) > self._settings.max_value_bytes or not self._available():
            return
        try:
            await self._client.set(key, value, ex=ttl_s)
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed(exc)
            return
        self._succeeded()
        self._on_event("store")

    async def state(self) -> str:
        try:
            await self._client.ping()
        except (RedisError, OSError, TimeoutError):
            return "unreachable"
        return "ok"

    async def close(self) -> None:
        await self._client.aclose()


def build_cache(settings: RedisSettings, on_event: EventSink) -> ResponseCache:
    if settings.url is None:
        log.info("no Redis URL configured (ROUTER_REDIS__URL): using an in-process cache")
        return MemoryCache(settings.memory_max_entries, on_event, settings.max_value_bytes)
    return RedisCache(settings, on_event)
