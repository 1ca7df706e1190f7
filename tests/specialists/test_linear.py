"""The numpy evaluation of the exporter's graph: same answers as onnxruntime; other graphs go to onnxruntime."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from specialists import Specialist
from specialists.linear import LinearGraph
from specialists.runtime import BUNDLED_DIR, _session
from specialists.training.data import load_split

BUNDLED = sorted(p for p in BUNDLED_DIR.iterdir() if (p / "manifest.json").is_file()
                 and json.loads((p / "manifest.json").read_text()).get("kind", "tfidf") == "tfidf")
TEXTS = ["", "a", "the film was really great", "I want to cancel my card", "WINNER!! claim now",
         "caf\udcff \U0001f600 ☃ żółć", "great " * 400, "what is the capital city of Australia?"]


def _onnxruntime_probs(spec: Specialist, texts: list[str]) -> np.ndarray:
    session = _session((spec.directory / "model.onnx").read_bytes(), spec.directory)
    rows = []
    for text in texts:
        ids, weights, _ = spec._featurizer.featurize(text, spec.max_chars)
        if not len(ids):
            ids, weights = np.zeros(1, dtype=np.int64), np.zeros(1)
        feed = {"ids": ids.astype(np.int64).reshape(1, -1), "weights": weights.astype(np.float32).reshape(1, -1)}
        rows.append(session.run(None, feed)[0][0])
    return np.array(rows)


@pytest.mark.parametrize("directory", BUNDLED, ids=lambda p: p.name)
def test_bundled_models_are_evaluated_by_numpy_like_onnxruntime(directory: Path) -> None:
    spec = Specialist(directory)
    assert spec._graph is not None and spec._session is None
    want = _onnxruntime_probs(spec, TEXTS)
    one = np.array([spec.predict_one(t).probabilities[c] for t in TEXTS for c in spec.classes]).reshape(want.shape)
    batch = np.array([[p.probabilities[c] for c in spec.classes] for p in spec.predict(TEXTS)])
    assert (one.argmax(axis=1) == want.argmax(axis=1)).all()
    # onnxruntime sums in float32, numpy in float64: they differ by float32 rounding only
    assert np.abs(one - want).max() <= 2e-6
    assert np.abs(batch - one).max() <= 1e-12


def _rewrite(tiny_dir: Path, out: Path, edit: str) -> Path:
    import onnx

    shutil.copytree(tiny_dir, out)
    model = onnx.load(str(out / "model.onnx"))
    softmax = model.graph.node[-1]
    assert softmax.op_type == "Softmax"
    if edit == "softmax_axis":  # same function on 2-D input, but not the exporter's graph
        softmax.attribute[0].i = 1
    else:
        model.graph.node[-1].op_type = "LogSoftmax"
    data = model.SerializeToString()
    (out / "model.onnx").write_bytes(data)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["sha256"]["model.onnx"] = hashlib.sha256(data).hexdigest()
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def test_another_graph_runs_in_onnxruntime(tiny_dir: Path, tiny_data: dict[str, Path], tmp_path: Path) -> None:
    texts = load_split(tiny_data["test"]).texts[:30] + ["", "zzz"]
    linear = Specialist(tiny_dir)
    other = Specialist(_rewrite(tiny_dir, tmp_path / "tiny", "softmax_axis"))
    assert linear._graph is not None and other._graph is None and other._session is not None
    for a, b, c in zip(linear.predict(texts), other.predict(texts), map(other.predict_one, texts)):
        assert a.label == b.label == c.label
        assert abs(a.confidence - b.confidence) <= 2e-6 and abs(b.confidence - c.confidence) <= 1e-6
    log = Specialist(_rewrite(tiny_dir, tmp_path / "log", "log_softmax"))
    assert log._graph is None  # a different function is never evaluated as the linear graph


@pytest.mark.parametrize("data", [b"", b"\x00\x01garbage", b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\x7f"])
def test_malformed_bytes_are_not_a_linear_graph(data: bytes) -> None:
    assert LinearGraph.from_onnx(data) is None
