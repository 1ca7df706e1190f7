"""distill's evidence on the foundation model: the specialist's accuracy on the inputs it answers
confidently is measured on held-out data, so an overconfident specialist (one trained on little
data) does not make a perfect foundation model look weaker than it."""

from __future__ import annotations

from pathlib import Path

import pytest

from ops.distill import DistillRequest, Entry, FoundationWeakerError, _measure
from router.settings import RedisSettings
from specialists import Specialist
from specialists.training.data import Split
from tests.conftest import ROOT

TEXTS = [f"a gorgeous , witty , seductive movie . {i}" for i in range(20)]


@pytest.fixture(scope="module")
def serving() -> Specialist:
    return Specialist(ROOT / "specialists" / "bundled" / "sentiment")


def _req(tmp_path: Path) -> DistillRequest:
    return DistillRequest(policy_path=tmp_path / "p.yaml", route="sentiment", out=tmp_path / "c",
                          redis=RedisSettings(), min_checks=10)


def _shadow(serving: Specialist, agree: int, n: int) -> list[Entry]:
    """n shadow entries of confident answers (confidence 0.999), `agree` of them agreeing."""
    label = serving.predict_one(TEXTS[0]).label
    other = next(c for c in serving.classes if c != label)
    return [Entry("shadow", f"t{i}", label if i < agree else other, label, 0.999, f"r{i}", serving.version)
            for i in range(n)]


def test_a_right_foundation_is_not_refused_by_an_overconfident_specialist(
        serving: Specialist, tmp_path: Path) -> None:
    preds = serving.predict(TEXTS)
    assert min(p.confidence for p in preds) > 0.9
    # Held out: the specialist is right on 18 of its 20 confident answers (90%), though ~99.9% sure.
    labels = [p.label for p in preds[:18]] + [next(c for c in serving.classes if c != p.label) for p in preds[18:]]
    heldout = Split(TEXTS, labels, "held-out")
    # A foundation model that is right wherever the specialist is agrees with it 90% of the time:
    # against the mean confidence (0.999) that reads as "at most 0.901, weaker"; against the measured 0.9, not.
    evidence = _measure(_req(tmp_path), _shadow(serving, 36, 40), serving, heldout, threshold=0.5)
    shadow = evidence["shadow"]
    assert shadow["specialist_confident_heldout_accuracy"] == 0.9 and shadow["specialist_confident_heldout_n"] == 20
    assert shadow["foundation_accuracy_upper"] == 1.0

    with pytest.raises(FoundationWeakerError, match="held-out inputs it answers at min_confidence 0.5"):
        _measure(_req(tmp_path), _shadow(serving, 20, 40), serving, heldout, threshold=0.5)


def test_shadow_entries_of_another_version_are_not_evidence(serving: Specialist, tmp_path: Path) -> None:
    old = [Entry(e.kind, e.text, e.foundation_label, e.specialist_label, e.confidence, e.request_id, "older")
           for e in _shadow(serving, 0, 40)]
    heldout = Split(TEXTS, [p.label for p in serving.predict(TEXTS)], "held-out")
    evidence = _measure(_req(tmp_path), old, serving, heldout, threshold=0.5)
    assert evidence["shadow"]["checks"] == 0
