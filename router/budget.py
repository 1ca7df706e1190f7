"""Foundation spend budget per hour and per day, in fixed UTC windows.

In process for now: each replica enforces the policy's limits on its own spend. `spent()` is
checked before a foundation call and `add()` records what a call cost; once a window's limit is
reached, escalations are refused until the window rolls over (the gateway then degrades).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .policy import Budgets

__all__ = ["BudgetTracker"]


@dataclass
class _Window:
    seconds: int
    limit: float | None
    index: int = -1
    spent: float = 0.0

    def roll(self, now: float) -> None:
        idx = int(now // self.seconds)
        if idx != self.index:
            self.index, self.spent = idx, 0.0


@dataclass
class BudgetTracker:
    budgets: Budgets
    _windows: list[_Window] = field(init=False)

    def __post_init__(self) -> None:
        self._windows = [_Window(3600, self.budgets.usd_per_hour), _Window(86400, self.budgets.usd_per_day)]

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

    def add(self, usd: float, now: float | None = None) -> None:
        t = time.time() if now is None else now
        for w in self._windows:
            w.roll(t)
            w.spent += usd

    def remaining(self) -> dict[str, float | None]:
        return {
            "hour": None if self._windows[0].limit is None else max(0.0, self._windows[0].limit - self._windows[0].spent),
            "day": None if self._windows[1].limit is None else max(0.0, self._windows[1].limit - self._windows[1].spent),
        }
