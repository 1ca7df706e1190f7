"""One classification request: cache -> specialist -> decide -> answer or escalate -> store -> observe.

`Gateway` holds the collaborators built at start-up (specialists, cache, escalator, metrics,
budget) and the current policy. A request reads `self.policy` once, so a policy swap is atomic:
requests in flight finish on the policy they started with. The chat API (`chat.py`) builds on
`run_specialist`, `foundation_open`, `avoided_cost` and `observe` here.
"""

from __future__ import annotations

import asyncio
import logging
import time
import unicodedata
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import orjson
from starlette.concurrency import run_in_threadpool

from specialists import InferenceError, Prediction, Specialist, SpecialistSet

from .auth import alias_permitted, charge
from .budget import BudgetTracker
from .cache import ResponseCache, fingerprint
from .candidates import CandidateShadow, Sample
from .coalesce import Coalescer
from .decision import Answer, Escalate, decide, next_tier
from .errors import (
    GatewayError,
    InvalidRequestError,
    ModelNotFoundError,
    ServiceUnavailableError,
    UpstreamRejectedError,
    UpstreamTimeoutError,
)
from .escalation import Escalator, InvalidLabelError, Usage
from .escalation_log import EscalationLog
from .metrics import STAGE_CACHE, STAGE_FOUNDATION, STAGE_SPECIALIST, GatewayMetrics
from .policy import ClassifyRoute, LoadedPolicy
from .redis_state import RedisState
from .shadow import ShadowChecker

__all__ = ["Gateway", "Outcome", "normalize"]

log = logging.getLogger("router.gateway")

# Batches up to this size run on the event loop: one text takes ~20-30 µs, less than a hop to
# the thread pool costs. Larger batches go to a worker thread so the loop stays responsive.
_INLINE_BATCH = 8
# Rough size of the built-in classification prompt, for estimating avoided foundation cost.
_PROMPT_OVERHEAD_TOKENS = 40
_LABEL_TOKENS = 4


def normalize(text: str) -> str:
    """Canonical form for cache keys: NFC, whitespace runs collapsed, ends stripped."""
    return " ".join(unicodedata.normalize("NFC", text).split())


@dataclass(slots=True)
class Outcome:
    route: str
    label: str
    confidence: float
    path: str
    reason: str
    cost_usd: float
    cost_avoided_usd: float
    latency_ms: float
    policy_version: str
    specialist_version: str | None
    novelty: float | None
    foundation_alias: str | None = None
    prompt_tokens: int = 0
    """Foundation tokens this answer cost (0 unless it was computed by a foundation call)."""
    completion_tokens: int = 0
    specialist: str | None = None
    """The specialist tier whose prediction is reported (the one that answered on the specialist path)."""
    tier: int | None = None
    """1-based position of `specialist` in the route's cascade."""

    def to_dict(self) -> dict[str, object]:
        return {
            "route": self.route,
            "label": self.label,
            "confidence": round(self.confidence, 6),
            "path": self.path,
            "reason": self.reason,
            "cost_usd": self.cost_usd,
            "cost_avoided_usd": self.cost_avoided_usd,
            "latency_ms": round(self.latency_ms, 3),
            "policy_version": self.policy_version,
            "specialist_version": self.specialist_version,
            "novelty": None if self.novelty is None else round(self.novelty, 4),
            "foundation_alias": self.foundation_alias,
            "specialist": self.specialist,
            "tier": self.tier,
        }


class Gateway:
    def __init__(
        self,
        policy: LoadedPolicy,
        specialists: SpecialistSet,
        cache: ResponseCache,
        escalator: Escalator,
        metrics: GatewayMetrics,
        budget: BudgetTracker,
        coalescer: Coalescer,
        escalation_log: EscalationLog,
        shadow: ShadowChecker,
        cpu_usd_per_core_hour: float,
        state: RedisState | None = None,
        cascade_threads: int = 2,
        candidates: CandidateShadow | None = None,
    ) -> None:
        self.shadow = shadow
        self.candidates = candidates if candidates is not None else CandidateShadow(metrics, self.avoided_cost)
        """Shadow candidates of routes that name one (`router/candidates.py`)."""
        # The replicas' shared state that must never be evicted (budget counters, escalation
        # log, policy, API keys): the cache's Redis unless a separate cache Redis is configured.
        self.state = state if state is not None else cache.state
        self._cascade_threads = max(1, cascade_threads)
        self._cascade_pool: ThreadPoolExecutor | None = None
        self.coalescer = coalescer
        self.escalation_log = escalation_log
        self.policy = policy
        self.specialists = specialists
        self.cache = cache
        self.escalator = escalator
        self.metrics = metrics
        self.budget = budget
        self.draining = False
        """Set on SIGTERM: /readyz turns false while requests in flight finish."""
        self._cpu_usd_per_s = cpu_usd_per_core_hour / 3600.0

    # ---- shared steps -------------------------------------------------------------------------
    async def run_specialist(
        self, route_name: str, specialist: Specialist, texts: Sequence[str]
    ) -> tuple[list[Prediction] | None, float]:
        """Predict a batch; returns (predictions or None on failure, specialist cost per text).

        Small batches run inline on the event loop, where the work is CPU-bound, so its wall time
        is its CPU time (`time.thread_time()` is a system call here: profiled at ~5% of the
        specialist path). Large batches run in a worker thread and are timed with `thread_time`.
        """
        t0 = time.perf_counter()
        try:
            if len(texts) == 1:
                preds = [specialist.predict_one(texts[0])]
                cpu = time.perf_counter() - t0
            elif len(texts) <= _INLINE_BATCH:
                preds = specialist.predict(texts)
                cpu = time.perf_counter() - t0
            else:
                preds, cpu = await run_in_threadpool(_predict_timed, specialist, texts)
        except InferenceError:
            log.warning("specialist %s failed on route %s", specialist.name, route_name)
            self.metrics.specialist_errors.labels(route_name).inc()
            return None, 0.0
        self.metrics.stage(STAGE_SPECIALIST, time.perf_counter() - t0)
        self.metrics.observe_predictions(route_name, preds)
        return preds, cpu * self._cpu_usd_per_s / max(1, len(texts))

    async def run_tier(
        self, route_name: str, tier: int, specialist: Specialist, texts: Sequence[str],
        previous: Sequence[Prediction | None],
    ) -> tuple[list[Prediction] | None, float]:
        """Run cascade tier `tier` (0-based, >= 1) over the inputs the previous tier was unsure of
        (`previous`: that tier's answers, which a tier with a fitted blend combines with its own).

        Always off the event loop, in a pool of `cascade_threads` threads (created on first use): a
        transformer tier takes milliseconds per text, and a burst of unsure inputs must not stall
        the confident answers of other requests. One call per batch and tier.
        """
        if self._cascade_pool is None:
            self._cascade_pool = ThreadPoolExecutor(self._cascade_threads, thread_name_prefix="cascade")
        t0 = time.perf_counter()
        label = str(tier + 1)
        self.metrics.tier_inputs(route_name, label, len(texts))
        try:
            loop = asyncio.get_running_loop()
            preds, cpu = await loop.run_in_executor(self._cascade_pool, _predict_timed, specialist, texts, previous)
        except InferenceError:
            log.warning("specialist %s (tier %s) failed on route %s", specialist.name, label, route_name)
            self.metrics.specialist_errors.labels(route_name).inc()
            return None, 0.0
        self.metrics.tier_duration(label, time.perf_counter() - t0)
        self.metrics.observe_predictions(route_name, preds)
        return preds, cpu * self._cpu_usd_per_s / max(1, len(texts))

    def close(self) -> None:
        """Stop the cascade pool's threads (after the server stopped taking requests)."""
        if self._cascade_pool is not None:
            self._cascade_pool.shutdown(wait=False, cancel_futures=True)

    async def account(self, alias: str, usage: Usage) -> None:
        """Book a foundation call: the shared budget, the calling key's budget and the token counters."""
        await self.budget.add(usage.cost_usd)
        charge(usage.cost_usd, usage.prompt_tokens + usage.completion_tokens)
        self.metrics.foundation_tokens.labels(alias, "prompt").inc(usage.prompt_tokens)
        self.metrics.foundation_tokens.labels(alias, "completion").inc(usage.completion_tokens)

    def foundation_open(self, alias: str | None) -> str | None:
        """None if `alias` can be called now, else the degradation reason."""
        if alias is None or not self.escalator.available(alias):
            return "foundation_unavailable"
        if not alias_permitted(alias):
            return "alias_not_permitted"
        if self.budget.exhausted():
            return "budget_spent"
        return None

    def avoided_cost(self, alias: str | None, text: str) -> float:
        tokens = _PROMPT_OVERHEAD_TOKENS + len(text) // 4
        return self.escalator.estimate_cost(alias, tokens, _LABEL_TOKENS)

    def observe(self, o: Outcome, seconds: float) -> None:
        # Money is attributed to an alias only on the foundation path; elsewhere it is CPU time.
        alias = (o.foundation_alias or "none") if o.path == "foundation" else "none"
        self.metrics.answered(o.route, o.path, o.reason, seconds, o.cost_usd, alias, o.cost_avoided_usd)

    # ---- classification ----------------------------------------------------------------------
    def classify_route(self, policy: LoadedPolicy, name: str) -> ClassifyRoute:
        route = policy.route(name)
        if route is None:
            raise ModelNotFoundError(
                f"unknown task {name!r}; known: {', '.join(sorted(policy.policy.routes))}", param="task"
            )
        if not isinstance(route, ClassifyRoute):
            raise InvalidRequestError(
                f"route {name!r} is a {route.kind} route; send it to /v1/chat/completions", param="task"
            )
        return route

    async def classify(
        self, route_name: str, texts: Sequence[str], tenant: str = ""
    ) -> tuple[LoadedPolicy, list[Outcome]]:
        """Answer a batch in order. `tenant` (a hash of the caller's API key) namespaces the cache."""
        t0 = time.perf_counter()
        policy = self.policy
        route = self.classify_route(policy, route_name)
        # names straight from the route: `route.tiers()` builds a pydantic model per call (request path)
        tiers = [self.specialists[route.specialist], *(self.specialists[t.specialist] for t in route.cascade)]
        specialist = tiers[0]
        versions = "+".join(s.version for s in tiers)  # a new model in any tier is a new cache key
        texts = [t[: specialist.max_chars] for t in texts]
        outcomes: list[Outcome | None] = [None] * len(texts)

        # Answers held in process (near cache / in-process cache: no I/O) are served first. Then
        # the specialist: only foundation answers are ever cached, and a confident answer of this
        # specialist version under this policy version can never have been escalated, so Redis is
        # asked only for the texts that escalate (profiled: the GET was ~19% of the specialist
        # path's time at concurrency 8, for nothing).
        keys = [fingerprint("classify", tenant, route_name, normalize(t), versions, policy.version,
                            route.escalate_to or "") for t in texts]
        todo: list[int] = []
        for i, key in enumerate(keys):
            held = self.cache.peek(key)
            if held is None:
                todo.append(i)
            else:
                self.metrics.cache_event("hit")
                outcomes[i] = self._cached(route_name, policy, specialist, held, None, 0.0)
        if not todo:
            return self._finish(policy, outcomes, t0)
        pending = [texts[i] for i in todo]
        preds, unit_cost = await self.run_specialist(route_name, specialist, pending)
        if preds is None and route.on_specialist_error == "fail":
            raise ServiceUnavailableError(f"specialist {specialist.name!r} failed", code="specialist_unavailable",
                                          retry_after_s=5)
        escalating: list[tuple[int, Prediction | None, Escalate]] = []
        drifted = route_name in self.shadow.tripped
        # Per input: the last tier that ran (its specialist, prediction) and the CPU cost so far.
        ran: dict[int, tuple[int, Specialist]] = {}
        costs: dict[int, float] = {}
        unsure: list[tuple[int, Prediction | None]] = []
        for j, i in enumerate(todo):
            pred = preds[j] if preds is not None else None
            ran[i], costs[i] = (0, specialist), unit_cost
            decision = Escalate("shadow_drift", route.escalate_to) if drifted else decide(route, pred)
            if next_tier(route, 0, decision):
                unsure.append((i, pred))
            elif isinstance(decision, Answer):
                assert pred is not None
                outcomes[i] = self._answer(policy, route_name, route, specialist, 0, texts[i], pred, unit_cost)
            elif pred is not None and decision.reason == "low_confidence" and self._foundation_weaker(
                    policy, route_name, route, pred.confidence):
                outcomes[i] = Outcome(
                    route_name, pred.label, pred.confidence, "degraded", "foundation_weaker", unit_cost, 0.0, 0.0,
                    policy.version, specialist.version, pred.novelty, specialist=specialist.name, tier=1,
                )
            else:
                escalating.append((i, pred, decision))
        if preds is not None:
            self.metrics.tier_inputs(route_name, "1", len(todo))
        tier = 0
        while unsure:  # the cascade: each further tier runs once over this batch's unsure inputs
            tier += 1
            spec = tiers[tier]
            tier_preds, tier_cost = await self.run_tier(route_name, tier, spec, [texts[i] for i, _ in unsure],
                                                        [prev for _, prev in unsure])
            still: list[tuple[int, Prediction | None]] = []
            for j, (i, prev) in enumerate(unsure):
                pred = tier_preds[j] if tier_preds is not None else None
                costs[i] += tier_cost
                decision = decide(route, pred, tier)
                if pred is not None:
                    ran[i] = (tier, spec)
                if next_tier(route, tier, decision):
                    still.append((i, pred if pred is not None else prev))
                elif isinstance(decision, Answer):
                    assert pred is not None
                    outcomes[i] = self._answer(policy, route_name, route, spec, tier, texts[i], pred, costs[i])
                else:
                    # the reported prediction is the last one made (a failed tier keeps the one before)
                    escalating.append((i, pred if pred is not None else prev, decision))
            unsure = still

        if escalating:
            # One deadline for the request's escalations, from its start (the specialist's time counts).
            deadline = asyncio.get_running_loop().time() + route.deadline_s - (time.perf_counter() - t0)
            tc = time.perf_counter()
            cached = await asyncio.gather(*(self.cache.get(keys[i]) for i, _, _ in escalating))
            self.metrics.stage(STAGE_CACHE, time.perf_counter() - tc)
            slots: list[int] = []
            jobs = []
            for (i, pred, decision), raw in zip(escalating, cached, strict=True):
                k, spec = ran.get(i, (0, specialist))
                if raw is not None:
                    outcomes[i] = self._tagged(
                        self._cached(route_name, policy, spec, raw, pred, costs.get(i, unit_cost)), spec, k)
                    continue
                slots.append(i)
                jobs.append(self._escalate(policy, route_name, route, spec, texts[i], keys[i], pred,
                                           costs.get(i, unit_cost), decision, deadline))
            for i, result in zip(slots, await asyncio.gather(*jobs), strict=True):
                k, spec = ran.get(i, (0, specialist))
                outcomes[i] = self._tagged(result, spec, k)
        if route.candidate is not None and preds is not None:
            self._offer_candidate(route_name, route, [texts[i] for i in todo], preds, [outcomes[i] for i in todo])
        return self._finish(policy, outcomes, t0)

    def _offer_candidate(self, route_name: str, route: ClassifyRoute, texts: Sequence[str],
                         preds: Sequence[Prediction], outcomes: Sequence[Outcome | None]) -> None:
        """Offer a sample of the inputs the route's specialist ran on to its shadow candidate."""
        candidate = route.candidate
        if candidate is None:
            return
        spec = self.specialists[candidate.specialist or route.specialist]
        for text, pred, o in zip(texts, preds, outcomes, strict=True):
            if o is None or not self.candidates.sampled(route):
                continue
            foundation = o.label if o.path in ("foundation", "cache") else None
            self.candidates.offer(Sample(route_name, route, spec, text, pred, foundation))

    def _answer(self, policy: LoadedPolicy, route_name: str, route: ClassifyRoute, spec: Specialist, tier: int,
                text: str, pred: Prediction, cost: float) -> Outcome:
        """A confident answer of cascade tier `tier` (0-based)."""
        self.metrics.tier_answered(route_name, str(tier + 1))
        self._maybe_shadow(policy, route_name, route, spec, text, pred.label, pred.confidence)
        return Outcome(
            route_name, pred.label, pred.confidence, "specialist", "confident", cost,
            self.avoided_cost(route.escalate_to, text), 0.0, policy.version, spec.version, pred.novelty,
            specialist=spec.name, tier=tier + 1,
        )

    @staticmethod
    def _tagged(o: Outcome, spec: Specialist, tier: int) -> Outcome:
        o.specialist, o.tier = spec.name, tier + 1
        return o

    def _cached(self, route_name: str, policy: LoadedPolicy, specialist: Specialist, raw: bytes,
                pred: Prediction | None, unit_cost: float) -> Outcome:
        stored = orjson.loads(raw)
        return Outcome(
            route_name, stored["label"], stored["confidence"], "cache", "cache_hit", unit_cost,
            stored.get("cost_usd", 0.0), 0.0, policy.version, specialist.version,
            None if pred is None else pred.novelty, stored.get("foundation_alias"),
        )

    def _finish(self, policy: LoadedPolicy, outcomes: list[Outcome | None], t0: float) -> tuple[
            LoadedPolicy, list[Outcome]]:
        elapsed = time.perf_counter() - t0
        done: list[Outcome] = []
        for o in outcomes:
            assert o is not None
            o.latency_ms = elapsed * 1000.0
            self.observe(o, elapsed)
            done.append(o)
        return policy, done

    def _foundation_weaker(self, policy: LoadedPolicy, route_name: str, route: ClassifyRoute,
                           confidence: float) -> bool:
        """Note a low-confidence input; True when the route answers it itself because its
        foundation model is measured weaker (`when_foundation_weaker: answer`)."""
        shadow = policy.policy.shadow
        if shadow.sample_rate <= 0:
            return False
        self.shadow.escalated(shadow, route_name, confidence)
        return route.when_foundation_weaker == "answer" and route_name in self.shadow.weaker

    def _maybe_shadow(self, policy: LoadedPolicy, route_name: str, route: ClassifyRoute, specialist: Specialist,
                      text: str, label: str, confidence: float) -> None:
        shadow = policy.policy.shadow
        alias = route.escalate_to
        if alias is None or not self.shadow.sampled(shadow) or self.foundation_open(alias) is not None:
            return

        async def ask() -> str:
            result = await self.escalator.classify(alias, specialist.classes, text, route.prompt)
            await self.budget.add(result.usage.cost_usd)
            self.metrics.cost.labels(route_name, "shadow", result.alias).inc(result.usage.cost_usd)
            self.escalation_log.record(
                policy.policy.escalation_log, route=route_name, reason="shadow", specialist_label=label,
                confidence=confidence, foundation_label=result.label, alias=result.alias,
                policy_version=policy.version, specialist_version=specialist.version, text=text,
                keep_input=route.keep_inputs, kind="shadow")
            return result.label

        self.shadow.check(shadow, route_name, label, confidence, ask)

    async def _escalate(
        self,
        policy: LoadedPolicy,
        route_name: str,
        route: ClassifyRoute,
        specialist: Specialist,
        text: str,
        key: str,
        pred: Prediction | None,
        unit_cost: float,
        decision: Escalate,
        deadline: float,
    ) -> Outcome:
        """The foundation's answer if it comes before `deadline` (event-loop time), else degraded.

        The call runs in the coalescer's own task: at the deadline only this caller stops waiting;
        the call goes on within the alias's concurrency limit and queue (which bound such
        background work) and fills the cache for the next identical request.
        """
        self.metrics.escalations.labels(route_name, decision.reason).inc()
        blocked = self.foundation_open(decision.alias)
        record: dict[str, object] | None = None
        computed = False
        if blocked is None:
            alias = decision.alias
            assert alias is not None

            async def ask() -> bytes:
                tf = time.perf_counter()
                try:
                    result = await self.escalator.classify(alias, specialist.classes, text, route.prompt,
                                                           route.on_invalid_label == "fallback")
                finally:
                    self.metrics.stage(STAGE_FOUNDATION, time.perf_counter() - tf)
                usage = result.usage
                await self.account(result.alias, usage)
                self.escalation_log.record(
                    policy.policy.escalation_log, route=route_name, reason=decision.reason,
                    specialist_label=None if pred is None else pred.label,
                    confidence=None if pred is None else pred.confidence, foundation_label=result.label,
                    alias=result.alias, policy_version=policy.version, specialist_version=specialist.version,
                    text=text, keep_input=route.keep_inputs)
                confidence = 1.0 if pred is None else float(pred.probabilities.get(result.label, 0.0))
                return orjson.dumps({"label": result.label, "confidence": confidence, "cost_usd": usage.cost_usd,
                                     "foundation_alias": result.alias, "prompt_tokens": usage.prompt_tokens,
                                     "completion_tokens": usage.completion_tokens})

            bound = asyncio.timeout_at(deadline)
            try:
                async with bound:
                    raw, computed = await self.coalescer.run(key, route.cache_ttl_s, ask)
                record = orjson.loads(raw)
            except TimeoutError:
                if not bound.expired():
                    raise
                blocked = "deadline"
            except InvalidLabelError:
                blocked = "invalid_label"
            except UpstreamRejectedError:
                blocked = "upstream_rejected"  # the provider refused this text: degraded, counted nowhere
            except GatewayError as exc:
                if type(exc) is GatewayError:
                    raise  # an internal error, not a foundation fault: the caller gets the 500
                blocked = "foundation_error"
        novelty = None if pred is None else pred.novelty
        if record is not None:
            cost = float(record["cost_usd"])  # type: ignore[arg-type]
            label, confidence, alias_used = str(record["label"]), float(record["confidence"]), str(  # type: ignore[arg-type]
                record["foundation_alias"])
            if computed:
                return Outcome(route_name, label, confidence, "foundation", decision.reason, cost + unit_cost, 0.0,
                               0.0, policy.version, specialist.version, novelty, alias_used,
                               int(record.get("prompt_tokens", 0)), int(record.get("completion_tokens", 0)))  # type: ignore[call-overload]
            return Outcome(route_name, label, confidence, "cache", "coalesced", unit_cost, cost, 0.0,
                           policy.version, specialist.version, novelty, alias_used)
        if pred is None:
            if blocked == "deadline":
                raise UpstreamTimeoutError(
                    f"specialist {specialist.name!r} failed and foundation alias {decision.alias!r} did not "
                    f"answer within the route's deadline ({route.deadline_s:.3g} s)", code="deadline_exceeded")
            raise ServiceUnavailableError(
                f"specialist {specialist.name!r} failed and no foundation model could answer", retry_after_s=5
            )
        return Outcome(
            route_name, pred.label, pred.confidence, "degraded", blocked or "foundation_error", unit_cost, 0.0,
            0.0, policy.version, specialist.version, novelty,
        )


def _predict_timed(specialist: Specialist, texts: Sequence[str],
                   previous: Sequence[Prediction | None] | None = None) -> tuple[list[Prediction], float]:
    c0 = time.thread_time()
    preds = specialist.predict(texts)
    if previous is not None:
        preds = specialist.follow(previous, preds)
    return preds, time.thread_time() - c0
