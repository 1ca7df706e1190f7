"""The default policy's classification thresholds are exactly what `ops.defaults` picks on dev data."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ops.defaults import CASCADE_BASELINE, DEFAULT_POLICY, ESCALATION_RATIO, choose_defaults, main
from router.policy import ClassifyRoute, load_policy
from tests.conftest import ROOT, SHARED_DATA, requires_shared_data

pytestmark = [pytest.mark.shared_data, requires_shared_data()]
BUNDLED = ROOT / "specialists" / "bundled"


def test_committed_thresholds_are_the_chosen_ones() -> None:
    choices = choose_defaults(DEFAULT_POLICY, SHARED_DATA, BUNDLED)
    routes = load_policy(DEFAULT_POLICY).policy.routes
    classify = {n for n, r in routes.items() if isinstance(r, ClassifyRoute)}
    assert {c.route for c in choices} == classify  # every bundled classification route has a default
    committed = {}
    for c in choices:
        route = routes[c.route]
        assert isinstance(route, ClassifyRoute)
        committed[c.route] = tuple(t.min_confidence for t in route.tiers())
    assert committed == {c.route: c.thresholds for c in choices}  # every tier of a cascade too
    text = DEFAULT_POLICY.read_text(encoding="utf-8")
    for c in choices:
        assert c.comment in text  # the policy says how each was chosen
        target = max(c.specialist_accuracy, c.foundation_accuracy)
        assert c.point.accuracy >= target - 1e-12 or not c.met


def test_the_sentiment_cascade_meets_its_goal_on_dev() -> None:
    """Issue 18's goal, on dev: at most half the escalations of the TF-IDF-only route at its
    baseline threshold, at least as accurate, and the widest margin among the pairs meeting both."""
    (c,) = [c for c in choose_defaults(DEFAULT_POLICY, SHARED_DATA, BUNDLED) if c.route == "sentiment"]
    assert c.cascade is not None and c.cascade.met
    base, point = c.cascade.baseline, c.cascade.point
    assert base.min_confidence == pytest.approx(CASCADE_BASELINE["sentiment"])
    assert point.escalated_share <= ESCALATION_RATIO * base.escalated_share
    assert point.accuracy >= base.accuracy
    assert len(c.thresholds) == 2
    assert point.cost_usd < base.cost_usd


def test_write_then_check_round_trip(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    shutil.copy(DEFAULT_POLICY, policy)
    text = policy.read_text(encoding="utf-8")
    policy.write_text(text.replace("\n    min_confidence:", "\n    min_confidence: 0.01 #", 1), encoding="utf-8")
    assert load_policy(policy).policy.routes["sentiment"].min_confidence == 0.01
    assert main(["--policy", str(policy), "--data-root", str(SHARED_DATA), "--check"]) == 1
    assert main(["--policy", str(policy), "--data-root", str(SHARED_DATA)]) == 0
    assert main(["--policy", str(policy), "--data-root", str(SHARED_DATA), "--check"]) == 0
    assert "# Hybrid Router default policy" in policy.read_text(encoding="utf-8")  # comments kept
