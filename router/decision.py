"""The routing decision, pure: (route, specialist prediction) -> Answer | Escalate.

No I/O and no clocks, so the server, `simulate` and `tune` share exactly this code. Reasons are
a closed set (they become metric labels):

- Answer:   ``confident``
- Escalate: ``low_confidence``, ``escalate_label`` (e.g. out-of-scope), ``novel_input``,
  ``no_canned_answer`` (chat route), ``specialist_error``, ``request_type`` (auto route tier),
  ``passthrough`` (a foundation alias was named directly), ``shadow_drift`` (the route is
  escalated whole because shadow agreement fell below the policy's bound; set by the gateway)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from specialists import Prediction

from .policy import AutoRoute, ChatRoute, ClassifyRoute

__all__ = ["NEXT_TIER_REASONS", "REASONS", "Answer", "Decision", "Escalate", "decide", "next_tier"]

EscalateReason = Literal[
    "low_confidence",
    "escalate_label",
    "novel_input",
    "no_canned_answer",
    "specialist_error",
    "request_type",
    "passthrough",
    "shadow_drift",
    "structured_output",
]

REASONS: tuple[str, ...] = (
    "confident",
    *get_args(EscalateReason),
    # outcomes decided after escalation, by the gateway:
    "cache_hit",
    "coalesced",
    "foundation_unavailable",
    "foundation_error",
    "budget_spent",
    "invalid_label",
    "upstream_rejected",
    "deadline",
    "alias_not_permitted",
    "foundation_weaker",
)


# A cascade's next tier runs when the current one is unsure (or failed); an escalate label (e.g.
# out-of-scope) is a deliberate hand-over to the foundation model and skips the remaining tiers.
NEXT_TIER_REASONS: frozenset[str] = frozenset({"low_confidence", "novel_input", "specialist_error"})


@dataclass(frozen=True, slots=True)
class Answer:
    label: str
    reason: Literal["confident"] = "confident"


@dataclass(frozen=True, slots=True)
class Escalate:
    reason: EscalateReason
    alias: str | None
    """The alias to call; None when the route has no foundation model."""


Decision = Answer | Escalate


def next_tier(route: ClassifyRoute | ChatRoute | AutoRoute, tier: int, decision: Decision) -> bool:
    """Whether an input decided `decision` at 0-based `tier` goes on to the route's next tier."""
    return (
        isinstance(route, ClassifyRoute)
        and isinstance(decision, Escalate)
        and tier < len(route.cascade)
        and decision.reason in NEXT_TIER_REASONS
    )


def decide(
    route: ClassifyRoute | ChatRoute | AutoRoute, prediction: Prediction | None, tier: int = 0
) -> Decision:
    """Accept the specialist's answer, or escalate and say why.

    `prediction` is None when the specialist failed (the gateway applies `on_specialist_error`).
    For an auto route an `Escalate` is always returned: the specialist only picks the tier.
    `tier` (0-based) selects the cascade tier whose thresholds apply (classification routes).
    """
    if isinstance(route, AutoRoute):
        if prediction is None:
            return Escalate("specialist_error", route.low_confidence_tier)
        if prediction.confidence < route.min_confidence:
            return Escalate("low_confidence", route.low_confidence_tier)
        return Escalate("request_type", route.tiers.get(prediction.label, route.low_confidence_tier))

    alias = route.escalate_to
    min_confidence, max_novelty = route.min_confidence, route.max_novelty
    if tier and isinstance(route, ClassifyRoute):
        gate = route.cascade[tier - 1]
        min_confidence, max_novelty = gate.min_confidence, gate.max_novelty
    if prediction is None:
        return Escalate("specialist_error", alias)
    if prediction.label in route.escalate_labels:
        return Escalate("escalate_label", alias)
    if prediction.confidence < min_confidence:
        return Escalate("low_confidence", alias)
    if prediction.novelty > max_novelty:
        return Escalate("novel_input", alias)
    if isinstance(route, ChatRoute) and prediction.label not in route.answers:
        return Escalate("no_canned_answer", alias)
    return Answer(prediction.label)
