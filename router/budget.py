"""Amounts counted in fixed UTC windows against limits, shared across replicas through Redis.

One machinery for every limit the gateway enforces over time: the policy's foundation budget
(USD per hour and per day, `BudgetTracker`) and each API key's spend budget, requests per minute
and tokens per minute (`router/auth.py`). A `WindowedCounter` adds amounts to its windows'
local totals at once; with Redis the amount is also pending for the shared counter
``gw:v1:budget:{<scope>}:<window>:<window index>`` (INCRBYFLOAT with expiry, pushed off the
request path, several counters in one pipelined round trip) and the totals that come back are the
replicas' shared view. The check (`exhausted`, `retry_after`) compares the larger of the local
total and the shared total plus what is still pending with the limit, so it never waits on
Redis. `refresh()` reads totals other replicas wrote. Without Redis, or while it is unreachable,
each replica enforces its limits on what it counted itself (fail open: at most N replicas x the
limit).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from .policy import Budgets
from .redis_state import RedisState

__all__ = ["BudgetTracker", "WindowedCounter", "push_counters", "refresh_counters"]

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
    pending: float = 0.0

    def roll(self, now: float) -> None:
        idx = int(now // self.seconds)
        if idx != self.index:
            self.index, self.local, self.shared, self.pending = idx, 0.0, 0.0, 0.0

    @property
    def used(self) -> float:
        return max(self.local, self.shared + self.pending)

    def key(self, scope: str) -> str:
        return f"gw:v1:budget:{{{scope}}}:{self.name}:{self.index}"


class WindowedCounter:
    """`windows`: (name, seconds, limit or None) each; `scope` names the shared counters (its keys
    share the hash tag ``{scope}``, so one scope lives in one Redis Cluster slot)."""

    def __init__(self, scope: str, windows: Sequence[tuple[str, int, float | None]],
                 state: RedisState | None = None) -> None:
        self.scope = scope
        self.state = state
        self._windows = [_Window(n, s, lim) for n, s, lim in windows]

    def set_limits(self, limits: Sequence[float | None]) -> None:
        for w, limit in zip(self._windows, limits, strict=True):
            w.limit = limit

    def retry_after(self, now: float | None = None) -> float | None:
        """None while under every limit, else seconds until the exhausted windows have all ended."""
        t = time.time() if now is None else now
        wait: float | None = None
        for w in self._windows:
            w.roll(t)
            if w.limit is not None and w.used >= w.limit:
                left = (w.index + 1) * w.seconds - t
                wait = left if wait is None else max(wait, left)
        return wait

    def exhausted(self, now: float | None = None) -> bool:
        return self.retry_after(now) is not None

    def add(self, amount: float, now: float | None = None) -> None:
        """Count at once, locally; the shared counters get it at the next push."""
        if amount <= 0:
            return
        t = time.time() if now is None else now
        for w in self._windows:
            w.roll(t)
            w.local += amount
            if self.state is not None:
                w.pending += amount

    @property
    def dirty(self) -> bool:
        return any(w.pending > 0 for w in self._windows)

    def _take(self) -> list[tuple[_Window, int, float]]:
        taken = [(w, w.index, w.pending) for w in self._windows if w.pending > 0]
        for w, _, _ in taken:
            w.pending = 0.0
        return taken

    def _seen(self, w: _Window, index: int, total: float) -> None:
        if w.index == index:  # within a window a shared total only grows: late answers never lower it
            w.shared = max(w.shared, total)

    def snapshot(self) -> dict[str, dict[str, float | None]]:
        self.exhausted()
        return {w.name: {"limit": w.limit, "spent": w.used,
                         "remaining": None if w.limit is None else max(0.0, w.limit - w.used)}
                for w in self._windows}


async def push_counters(state: RedisState, counters: Iterable[WindowedCounter]) -> None:
    """Push every pending amount of `counters` in one pipelined round trip; read back the totals.

    When Redis is unreachable the amounts stay counted locally only (never re-sent: an increment
    whose answer was lost may have been applied, and counting it twice would refuse callers).
    """
    taken = [(c, w, idx, amount) for c in counters for w, idx, amount in c._take()]
    if not taken:
        return
    totals = await state.add_floats([(w.key(c.scope), amount, w.seconds * 2) for c, w, _, amount in taken])
    if totals is not None:
        for (c, w, idx, _), total in zip(taken, totals, strict=True):
            c._seen(w, idx, total)


async def refresh_counters(state: RedisState, counters: Iterable[WindowedCounter], now: float | None = None) -> None:
    """Read the shared totals of `counters` (what every replica counted) in one round trip."""
    t = time.time() if now is None else now
    items = []
    for c in counters:
        for w in c._windows:
            w.roll(t)
            items.append((c, w, w.index))
    if not items:
        return
    totals = await state.get_floats([w.key(c.scope) for c, w, _ in items])
    if totals is not None:
        for (c, w, idx), total in zip(items, totals, strict=True):
            c._seen(w, idx, total)


@dataclass
class BudgetTracker:
    """The policy's foundation budget: USD per hour and per day (``gw:v1:budget:{budget}:...``)."""

    budgets: Budgets
    state: RedisState | None = None
    _counter: WindowedCounter = field(init=False)
    _pushes: set[asyncio.Task[None]] = field(init=False, default_factory=set)
    _logged: dict[str, tuple[int, float]] = field(init=False, default_factory=dict)
    """Per window: (window index, highest share of the limit already logged: 0.8 or 1)."""

    def __post_init__(self) -> None:
        self._counter = WindowedCounter("budget", [("hour", 3600, self.budgets.usd_per_hour),
                                                   ("day", 86400, self.budgets.usd_per_day)], self.state)

    def configure(self, budgets: Budgets) -> None:
        """Apply new limits (policy reload) and keep what was spent in the current windows."""
        self.budgets = budgets
        self._counter.set_limits([budgets.usd_per_hour, budgets.usd_per_day])

    def exhausted(self, now: float | None = None) -> bool:
        return self._counter.exhausted(now)

    async def add(self, usd: float, now: float | None = None) -> None:
        """Count spend locally at once; push it to the shared counters off the request path.

        One pipelined round trip per call, in a background task (bounded): the request that spent
        the money does not wait for Redis (measured: four sequential round trips were ~0.8 ms of
        a foundation call's overhead).
        """
        if usd <= 0:
            return
        self._counter.add(usd, now)
        self._log_events()
        if self.state is not None and len(self._pushes) < _MAX_PUSHES:
            task = asyncio.get_running_loop().create_task(self._push(self.state))
            self._pushes.add(task)
            task.add_done_callback(self._pushes.discard)

    async def _push(self, state: RedisState) -> None:
        await push_counters(state, [self._counter])
        self._log_events()

    def _log_events(self) -> None:
        """One line when a window's spend first reaches 80% of its limit, one when it is spent
        (what other replicas spent counts: the shared totals are part of `used`)."""
        for w in self._counter._windows:
            if w.limit is None:
                continue
            share = w.used / w.limit if w.limit > 0 else 1.0
            index, logged = self._logged.get(w.name, (w.index, 0.0))
            if index != w.index:
                logged = 0.0
            for level in (0.8, 1.0):
                if share >= level > logged:
                    logged = level
                    what = "spent: escalations are refused until the window rolls over" if level == 1.0 else "80% spent"
                    log.warning("budget %s (%s window: %.4f of %.4f USD)", what, w.name, w.used, w.limit,
                                extra={"event": "budget_spent" if level == 1.0 else "budget_80", "window": w.name})
            self._logged[w.name] = (w.index, logged)

    def spent_cause(self) -> str:
        """Which budget is spent, for a 503's message."""
        self._counter.exhausted()
        spent = [w for w in self._counter._windows if w.limit is not None and w.used >= w.limit]
        return "; ".join(f"the {_ADJECTIVE[w.name]} foundation budget is spent ({w.used:.4f} of {w.limit:.4f} USD) "
                         "until the window rolls over" for w in spent) or "the foundation budget is spent"

    async def drain(self) -> None:
        if self._pushes:
            await asyncio.gather(*self._pushes, return_exceptions=True)

    async def refresh(self) -> None:
        if self.state is not None:
            await refresh_counters(self.state, [self._counter])
            self._log_events()

    def snapshot(self) -> dict[str, dict[str, float | None]]:
        return self._counter.snapshot()
