"""Candidates in shadow: a candidate specialist (or threshold) judged on a sample of live traffic.

A classification route may name a `candidate` (see `policy.Candidate`): a specialist with the
route's labels (typically a directory written by `hybrid-router distill`, loaded through the
policy's `specialists:`), a candidate `min_confidence`, or both. A `sample_rate` share of the inputs
the route's own specialist ran on is offered here once the request is answered, and the candidate
runs on them *off the request path*: a bounded queue (`max_queue` per route) feeds one background
task that predicts in a worker thread. A full queue drops the sample and counts it
(`outcome="dropped"`); a request never waits for the candidate.

For each compared input the candidate's answer and decision are set beside the serving
specialist's (same route thresholds, or the candidate's `min_confidence`) and beside the
foundation model's answer when the request was answered by one (foundation or cache path). Per
route and per candidate (its version and threshold; a new candidate starts afresh) this exports:

- `hybrid_router_candidate_agreement{against=serving|foundation}`: share of equal labels;
- `hybrid_router_candidate_projected_escalation_rate{version=serving|candidate}`: share of the
  sampled inputs each would escalate (for `serving`, the serving specialist's decision, before any
  cascade tier);
- `hybrid_router_candidate_projected_cost_per_1k_usd{version=...}`: the foundation cost of those
  escalations per 1,000 requests (each input priced as the route's alias would charge for it);
- `hybrid_router_candidate_compared`: how many samples the figures rest on.

`hybrid-router promote` gates on held-out data; these figures are the live evidence beside it
(on /metrics and `GET /admin/policy`).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from specialists import InferenceError, Prediction, Specialist

from .decision import Answer, decide
from .metrics import GatewayMetrics
from .policy import ClassifyRoute

__all__ = ["CandidateShadow", "Sample"]

log = logging.getLogger("router.candidates")

_BATCH = 64
"""Samples predicted per worker step (one thread hop per step)."""

PricedAs = Callable[[str | None, str], float]
"""(alias, text) -> the foundation cost of escalating `text` to `alias` (USD)."""


@dataclass(frozen=True, slots=True)
class Sample:
    route_name: str
    route: ClassifyRoute
    candidate: Specialist
    text: str
    serving: Prediction
    foundation_label: str | None
    """The foundation model's answer to this request, when it had one."""


@dataclass(slots=True)
class _Tally:
    key: tuple[str, float]
    compared: int = 0
    agree_serving: int = 0
    with_foundation: int = 0
    agree_foundation: int = 0
    escalated: dict[str, int] = field(default_factory=lambda: {"serving": 0, "candidate": 0})
    cost: dict[str, float] = field(default_factory=lambda: {"serving": 0.0, "candidate": 0.0})

    def as_dict(self) -> dict[str, object]:
        n = max(1, self.compared)
        return {
            "candidate_version": self.key[0], "candidate_min_confidence": self.key[1], "compared": self.compared,
            "agreement_serving": self.agree_serving / n if self.compared else None,
            "agreement_foundation": (self.agree_foundation / self.with_foundation) if self.with_foundation else None,
            "with_foundation": self.with_foundation,
            "escalation_rate": {v: c / n for v, c in self.escalated.items()} if self.compared else None,
            "cost_per_1k_usd": {v: 1000 * c / n for v, c in self.cost.items()} if self.compared else None,
        }


class CandidateShadow:
    def __init__(self, metrics: GatewayMetrics, priced_as: PricedAs, rng: random.Random | None = None) -> None:
        self._metrics = metrics
        self._priced_as = priced_as
        self._rng = rng or random.Random()
        self._queue: asyncio.Queue[Sample] | None = None
        self._queued: dict[str, int] = {}
        self._worker: asyncio.Task[None] | None = None
        self._tallies: dict[str, _Tally] = {}

    # ---- on the request path: O(1), never blocks --------------------------------------------
    def sampled(self, route: ClassifyRoute) -> bool:
        c = route.candidate
        return c is not None and c.sample_rate > 0 and (c.sample_rate >= 1.0 or self._rng.random() < c.sample_rate)

    def offer(self, sample: Sample) -> bool:
        """Queue one sample; False (counted as dropped) when the route's queue is full."""
        cand = sample.route.candidate
        if cand is None:
            return False
        if self._queued.get(sample.route_name, 0) >= cand.max_queue:
            self._metrics.candidate_samples.labels(sample.route_name, "dropped").inc()
            return False
        if self._queue is None:
            self._queue = asyncio.Queue()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._run(self._queue))
        self._queued[sample.route_name] = self._queued.get(sample.route_name, 0) + 1
        self._queue.put_nowait(sample)
        return True

    # ---- off the request path ------------------------------------------------------------------
    async def _run(self, queue: asyncio.Queue[Sample]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await queue.get()]
            while len(batch) < _BATCH and not queue.empty():
                batch.append(queue.get_nowait())
            try:
                by_candidate: dict[int, list[Sample]] = {}
                for s in batch:
                    by_candidate.setdefault(id(s.candidate), []).append(s)
                for group in by_candidate.values():
                    spec = group[0].candidate
                    try:
                        preds = await loop.run_in_executor(None, spec.predict, [s.text for s in group])
                    except InferenceError:
                        log.warning("candidate %s failed on route %s", spec.name, group[0].route_name)
                        for s in group:
                            self._metrics.candidate_samples.labels(s.route_name, "error").inc()
                        continue
                    for s, p in zip(group, preds, strict=True):
                        self._compare(s, p)
            finally:
                for s in batch:
                    self._queued[s.route_name] -= 1
                    queue.task_done()

    def _compare(self, s: Sample, cand: Prediction) -> None:
        c = s.route.candidate
        if c is None:  # not reachable: only routes with a candidate are offered
            return
        threshold = s.route.min_confidence if c.min_confidence is None else c.min_confidence
        key = (cand.version, threshold)
        tally = self._tallies.get(s.route_name)
        if tally is None or tally.key != key:
            tally = self._tallies[s.route_name] = _Tally(key)
        tally.compared += 1
        tally.agree_serving += cand.label == s.serving.label
        if s.foundation_label is not None:
            tally.with_foundation += 1
            tally.agree_foundation += cand.label == s.foundation_label
        gate = s.route if c.min_confidence is None else s.route.model_copy(update={"min_confidence": threshold})
        price = self._priced_as(s.route.escalate_to, s.text)
        for version, route, pred in (("serving", s.route, s.serving), ("candidate", gate, cand)):
            if not isinstance(decide(route, pred), Answer):
                tally.escalated[version] += 1
                tally.cost[version] += price
        self._metrics.candidate_samples.labels(s.route_name, "compared").inc()
        self._export(s.route_name, tally)

    def _export(self, route: str, t: _Tally) -> None:
        m = self._metrics
        m.candidate_compared.labels(route).set(t.compared)
        m.candidate_agreement.labels(route, "serving").set(t.agree_serving / t.compared)
        if t.with_foundation:
            m.candidate_agreement.labels(route, "foundation").set(t.agree_foundation / t.with_foundation)
        for version in ("serving", "candidate"):
            m.candidate_escalation_rate.labels(route, version).set(t.escalated[version] / t.compared)
            m.candidate_cost_per_1k.labels(route, version).set(1000 * t.cost[version] / t.compared)

    def status(self) -> dict[str, dict[str, object]]:
        return {route: t.as_dict() for route, t in self._tallies.items()}

    async def drain(self) -> None:
        """Wait until every queued sample is compared."""
        if self._queue is not None:
            await self._queue.join()

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
