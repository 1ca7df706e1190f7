"""How good is the foundation model, measured against the specialist on the same inputs?

Two kinds of evidence, both pure arithmetic here (the serving path and `hybrid-router distill`
share it):

- **Shadow agreement.** On inputs the specialist answered confidently, a sample was also asked
  of the foundation model. With `a` the share of those where both gave the same label and `c`
  the specialist's mean calibrated confidence there (its expected accuracy), the foundation
  model's accuracy on the same inputs lies in `[a - (1 - c), a + (1 - c)]`: when both are right
  they agree, and the specialist is wrong on about `1 - c` of them (which can add or remove
  agreement). No label is needed.
- **Spot labels.** An operator labels some logged inputs; both models' accuracies on them are
  then measured directly.

`shadow_bounds` gives the interval; `weaker_than` is the one rule both users apply: the
foundation model is *measured weaker* than a specialist accuracy `s` only when even the upper
bound is below `s`, so a noisy estimate never stops escalation or learning by itself.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Bounds", "shadow_bounds", "weaker_than"]


@dataclass(frozen=True, slots=True)
class Bounds:
    """The foundation model's estimated accuracy: `lower` <= true value <= `upper` (0..1)."""

    n: int
    lower: float
    upper: float


def shadow_bounds(agreements: int, n: int, mean_confidence: float) -> Bounds:
    """Bounds from `agreements` out of `n` shadow checks where the specialist's mean confidence
    was `mean_confidence`."""
    if n <= 0:
        return Bounds(0, 0.0, 1.0)
    a = agreements / n
    slack = max(0.0, 1.0 - mean_confidence)
    return Bounds(n, max(0.0, a - slack), min(1.0, a + slack))


def weaker_than(bounds: Bounds, specialist_accuracy: float, min_checks: int) -> bool:
    """True when at least `min_checks` measurements put the foundation model below the specialist."""
    return bounds.n >= min_checks and bounds.upper < specialist_accuracy
