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

__all__ = ["KEY_PREFIX", "MemoryCache", "RedisCache", "ResponseCache", "fingerprint", "lock_key"]

log = logging.getLogger("router.cache")

KEY_PREFIX = "gw:v1:resp:"
EventSink = Callable[[str], None]


def fingerprint(*parts: str) -> str:
    """Cache key over the canonical request parts (joined with a separator no part can hold)."""
    # one update over "p1\x1fp2\x1f...": the same digest as updating part by part, in one call
    data = "\x1f".join(parts).encode("utf-8", "surrogatepass") + b"\x1f"
    return KEY_PREFIX + "{" + hashlib.sha256(data).hexdigest() + "}"


def lock_key(key: str) -> str:
    """The coalescing lock of a cache key (same hash tag, so the same Cluster slot)."""
    return "gw:v1:lock:" + key.removeprefix(KEY_PREFIX)


class ResponseCache(Protocol):
    @property
    def backend(self) -> str: ...
    @property
    def state(self) -> RedisState | None: ...

    def peek(self, key: str) -> bytes | None:
        """An answer already held in this process (no I/O, no event counted), else None."""
        ...

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

    def peek(self, key: str) -> bytes | None:
        item = self._data.get(key)
        return item[1] if item is not None and item[0] >= time.monotonic() else None

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
    """Redis, with a small in-process near cache in front.

    A stored answer never changes under its key (the key covers every version that could change
    it), so keeping hot entries in process for a few seconds (`near_ttl_s`) cannot serve a stale
    answer; it only spares the Redis round trip (~45 µs of this process's CPU per GET) on the
    cache-hit path. The near cache is bounded (`near_entries`, LRU).
    """

    backend = "redis"

    def __init__(self, state: RedisState, on_event: EventSink) -> None:
        self.state = state
        self._on_event = on_event
        self._max_value = state.settings.max_value_bytes
        self._near: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._near_ttl = state.settings.near_cache_ttl_s
        self._near_max = state.settings.near_cache_entries

    def _remember(self, key: str, value: bytes, ttl_s: float) -> None:
        if self._near_ttl <= 0 or self._near_max <= 0:
            return
        self._near[key] = (time.monotonic() + min(self._near_ttl, ttl_s), value)
        self._near.move_to_end(key)
        if len(self._near) > self._near_max:
            self._near.popitem(last=False)

    def peek(self, key: str) -> bytes | None:
        near = self._near.get(key)
        return near[1] if near is not None and near[0] >= time.monotonic() else None

    async def get(self, key: str) -> bytes | None:
        near = self._near.get(key)
        if near is not None:
            if near[0] >= time.monotonic():
                self._on_event("hit")
                return near[1]
            del self._near[key]
        reached, value = await self.state.get(key)
        if reached:
            self._on_event("hit" if value is not None else "miss")
        if value is not None:
            self._remember(key, value, self._near_ttl)
        return value

    async def set(self, key: str, value: bytes, ttl_s: int) -> None:
        if ttl_s <= 0 or len(value) > self._max_value:
            return
        self._remember(key, value, ttl_s)
        if await self.state.set(key, value, ttl_s):
            self._on_event("store")

    async def health(self) -> str:
        return "ok" if await self.state.ping() else "unreachable"

    async def close(self) -> None:
        await self.state.close()
