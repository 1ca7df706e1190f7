"""Export a fitted specialist: ``features.json`` + ``model.onnx``, then a parity check.

The parity check loads the written artifacts with the serving runtime and compares them
with the sklearn reference (:meth:`LinearSpecialist.predict_proba`); export fails unless
labels agree on 100% of the texts and the max absolute probability difference is <= 1e-4.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from specialists.manifest import FEATURES_FILE, MODEL_FILE
from specialists.tokenizer import FEATURES_FORMAT
from specialists.training.graph import build_graph
from specialists.training.train import TOKEN_PATTERN, LinearSpecialist

__all__ = ["PARITY_TOL", "ExportError", "Parity", "check_parity", "features_spec", "write_artifacts"]

PARITY_TOL = 1e-4
MAX_KNOWN_WORDS = 60_000


class ExportError(RuntimeError):
    """The exported artifacts do not reproduce the sklearn model."""


@dataclass(frozen=True)
class Parity:
    n: int
    label_agreement: float
    max_abs_diff: float

    def as_dict(self) -> dict[str, Any]:
        return {"n": self.n, "label_agreement": self.label_agreement, "max_abs_prob_diff": self.max_abs_diff}


def _short(x: float) -> float:
    return float(f"{x:.9g}")


def features_spec(model: LinearSpecialist, train_texts: list[str]) -> dict[str, Any]:
    """Everything the runtime featurizer needs, as a JSON-able dict."""
    blocks = []
    weights = model.union.transformer_weights or {}
    for name, vec in model.vectorizers:
        vocab: dict[str, int] = vec.vocabulary_
        terms = sorted(vocab, key=vocab.__getitem__)
        block: dict[str, Any] = {
            "analyzer": vec.analyzer,
            "ngram_range": list(vec.ngram_range),
            "sublinear_tf": bool(vec.sublinear_tf),
            "norm": vec.norm,
            "scale": float(weights.get(name, 1.0)),
            "terms": terms,
            "idf": [_short(v) for v in vec.idf_.tolist()],
        }
        if vec.analyzer == "word":
            block["token_pattern"] = vec.token_pattern
        if vec.preprocessor is not None:
            block["prefix_chars"] = int(vec.preprocessor.n)
        blocks.append(block)
    pattern = re.compile(TOKEN_PATTERN)
    df: Counter[str] = Counter()
    for text in train_texts:
        df.update(set(pattern.findall(text.lower())))
    known = sorted(w for w, _ in sorted(df.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_KNOWN_WORDS])
    return {
        "format": FEATURES_FORMAT,
        "lowercase": True,
        "blocks": blocks,
        "novelty": {
            "token_pattern": TOKEN_PATTERN,
            "known_words": known,
            "definition": "share of word tokens not seen in the training texts",
        },
    }


def write_artifacts(model: LinearSpecialist, train_texts: list[str], out_dir: Path, name: str) -> None:
    """Write ``features.json`` and ``model.onnx`` (deterministic bytes)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = features_spec(model, train_texts)
    text = json.dumps(spec, ensure_ascii=False, separators=(",", ":"), sort_keys=False)
    (out_dir / FEATURES_FILE).write_text(text + "\n", encoding="utf-8")
    onnx_bytes = build_graph(model.W, model.b, model.temperature, name, model.config.weight_dtype)
    (out_dir / MODEL_FILE).write_bytes(onnx_bytes)


def check_parity(model: LinearSpecialist, runtime: Any, texts: list[str]) -> Parity:
    """Compare runtime (ONNX) and sklearn probabilities; raise ExportError beyond tolerance."""
    capped = [t[: runtime.max_chars] for t in texts]
    ref = model.predict_proba(capped)
    got = np.array([[p.probabilities[c] for c in model.classes] for p in runtime.predict(texts)])
    single = [runtime.predict_one(t) for t in texts[:200]]
    if any(s.label != model.classes[int(r.argmax())] for s, r in zip(single, ref)):
        raise ExportError("predict_one disagrees with the sklearn reference")
    agree = float(np.mean(got.argmax(axis=1) == ref.argmax(axis=1)))
    diff = float(np.abs(got - ref).max())
    parity = Parity(len(texts), agree, diff)
    if agree < 1.0 or diff > PARITY_TOL:
        raise ExportError(f"parity failed: label agreement {agree:.4%}, max abs prob diff {diff:.2e}")
    return parity
