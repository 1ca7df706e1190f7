"""Foundation spend budget per hour and per day, in fixed UTC windows, shared across replicas.

Each replica adds what its foundation calls cost to its own window totals and, with Redis, to
shared counters (``gw:v1:budget:{budget}:<hour|day>:<window index>``, INCRBYFLOAT with expiry);
`exhausted()` compares the larger of the local and last-known shared totals with the policy's
limits, so the check itself never waits on Redis. `refresh()` (every second, in the background)
reads the shared totals other replicas wrote. Without Redis, each replica enforces its limits
on its own spend.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from .policy import Budgets
from .redis_state import RedisState

__all__ = ["BudgetTracker"]

log = logging.getLogger("router.budget")

_ADJECTIVE = {"hour": "hourly", "day": "daily"}
_MAX_PUSHES = 1024  # shared-counter updates in flight; beyond it, spend is only counted locally


@dataclass
class _Window:
    name: str
    seconds: int
    limit: float | None
    index: int = -1
    local: float = 0.0
    shared: float = 0.0
    logged: float = 0.0
    """The highest share of the limit already logged in this window (0, 0.8 or 1)."""

    def roll(self, now: float) -> None:
        idx = int(now // self.seconds)
        if idx != self.index:
            self.index, self.local, self.shared, self.logged = idx, 0.0, 0.0, 0.0

    def log_events(self) -> None:
        """One line when spend first reaches 80% of the limit in this window, one when it is spent."""
        if self.limit is None:
            return
        share = self.spent / self.limit if self.limit > 0 else 1.0
        for level in (0.8, 1.0):
            if share >= level > self.logged:
                self.logged = level
                what = "spent: escalations are refused until the window rolls over" if level == 1.0 else "80% spent"
                log.warning("budget %s (%s window: %.4f of %.4f USD)", what, self.name, self.spent, self.limit,
                            extra={"event": "budget_spent" if level == 1.0 else "budget_80", "window": self.name})

    @property
    def spent(self) -> float:
        return max(self.local, self.shared)

    def key(self) -> str:
        return f"gw:v1:budget:{{budget}}:{self.name}:{self.index}"


@dataclass
class BudgetTracker:
    budgets: Budgets
    state: RedisState | None = None
    _windows: list[_Window] = field(init=False)
    _pushes: set[asyncio.Task[None]] = field(init=False, default_factory=set)

    def __post_init__(self) -> None:
        self._windows = [_Window("hour", 3600, self.budgets.usd_per_hour),
                         _Window("day", 86400, self.budgets.usd_per_day)]

    def configure(self, budgets: Budgets) -> None:
        """Apply new limits (policy reload) and keep what was spent in the current windows."""
        self.budgets = budgets
        self._windows[0].limit = budgets.usd_per_hour
        self._windows[1].limit = budgets.usd_per_day

    def exhausted(self, now: float | None = None) -> bool:
        t = time.time() if now is None else now
        for w in self._windows:
            w.roll(t)
            if w.limit is not None and w.spent >= w.limit:
                return True
        return False

    async def add(self, usd: float, now: float | None = None) -> None:
        """Count spend locally at once; push it to the shared counters off the request path.

        One pipelined round trip per call, in a background task (bounded): the request that spent
        the money does not wait for Redis (measured: four sequential round trips were ~0.8 ms of
        a foundation call's overhead).
        """
        if usd <= 0:
            return
        t = time.time() if now is None else now
        for w in self._windows:
            w.roll(t)
            w.local += usd
            w.log_events()
        if self.state is not None and len(self._pushes) < _MAX_PUSHES:
            items = [(w.key(), usd, w.seconds * 2) for w in self._windows]
            task = asyncio.get_running_loop().create_task(self._push(items))
            self._pushes.add(task)
            task.add_done_callback(self._pushes.discard)

    async def _push(self, items: list[tuple[str, float, int]]) -> None:
        assert self.state is not None
        totals = await self.state.add_floats(items)
        if totals is not None:
            for w, total in zip(self._windows, totals, strict=True):
                w.shared = max(w.shared, total)
                w.log_events()

    async def drain(self) -> None:
        if self._pushes:
            await asyncio.gather(*self._pushes, return_exceptions=True)

    async def refresh(self) -> None:
        if self.state is None:
            return
        now = time.time()
        for w in self._windows:
            w.roll(now)
            total = await self.state.get_float(w.key())
            if total is not None:
                w.shared = total
                w.log_events()

    def spent_cause(self) -> str:
        """Which budget is spent, for a 503's message."""
        self.exhausted()
        spent = [w for w in self._windows if w.limit is not None and w.spent >= w.limit]
        return "; ".join(f"the {_ADJECTIVE[w.name]} foundation budget is spent ({w.spent:.4f} of {w.limit:.4f} USD) until "
                         "the window rolls over" for w in spent) or "the foundation budget is spent"

    def snapshot(self) -> dict[str, dict[str, float | None]]:
        self.exhausted()
        return {w.name: {"limit": w.limit, "spent": w.spent,
                         "remaining": None if w.limit is None else max(0.0, w.limit - w.spent)}
                for w in self._windows}
