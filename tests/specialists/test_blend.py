"""A tier-2 specialist blended with its tf-idf sibling (`specialists/blend.py`): the fitted
weights from the manifest, applied only after the sibling version they were fitted with."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from specialists import SpecialistSet
from specialists.blend import Blend
from specialists.errors import ArtifactError
from specialists.runtime import BUNDLED_DIR
from specialists.training.calibrate import fit_blend

TEXTS = ["a gorgeous , witty , seductive movie .", "the film runs two hours .",
         "not the best film of the year , but not the worst either ."]


@pytest.fixture(scope="module")
def specs() -> SpecialistSet:
    return SpecialistSet.load(BUNDLED_DIR, ["sentiment", "sentiment_minilm"])


def test_combine_is_the_weighted_product_of_both_answers() -> None:
    b = Blend("s", "v1", 0.5, 2.0, (0.0, -0.25))
    got = b.combine([0.3, 0.7], [0.9, 0.1])
    z = [0.5 * math.log(0.3) + 2.0 * math.log(0.9), 0.5 * math.log(0.7) + 2.0 * math.log(0.1) - 0.25]
    want = [math.exp(v) / sum(math.exp(u) for u in z) for v in z]
    assert got == pytest.approx(want, rel=1e-12)
    assert b.combine([1.0, 0.0], [0.0, 1.0]) == pytest.approx(b.combine([1.0, 1e-9], [1e-9, 1.0]))  # clipped
    assert b.applies("s", "v1") and not b.applies("s", "v2") and not b.applies("t", "v1")


@pytest.mark.parametrize("node", [
    {"sibling": "s", "sibling_version": "v", "w_sibling": 1, "w_self": 1},  # no bias
    {"sibling": "s", "sibling_version": "v", "w_sibling": 1, "w_self": 1, "bias": [0]},  # one class short
    {"sibling": "s", "sibling_version": "v", "w_sibling": "x", "w_self": 1, "bias": [0, 0]},
    {"sibling": "s", "sibling_version": "v", "w_sibling": float("nan"), "w_self": 1, "bias": [0, 0]},
    {"sibling": "s", "sibling_version": "v", "w_sibling": 1e9, "w_self": 1, "bias": [0, 0]},
])
def test_a_malformed_blend_is_refused(node: dict[str, object]) -> None:
    with pytest.raises(ArtifactError, match="blend"):
        Blend.from_manifest({"blend": node}, 2)


def test_fit_blend_recovers_known_weights() -> None:
    rng = np.random.default_rng(0)
    n = 4000
    a = rng.uniform(0.02, 0.98, n)
    b = rng.uniform(0.02, 0.98, n)
    sib, own = np.stack([1 - a, a], 1), np.stack([1 - b, b], 1)
    blend = Blend("s", "v", 0.4, 1.3, (0.0, 0.2))
    p = np.array([blend.combine(x, y) for x, y in zip(sib, own)])
    y = (rng.uniform(size=n) < p[:, 1]).astype(np.int64)
    w_sib, w_self, bias = fit_blend(sib, own, y)
    assert (w_sib, w_self, bias[1]) == pytest.approx((0.4, 1.3, 0.2), abs=0.2)
    assert bias[0] == 0.0


def test_the_bundled_tier2_blends_after_its_sibling_only(specs: SpecialistSet) -> None:
    t1, t2 = specs["sentiment"], specs["sentiment_minilm"]
    assert t2.blend is not None and t2.blend.applies(t1.name, t1.version)
    first, alone = t1.predict(TEXTS), t2.predict(TEXTS)
    blended = t2.follow(first, alone)
    for p1, p2, b in zip(first, alone, blended, strict=True):
        want = t2.blend.combine([p1.probabilities[c] for c in t2.classes], [p2.probabilities[c] for c in t2.classes])
        assert [b.probabilities[c] for c in t2.classes] == pytest.approx(want)
        assert b.confidence == max(want) and (b.specialist, b.version, b.novelty) == (t2.name, t2.version, p2.novelty)
    # after another version of the sibling, or nothing: the tier answers alone
    other = [dataclasses.replace(p, version="0000000000000000") for p in first]
    assert t2.follow(other, alone) == alone
    assert t2.follow([None] * len(alone), alone) == alone
    assert t1.follow(first, first) == first  # a tf-idf specialist never blends


def test_a_blend_fitted_on_another_sibling_version_is_named_at_load(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    for name in ("sentiment", "sentiment_minilm"):
        shutil.copytree(BUNDLED_DIR / name, tmp_path / name)
    manifest = tmp_path / "sentiment_minilm" / "manifest.json"
    m = json.loads(manifest.read_text(encoding="utf-8"))
    m["blend"]["sibling_version"] = "0000000000000000"
    manifest.write_text(json.dumps(m), encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="specialists.runtime"):
        specs = SpecialistSet.load(tmp_path)
    assert any("answers unblended" in r.getMessage() for r in caplog.records)
    t1, t2 = specs["sentiment"], specs["sentiment_minilm"]
    alone = t2.predict(TEXTS)
    assert t2.follow(t1.predict(TEXTS), alone) == alone
