"""Shadow checks against drift: re-ask a sample of specialist answers of the foundation model.

A specialist can be confidently wrong on traffic that drifted; no per-request signal sees that.
With `shadow.sample_rate` > 0, that share of the requests a specialist answered is also sent to
the route's foundation alias *off the request path* (a background task; never delaying the
answer, skipped when `max_in_flight` checks are running, the budget is spent or the alias is
unavailable). Agreement over the last `window` checks is kept per route and exported; when it
falls below `min_agreement` with a full window, `on_low_agreement: escalate_route` makes every
request of that route escalate (reason `shadow_drift`) until an operator resets it.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Literal

from .errors import GatewayError
from .metrics import GatewayMetrics
from .policy import Shadow

__all__ = ["ShadowChecker"]

log = logging.getLogger("router.shadow")

Ask = Callable[[], Awaitable[str]]
"""Calls the foundation model and returns its label."""


class ShadowChecker:
    def __init__(self, metrics: GatewayMetrics, rng: random.Random | None = None) -> None:
        self._metrics = metrics
        self._rng = rng or random.Random()
        self._windows: dict[str, deque[bool]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.tripped: set[str] = set()

    def sampled(self, shadow: Shadow) -> bool:
        return shadow.sample_rate > 0 and len(self._tasks) < shadow.max_in_flight and (
            shadow.sample_rate >= 1.0 or self._rng.random() < shadow.sample_rate)

    def check(self, shadow: Shadow, route: str, specialist_label: str, ask: Ask) -> None:
        """Schedule one comparison (the caller has decided it is `sampled`)."""
        task = asyncio.get_running_loop().create_task(self._compare(shadow, route, specialist_label, ask))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _compare(self, shadow: Shadow, route: str, specialist_label: str, ask: Ask) -> None:
        try:
            label = await ask()
        except GatewayError:
            self._metrics.shadow.labels(route, "error").inc()
            return
        agree = label == specialist_label
        self._record(shadow, route, agree)

    def _record(self, shadow: Shadow, route: str, agree: bool) -> None:
        outcome: Literal["agree", "disagree"] = "agree" if agree else "disagree"
        self._metrics.shadow.labels(route, outcome).inc()
        window = self._windows.get(route)
        if window is None or window.maxlen != shadow.window:
            window = deque(window or (), maxlen=shadow.window)
            self._windows[route] = window
        window.append(agree)
        agreement = sum(window) / len(window)
        self._metrics.shadow_agreement.labels(route).set(agreement)
        if len(window) == window.maxlen and agreement < shadow.min_agreement and route not in self.tripped:
            log.warning("shadow agreement on route %s is %.3f < %.3f over %d checks", route, agreement,
                        shadow.min_agreement, len(window))
            if shadow.on_low_agreement == "escalate_route":
                self.tripped.add(route)
                self._metrics.shadow_tripped.labels(route).set(1)
                log.warning("route %s now escalates every request until reset", route)

    def reset(self, route: str | None = None) -> list[str]:
        """Clear the trip (and the window) of one route or all; returns the routes reset."""
        routes = [route] if route is not None else sorted(set(self._windows) | self.tripped)
        for r in routes:
            self.tripped.discard(r)
            self._windows.pop(r, None)
            self._metrics.shadow_tripped.labels(r).set(0)
        return routes

    def status(self) -> dict[str, dict[str, object]]:
        return {r: {"checks": len(w), "agreement": (sum(w) / len(w)) if w else None, "tripped": r in self.tripped}
                for r, w in self._windows.items()}

    async def drain(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
