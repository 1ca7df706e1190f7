"""The pure routing decision."""

from __future__ import annotations

import pytest

from router.decision import Answer, Escalate, decide
from router.policy import AutoRoute, ChatRoute, ClassifyRoute
from specialists import Prediction


def pred(label: str, confidence: float, novelty: float = 0.0) -> Prediction:
    return Prediction(label=label, confidence=confidence, probabilities={label: confidence}, novelty=novelty,
                      specialist="s", version="v")


ROUTE = ClassifyRoute(specialist="s", min_confidence=0.8, max_novelty=0.5, escalate_labels=("oos",),
                      escalate_to="cheap")


@pytest.mark.parametrize(("p", "expected"), [
    (pred("a", 0.9), Answer("a")),
    (pred("a", 0.8), Answer("a")),
    (pred("a", 0.79), Escalate("low_confidence", "cheap")),
    (pred("oos", 0.99), Escalate("escalate_label", "cheap")),
    (pred("a", 0.99, novelty=0.6), Escalate("novel_input", "cheap")),
    (None, Escalate("specialist_error", "cheap")),
])
def test_classify_route(p: Prediction | None, expected: object) -> None:
    assert decide(ROUTE, p) == expected


def test_chat_route_answers_only_listed_intents() -> None:
    route = ChatRoute(kind="chat", specialist="s", min_confidence=0.5, escalate_to="strong",
                      answers={"greeting": "hi"})
    assert decide(route, pred("greeting", 0.9)) == Answer("greeting")
    assert decide(route, pred("balance", 0.9)) == Escalate("no_canned_answer", "strong")


def test_auto_route_maps_categories_to_tiers() -> None:
    route = AutoRoute(kind="auto", specialist="s", min_confidence=0.5, tiers={"closed_qa": "cheap"},
                      low_confidence_tier="strong")
    assert decide(route, pred("closed_qa", 0.9)) == Escalate("request_type", "cheap")
    assert decide(route, pred("creative_writing", 0.9)) == Escalate("request_type", "strong")
    assert decide(route, pred("closed_qa", 0.3)) == Escalate("low_confidence", "strong")
