"""Redis as the replicas' shared state: the only module that imports redis.

`RedisState` builds one client from `RedisSettings` (redis:// or rediss:// with ACL user and
password in the URL, Sentinel, or Cluster) and offers the few operations the gateway needs:
cache get/set, a short lock released only by its owner, float counters with expiry, a capped stream, publish/subscribe.
Every operation fails open: an error or a timeout (the short `timeout_s`) returns None / False,
is counted, and after `breaker_failures` consecutive errors Redis is not asked at all for
`breaker_reset_s` (then one request probes it again), so a dead Redis costs no latency.

Keys passed in carry a hash tag (`{...}`) where several keys of one request must share a
Cluster slot; this module does not invent keys.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from .settings import RedisSettings

__all__ = ["RedisErrorSink", "RedisState"]

log = logging.getLogger("router.redis")

RedisErrorSink = Callable[[str], None]
"""Called with "error" on each failed operation and "skipped" when the breaker is open."""

_ERRORS = (RedisError, OSError, TimeoutError)

# Compare-and-delete, atomic on the server (the script runs on the key's node under Cluster).
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""


def _build(settings: RedisSettings) -> tuple[Any, Callable[[], Any]]:
    """The command client, and a factory for a plain client used for pub/sub."""
    url = settings.url.get_secret_value() if settings.url is not None else ""
    common: dict[str, Any] = {"socket_timeout": settings.timeout_s, "socket_connect_timeout": settings.timeout_s}
    if settings.sentinel_master:
        hosts = [(h.rsplit(":", 1)[0], int(h.rsplit(":", 1)[1])) for h in settings.sentinels]
        # Two sets of credentials: the Sentinels' own password goes to the Sentinel connections
        # only; the master's user, password and database come from the URL (its host is ignored:
        # the Sentinels name the master) and go to the master connections only.
        sentinel_kwargs: dict[str, Any] = {**common, "retry": Retry(NoBackoff(), 0)}
        if settings.sentinel_password is not None:
            sentinel_kwargs["password"] = settings.sentinel_password.get_secret_value()
        parsed = parse_url(url) if url else {}
        master_auth = {k: parsed[k] for k in ("username", "password", "db") if k in parsed}
        sentinel = Sentinel(hosts, sentinel_kwargs=sentinel_kwargs, **common, **master_auth)  # type: ignore[no-untyped-call]
        client = sentinel.master_for(settings.sentinel_master, retry=Retry(NoBackoff(), 0), **common)
        return client, lambda: sentinel.master_for(settings.sentinel_master or "", socket_timeout=None)
    if settings.cluster:
        client = RedisCluster.from_url(url, retry=Retry(NoBackoff(), 0), **common)
        return client, lambda: aioredis.Redis.from_url(url, socket_connect_timeout=settings.timeout_s)
    client = aioredis.Redis.from_url(url, retry=Retry(NoBackoff(), 0), max_connections=256, **common)
    return client, lambda: aioredis.Redis.from_url(url, socket_connect_timeout=settings.timeout_s)


class RedisState:
    def __init__(self, settings: RedisSettings, on_error: RedisErrorSink) -> None:
        self.settings = settings
        self._on_error = on_error
        self._client, self._pubsub_client = _build(settings)
        self._failures = 0
        self._open_until = 0.0
        # A Cluster client discovers its nodes once; concurrent first commands must not race it.
        self._initialized = not settings.cluster
        self._init_lock = asyncio.Lock()

    # ---- breaker -------------------------------------------------------------------------------
    def available(self) -> bool:
        if self._failures < self.settings.breaker_failures:
            return True
        return time.monotonic() >= self._open_until  # half-open: let a request probe

    def _failed(self, exc: BaseException) -> None:
        self._failures += 1
        self._on_error("error")
        if self._failures == self.settings.breaker_failures:
            log.warning("redis unavailable (%s); not asking it for %.1fs", type(exc).__name__,
                        self.settings.breaker_reset_s)
        if self._failures >= self.settings.breaker_failures:
            self._open_until = time.monotonic() + self.settings.breaker_reset_s

    def _ok(self) -> None:
        if self._failures >= self.settings.breaker_failures:
            log.info("redis reachable again")
        self._failures = 0

    async def _initialize(self) -> None:
        if not self._initialized:
            async with self._init_lock:
                if not self._initialized:
                    await self._client.initialize()
                    self._initialized = True

    async def _run(self, op: str, *args: Any, **kwargs: Any) -> tuple[bool, Any]:
        if not self.available():
            self._on_error("skipped")
            return False, None
        try:
            await self._initialize()
            result = await getattr(self._client, op)(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - the fail-open boundary: see below
            # redis-py raises its own errors, OSError and TimeoutError, but under connection
            # resets also leaks internals (AttributeError on a closed writer). Whatever Redis
            # does must not fail a request: count it and treat it as unreachable.
            self._failed(exc)
            return False, None
        self._ok()
        return True, result

    # ---- operations ----------------------------------------------------------------------------
    async def get(self, key: str) -> tuple[bool, bytes | None]:
        """(reached Redis, value)."""
        return await self._run("get", key)

    async def get_prefix(self, key: str, max_bytes: int) -> tuple[bool, bytes | None]:
        """(reached Redis, at most the first `max_bytes` of a string value): GETRANGE, so a value
        someone else wrote cannot make this process read more. None when missing or empty.

        For the control plane (policy announcements): it bypasses the breaker both ways, so a
        large read that times out under load never stops the cache for requests; the caller retries.
        """
        try:
            await self._initialize()
            result = await self._client.getrange(key, 0, max_bytes - 1)
        except Exception:  # noqa: BLE001 - fail open like _run, without touching the breaker
            return False, None
        return True, bytes(result) if result else None

    async def set(self, key: str, value: bytes, ttl_s: int) -> bool:
        ok, _ = await self._run("set", key, value, ex=ttl_s)
        return ok

    async def acquire(self, key: str, ttl_ms: int) -> bytes | None:
        """A short lock (SET NX PX with a random owner token): the token, or None when it is held
        elsewhere or Redis is unreachable. Pass the token to `release`."""
        token = secrets.token_hex(16).encode()
        ok, result = await self._run("set", key, token, nx=True, px=ttl_ms)
        return token if ok and result else None

    async def release(self, key: str, token: bytes) -> bool:
        """Delete the lock only if `token` still owns it (compare-and-delete in one script): a lock
        that expired and was taken by another replica is theirs and stays. True if deleted."""
        ok, result = await self._run("eval", _RELEASE, 1, key, token)
        return ok and result == 1

    async def exists(self, key: str) -> bool | None:
        ok, result = await self._run("exists", key)
        return bool(result) if ok else None

    async def add_floats(self, items: list[tuple[str, float, int]]) -> list[float] | None:
        """Several INCRBYFLOAT-with-expiry in one round trip (a pipeline, no transaction).

        The keys must share a hash tag under Cluster. Returns the new totals, or None when Redis is
        unreachable.
        """
        if not self.available():
            self._on_error("skipped")
            return None
        try:
            pipe = self._client.pipeline(transaction=False)
            for key, amount, ttl_s in items:
                pipe.incrbyfloat(key, amount)
                pipe.expire(key, ttl_s, nx=True)
            results = await pipe.execute()
        except Exception as exc:  # noqa: BLE001 - the fail-open boundary, as in _run
            self._failed(exc)
            return None
        self._ok()
        return [float(r) for r in results[0::2]]

    async def get_floats(self, keys: list[str]) -> list[float] | None:
        """Several counters in one round trip (a pipeline of GETs; absent = 0.0), or None."""
        if not self.available():
            self._on_error("skipped")
            return None
        try:
            pipe = self._client.pipeline(transaction=False)
            for key in keys:
                pipe.get(key)
            results = await pipe.execute()
        except Exception as exc:  # noqa: BLE001 - the fail-open boundary, as in _run
            self._failed(exc)
            return None
        self._ok()
        return [0.0 if r is None else float(r) for r in results]

    async def hash_all(self, key: str) -> dict[bytes, bytes] | None:
        """Every field of a hash, or None when Redis is unreachable."""
        ok, result = await self._run("hgetall", key)
        return dict(result) if ok else None

    async def hash_set(self, key: str, field: str, value: bytes) -> bool:
        ok, _ = await self._run("hset", key, field, value)
        return ok

    async def incr(self, key: str) -> bool:
        ok, _ = await self._run("incr", key)
        return ok

    async def get_float(self, key: str) -> float | None:
        ok, result = await self._run("get", key)
        if not ok:
            return None
        return float(result) if result is not None else 0.0

    async def append_stream(self, stream: str, fields: Mapping[str, str | float], maxlen: int,
                            min_id: str | None = None) -> bool:
        kwargs: dict[str, Any] = {"maxlen": maxlen, "approximate": True} if min_id is None else {
            "minid": min_id, "approximate": True}
        ok, _ = await self._run("xadd", stream, dict(fields), **kwargs)
        if ok and min_id is not None:
            await self._run("xtrim", stream, maxlen=maxlen, approximate=True)
        return ok

    async def read_stream(self, stream: str, max_entries: int, page: int = 1000) -> list[dict[str, str]] | None:
        """The fields of a stream's entries, oldest first (XRANGE in pages of `page`), at most
        `max_entries`; None when Redis is unreachable. For offline tools (`distill`)."""
        out: list[dict[str, str]] = []
        start = "-"
        while len(out) < max_entries:
            ok, batch = await self._run("xrange", stream, start, "+", count=min(page, max_entries - len(out)))
            if not ok:
                return None
            if not batch:
                break
            for entry_id, fields in batch:
                out.append({k.decode(errors="replace") if isinstance(k, bytes) else str(k):
                            v.decode(errors="replace") if isinstance(v, bytes) else str(v)
                            for k, v in fields.items()})
            last = batch[-1][0]
            start = "(" + (last.decode() if isinstance(last, bytes) else str(last))
        return out

    async def publish(self, channel: str, message: bytes) -> bool:
        ok, _ = await self._run("publish", channel, message)
        return ok

    async def subscribe(self, channel: str) -> AsyncIterator[bytes]:
        """Messages on `channel`, forever; reconnects with a pause after errors."""
        while True:
            client = self._pubsub_client()
            pubsub = client.pubsub()
            try:
                await pubsub.subscribe(channel)
                async for msg in pubsub.listen():
                    if msg.get("type") == "message":
                        yield bytes(msg["data"])
            except _ERRORS as exc:
                log.info("policy subscription lost (%s); retrying", type(exc).__name__)
            finally:
                try:
                    await pubsub.aclose()
                    await client.aclose()
                except _ERRORS:
                    pass
            await asyncio.sleep(1.0)

    async def ping(self) -> bool:
        try:
            await self._client.ping()
        except _ERRORS:
            return False
        return True

    async def close(self) -> None:
        await self._client.aclose()
