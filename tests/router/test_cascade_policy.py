"""The `cascade` key of classification routes: schema, load-time checks, and `decide` per tier."""

from __future__ import annotations

import pytest

from router.decision import Answer, Escalate, decide, next_tier
from router.policy import ClassifyRoute, PolicyConfigError, parse_policy
from specialists import Prediction

CLASSES = {"sentiment": ("negative", "positive"), "sentiment_minilm": ("negative", "positive"),
           "spam": ("ham", "spam"), "third": ("negative", "positive"), "fourth": ("negative", "positive")}


def policy(cascade: str, extra: str = "") -> str:
    return ("version: 1\naliases:\n  cheap: {}\nroutes:\n  sentiment:\n    kind: classify\n"
            "    specialist: sentiment\n    min_confidence: 0.9\n    escalate_to: cheap\n" + extra
            + "    cascade:\n" + cascade)


def issues(text: str) -> list[str]:
    with pytest.raises(PolicyConfigError) as info:
        parse_policy(text, "p.yaml", CLASSES)
    return info.value.issues


def test_a_cascade_parses_into_ordered_tiers() -> None:
    loaded = parse_policy(policy("      - specialist: sentiment_minilm\n        min_confidence: 0.7\n"), "p.yaml",
                          CLASSES)
    route = loaded.policy.routes["sentiment"]
    assert isinstance(route, ClassifyRoute)
    assert [(t.specialist, t.min_confidence, t.max_novelty) for t in route.tiers()] == [
        ("sentiment", 0.9, 1.0), ("sentiment_minilm", 0.7, 1.0)]


@pytest.mark.parametrize(("cascade", "problem"), [
    ("      - specialist: nope\n", "unknown specialist 'nope'"),
    ("      - specialist: spam\n", "other labels"),
    ("      - specialist: sentiment\n", "already a tier"),
    ("      - specialist: sentiment_minilm\n        min_confidence: 1.5\n", "less than or equal to 1"),
    ("      - specialist: sentiment_minilm\n        prompt: x\n", "Extra inputs are not permitted"),
    ("      - specialist: sentiment_minilm\n      - specialist: third\n      - specialist: fourth\n",
     "at most 2 items"),
])
def test_bad_cascades_are_refused_with_file_and_line(cascade: str, problem: str) -> None:
    found = issues(policy(cascade))
    assert any(problem in i for i in found), found
    assert all(i.startswith("p.yaml") for i in found)


def _pred(label: str, confidence: float, novelty: float = 0.0) -> Prediction:
    other = 1.0 - confidence
    return Prediction(label, confidence, {label: confidence, "x": other}, novelty, "s", "v")


def test_each_tier_uses_its_own_thresholds_and_unsure_goes_on() -> None:
    route = parse_policy(policy("      - specialist: sentiment_minilm\n        min_confidence: 0.6\n"
                                "        max_novelty: 0.5\n", "    escalate_labels: [negative]\n"),
                         "p.yaml", CLASSES).policy.routes["sentiment"]
    low = decide(route, _pred("positive", 0.7), 0)
    assert low == Escalate("low_confidence", "cheap") and next_tier(route, 0, low)
    assert decide(route, _pred("positive", 0.7), 1) == Answer("positive")
    novel = decide(route, _pred("positive", 0.7, novelty=0.8), 1)
    assert novel == Escalate("novel_input", "cheap") and not next_tier(route, 1, novel)  # no tier 3
    failed = decide(route, None, 0)
    assert next_tier(route, 0, failed)  # a failed tier 1 still gets tier 2
    label = decide(route, _pred("negative", 0.99), 0)
    assert label == Escalate("escalate_label", "cheap") and not next_tier(route, 0, label)
