"""The tier-2 runtime (`kind: transformer`) on the real fixture `tests/fixtures/sentiment_tiny`:
the input checks every kind shares, the lazy session, batch vs single answers, artifact checks."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from specialists import ArtifactError, InferenceError, Specialist
from specialists.encoder import EncoderSpecialist
from specialists.runtime import open_specialist

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "sentiment_tiny"
TEXTS = ["a gorgeous , witty , seductive movie .", "the film runs two hours .", "", "caf\udcff ☃ żółć",
         "great " * 600, "it 's a bad , bad movie ."]


@pytest.fixture(scope="module")
def encoder() -> Specialist:
    return open_specialist(FIXTURE)


@pytest.mark.parametrize("kind", ["tfidf", "transformer"])
def test_every_kind_refuses_the_same_bad_input(kind: str, encoder: Specialist, tiny_dir: Path) -> None:
    spec = encoder if kind == "transformer" else Specialist(tiny_dir)
    with pytest.raises(InferenceError, match="not a str"):
        spec.predict("a text, not a batch")
    with pytest.raises(InferenceError, match="expected str, got int"):
        spec.predict(["fine", 3])  # type: ignore[list-item]
    with pytest.raises(InferenceError, match="expected str, got NoneType"):
        spec.predict_one(None)  # type: ignore[arg-type]
    assert spec.predict([]) == []


def test_the_session_is_made_on_first_use() -> None:
    spec = open_specialist(FIXTURE)
    assert isinstance(spec, EncoderSpecialist) and spec.kind == "transformer"
    assert not spec.loaded
    spec.predict([])  # an empty batch runs nothing
    assert not spec.loaded
    spec.predict_one("a fine film")
    assert spec.loaded


def test_batch_answers_match_single_texts(encoder: Specialist) -> None:
    one = [encoder.predict_one(t) for t in TEXTS]
    batch = encoder.predict(TEXTS)
    assert [p.label for p in batch] == [p.label for p in one]
    for a, b in zip(batch, one):
        assert a.confidence == pytest.approx(b.confidence, abs=2e-2)
        assert set(a.probabilities) == set(encoder.classes) and sum(a.probabilities.values()) == pytest.approx(1, abs=1e-4)
    assert one[2].novelty == 1.0  # no word piece at all


def test_a_changed_model_is_refused_at_load(tmp_path: Path) -> None:
    broken = tmp_path / "sentiment_tiny"
    shutil.copytree(FIXTURE, broken)
    data = bytearray((broken / "model.onnx").read_bytes())
    data[-1] ^= 0xFF
    (broken / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="model.onnx"):
        open_specialist(broken)


def test_a_transformer_is_not_loaded_as_tfidf() -> None:
    with pytest.raises(ArtifactError, match="open_specialist"):
        Specialist(FIXTURE)
