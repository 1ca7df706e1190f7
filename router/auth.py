"""Who is calling: API keys on /v1/*, what each key may use and spend, and the start-up check
that refuses to expose the gateway without keys.

With `ROUTER_AUTH__SECRET` set, every /v1/* request carries ``Authorization: Bearer hr-...``
(what OpenAI SDKs send). `Authenticator.admit` finds its record in the `KeyRing` (no I/O once
loaded): missing, unknown or revoked keys get 401 with ``WWW-Authenticate: Bearer``.
`Authenticator.use` then applies the key to the route or alias the request names: 403
`model_not_permitted` naming it when the key may not use it; 429 `insufficient_quota` while the
key's spend budget (USD per UTC hour/day) is used up; 429 `rate_limit_exceeded` while its
requests per minute or foundation tokens per minute are (both with `Retry-After`, the seconds
until the window ends). Foundation spend and tokens are charged to the key after each call
(`charge`, called by the gateway's accounting; the key rides in a context variable so it reaches
the background tasks a request starts).

Limits are fixed UTC windows (minute, hour, day) counted with the same machinery as the global
budget (`budget.WindowedCounter`): locally at once, pushed to Redis every 250 ms in one pipeline,
read back every second, so every replica sees what the others counted within about a second.
Token limits count the foundation tokens a key has used in the current minute: a request is
refused once the count reached the limit, so the call that crosses it completes. When Redis is
down each replica enforces the limits on its own counts (fail open: at most replicas x limit).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Literal

from starlette.requests import Request

from .access import current
from .budget import WindowedCounter, push_counters, refresh_counters
from .errors import (
    AuthenticationError,
    InsufficientQuotaError,
    PermissionDeniedError,
    RateLimitedError,
    ServiceUnavailableError,
)
from .keys import KeyRecord, KeyRing, open_store
from .redis_state import RedisState
from .settings import AuthSettings

__all__ = ["Authenticator", "Caller", "ExposureError", "alias_permitted", "charge", "check_exposure"]

log = logging.getLogger("router.auth")

_PUSH_S = 0.25
_REFRESH_S = 1.0
_RECENT_S = 120.0  # keys used this recently on this replica have their shared totals refreshed
OUTCOMES = ("ok", "invalid_key", "revoked", "forbidden", "over_budget", "rate_limited")


@dataclass(slots=True)
class _Meter:
    record: KeyRecord
    spend: WindowedCounter
    requests: WindowedCounter
    tokens: WindowedCounter
    used_at: float = 0.0

    def counters(self) -> tuple[WindowedCounter, ...]:
        return (self.spend, self.requests, self.tokens)

    def limited(self) -> bool:
        r = self.record
        return any(v is not None for v in (r.usd_per_hour, r.usd_per_day, r.rpm, r.tpm))


@dataclass(slots=True)
class Caller:
    """An admitted API key for the length of one request."""

    record: KeyRecord
    meter: _Meter
    label: str
    """The key's metric label: its name, or `other` past the exported names."""

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def tenant(self) -> str:
        return self.record.cache_tenant


_CALLER: ContextVar[Caller | None] = ContextVar("hybrid_router_caller", default=None)


def charge(usd: float, tokens: int) -> None:
    """Book a foundation call's cost and tokens on the calling key, if any."""
    caller = _CALLER.get()
    if caller is None:
        return
    r = caller.record
    if r.usd_per_hour is not None or r.usd_per_day is not None:
        caller.meter.spend.add(usd)
    if r.tpm is not None:
        caller.meter.tokens.add(tokens)


def alias_permitted(alias: str) -> bool:
    """May the calling key (if any) have its request answered by this foundation alias?"""
    caller = _CALLER.get()
    return caller is None or caller.record.permits("alias", alias)


class Authenticator:
    def __init__(self, settings: AuthSettings, state: RedisState | None,
                 count: Any = None) -> None:
        """`count(label, outcome)` is called once per decided /v1/* request (metrics)."""
        self.enabled = settings.enabled
        self.ring: KeyRing | None = None
        if self.enabled:
            assert settings.secret is not None
            self.ring = KeyRing(settings.secret.get_secret_value().encode(),
                                open_store(state, settings.keys_file), settings.refresh_s)
        self._state = state
        self._count = count if count is not None else (lambda label, outcome: None)
        self._meters: dict[str, _Meter] = {}
        self._labels: set[str] = set()
        self._max_labels = settings.metric_keys

    # ---- per request ---------------------------------------------------------------------------
    async def admit(self, request: Request) -> Caller | None:
        """The caller's key (None with keys off); 401 when missing, unknown or revoked."""
        ring = self.ring
        if ring is None:
            return None
        if not ring.loaded:
            await ring.refresh()
            if not ring.loaded:
                raise ServiceUnavailableError("API keys cannot be read yet", code="key_store_unavailable",
                                              retry_after_s=5)
        header = request.headers.get("authorization", "")
        if header[:7].lower() != "bearer ":
            self._count("none", "invalid_key")
            raise AuthenticationError("missing API key: send Authorization: Bearer <key>", code="missing_api_key")
        record = ring.lookup(header[7:].strip())
        if record is None:
            self._count("none", "invalid_key")
            raise AuthenticationError("invalid API key", code="invalid_api_key")
        label = self._label(record.name)
        if record.revoked is not None:
            self._count(label, "revoked")
            raise AuthenticationError("API key revoked", code="invalid_api_key")
        caller = Caller(record, self._meter(record), label)
        _CALLER.set(caller)
        ctx = current()
        if ctx is not None:  # the access line names the key, never shows it
            ctx.fields["key"] = record.name
        return caller

    def use(self, caller: Caller, kind: Literal["route", "alias"] | None = None, name: str = "",
            param: str | None = None) -> None:
        """Apply the key to one request naming route/alias `name`: permission, budget, rates; counts it."""
        record, meter = caller.record, caller.meter
        if kind is not None and not record.permits(kind, name):
            self._count(caller.label, "forbidden")
            raise PermissionDeniedError(f"this API key may not use {kind} {name!r}", param=param)
        now = time.time()
        wait = meter.spend.retry_after(now)
        if wait is not None:
            self._count(caller.label, "over_budget")
            raise InsufficientQuotaError(f"the spend budget of API key {record.name!r} is used up for this window",
                                         retry_after_s=wait)
        wait = meter.requests.retry_after(now)
        if wait is not None:
            self._count(caller.label, "rate_limited")
            raise RateLimitedError(f"API key {record.name!r} is over its {record.rpm} requests per minute",
                                   code="rate_limit_exceeded", retry_after_s=wait)
        wait = meter.tokens.retry_after(now)
        if wait is not None:
            self._count(caller.label, "rate_limited")
            raise RateLimitedError(f"API key {record.name!r} is over its {record.tpm} tokens per minute",
                                   code="rate_limit_exceeded", retry_after_s=wait)
        if record.rpm is not None:
            meter.requests.add(1.0, now)
        self._count(caller.label, "ok")

    # ---- state ---------------------------------------------------------------------------------
    def _label(self, name: str) -> str:
        if name in self._labels:
            return name
        if len(self._labels) < self._max_labels:
            self._labels.add(name)
            return name
        return "other"

    def _meter(self, record: KeyRecord) -> _Meter:
        meter = self._meters.get(record.name)
        if meter is None:
            scope = f"key:{record.name}"
            meter = self._meters[record.name] = _Meter(
                record,
                WindowedCounter(scope, [("hour", 3600, record.usd_per_hour), ("day", 86400, record.usd_per_day)],
                                self._state),
                WindowedCounter(scope, [("rpm", 60, record.rpm)], self._state),
                WindowedCounter(scope, [("tpm", 60, record.tpm)], self._state))
        elif meter.record is not record:  # the record was re-read: limits may have changed
            meter.record = record
            meter.spend.set_limits([record.usd_per_hour, record.usd_per_day])
            meter.requests.set_limits([record.rpm])
            meter.tokens.set_limits([record.tpm])
        meter.used_at = time.monotonic()
        return meter

    async def run(self) -> None:
        """Background work (the lifespan starts and cancels it): re-read keys, share counts."""
        if self.ring is None:
            return
        tasks = [asyncio.create_task(self.ring.run())]
        if self._state is not None:
            tasks.append(asyncio.create_task(self._sync(self._state)))
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()

    async def _sync(self, state: RedisState) -> None:
        last_refresh = 0.0
        while True:
            await asyncio.sleep(_PUSH_S)
            try:
                await self.flush()
                now = time.monotonic()
                if now - last_refresh >= _REFRESH_S:
                    last_refresh = now
                    recent = [c for m in self._meters.values() if m.limited() and now - m.used_at < _RECENT_S
                              for c in m.counters()]
                    await refresh_counters(state, recent)
            except Exception:  # sharing counts must outlive any one failure
                log.exception("per-key counter sync failed")

    async def flush(self) -> None:
        """Push every pending per-key count to Redis now (one round trip)."""
        if self._state is not None:
            await push_counters(self._state, [c for m in self._meters.values() for c in m.counters() if c.dirty])


class ExposureError(Exception):
    """Refusing to start: the gateway would serve /v1/* without keys beyond this machine."""


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def check_exposure(host: str, settings: AuthSettings, *, warn: bool = True) -> None:
    """Secure by default: no keys is fine on loopback (with a warning), refused elsewhere unless
    keys are switched off explicitly (`ROUTER_AUTH__DISABLED=true`). `warn=False` only checks (the
    command's early check: the app built after it warns once)."""
    if settings.enabled:
        return
    if settings.disabled:
        if not warn:
            return
        log.warning("API keys are switched off (ROUTER_AUTH__DISABLED=true): whoever reaches %s can use /v1/* "
                    "and spend the foundation budget", host)
        return
    if _loopback(host):
        if not warn:
            return
        log.warning("no ROUTER_AUTH__SECRET: /v1/* is served without API keys, to this machine only (%s)", host)
        return
    raise ExposureError(
        f"refusing to serve /v1/* on {host} without API keys: anyone who reaches the port could spend the "
        "foundation budget. Set ROUTER_AUTH__SECRET (32+ characters) and create keys with `hybrid-router keys "
        "create`, or set ROUTER_AUTH__DISABLED=true if something in front of the gateway authenticates callers.")
