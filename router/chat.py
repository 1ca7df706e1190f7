"""OpenAI chat completions on top of the gateway: `model` selects a route or a foundation alias.

- classification route: the last user message is classified; the content is the label;
- chat route: a confident in-scope intent with a canned answer is answered from the policy;
  anything else goes to the route's foundation alias with the whole conversation;
- auto route: the request-type specialist picks the foundation tier;
- foundation alias: straight through (non-streaming answers are cached).

A locally made answer honours what the caller asked for: `n` identical choices, `logprobs` from
the calibrated confidence, and `response_format` or a forced tool call rendered from the label
when the schema admits it (`structured.py`); when it does not, the request goes to the route's
foundation alias with reason `structured_output`. A chat request that needs the foundation
model and cannot have it is a 503 (open-ended requests have no specialist answer to fall back on).

Streams are chunk dicts (`ChatOutcome.stream`); the HTTP layer frames them (chat completions as
`data:` lines and `[DONE]`, the Responses API as its own events).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from .cache import fingerprint
from .decision import Answer, decide
from .errors import (
    GatewayError,
    InvalidRequestError,
    ModelNotFoundError,
    PermissionDeniedError,
    ServiceUnavailableError,
    UpstreamTimeoutError,
    error_body,
)
from .gateway import Gateway, Outcome
from .metrics import STAGE_FOUNDATION
from .openai_wire import (
    LocalAnswer,
    completion,
    completion_chunks,
    label_logprobs,
    relay_chunk,
    relay_completion,
    restamp,
)
from .policy import AutoRoute, ChatRoute, ClassifyRoute, LoadedPolicy
from .schemas import ChatRequest
from .structured import StructuredRequest, render, wants_structure

__all__ = ["ChatOutcome", "complete"]

_NOT_IN_CACHE_KEY = ("user",)
"""Forwarded for the provider's abuse monitoring, but never a reason to miss the shared cache."""
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
    stream: AsyncIterator[dict[str, Any]] | None = None
    """Chunk dicts (`chat.completion.chunk`, or one `{"error": ...}` after a failure mid-stream)."""
    headers: dict[str, str] = field(default_factory=dict)
    specialist: str | None = None
    """Classification routes: the cascade tier's specialist whose prediction is reported, and its tier."""
    tier: int | None = None

    def decision_headers(self) -> dict[str, str]:
        return {
            "x-router-route": self.route,
            "x-router-path": self.path,
            "x-router-reason": self.reason,
            "x-router-confidence": "" if self.confidence is None else f"{self.confidence:.4f}",
            "x-router-cost-usd": f"{self.cost_usd:.8f}",
            "x-router-policy-version": self.policy_version,
            **({"x-router-tier": str(self.tier), "x-router-specialist": self.specialist} if self.specialist else {}),
        }


async def _aiter(items: Iterable[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    for item in items:
        yield item


def _structured(req: ChatRequest) -> StructuredRequest:
    fwd = req.forwarded()
    return StructuredRequest(fwd.get("response_format"), fwd.get("tools"), fwd.get("tool_choice"))


def _answer(req: ChatRequest, structure: StructuredRequest, text: str, label: str, confidence: float,
            probabilities: dict[str, float] | None = None) -> LocalAnswer | None:
    """The locally made answer `text` in the form the caller asked for; None when it cannot be made."""
    rendered = render(structure, text)
    if rendered is None:
        return None
    content, tool_call = rendered
    logprobs = None
    if req.logprobs:
        logprobs = label_logprobs(content if content is not None and content == text else label, confidence,
                                  probabilities, req.top_logprobs or 0)
    return LocalAnswer(content, tool_call, logprobs)


def _local(out: ChatOutcome, req: ChatRequest, answer: LocalAnswer) -> ChatOutcome:
    n = req.n or 1
    if req.stream:
        out.stream = _aiter(completion_chunks(req.model, answer, n, req.include_usage()))
    else:
        out.body = completion(req.model, answer, n)
    return out


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
    # A route's specialist reads the last user message (or, with none, the last message): it
    # must say something.
    if not req.last_user_text().strip():
        raise InvalidRequestError(f"route {name!r} classifies the last user message (or, without one, the last "
                                  "message), which has no text (empty or whitespace only)", param="messages")
    if isinstance(route, ClassifyRoute):
        return await _classify(gw, policy, req, name, route, tenant)
    return await _gated(gw, policy, req, name, route, tenant)


async def _classify(gw: Gateway, policy: LoadedPolicy, req: ChatRequest, name: str, route: ClassifyRoute,
                    tenant: str) -> ChatOutcome:
    structure = _structured(req)
    classes = gw.specialists[route.specialist].classes
    if wants_structure(structure) and not all(render(structure, c) is not None for c in classes):
        return await _structured_escalation(gw, policy, req, tenant, name, route.escalate_to, route.cache_ttl_s)
    _, (o,) = await gw.classify(name, [req.last_user_text()], tenant)
    answer = _answer(req, structure, o.label, o.label, o.confidence)
    assert answer is not None  # every label renders (checked above)
    usage = {"prompt_tokens": o.prompt_tokens, "completion_tokens": o.completion_tokens}
    out = _from_outcome(o)
    n = req.n or 1
    if req.stream:
        out.stream = _aiter(completion_chunks(req.model, answer, n, req.include_usage(), usage))
    else:
        out.body = completion(req.model, answer, n, usage)
    return out


async def _structured_escalation(gw: Gateway, policy: LoadedPolicy, req: ChatRequest, tenant: str, name: str,
                                 alias: str | None, cache_ttl_s: int, extra_cost: float = 0.0,
                                 t0: float | None = None) -> ChatOutcome:
    if alias is None:
        raise InvalidRequestError(
            f"route {name!r} answers with a specialist label, which cannot satisfy the requested "
            "response_format or tool choice, and the route has no foundation model to ask",
            param="tool_choice" if req.tool_choice is not None else "response_format")
    gw.metrics.escalations.labels(name, "structured_output").inc()
    # An open-ended completion, not a label: the alias's chat deadline, not the route's label deadline.
    client = gw.escalator.clients.get(alias)
    deadline_s = client.spec.deadline_s if client is not None else 60.0
    return await _foundation(gw, policy, req, tenant, route_name=name, alias=alias, reason="structured_output",
                             confidence=None, cache_ttl_s=cache_ttl_s, deadline_s=deadline_s, extra_cost=extra_cost,
                             t0=t0)


def _from_outcome(o: Outcome) -> ChatOutcome:
    return ChatOutcome(o.route, o.path, o.reason, o.confidence, o.policy_version, o.cost_usd,
                       specialist=o.specialist, tier=o.tier)


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
        answer = _answer(req, _structured(req), content, decision.label, pred.confidence,
                         dict(pred.probabilities))
        if answer is None:
            return await _structured_escalation(gw, policy, req, tenant, name, route.escalate_to,
                                                route.cache_ttl_s, unit_cost, t0)
        o = Outcome(name, decision.label, pred.confidence, "specialist", "confident", unit_cost,
                    gw.avoided_cost(route.escalate_to, req.last_user_text()), (time.perf_counter() - t0) * 1e3,
                    policy.version, specialist.version, pred.novelty)
        gw.observe(o, time.perf_counter() - t0)
        return _local(_from_outcome(o), req, answer)
    gw.metrics.escalations.labels(name, decision.reason).inc()
    return await _foundation(gw, policy, req, tenant, route_name=name, alias=decision.alias, reason=decision.reason,
                             confidence=None if pred is None else pred.confidence, cache_ttl_s=route.cache_ttl_s,
                             deadline_s=route.deadline_s, extra_cost=unit_cost, t0=t0)


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
    if blocked == "alias_not_permitted":
        raise PermissionDeniedError(f"this API key may not use alias {alias!r}", param="model")
    if blocked is not None:
        cause = gw.budget.spent_cause() if blocked == "budget_spent" else gw.escalator.unavailable_cause(alias)
        raise ServiceUnavailableError(
            f"no foundation model is available for this request: {cause}",
            code="budget_spent" if blocked == "budget_spent" else "foundation_unavailable",
            retry_after_s=30,
        )
    assert alias is not None
    # Only validated fields, rebuilt from the closed models: nothing the caller wrote goes on as is.
    messages = [m.model_dump(exclude_none=True, by_alias=True) for m in req.messages]
    params = req.forwarded()
    if req.stream:
        return await _foundation_stream(gw, policy, req, route_name, alias, reason, confidence, messages, params,
                                        extra_cost, start, deadline, deadline_s)

    # The exact canonical request: whitespace inside messages is meaning (code, poems, tables).
    keyed = {k: v for k, v in params.items() if k not in _NOT_IN_CACHE_KEY}
    key = fingerprint("chat", tenant, route_name, alias, policy.version,
                      orjson.dumps([messages, keyed], option=orjson.OPT_SORT_KEYS).decode())
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
            body = relay_completion(result.body, req.model)
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
        body = stored["body"]
    else:
        path, cost, avoided = "cache", extra_cost, stored["cost_usd"]
        body = restamp({**stored["body"], "model": req.model})
    o = Outcome(route_name, "", confidence or 0.0, path, why, cost, avoided, 0.0, policy.version, None, None,
                stored["alias"])
    gw.observe(o, time.perf_counter() - start)
    return ChatOutcome(route_name, path, why, confidence, policy.version, cost, body=body)


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
    include_usage = req.include_usage()

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

    async def relay() -> AsyncIterator[dict[str, Any]]:
        try:
            while (data := await next_chunk()) is not None:
                chunk = relay_chunk(data, req.model)
                if chunk.get("usage") and not chunk["choices"] and not include_usage:
                    continue
                if not include_usage:
                    chunk.pop("usage", None)
                yield chunk
        except GatewayError as exc:  # the status is already sent: report in-band, then close
            yield error_body(exc)
        finally:
            usage = usage_of()
            await gw.account(used, usage)
            o = Outcome(route_name, "", confidence or 0.0, "foundation", reason, usage.cost_usd + extra_cost,
                        0.0, 0.0, policy.version, None, None, used)
            gw.observe(o, time.perf_counter() - start)

    return ChatOutcome(route_name, "foundation", reason, confidence, policy.version, extra_cost, stream=relay())
