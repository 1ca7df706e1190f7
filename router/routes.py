"""HTTP <-> gateway: thin Starlette handlers for the classify, OpenAI and health endpoints.

Handlers parse and validate the body (size cap, JSON, schema: each failure a 4xx naming what is
wrong), call the gateway, and render JSON with orjson. Every response carries `x-request-id`;
answers also carry the routing decision in `x-router-*` headers.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from .auth import Authenticator, Caller
from .chat import complete
from .errors import AuthenticationError, InvalidRequestError, PayloadTooLargeError
from .gateway import Gateway
from .metrics import CONTENT_TYPE_LATEST
from .reload import PolicyReloader
from .schemas import ChatRequest, ClassifyRequest

__all__ = ["build_admin_routes", "build_routes", "request_id"]

M = TypeVar("M", bound=BaseModel)
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
JSON = "application/json"


def request_id(request: Request) -> str:
    """The caller's ``x-request-id`` if it is safe to echo, else 32 random hex digits; once per request.

    Kept in ``scope["state"]`` (what ``request.state`` wraps) without building the State and
    Headers objects, and drawn from ``os.urandom`` (a uuid4 object cost ~5x more): this runs on
    every answer.
    """
    state = request.scope.setdefault("state", {})
    rid = state.get("request_id")
    if rid is None:
        given = next((v for k, v in request.scope["headers"] if k == b"x-request-id"), b"").decode("latin-1")
        rid = state["request_id"] = given if _SAFE_ID.match(given) else os.urandom(16).hex()
    return str(rid)


def tenant_of(request: Request, per_tenant: bool, caller: Caller | None = None) -> str:
    """Cache namespace of the caller: its key's tenant with keys on, else a hash of its
    Authorization header (the header itself is never kept)."""
    if not per_tenant:
        return ""
    if caller is not None:
        return "t:" + caller.tenant
    key = request.headers.get("authorization", "")
    return hashlib.sha256(key.encode()).hexdigest()[:16] if key else ""


class _Raw(Response):
    """A JSON response from already-encoded headers (Starlette's init_headers re-encodes a dict)."""

    media_type = JSON

    def __init__(self, body: bytes, raw_headers: list[tuple[bytes, bytes]], status: int = 200) -> None:
        self.status_code = status
        self.background = None
        self.body = body
        raw_headers.append((b"content-length", str(len(body)).encode()))
        raw_headers.append((b"content-type", b"application/json"))
        self.raw_headers = raw_headers


def _json(data: Any, request: Request, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    raw = [(b"x-request-id", request_id(request).encode())]
    if headers:
        raw += [(k.encode(), v.encode("latin-1")) for k, v in headers.items()]
    return _Raw(orjson.dumps(data), raw, status)


async def _too_large(request: Request, max_bytes: int, drain_bytes: int, seen: int) -> PayloadTooLargeError:
    """The 413 for a body over `max_bytes`, after reading (and dropping) up to `drain_bytes` of it.

    A client that is still sending when the answer comes sees a reset, not the 413: so the rest of
    the body is read first, up to a bound (and within the server's body timeout). Past the bound,
    the 413 closes the connection.
    """
    error = PayloadTooLargeError(f"request body over {max_bytes} bytes")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > drain_bytes:
        error.close_connection = True
        return error
    async for part in request.stream():
        seen += len(part)
        if seen > drain_bytes:
            error.close_connection = True
            break
    return error


async def _parse(request: Request, model: type[M], max_bytes: int, drain_bytes: int) -> M:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise await _too_large(request, max_bytes, drain_bytes, 0)
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > max_bytes:
            raise await _too_large(request, max_bytes, drain_bytes, len(body))
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequestError(f"request body is not valid JSON (UTF-8): {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidRequestError("request body must be a JSON object")
    name = data.get("task", data.get("model"))
    if isinstance(name, str):
        request.state.route = name  # for the error metric, before validation can fail
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or None
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise InvalidRequestError(f"{loc}: {first['msg']}{more}" if loc else first["msg"], param=loc) from exc


def build_routes(gw: Gateway, max_body_bytes: int, max_batch: int, per_tenant_cache: bool,
                 drain_bytes: int, auth: Authenticator, metrics_token: str | None = None) -> list[Route]:
    async def classify(request: Request) -> Response:
        caller = await auth.admit(request)  # before the body is read: strangers cost nothing
        req = await _parse(request, ClassifyRequest, max_body_bytes, drain_bytes)
        texts = [req.input] if isinstance(req.input, str) else req.input
        if len(texts) > max_batch:
            raise InvalidRequestError(f"input: at most {max_batch} texts per request", param="input")
        if caller is not None:
            auth.use(caller, "route", req.task, "task")
        policy, outcomes = await gw.classify(req.task, texts, tenant_of(request, per_tenant_cache, caller))
        if isinstance(req.input, str):
            o = outcomes[0]
            return _json(o.to_dict(), request, headers={
                "x-router-route": o.route, "x-router-path": o.path, "x-router-reason": o.reason,
                "x-router-confidence": f"{o.confidence:.4f}", "x-router-cost-usd": f"{o.cost_usd:.8f}",
                "x-router-policy-version": o.policy_version,
            })
        return _json({"results": [o.to_dict() for o in outcomes], "policy_version": policy.version}, request,
                     headers={"x-router-route": req.task, "x-router-policy-version": policy.version})

    async def chat_completions(request: Request) -> Response:
        caller = await auth.admit(request)
        req = await _parse(request, ChatRequest, max_body_bytes, drain_bytes)
        if caller is not None:
            if req.model in gw.policy.policy.routes:
                auth.use(caller, "route", req.model, "model")
            else:  # an alias, or unknown (404 below)
                auth.use(caller, "alias" if req.model in gw.escalator.clients else None, req.model, "model")
        out = await complete(gw, req, tenant_of(request, per_tenant_cache, caller))
        headers = {"x-request-id": request_id(request), **out.decision_headers()}
        if out.stream is not None:
            return StreamingResponse(out.stream, media_type="text/event-stream",
                                     headers={**headers, "cache-control": "no-cache"})
        return Response(orjson.dumps(out.body), media_type=JSON, headers=headers)

    async def models(request: Request) -> Response:
        caller = await auth.admit(request)
        names = [*gw.policy.policy.routes, *gw.escalator.clients]
        if caller is not None:  # only what this key may use
            auth.use(caller)
            names = [n for n in names if caller.record.permits("route" if n in gw.policy.policy.routes
                                                               else "alias", n)]
        data = [{"id": n, "object": "model", "created": 0, "owned_by": "hybrid-router"} for n in names]
        return _json({"object": "list", "data": data}, request)

    async def healthz(request: Request) -> Response:
        """Liveness: 200 while the process serves, with the state of what it degrades around.

        A dead Redis, an open breaker or a spent budget degrade answers; they are reported here and
        never fail the probe (restarting the pod would not fix them)."""
        aliases = {n: {"configured": c.configured, "breaker": "closed" if c.breaker.allows() else "open",
                       "waiting": c.waiting} for n, c in gw.escalator.clients.items()}
        return _json({"status": "ok", "draining": gw.draining,
                      "redis": {"backend": gw.cache.backend, "state": await gw.cache.health()},
                      "aliases": aliases, "budget": gw.budget.snapshot()}, request)

    async def readyz(request: Request) -> Response:
        """Readiness: specialists and policy loaded (before the server listens), litellm imported when
        an alias needs it, and not shutting down."""
        cache_state = await gw.cache.health()
        ready = len(gw.specialists) > 0 and gw.escalator.ready and not gw.draining
        body = {
            "ready": ready,
            "draining": gw.draining,
            "specialists": {n: gw.specialists[n].version for n in gw.specialists},
            "cache": {"backend": gw.cache.backend, "state": cache_state},
            "foundation": {
                "loaded": gw.escalator.ready,
                "aliases": {n: ("configured" if c.configured else "unconfigured")
                            for n, c in gw.escalator.clients.items()},
            },
            "policy_version": gw.policy.version,
        }
        return _json(body, request, status=200 if ready else 503)

    async def metrics(request: Request) -> Response:
        if metrics_token is not None and not _bearer_matches(request, metrics_token):
            raise AuthenticationError("missing or wrong metrics token (ROUTER_METRICS_TOKEN)",
                                      code="invalid_metrics_token")
        gw.metrics.set_budget(gw.budget.snapshot())
        return Response(gw.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return [
        Route("/v1/classify", classify, methods=["POST"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]


def _bearer_matches(request: Request, token: str) -> bool:
    given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    return hmac.compare_digest(given.encode(), token.encode())


def build_admin_routes(reloader: PolicyReloader, token: str | None) -> list[Route]:
    """`/admin/policy` (GET: version and last reload) and `/admin/policy/reload` (POST), bearer token."""

    def check(request: Request) -> None:
        if token is None:
            raise AuthenticationError("admin endpoints are disabled: set ROUTER_ADMIN_TOKEN", code="admin_disabled")
        if not _bearer_matches(request, token):
            raise AuthenticationError("missing or wrong admin token")

    async def policy(request: Request) -> Response:
        check(request)
        gw_policy = reloader.current()
        return _json({"version": gw_policy.version, "path": gw_policy.path, "last_reload": reloader.last.to_dict(),
                      "routes": sorted(gw_policy.policy.routes), "shadow": reloader.shadow_status()}, request)

    async def reload(request: Request) -> Response:
        check(request)
        result = await reloader.reload("admin")
        return _json(result.to_dict(), request, status=200 if result.ok else 422)

    async def shadow_reset(request: Request) -> Response:
        check(request)
        route = request.query_params.get("route")
        return _json({"reset": reloader.shadow_reset(route)}, request)

    return [
        Route("/admin/shadow/reset", shadow_reset, methods=["POST"]),
        Route("/admin/policy", policy, methods=["GET"]),
        Route("/admin/policy/reload", reload, methods=["POST"]),
    ]
