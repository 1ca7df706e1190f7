"""Shadow checks against drift: re-ask a sample of specialist answers of the foundation model.

A specialist can be confidently wrong on traffic that drifted; no per-request signal sees that.
With `shadow.sample_rate` > 0, that share of the requests a specialist answered is also sent to
the route's foundation alias *off the request path* (a background task; never delaying the
answer, skipped when `max_in_flight` checks are running, the budget is spent or the alias is
unavailable). Agreement over the last `window` checks is kept per route and exported; when it
falls below `min_agreement` with a full window, `on_low_agreement: escalate_route` makes every
request of that route escalate (reason `shadow_drift`) until an operator resets it.

The same window measures the foundation model (`foundation_quality.shadow_bounds`, exported as
`hybrid_router_foundation_accuracy_estimate`). Compared with the specialist's mean confidence on
the inputs it escalated for low confidence (its expected accuracy there, over the last `window`
of them), a full window whose upper bound is below it marks the route `weaker`: escalating those
inputs is expected to lower accuracy (a route with `when_foundation_weaker: answer` then answers
them itself).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Literal

from .errors import GatewayError
from .foundation_quality import Bounds, shadow_bounds, weaker_than
from .metrics import GatewayMetrics
from .policy import Shadow

__all__ = ["ShadowChecker"]

log = logging.getLogger("router.shadow")

Ask = Callable[[], Awaitable[str]]
"""Calls the foundation model and returns its label."""

_MIN_ESCALATED = 10
"""Low-confidence escalations needed before the specialist's accuracy on them is estimated."""


class ShadowChecker:
    def __init__(self, metrics: GatewayMetrics, rng: random.Random | None = None) -> None:
        self._metrics = metrics
        self._rng = rng or random.Random()
        self._windows: dict[str, deque[tuple[bool, float]]] = {}
        # Confidences of recent low-confidence escalations per route, with their running sum.
        self._escalated: dict[str, deque[float]] = {}
        self._escalated_sum: dict[str, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.tripped: set[str] = set()
        self.weaker: set[str] = set()
        """Routes whose foundation model is measured weaker than the specialist (see module doc)."""

    def sampled(self, shadow: Shadow) -> bool:
        return shadow.sample_rate > 0 and len(self._tasks) < shadow.max_in_flight and (
            shadow.sample_rate >= 1.0 or self._rng.random() < shadow.sample_rate)

    def check(self, shadow: Shadow, route: str, specialist_label: str, confidence: float, ask: Ask) -> None:
        """Schedule one comparison (the caller has decided it is `sampled`)."""
        task = asyncio.get_running_loop().create_task(
            self._compare(shadow, route, specialist_label, confidence, ask))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _compare(self, shadow: Shadow, route: str, specialist_label: str, confidence: float,
                       ask: Ask) -> None:
        try:
            label = await ask()
        except GatewayError:
            self._metrics.shadow.labels(route, "error").inc()
            return
        self._record(shadow, route, label == specialist_label, confidence)

    def escalated(self, shadow: Shadow, route: str, confidence: float) -> None:
        """Note the confidence of an input escalated for low confidence (cheap: on the request path)."""
        window = self._escalated.get(route)
        if window is None or window.maxlen != shadow.window:
            window = self._escalated[route] = deque(window or (), maxlen=shadow.window)
            self._escalated_sum[route] = sum(window)
        if len(window) == window.maxlen:
            self._escalated_sum[route] -= window[0]
        window.append(confidence)
        self._escalated_sum[route] += confidence
        self._update_weaker(shadow, route)

    def bounds(self, route: str) -> Bounds:
        window = self._windows.get(route) or ()
        n = len(window)
        agree = sum(1 for a, _ in window if a)
        mean_conf = sum(c for _, c in window) / n if n else 1.0
        return shadow_bounds(agree, n, mean_conf)

    def _update_weaker(self, shadow: Shadow, route: str) -> None:
        escalated = self._escalated.get(route)
        if not escalated or len(escalated) < _MIN_ESCALATED:
            return
        specialist = self._escalated_sum[route] / len(escalated)
        weaker = weaker_than(self.bounds(route), specialist, shadow.window)
        if weaker != (route in self.weaker):
            if weaker:
                self.weaker.add(route)
                log.warning("route %s: foundation model measured weaker than the specialist on the inputs "
                            "it escalates (upper bound %.3f < %.3f)", route, self.bounds(route).upper, specialist)
            else:
                self.weaker.discard(route)
            self._metrics.foundation_weaker.labels(route).set(1 if weaker else 0)

    def _record(self, shadow: Shadow, route: str, agree: bool, confidence: float) -> None:
        outcome: Literal["agree", "disagree"] = "agree" if agree else "disagree"
        self._metrics.shadow.labels(route, outcome).inc()
        window = self._windows.get(route)
        if window is None or window.maxlen != shadow.window:
            window = deque(window or (), maxlen=shadow.window)
            self._windows[route] = window
        window.append((agree, confidence))
        agreement = sum(1 for a, _ in window if a) / len(window)
        self._metrics.shadow_agreement.labels(route).set(agreement)
        b = self.bounds(route)
        self._metrics.foundation_accuracy.labels(route, "lower").set(b.lower)
        self._metrics.foundation_accuracy.labels(route, "upper").set(b.upper)
        self._update_weaker(shadow, route)
        if len(window) == window.maxlen and agreement < shadow.min_agreement and route not in self.tripped:
            log.warning("shadow agreement on route %s is %.3f < %.3f over %d checks", route, agreement,
                        shadow.min_agreement, len(window))
            if shadow.on_low_agreement == "escalate_route":
                self.tripped.add(route)
                self._metrics.shadow_tripped.labels(route).set(1)
                log.warning("route %s now escalates every request until reset", route)

    def reset(self, route: str | None = None) -> list[str]:
        """Clear the trip (and the windows) of one route or all; returns the routes reset."""
        routes = [route] if route is not None else sorted(set(self._windows) | self.tripped | self.weaker)
        for r in routes:
            self.tripped.discard(r)
            self.weaker.discard(r)
            self._windows.pop(r, None)
            self._escalated.pop(r, None)
            self._escalated_sum.pop(r, None)
            self._metrics.shadow_tripped.labels(r).set(0)
            self._metrics.foundation_weaker.labels(r).set(0)
        return routes

    def status(self) -> dict[str, dict[str, object]]:
        out: dict[str, dict[str, object]] = {}
        for r, w in self._windows.items():
            b = self.bounds(r)
            out[r] = {"checks": len(w), "agreement": (sum(1 for a, _ in w if a) / len(w)) if w else None,
                      "tripped": r in self.tripped, "foundation_accuracy": {"lower": b.lower, "upper": b.upper},
                      "foundation_weaker": r in self.weaker}
        return out

    async def drain(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
