"""Response cache: request fingerprint <-> stored answer, in Redis or in process. Fails open.

Keys are ``gw:v1:resp:{<sha256>}``: the hash covers the canonical request (see `fingerprint`)
and sits in a hash tag, so the answer and the coalescing lock of one request
(``gw:v1:lock:{<sha256>}``) live in the same Redis Cluster slot. Values are opaque bytes (the
gateway stores orjson). A Redis error or timeout is a miss (`RedisState` counts it and opens its
breaker after consecutive failures).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from .redis_state import RedisState

__all__ = ["ResponseCache", "RedisCache", "MemoryCache", "fingerprint", "lock_key", "KEY_PREFIX"]

log = logging.getLogger("router.cache")

KEY_PREFIX = "gw:v1:resp:"
EventSink = Callable[[str], None]


def fingerprint(*parts: str) -> str:
    """Cache key over the canonical request parts (joined with a separator no part can hold)."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\x1f")
    return KEY_PREFIX + "{" + h.hexdigest() + "}"


def lock_key(key: str) -> str:
    """The coalescing lock of a cache key (same hash tag, so the same Cluster slot)."""
    return "gw:v1:lock:" + key.removeprefix(KEY_PREFIX)


class ResponseCache(Protocol):
    backend: str
    state: RedisState | None

    async def get(self, key: str) -> bytes | None: ...
    async def set(self, key: str, value: bytes, ttl_s: int) -> None: ...
    async def health(self) -> str: ...
    async def close(self) -> None: ...


class MemoryCache:
    """In-process LRU with per-entry expiry: the default when no Redis is configured."""

    backend = "memory"
    state = None

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

    async def health(self) -> str:
        return "memory"

    async def close(self) -> None:
        self._data.clear()


class RedisCache:
    backend = "redis"

    def __init__(self, state: RedisState, on_event: EventSink) -> None:
        self.state = state
        self._on_event = on_event
        self._max_value = state.settings.max_value_bytes

    async def get(self, key: str) -> bytes | None:
        reached, value = await self.state.get(key)
        if reached:
            self._on_event("hit" if value is not None else "miss")
        return value

    async def set(self, key: str, value: bytes, ttl_s: int) -> None:
        if ttl_s <= 0 or len(value) > self._max_value:
            return
        if await self.state.set(key, value, ttl_s):
            self._on_event("store")

    async def health(self) -> str:
        return "ok" if await self.state.ping() else "unreachable"

    async def close(self) -> None:
        await self.state.close()
