"""The bundled specialists: integrity always, accuracy/parity when ../shared/data is present."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from specialists import Prediction, load_specialists
from specialists.runtime import BUNDLED_DIR

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA_ROOT = (REPO_ROOT / ".." / "shared" / "data").resolve()
EXPECTED = ("banking", "intent", "question_type", "request_type", "sentiment", "spam", "topic")
BUNDLED = sorted(p.name for p in BUNDLED_DIR.iterdir() if (p / "manifest.json").is_file())


def test_bundled_present_and_loadable() -> None:
    specs = load_specialists()
    assert set(EXPECTED) <= set(specs.names)
    for name in specs.names:
        pred = specs[name].predict_one("Is this a question about my card payment?")
        assert isinstance(pred, Prediction) and pred.label in specs[name].classes


@pytest.mark.parametrize("name", BUNDLED)
def test_manifest_hashes_and_size(name: str) -> None:
    d = BUNDLED_DIR / name
    manifest = json.loads((d / "manifest.json").read_text())
    for file, expected in manifest["sha256"].items():
        assert hashlib.sha256((d / file).read_bytes()).hexdigest() == expected, file
    assert manifest["version"] == manifest["sha256"]["model.onnx"][:16]
    assert manifest["task"] == manifest["name"] == name
    transformer = manifest.get("kind") == "transformer"
    # tier 2 (a transformer, int8) is allowed 32 MiB in git; tf-idf specialists 8 MiB
    assert (d / "model.onnx").stat().st_size <= (32 if transformer else 8) * 1024 * 1024
    assert (d / "MODEL_CARD.md").is_file()
    metrics = manifest["metrics"]
    assert metrics["parity"]["label_agreement"] >= (0.99 if transformer else 1.0)
    # tf-idf: ONNX vs sklearn; transformer: one unpadded text vs padded batches (int8 activations are
    # quantized per batch, so padding moves probabilities a little, never the label)
    assert metrics["parity"]["max_abs_prob_diff"] <= (2e-2 if transformer else 1e-4)
    for level in ("0.90", "0.95", "0.98", "0.99"):
        assert level in metrics["risk_coverage"] and level in metrics["thresholds"]


@pytest.mark.shared_data
@pytest.mark.parametrize("name", BUNDLED)
def test_accuracy_and_parity_on_test_split(name: str) -> None:
    if not DATA_ROOT.is_dir():
        pytest.skip(
            f"../shared/data not present: {DATA_ROOT} missing, cannot re-measure {name} on its test split"
        )
    from specialists.training.data import merge
    from specialists.training.recipes import TIER2
    from specialists.training.splits import dataset_splits

    spec = load_specialists()[name]
    splits = dataset_splits(TIER2[name][0] if name in TIER2 else name, DATA_ROOT)
    test = merge(splits["test"], splits["oos_test"]) if "oos_test" in splits else splits["test"]
    preds = spec.predict(test.texts)
    accuracy = float(np.mean([p.label == y for p, y in zip(preds, test.labels)]))
    recorded = spec.manifest.metrics
    assert accuracy == pytest.approx(recorded["accuracy"], abs=1e-4)
    # parity against sklearn: refit the (deterministic) recipe for the specialists that train quickly
    from specialists.training.recipes import job_for
    from specialists.training.train import fit

    if name in ("sentiment", "question_type"):  # fast to refit (a few seconds each)
        job = job_for(name, DATA_ROOT)
        model = fit(job.config, job.train.texts, job.train.labels)
        model.temperature = float(spec.manifest.raw["temperature"])
        ref = model.predict_proba([t[: spec.max_chars] for t in test.texts])
        got = np.array([[p.probabilities[c] for c in spec.classes] for p in preds])
        assert (ref.argmax(axis=1) == got.argmax(axis=1)).all()
        assert float(np.abs(ref - got).max()) <= 1e-6


@pytest.mark.parametrize("name", EXPECTED)
def test_built_with_the_recipe_selected_on_dev(name: str) -> None:
    """The committed model was built from selection.json's choice, and its card states the protocol."""
    from specialists.training.recipes import load_selection, recipe_config

    selected = load_selection()[name]
    manifest = json.loads((BUNDLED_DIR / name / "manifest.json").read_text())
    expected = json.loads(json.dumps(recipe_config(name, selected["overrides"]).as_dict()))
    assert manifest["trained_with"]["config"] == expected
    assert all(c["dev_accuracy"] <= selected["dev_accuracy"] for c in selected["candidates"])
    assert "chosen by `python -m specialists.training select`" in manifest["source"]["protocol"]
    card = (BUNDLED_DIR / name / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "**Held-out protocol:**" in card and "test split is read once" in card
