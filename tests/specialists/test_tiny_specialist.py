"""Train a tiny specialist from synthetic JSONL, export it and exercise the runtime."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from specialists import ArtifactError, InferenceError, Prediction, Specialist, SpecialistSet
from specialists.training.data import load_split


def _reference(tiny_data: dict[str, Path]) -> tuple[object, list[str]]:
    from specialists.training.train import TrainConfig, fit

    train = load_split(tiny_data["train"])
    model = fit(TrainConfig(char_ngram=(2, 5), C=10.0), train.texts, train.labels)
    return model, train.texts


def test_manifest_fields(tiny_dir: Path) -> None:
    manifest = json.loads((tiny_dir / "manifest.json").read_text())
    for key in (
        "name",
        "task",
        "version",
        "sha256",
        "classes",
        "oos_label",
        "input",
        "io",
        "opset",
        "novelty",
        "metrics",
        "source",
        "trained_with",
    ):
        assert key in manifest, key
    assert manifest["version"] == manifest["sha256"]["model.onnx"][:16]
    metrics = manifest["metrics"]
    for key in ("accuracy", "macro_f1", "ece", "risk_coverage", "thresholds", "file_bytes", "parity"):
        assert key in metrics, key
    assert metrics["parity"]["label_agreement"] == 1.0
    assert (tiny_dir / "MODEL_CARD.md").read_text().startswith("# Model card")


def test_parity_with_sklearn(tiny_dir: Path, tiny_data: dict[str, Path]) -> None:
    spec = Specialist(tiny_dir)
    manifest = json.loads((tiny_dir / "manifest.json").read_text())
    model, _ = _reference(tiny_data)
    model.temperature = manifest["temperature"]  # type: ignore[attr-defined]
    test = load_split(tiny_data["test"])
    texts = test.texts + ["unseen words only", "", "film film film film great great awful"]
    ref = model.predict_proba(texts)  # type: ignore[attr-defined]
    got = np.array([[p.probabilities[c] for c in spec.classes] for p in spec.predict(texts)])
    assert list(spec.classes) == model.classes  # type: ignore[attr-defined]
    assert (ref.argmax(axis=1) == got.argmax(axis=1)).all()
    assert np.abs(ref - got).max() <= 1e-4


def test_batch_equals_single(tiny_dir: Path, tiny_data: dict[str, Path]) -> None:
    spec = Specialist(tiny_dir)
    texts = load_split(tiny_data["test"]).texts[:40] + ["", "a", "x" * 5000]
    batch = spec.predict(texts)
    for text, b in zip(texts, batch):
        one = spec.predict_one(text)
        assert one.label == b.label
        assert one.novelty == b.novelty
        assert abs(one.confidence - b.confidence) <= 1e-6
        assert one.specialist == "tiny" and one.version == spec.version
    assert spec.predict([]) == []


@pytest.mark.parametrize(
    "text",
    [
        "",
        " \t\n ",
        "x" * 100_000,
        "\x00\x01\x1b[31m\x7f bell\x07",
        "\ud800",
        "caf\udcff \U0001f600 ☃ żółć",
        "great" * 3000,
    ],
)
def test_weird_inputs_never_crash(tiny_dir: Path, text: str) -> None:
    spec = Specialist(tiny_dir)
    for pred in (spec.predict_one(text), spec.predict([text])[0]):
        assert isinstance(pred, Prediction)
        assert pred.label in spec.classes
        assert 0.0 <= pred.confidence <= 1.0
        assert abs(sum(pred.probabilities.values()) - 1.0) < 1e-5
        assert 0.0 <= pred.novelty <= 1.0
    assert spec.predict_one("").novelty == 1.0
    assert spec.predict_one("\ud800").novelty == 1.0


def test_non_string_is_inference_error(tiny_dir: Path) -> None:
    spec = Specialist(tiny_dir)
    with pytest.raises(InferenceError):
        spec.predict_one(None)  # type: ignore[arg-type]
    with pytest.raises(InferenceError):
        spec.predict("not a list")


def test_novelty(tiny_dir: Path, tiny_data: dict[str, Path]) -> None:
    spec = Specialist(tiny_dir)
    train = load_split(tiny_data["train"]).texts[:20]
    assert max(p.novelty for p in spec.predict(train)) == 0.0
    assert spec.predict_one("quantum zebra xylophone marmalade").novelty == 1.0
    assert spec.predict_one("the film zebra xylophone").novelty == 0.5


def test_bad_sha256_is_artifact_error(tiny_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "tiny"
    shutil.copytree(tiny_dir, broken)
    data = bytearray((broken / "model.onnx").read_bytes())
    data[-1] ^= 0xFF
    (broken / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ArtifactError) as info:
        Specialist(broken)
    message = str(info.value)
    manifest = json.loads((broken / "manifest.json").read_text())
    assert "model.onnx" in message
    assert manifest["sha256"]["model.onnx"] in message
    import hashlib

    assert hashlib.sha256(bytes(data)).hexdigest() in message


def test_missing_and_corrupt_files(tiny_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "tiny"
    shutil.copytree(tiny_dir, broken)
    (broken / "features.json").unlink()
    with pytest.raises(ArtifactError, match="features.json"):
        Specialist(broken)
    shutil.copy(tiny_dir / "features.json", broken / "features.json")
    (broken / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="manifest.json"):
        Specialist(broken)


def test_specialist_set(tiny_dir: Path) -> None:
    specs = SpecialistSet.load(tiny_dir.parent)
    assert "tiny" in specs and "nope" not in specs
    assert len(specs) == 1 and list(specs) == ["tiny"] and specs.names == ("tiny",)
    assert specs["tiny"].classes == ("neg", "pos")
    with pytest.raises(KeyError):
        specs["nope"]


def test_thread_safety(tiny_dir: Path, tiny_data: dict[str, Path]) -> None:
    spec = Specialist(tiny_dir)
    texts = load_split(tiny_data["test"]).texts
    expected = [p.label for p in spec.predict(texts)]
    errors: list[str] = []

    def work() -> None:
        for _ in range(5):
            if [spec.predict_one(t).label for t in texts] != expected:
                errors.append("mismatch")
            if [p.label for p in spec.predict(texts)] != expected:
                errors.append("mismatch")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_lru_cache_gives_identical_fresh_predictions(tiny_dir: Path, tiny_data: dict[str, Path]) -> None:
    cold = Specialist(tiny_dir)
    cached = Specialist(tiny_dir, cache_size=8)
    texts = load_split(tiny_data["test"]).texts[:20] + ["", "x" * 5000]
    for _ in range(2):  # second round answers from the LRU (and evicts: 22 texts > 8 entries)
        for text in texts:
            a, b = cold.predict_one(text), cached.predict_one(text)
            assert a == b
    first, second = cached.predict_one(texts[0]), cached.predict_one(texts[0])
    first.probabilities[cached.classes[0]] = -1.0  # callers may mutate their copy
    assert second.probabilities[cached.classes[0]] >= 0.0
    assert SpecialistSet.load(tiny_dir.parent, cache_size=4)["tiny"].cache_size == 4


def test_featurize_batch_matches_single(tiny_dir: Path, tiny_data: dict[str, Path]) -> None:
    featurizer = Specialist(tiny_dir)._featurizer
    texts = load_split(tiny_data["test"]).texts[:30] + ["", "zzz qqq", "great  great\tgreat"]
    ids, weights, lens, novelties = featurizer.featurize_batch(texts, 2000)
    start = 0
    for text, n, nov in zip(texts, lens.tolist(), novelties):
        one_ids, one_weights, one_nov = featurizer.featurize(text, 2000)
        assert ids[start : start + n].tolist() == one_ids.tolist()
        assert np.allclose(weights[start : start + n], one_weights, rtol=1e-6, atol=0.0)
        assert nov == one_nov
        start += n
    assert start == len(ids)
