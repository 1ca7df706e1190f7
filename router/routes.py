"""HTTP <-> gateway: thin Starlette handlers for the classify, OpenAI and health endpoints.

Handlers parse and validate the body (size cap, JSON, schema: each failure a 4xx naming what is
wrong), call the gateway, and render JSON with orjson. Every response carries `x-request-id`;
answers also carry the routing decision in `x-router-*` headers.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from .access import current, safe_request_id
from .auth import Authenticator, Caller
from .chat import ChatOutcome, complete
from .errors import AuthenticationError, InvalidRequestError, ModelNotFoundError, PayloadTooLargeError
from .gateway import Gateway
from .metrics import CONTENT_TYPE_LATEST
from .reload import PolicyReloader
from .responses_api import ResponsesRequest, events_from_chunks, response_from_completion, to_chat_request
from .schemas import ChatRequest, ClassifyRequest, FieldError

__all__ = ["build_admin_routes", "build_routes", "request_id"]

M = TypeVar("M", bound=BaseModel)
JSON = "application/json"


def request_id(request: Request) -> str:
    """The caller's ``x-request-id`` if it is safe to echo, else 32 random hex digits; once per request.

    The access-log middleware (`access.AccessLog`) picks it first; kept in ``scope["state"]``
    (what ``request.state`` wraps) without building the State and Headers objects: this runs on
    every answer.
    """
    state = request.scope.setdefault("state", {})
    rid = state.get("request_id")
    if rid is None:  # an app built without the middleware
        given = next((v for k, v in request.scope["headers"] if k == b"x-request-id"), None)
        rid = state["request_id"] = safe_request_id(None if given is None else given.decode("latin-1"))
    return str(rid)


def tenant_of(request: Request, per_tenant: bool, caller: Caller | None = None) -> str:
    """Cache namespace of the caller: its key's tenant with keys on, else a hash of its
    Authorization header (the header itself is never kept)."""
    if not per_tenant:
        return ""
    if caller is not None:
        return "t:" + caller.tenant
    key = next((v for k, v in request.scope["headers"] if k == b"authorization"), b"")  # no Headers object
    # latin-1 -> UTF-8: the bytes Headers.get(...).encode() gave, so namespaces stay as they were
    return hashlib.sha256(key.decode("latin-1").encode()).hexdigest()[:16] if key else ""


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
    return _validate(model, await _read_object(request, max_bytes, drain_bytes))


async def _read_object(request: Request, max_bytes: int, drain_bytes: int) -> dict[str, Any]:
    """The request body as a JSON object (size-capped), noting the route it names for metrics."""
    declared = next((v for k, v in request.scope["headers"] if k == b"content-length"), None)
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise await _too_large(request, max_bytes, drain_bytes, 0)
    body = bytearray()
    receive = request.receive
    # The ASGI messages read directly (what `Request.stream()` does, without its async generator:
    # this runs on every request). After a 413 `_too_large` reads the rest through `stream()`.
    while True:
        message = await receive()
        if message["type"] != "http.request":  # http.disconnect
            raise ClientDisconnect()
        body += message.get("body", b"")
        if len(body) > max_bytes:
            raise await _too_large(request, max_bytes, drain_bytes, len(body))
        if not message.get("more_body", False):
            break
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequestError(f"request body is not valid JSON (UTF-8): {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidRequestError("request body must be a JSON object")
    name = data.get("task", data.get("model"))
    if isinstance(name, str):
        request.scope.setdefault("state", {})["route"] = name  # (request.state) for the error metric, before validation can fail
    return data


def _validate(model: type[M], data: dict[str, Any]) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _invalid(exc, data) from exc


def _invalid(exc: ValidationError, data: dict[str, Any]) -> InvalidRequestError:
    """The one validation error worth reporting, with `param` naming the field at fault.

    An unknown parameter is reported first and by name (it is the one the caller must drop); among
    the alternatives of a union (a string or a list of strings), the most specific error wins.
    """
    errors = exc.errors()
    first = next((e for e in errors if e["type"] == "extra_forbidden"), None) or next(
        (e for e in errors if not e["type"].endswith("_type") and e["type"] != "union_tag_invalid"), errors[0])
    cause = (first.get("ctx") or {}).get("error")
    if isinstance(cause, FieldError):
        return InvalidRequestError(str(cause), param=cause.param)
    loc = _readable_loc(first["loc"], data, missing=first["type"] == "missing")
    if first["type"] == "union_tag_invalid":  # the discriminator's value is what is wrong
        tag = str((first.get("ctx") or {}).get("discriminator", "")).strip("'")
        loc = f"{loc}.{tag}" if loc and tag else loc
    if first["type"] == "extra_forbidden":
        what = "parameter" if "." not in loc and "[" not in loc else "field"
        return InvalidRequestError(f"unsupported {what}: {loc}", param=loc, code="unsupported_parameter")
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return InvalidRequestError(f"{loc}: {first['msg']}{more}" if loc else first["msg"], param=loc or None,
                               code=_code(first["type"], first.get("input"), loc))


_DECIMALS = ("temperature", "top_p", "presence_penalty", "frequency_penalty", "logit_bias")


def _code(kind: str, value: Any, loc: str) -> str:
    """OpenAI's error code for a pydantic error type (`invalid_value` when nothing closer fits)."""
    integer = isinstance(value, int) and not isinstance(value, bool) and not loc.startswith(_DECIMALS)
    number = "integer" if integer else "decimal"
    if kind in ("greater_than", "greater_than_equal"):
        return f"{number}_below_min_value"
    if kind in ("less_than", "less_than_equal"):
        return f"{number}_above_max_value"
    if kind == "string_too_long":
        return "string_above_max_length"
    if kind == "string_too_short":
        return "string_below_min_length"
    if kind == "too_long":
        return "array_above_max_length"
    if kind == "too_short":
        return "empty_array" if isinstance(value, list | dict) and not value else "array_below_min_length"
    if kind == "missing":
        return "missing_required_parameter"
    if kind.endswith("_type") or kind in ("model_type", "dict_type", "list_type"):
        return "invalid_type"
    return "invalid_value"


def _readable_loc(loc: tuple[int | str, ...], data: Any, missing: bool) -> str:
    """`messages[0].content`, as OpenAI writes it, rather than pydantic's `messages.0.user.content.str`.

    Union branch names and discriminator tags are parts of pydantic's path that are not in the
    request: the path reported is the longest subsequence of pydantic's that exists in the request
    and ends at the field at fault (for a missing field: ends with its name).
    """

    def walk(i: int, node: Any, end: int, need_last: bool) -> list[int | str] | None:
        if i == end:
            return []
        part = loc[i]
        in_dict = isinstance(node, dict) and isinstance(part, str) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if in_dict or in_list:
            rest = walk(i + 1, node[part], end, need_last)
            if rest is not None:
                return [part, *rest]
        if i == end - 1 and need_last:
            return None
        return walk(i + 1, node, end, need_last)

    if missing:
        found = walk(0, data, len(loc) - 1, need_last=False)
        parts = None if found is None else [*found, loc[-1]]
    else:
        # Ends at the last part when it is in the request (a union branch can share a field's
        # name: `{"type": "text", "text": ...}`); else at the deepest part that is.
        parts = walk(0, data, len(loc), need_last=True) or walk(0, data, len(loc), need_last=False)
    return _openai_path(parts if parts is not None else list(loc))


def _openai_path(parts: list[int | str]) -> str:
    """`messages[0].role`: list indices in brackets, as OpenAI writes `param`."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


_STATEFUL = ("previous_response_id", "conversation", "prompt", "background")
"""Responses API parameters that need stored state: a clear 400 until the gateway stores anything."""


async def _chat_sse(chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        yield b"data: " + orjson.dumps(chunk) + b"\n\n"
    yield b"data: [DONE]\n\n"


async def _responses_sse(req: ResponsesRequest, chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    async for kind, event in events_from_chunks(req, chunks):
        yield b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


def build_routes(gw: Gateway, max_body_bytes: int, max_batch: int, per_tenant_cache: bool,
                 drain_bytes: int, auth: Authenticator, metrics_token: str | None = None) -> list[Route]:
    started = int(time.time())

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
            # Header names pre-encoded: this is the specialist path's answer (issue 15).
            raw = [(b"x-request-id", request_id(request).encode()), (b"x-router-route", o.route.encode("latin-1")),
                   (b"x-router-path", o.path.encode()), (b"x-router-reason", o.reason.encode()),
                   (b"x-router-confidence", b"%.4f" % o.confidence), (b"x-router-cost-usd", b"%.8f" % o.cost_usd),
                   (b"x-router-policy-version", o.policy_version.encode("latin-1"))]
            if o.specialist:
                raw += [(b"x-router-tier", str(o.tier).encode()), (b"x-router-specialist", o.specialist.encode("latin-1"))]
            return _Raw(orjson.dumps(o.to_dict()), raw)
        ctx = current()
        if ctx is not None:  # a batch has no single path: its access line counts them
            ctx.fields["inputs"] = len(outcomes)
            ctx.fields["paths"] = {p: sum(o.path == p for o in outcomes) for p in {o.path for o in outcomes}}
            ctx.fields["cost_usd"] = sum(o.cost_usd for o in outcomes)
        return _json({"results": [o.to_dict() for o in outcomes], "policy_version": policy.version}, request,
                     headers={"x-router-route": req.task, "x-router-policy-version": policy.version})

    def permit(caller: Caller | None, model: str) -> None:
        if caller is not None:
            if model in gw.policy.policy.routes:
                auth.use(caller, "route", model, "model")
            else:  # an alias, or unknown (404 below)
                auth.use(caller, "alias" if model in gw.escalator.clients else None, model, "model")

    async def chat_completions(request: Request) -> Response:
        caller = await auth.admit(request)
        req = await _parse(request, ChatRequest, max_body_bytes, drain_bytes)
        permit(caller, req.model)
        out = await complete(gw, req, tenant_of(request, per_tenant_cache, caller))
        headers = {"x-request-id": request_id(request), **out.decision_headers()}
        if out.stream is not None:
            return StreamingResponse(_chat_sse(out.stream), media_type="text/event-stream",
                                     headers={**headers, "cache-control": "no-cache"})
        return Response(orjson.dumps(out.body), media_type=JSON, headers=headers)

    async def responses(request: Request) -> Response:
        caller = await auth.admit(request)  # before the body is read, as for chat completions
        data = await _read_object(request, max_body_bytes, drain_bytes)
        for key in _STATEFUL:
            if data.get(key) is not None:
                raise InvalidRequestError(f"{key} is not supported: the gateway is stateless and stores no "
                                          "responses; send the whole conversation as input", param=key,
                                          code="unsupported_parameter")
        req = _validate(ResponsesRequest, data)
        permit(caller, req.model)
        out: ChatOutcome = await complete(gw, _validate(ChatRequest, to_chat_request(req)),
                                          tenant_of(request, per_tenant_cache, caller))
        headers = {"x-request-id": request_id(request), **out.decision_headers()}
        if out.stream is not None:
            return StreamingResponse(_responses_sse(req, out.stream), media_type="text/event-stream",
                                     headers={**headers, "cache-control": "no-cache"})
        assert out.body is not None
        return Response(orjson.dumps(response_from_completion(req, out.body)), media_type=JSON, headers=headers)

    def _model(name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": started, "owned_by": "hybrid-router"}

    async def models(request: Request) -> Response:
        caller = await auth.admit(request)
        names = [*gw.policy.policy.routes, *gw.escalator.clients]
        if caller is not None:  # only what this key may use
            auth.use(caller)
            names = [n for n in names if caller.record.permits("route" if n in gw.policy.policy.routes
                                                               else "alias", n)]
        return _json({"object": "list", "data": [_model(n) for n in names]}, request)

    async def model(request: Request) -> Response:
        caller = await auth.admit(request)
        name = request.path_params["model"]
        known = name in gw.policy.policy.routes or name in gw.escalator.clients
        if known and caller is not None:
            auth.use(caller)
            known = caller.record.permits("route" if name in gw.policy.policy.routes else "alias", name)
        if not known:
            raise ModelNotFoundError(f"the model {name[:256]!r} does not exist", param="model")
        return _json(_model(name), request)

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
        gw.metrics.set_breakers(gw.escalator.breakers_open())
        return Response(gw.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return [
        Route("/v1/classify", classify, methods=["POST"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/responses", responses, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/models/{model:path}", model, methods=["GET"]),
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
