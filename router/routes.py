"""HTTP <-> gateway: thin Starlette handlers for the classify, OpenAI and health endpoints.

Handlers parse and validate the body (size cap, JSON, schema: each failure a 4xx naming what is
wrong), call the gateway, and render JSON with orjson. Every response carries `x-request-id`;
answers also carry the routing decision in `x-router-*` headers.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import uuid
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

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
    rid = getattr(request.state, "request_id", None)
    if rid is None:
        given = request.headers.get("x-request-id", "")
        rid = given if _SAFE_ID.match(given) else uuid.uuid4().hex
        request.state.request_id = rid
    return str(rid)


def tenant_of(request: Request, per_tenant: bool) -> str:
    """Cache namespace of the caller: a hash of its API key (the key itself is never kept)."""
    if not per_tenant:
        return ""
    key = request.headers.get("authorization", "")
    return hashlib.sha256(key.encode()).hexdigest()[:16] if key else ""


def _json(data: Any, request: Request, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    h = {"x-request-id": request_id(request)}
    if headers:
        h.update(headers)
    return Response(orjson.dumps(data), status_code=status, media_type=JSON, headers=h)


async def _parse(request: Request, model: type[M], max_bytes: int) -> M:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLargeError(f"request body over {max_bytes} bytes")
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > max_bytes:
            raise PayloadTooLargeError(f"request body over {max_bytes} bytes")
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


def build_routes(gw: Gateway, max_body_bytes: int, max_batch: int, per_tenant_cache: bool) -> list[Route]:
    async def classify(request: Request) -> Response:
        req = await _parse(request, ClassifyRequest, max_body_bytes)
        texts = [req.input] if isinstance(req.input, str) else req.input
        if len(texts) > max_batch:
            raise InvalidRequestError(f"input: at most {max_batch} texts per request", param="input")
        policy, outcomes = await gw.classify(req.task, texts, tenant_of(request, per_tenant_cache))
        if isinstance(req.input, str):
            o = outcomes[0]
            return _json(o.to_dict(), request, headers={
                "x-router-route": o.route, "x-router-path": o.path, "x-router-reason": o.reason,
                "x-router-confidence": f"{o.confidence:.4f}", "x-router-cost-usd": f"{o.cost_usd:.8f}",
                "x-router-policy-version": o.policy_version,
                **({"x-router-tier": str(o.tier), "x-router-specialist": o.specialist} if o.specialist else {}),
            })
        return _json({"results": [o.to_dict() for o in outcomes], "policy_version": policy.version}, request,
                     headers={"x-router-route": req.task, "x-router-policy-version": policy.version})

    async def chat_completions(request: Request) -> Response:
        req = await _parse(request, ChatRequest, max_body_bytes)
        out = await complete(gw, req, tenant_of(request, per_tenant_cache))
        headers = {"x-request-id": request_id(request), **out.decision_headers()}
        if out.stream is not None:
            return StreamingResponse(out.stream, media_type="text/event-stream",
                                     headers={**headers, "cache-control": "no-cache"})
        return Response(orjson.dumps(out.body), media_type=JSON, headers=headers)

    async def models(request: Request) -> Response:
        names = [*gw.policy.policy.routes, *gw.escalator.clients]
        data = [{"id": n, "object": "model", "created": 0, "owned_by": "hybrid-router"} for n in names]
        return _json({"object": "list", "data": data}, request)

    async def healthz(request: Request) -> Response:
        return _json({"status": "ok"}, request)

    async def readyz(request: Request) -> Response:
        cache_state = await gw.cache.health()
        ready = len(gw.specialists) > 0 and gw.escalator.ready
        body = {
            "ready": ready,
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


def build_admin_routes(reloader: PolicyReloader, token: str | None) -> list[Route]:
    """`/admin/policy` (GET: version and last reload) and `/admin/policy/reload` (POST), bearer token."""

    def check(request: Request) -> None:
        if token is None:
            raise AuthenticationError("admin endpoints are disabled: set ROUTER_ADMIN_TOKEN", code="admin_disabled")
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), token.encode()):
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
