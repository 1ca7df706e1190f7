"""Settings -> ASGI app. Builds the specialists, policy, cache, escalator and metrics once.

Start-up failures (an invalid policy, a model file whose sha256 does not match its manifest)
raise here and stop the process: they never become HTTP responses. Everything else that can go
wrong while serving is a `GatewayError` rendered by the one handler below, or a last-resort 500
that carries the request id and no internals.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import signal
import threading
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import orjson
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from specialists import SpecialistSet

from .access import AccessLog
from .auth import Authenticator, check_exposure
from .budget import BudgetTracker
from .cache import MemoryCache, RedisCache, ResponseCache
from .coalesce import Coalescer
from .connections import LIFESPAN_KEY, ConnectionLimits
from .errors import GatewayError, error_body, problem_body
from .escalation import Escalator
from .escalation_log import EscalationLog
from .gateway import Gateway
from .hotpath import HOT_PATHS, HotPaths
from .logs import configure_logging
from .metrics import GatewayMetrics
from .policy import ClassifyRoute, load_policy, read_policy_text
from .policy_specialists import extend
from .pricing import PriceTable
from .redis_state import RedisState
from .reload import PolicyReloader
from .routes import build_admin_routes, build_routes, request_id
from .settings import Settings, multiprocess_metrics_dir, read_secret_env
from .shadow import ShadowChecker

__all__ = ["GatewayApp", "build_gateway", "create_app", "create_app_from_env"]

log = logging.getLogger("router.app")


def build_gateway(settings: Settings, registry: CollectorRegistry | None = None) -> Gateway:
    metrics = GatewayMetrics(registry if registry is not None else CollectorRegistry(),
                             settings.metrics_dir or multiprocess_metrics_dir())
    specialists = SpecialistSet.load(settings.specialists_dir)
    specialists = extend(specialists, read_policy_text(settings.policy_path, settings.policy_max_bytes),
                         str(settings.policy_path), settings.policy_max_bytes)
    policy = load_policy(settings.policy_path, {n: specialists[n].classes for n in specialists},
                         settings.policy_max_bytes)
    used = {t.specialist for r in policy.policy.routes.values() if isinstance(r, ClassifyRoute) for t in r.tiers()}
    for name in specialists:  # first inference allocates (ORT arenas, caches): not on a request
        # A transformer tier the policy does not use stays unloaded (its session is made on first use).
        if specialists[name].kind == "tfidf" or name in used:
            specialists[name].predict_one("warm up")
    metrics.set_policy_version(policy.version)
    metrics.prepare_policy(policy.policy)
    escalator = Escalator(
        policy.policy.aliases,
        settings.foundation,
        read_secret_env,
        lambda alias, outcome: metrics.foundation_calls.labels(alias, outcome).inc(),
        PriceTable.load(),
    )
    if not escalator.any_configured():
        log.warning("no foundation model configured: low-confidence answers are served degraded, "
                    "open-ended requests get 503 (set ROUTER_FOUNDATION__MODEL or policy aliases)")
    state: RedisState | None = None
    cache: ResponseCache
    if settings.redis.configured:
        state = RedisState(settings.redis, metrics.cache_event)
        # With `cache_url`, answers live in their own (evicting) Redis; spend, the escalation log
        # and the policy stay in `state`, where cache pressure cannot evict them.
        cache_state = state if settings.redis.cache_url is None else RedisState(
            settings.redis.for_cache(), metrics.cache_event)
        cache = RedisCache(cache_state, metrics.cache_event)
    else:
        log.info("no Redis configured (ROUTER_REDIS__URL): in-process cache, per-process budget and "
                 "coalescing, no escalation log")
        cache = MemoryCache(settings.redis.memory_max_entries, metrics.cache_event, settings.redis.max_value_bytes)
    log.info("policy %s version %s; specialists: %s; cache: %s", policy.path, policy.version,
             ", ".join(f"{n}@{specialists[n].version}" for n in specialists), cache.backend)
    return Gateway(policy, specialists, cache, escalator, metrics, BudgetTracker(policy.policy.budgets, state),
                   Coalescer(cache, settings.redis.lock_ttl_ms), EscalationLog(state), ShadowChecker(metrics),
                   settings.cpu_usd_per_core_hour, state=state, cascade_threads=settings.cascade_threads)


def _render(request: Request, exc: GatewayError) -> Response:
    headers = {"x-request-id": request_id(request), **exc.headers()}
    request.state.error = (exc.code, exc.message)  # for the access log line
    gw: Gateway | None = getattr(request.app.state, "gateway", None)
    if gw is not None and request.url.path.startswith("/v1/"):
        name = getattr(request.state, "route", None)
        known = name in gw.policy.policy.routes or name in gw.escalator.clients
        request.state.route_known = name if known else "unknown"
        gw.metrics.request_errors.labels(name if known else "unknown", exc.code).inc()
    if request.url.path.startswith("/v1/"):
        return Response(orjson.dumps(error_body(exc)), status_code=exc.status, media_type="application/json",
                        headers=headers)
    return Response(orjson.dumps(problem_body(exc, request.url.path)), status_code=exc.status,
                    media_type="application/problem+json", headers=headers)


async def _on_gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    return _render(request, exc)


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    err = GatewayError(exc.detail or "error")
    err.status = exc.status_code
    err.error_type = "invalid_request_error" if exc.status_code < 500 else "server_error"
    err.code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return _render(request, err)


async def _on_client_gone(request: Request, exc: Exception) -> Response:
    """The client went away mid-upload: nobody reads an answer, and it is not the server's fault."""
    gw: Gateway | None = getattr(request.app.state, "gateway", None)
    if gw is not None:
        gw.metrics.client_disconnects.inc()
    log.debug("client went away before its request body was read (request %s)", request_id(request))
    return Response(status_code=400)


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    log.error("unhandled %s on %s (request %s)", type(exc).__name__, request.url.path, request_id(request),
              exc_info=exc)
    return _render(request, GatewayError(f"internal error; request id {request_id(request)}"))


async def _freeze_heap(gw: Gateway) -> None:
    """Move everything built at start-up out of the garbage collector's sight.

    The specialists' vocabularies and litellm make ~380,000 long-lived objects; a full collection
    over them took ~200 ms here and showed up as the foundation path's p99 at concurrency 8.
    After `gc.freeze()` collections only scan what requests allocate.
    """
    await gw.escalator.wait_loaded()
    gc.collect()
    gc.freeze()
    _return_free_memory()


def _return_free_memory() -> None:
    """Give the heap pages that start-up freed back to the OS (glibc keeps them otherwise).

    Loading the specialists and importing litellm allocate and drop a lot of temporary objects;
    glibc's malloc keeps those pages mapped, so they would count in the worker's RSS for its whole
    life. A no-op where the C library has no ``malloc_trim`` (musl, macOS).
    """
    try:
        trim = ctypes.CDLL(None).malloc_trim  # the C library the interpreter runs on
    except (OSError, AttributeError):
        return
    trim.argtypes = [ctypes.c_size_t]
    trim(0)


def _drain_on_signal(gw: Gateway) -> None:
    """On SIGTERM/SIGINT turn readiness false at once, then let uvicorn's handler stop the server
    (it refuses new connections and gives requests in flight `shutdown_grace_s` to finish).

    uvicorn installs its handlers before the lifespan starts; they are wrapped here, and restored
    by uvicorn when it exits. Signals reach only the main thread (not a test's server thread).
    """
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)

        def handler(signum: int, frame: Any, previous: Any = previous) -> None:
            gw.draining = True
            if callable(previous):
                previous(signum, frame)

        signal.signal(sig, handler)


async def _refresh_budget(gw: Gateway) -> None:
    """Pick up what other replicas spent, once a second."""
    while True:
        await asyncio.sleep(1.0)
        await gw.budget.refresh()


class GatewayApp(Starlette):
    """Starlette with the hot paths (`router.hotpath`) dispatched before its middleware and router."""

    hot: HotPaths | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = self
        if self.hot is None:
            await super().__call__(scope, receive, send)
        else:
            await self.hot(scope, receive, send)

    async def serve_full(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The whole Starlette stack (middleware, router): every request but the hot ones."""
        await super().__call__(scope, receive, send)


def create_app_from_env() -> Starlette:
    """Factory for uvicorn's worker processes: each builds its own app from the environment."""
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    return create_app(settings)


def create_app(settings: Settings | None = None, registry: CollectorRegistry | None = None) -> Starlette:
    """Raises `auth.ExposureError` for a non-loopback bind without API keys (see `check_exposure`)."""
    settings = settings if settings is not None else Settings()
    check_exposure(settings.host, settings.auth)
    gw = build_gateway(settings, registry)
    signing_key = settings.policy_signing_key.get_secret_value().encode() if settings.policy_signing_key else None
    reloader = PolicyReloader(gw, settings.policy_path, settings.policy_poll_s,
                              max_bytes=settings.policy_max_bytes, signing_key=signing_key)
    token = settings.admin_token.get_secret_value() if settings.admin_token else None
    metrics_token = settings.metrics_token.get_secret_value() if settings.metrics_token else None
    auth = Authenticator(settings.auth, gw.state, gw.metrics.key_request)  # the never-evicted Redis

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[Mapping[str, Any]]:
        _drain_on_signal(gw)
        gw.escalator.start()
        reloader.start()
        loop = asyncio.get_running_loop()
        budget_sync = loop.create_task(_refresh_budget(gw))
        freeze = loop.create_task(_freeze_heap(gw))
        if auth.ring is not None:
            await auth.ring.refresh()  # keys in force before the first request
        auth_sync = loop.create_task(auth.run())
        try:
            # Lifespan state reaches uvicorn's connection protocol (router.connections).
            yield {LIFESPAN_KEY: ConnectionLimits.from_settings(settings, gw.metrics.connection_cut)}
        finally:
            auth_sync.cancel()
            await auth.flush()
            freeze.cancel()
            budget_sync.cancel()
            await reloader.stop()
            await gw.shadow.drain()
            await gw.budget.drain()
            await gw.escalation_log.drain()
            await gw.cache.close()
            if gw.state is not None and gw.state is not gw.cache.state:
                await gw.state.close()
            # What start-up froze becomes collectable again: a process that builds several apps
            # (tests, embedding) would otherwise keep every stopped app's specialists forever.
            gc.unfreeze()
            gw.close()

    routes = build_routes(gw, settings.max_body_bytes, settings.max_batch, settings.cache_per_tenant,
                          settings.drain_max_bytes, auth, metrics_token) + build_admin_routes(reloader, token)
    endpoints = [r.path for r in routes]
    app = GatewayApp(
        routes=routes,
        middleware=[Middleware(AccessLog, endpoints=endpoints, sample=settings.access_log_sample)],
        exception_handlers={
            GatewayError: _on_gateway_error,
            HTTPException: _on_http_error,
            ClientDisconnect: _on_client_gone,
            Exception: _on_unexpected,
        },
        lifespan=lifespan,
    )
    app.hot = HotPaths(
        app.serve_full,
        {r.path: r.endpoint for r in routes if r.path in HOT_PATHS and r.methods and "POST" in r.methods},
        lambda inner: AccessLog(inner, endpoints, settings.access_log_sample),
        _on_gateway_error, _on_client_gone, _on_unexpected,
    )
    app.state.gateway = gw
    app.state.reloader = reloader
    app.state.auth = auth
    app.state.settings = settings
    return app
