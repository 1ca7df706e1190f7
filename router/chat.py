"""OpenAI chat completions on top of the gateway: `model` selects a route or a foundation alias.

- classification route: the last user message is classified; the content is the label;
- chat route: a confident in-scope intent with a canned answer is answered from the policy;
  anything else goes to the route's foundation alias with the whole conversation;
- auto route: the request-type specialist picks the foundation tier;
- foundation alias: straight through (non-streaming answers are cached).

A chat request that needs the foundation model and cannot have it is a 503 (open-ended requests
have no specialist answer to fall back on).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from .cache import fingerprint
from .decision import Answer, decide
from .errors import (
    GatewayError,
    ModelNotFoundError,
    ServiceUnavailableError,
    UpstreamTimeoutError,
    error_body,
)
from .gateway import Gateway, Outcome, normalize
from .metrics import STAGE_FOUNDATION
from .policy import AutoRoute, ChatRoute, ClassifyRoute, LoadedPolicy
from .schemas import ChatRequest

__all__ = ["ChatOutcome", "complete"]

_GRACE_S = 0.05


def _left(deadline: float) -> float:
    """Seconds until `deadline` (event-loop time)."""
    return deadline - asyncio.get_running_loop().time()


@dataclass(slots=True)
class ChatOutcome:
    route: str
    path: str
    reason: str
    confidence: float | None
    policy_version: str
    cost_usd: float = 0.0
    body: dict[str, Any] | None = None
    stream: AsyncIterator[bytes] | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def decision_headers(self) -> dict[str, str]:
        return {
            "x-router-route": self.route,
            "x-router-path": self.path,
            "x-router-reason": self.reason,
            "x-router-confidence": "" if self.confidence is None else f"{self.confidence:.4f}",
            "x-router-cost-usd": f"{self.cost_usd:.8f}",
            "x-router-policy-version": self.policy_version,
        }


def _completion(model: str, content: str, prompt_tokens: int = 0, completion_tokens: int = 0) -> dict[str, Any]:
    return {
        "id": "chatcmpl-" + uuid.uuid4().hex[:24],
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


async def _sse_from_text(model: str, content: str, include_usage: bool) -> AsyncIterator[bytes]:
    """A locally answered completion as OpenAI stream chunks."""
    cid = "chatcmpl-" + uuid.uuid4().hex[:24]
    created = int(time.time())
    base = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model}
    for delta, finish in (({"role": "assistant", "content": content}, None), ({}, "stop")):
        chunk = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        yield b"data: " + orjson.dumps(chunk) + b"\n\n"
    if include_usage:
        usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        yield b"data: " + orjson.dumps({**base, "choices": [], "usage": usage}) + b"\n\n"
    yield b"data: [DONE]\n\n"


async def complete(gw: Gateway, req: ChatRequest, tenant: str = "") -> ChatOutcome:
    """Answer one chat request; `tenant` (a hash of the caller's API key) namespaces the cache."""
    policy = gw.policy
    name = req.model
    route = policy.route(name)
    if route is None:
        if name in gw.escalator.clients:
            spec = gw.escalator.clients[name].spec
            return await _foundation(gw, policy, req, tenant, route_name=name, alias=name, reason="passthrough",
                                     confidence=None, cache_ttl_s=spec.cache_ttl_s, deadline_s=spec.deadline_s)
        known = sorted([*policy.policy.routes, *gw.escalator.clients])
        raise ModelNotFoundError(f"unknown model {name!r}; known: {', '.join(known)}", param="model")
    if isinstance(route, ClassifyRoute):
        return await _classify(gw, req, name, tenant)
    return await _gated(gw, policy, req, name, route, tenant)


async def _classify(gw: Gateway, req: ChatRequest, name: str, tenant: str) -> ChatOutcome:
    _, (o,) = await gw.classify(name, [req.last_user_text()], tenant)
    out = _from_outcome(o)
    if req.stream:
        out.stream = _sse_from_text(name, o.label, _include_usage(req))
    else:
        out.body = _completion(name, o.label)
    return out


def _from_outcome(o: Outcome) -> ChatOutcome:
    return ChatOutcome(o.route, o.path, o.reason, o.confidence, o.policy_version, o.cost_usd)


async def _gated(
    gw: Gateway, policy: LoadedPolicy, req: ChatRequest, name: str, route: ChatRoute | AutoRoute, tenant: str
) -> ChatOutcome:
    t0 = time.perf_counter()
    specialist = gw.specialists[route.specialist]
    text = req.last_user_text()[: specialist.max_chars]
    preds, unit_cost = await gw.run_specialist(name, specialist, [text])
    pred = preds[0] if preds else None
    if pred is None and route.on_specialist_error == "fail":
        raise ServiceUnavailableError(f"specialist {specialist.name!r} failed", code="specialist_unavailable",
                                      retry_after_s=5)
    decision = decide(route, pred)
    if isinstance(decision, Answer):
        assert isinstance(route, ChatRoute) and pred is not None
        content = route.answers[decision.label]
        o = Outcome(name, decision.label, pred.confidence, "specialist", "confident", unit_cost,
                    gw.avoided_cost(route.escalate_to, req.last_user_text()), (time.perf_counter() - t0) * 1e3,
                    policy.version, specialist.version, pred.novelty)
        gw.observe(o, time.perf_counter() - t0)
        out = _from_outcome(o)
        if req.stream:
            out.stream = _sse_from_text(name, content, _include_usage(req))
        else:
            out.body = _completion(name, content)
        return out
    gw.metrics.escalations.labels(name, decision.reason).inc()
    return await _foundation(gw, policy, req, tenant, route_name=name, alias=decision.alias, reason=decision.reason,
                             confidence=None if pred is None else pred.confidence, cache_ttl_s=route.cache_ttl_s,
                             deadline_s=route.deadline_s, extra_cost=unit_cost, t0=t0)


def _include_usage(req: ChatRequest) -> bool:
    return bool(req.stream_options and req.stream_options.get("include_usage"))


async def _foundation(
    gw: Gateway,
    policy: LoadedPolicy,
    req: ChatRequest,
    tenant: str,
    *,
    route_name: str,
    alias: str | None,
    reason: str,
    confidence: float | None,
    cache_ttl_s: int,
    deadline_s: float,
    extra_cost: float = 0.0,
    t0: float | None = None,
) -> ChatOutcome:
    """The foundation's answer within `deadline_s` from `t0` (retries and fallbacks included), else 504."""
    start = time.perf_counter() if t0 is None else t0
    deadline = asyncio.get_running_loop().time() + deadline_s - (time.perf_counter() - start)
    blocked = gw.foundation_open(alias)
    if blocked is not None:
        cause = gw.budget.spent_cause() if blocked == "budget_spent" else gw.escalator.unavailable_cause(alias)
        raise ServiceUnavailableError(
            f"no foundation model is available for this request: {cause}",
            code="budget_spent" if blocked == "budget_spent" else "foundation_unavailable",
            retry_after_s=30,
        )
    assert alias is not None
    messages = [m.model_dump(exclude_none=True) for m in req.messages]
    params = req.passthrough_params()
    if req.stream:
        return await _foundation_stream(gw, policy, req, route_name, alias, reason, confidence, messages, params,
                                        extra_cost, start, deadline, deadline_s)

    key = fingerprint("chat", tenant, route_name, alias, policy.version,
                      normalize(orjson.dumps([messages, params], option=orjson.OPT_SORT_KEYS).decode()))
    raw = await gw.cache.get(key) if cache_ttl_s > 0 else None
    computed, why = False, "cache_hit"
    if raw is None:
        async def ask() -> bytes:
            tf = time.perf_counter()
            try:
                result = await gw.escalator.chat(alias, messages, params, _left(deadline))
            finally:
                gw.metrics.stage(STAGE_FOUNDATION, time.perf_counter() - tf)
            usage = result.usage
            await gw.account(result.alias, usage)
            body = result.body
            body["model"] = req.model
            return orjson.dumps({"body": body, "cost_usd": usage.cost_usd, "alias": result.alias})

        # This caller's own bound is a hair later than the call's, so a leader gets the call's error
        # (naming the alias in flight); a caller that joined an identical request, or waits for another
        # replica's, still stops at its deadline.
        bound = asyncio.timeout_at(deadline + _GRACE_S)
        try:
            async with bound:
                raw, computed = await gw.coalescer.run(key, cache_ttl_s, ask)
        except TimeoutError as exc:
            if not bound.expired():
                raise
            raise UpstreamTimeoutError(f"foundation alias {alias!r} did not answer before the request's deadline "
                                       f"({deadline_s:.3g} s)", code="deadline_exceeded") from exc
        why = reason if computed else "coalesced"
    stored = orjson.loads(raw)
    if computed:
        path, cost, avoided = "foundation", stored["cost_usd"] + extra_cost, 0.0
    else:
        path, cost, avoided = "cache", extra_cost, stored["cost_usd"]
    o = Outcome(route_name, "", confidence or 0.0, path, why, cost, avoided, 0.0, policy.version, None, None,
                stored["alias"])
    gw.observe(o, time.perf_counter() - start)
    return ChatOutcome(route_name, path, why, confidence, policy.version, cost, body=stored["body"])


async def _foundation_stream(
    gw: Gateway,
    policy: LoadedPolicy,
    req: ChatRequest,
    route_name: str,
    alias: str,
    reason: str,
    confidence: float | None,
    messages: list[dict[str, Any]],
    params: dict[str, Any],
    extra_cost: float,
    start: float,
    deadline: float,
    deadline_s: float,
) -> ChatOutcome:
    used, chunks, usage_of = await gw.escalator.stream(alias, messages, params, _left(deadline))
    include_usage = _include_usage(req)

    async def next_chunk() -> dict[str, Any] | None:
        # Bounded per chunk, never around a `yield`: a timeout must cancel the upstream read, not
        # the code sending our chunks to the client.
        bound = asyncio.timeout_at(deadline)
        try:
            async with bound:
                return await anext(chunks, None)
        except TimeoutError as exc:
            if not bound.expired():
                raise
            raise UpstreamTimeoutError(f"foundation alias {used!r} did not finish the stream before the "
                                       f"request's deadline ({deadline_s:.3g} s)", code="deadline_exceeded") from exc

    async def sse() -> AsyncIterator[bytes]:
        try:
            while (chunk := await next_chunk()) is not None:
                chunk["model"] = req.model
                if chunk.get("usage") and not chunk.get("choices") and not include_usage:
                    continue
                if not include_usage:
                    chunk.pop("usage", None)
                yield b"data: " + orjson.dumps(chunk) + b"\n\n"
        except GatewayError as exc:  # the status is already sent: report in-band, then close
            err = exc
            yield b"data: " + orjson.dumps(error_body(err)) + b"\n\n"
        finally:
            usage = usage_of()
            await gw.account(used, usage)
            o = Outcome(route_name, "", confidence or 0.0, "foundation", reason, usage.cost_usd + extra_cost,
                        0.0, 0.0, policy.version, None, None, used)
            gw.observe(o, time.perf_counter() - start)
        yield b"data: [DONE]\n\n"

    return ChatOutcome(route_name, "foundation", reason, confidence, policy.version, extra_cost, stream=sse())
