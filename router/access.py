"""The request's identity while it is served, and its access log line.

`AccessLog` is a pure ASGI middleware (it adds no task and no buffering, so streams stream). For
every HTTP request it:

- picks the request id: the caller's `x-request-id` when it is a safe token (letters, digits,
  `._:-`, at most 128), else 32 random hex digits, and keeps it in `scope["state"]` (the handlers'
  `request.state.request_id`) and in a `RequestContext` reachable through `current()`. The
  escalator sends it upstream as `x-request-id` and the escalation stream stores it, so one id
  follows a request from the client to the provider's logs;
- logs one `access` line at INFO when the response is finished: request id, method, endpoint (a
  route template of the app, never a raw unknown path), status, route, path taken, reason,
  foundation alias, latency, cost, and for errors their code (and, for 5xx, our message: why).
  Never the body, headers or keys. Successful requests are sampled (`ROUTER_ACCESS_LOG_SAMPLE`);
  errors are always logged. `/metrics`, `/healthz` and `/readyz` log at DEBUG.
"""

from __future__ import annotations

import logging
import os
import random
import re
import time
from collections.abc import Collection
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["AccessLog", "RequestContext", "current", "safe_request_id"]

log = logging.getLogger("router.access")

_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_QUIET_PATHS = frozenset({"/metrics", "/healthz", "/readyz"})
_HEADERS = {b"x-router-route": "route", b"x-router-path": "path", b"x-router-reason": "reason",
            b"x-router-cost-usd": "cost_usd"}


@dataclass(slots=True)
class RequestContext:
    """What the layers below the handler add to the request's log line."""

    request_id: str
    alias: str | None = None
    """The foundation alias that answered (or was last tried)."""
    fields: dict[str, Any] = field(default_factory=dict)


_CURRENT: ContextVar[RequestContext | None] = ContextVar("router_request", default=None)


def current() -> RequestContext | None:
    """The request being served by this task (tasks it creates inherit it), or None."""
    return _CURRENT.get()


def safe_request_id(given: str | None) -> str:
    """`given` if it is safe to echo and log, else 32 random hex digits (``os.urandom``: a uuid4
    object cost ~5x more, and this runs on every request)."""
    return given if given is not None and _SAFE_ID.match(given) else os.urandom(16).hex()


class AccessLog:
    def __init__(self, app: ASGIApp, endpoints: Collection[str], sample: float = 1.0) -> None:
        self.app = app
        self.endpoints = frozenset(endpoints)
        self.sample = sample

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"x-request-id"), None)
        ctx = RequestContext(safe_request_id(given))
        scope.setdefault("state", {})["request_id"] = ctx.request_id
        token = _CURRENT.set(ctx)
        if not log.isEnabledFor(logging.INFO):  # no line would be written: nothing to watch for
            try:
                await self.app(scope, receive, send)
            finally:
                _CURRENT.reset(token)
            return
        t0 = time.perf_counter()
        status = 500
        decision: dict[str, str] = {}

        async def send_and_watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                for k, v in message.get("headers", ()):
                    name = _HEADERS.get(k)
                    if name is not None:
                        decision[name] = v.decode("latin-1")
            await send(message)

        try:
            await self.app(scope, receive, send_and_watch)
        finally:
            _CURRENT.reset(token)
            self._log(scope, ctx, status, decision, time.perf_counter() - t0)

    def _log(self, scope: Scope, ctx: RequestContext, status: int, decision: dict[str, str], seconds: float) -> None:
        path = scope.get("path", "")
        level = logging.DEBUG if path in _QUIET_PATHS else logging.INFO
        if not log.isEnabledFor(level) or (status < 400 and self.sample < 1.0 and random.random() >= self.sample):
            return
        state = scope.get("state", {})
        line: dict[str, Any] = {
            "request_id": ctx.request_id,
            "method": scope.get("method", ""),
            "endpoint": path if path in self.endpoints else "other",
            "status": status,
            "route": decision.get("route", state.get("route_known")),
            "path": decision.get("path"),
            "reason": decision.get("reason"),
            "alias": ctx.alias,
            "latency_ms": round(seconds * 1000, 3),
            "cost_usd": float(decision["cost_usd"]) if decision.get("cost_usd") else None,
        }
        line.update(ctx.fields)
        error = state.get("error")
        if error is not None:
            line["error"] = error[0]
            if status >= 500:
                line["detail"] = error[1]
        log.log(level, "access", extra={k: v for k, v in line.items() if v is not None})
