"""Serving runtime: ``Specialist`` (one ONNX classifier) and ``SpecialistSet``.

Only onnxruntime, numpy and the standard library are used here; training code lives
in ``specialists.training`` and is never imported by the runtime.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from specialists.errors import ArtifactError, InferenceError
from specialists.manifest import FEATURES_FILE, MANIFEST_FILE, MODEL_FILE, Manifest, verify_sha256
from specialists.tokenizer import Featurizer

__all__ = ["BUNDLED_DIR", "Prediction", "Specialist", "SpecialistSet", "load_specialists"]

BUNDLED_DIR = Path(__file__).parent / "bundled"
_BUCKET = 512  # max texts per session.run in predict()


@dataclass(frozen=True, slots=True)
class Prediction:
    """One specialist answer: calibrated label/confidence plus an input novelty score."""

    label: str
    confidence: float
    probabilities: dict[str, float]
    novelty: float
    specialist: str
    version: str


def _session(model: bytes, where: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises several private exception types
        raise ArtifactError(f"{where}: not a loadable ONNX model ({exc})") from exc


class Specialist:
    """A calibrated text classifier backed by one onnxruntime session."""

    def __init__(self, directory: Path) -> None:
        directory = Path(directory)
        self.manifest = Manifest.load(directory)
        model = verify_sha256(directory / MODEL_FILE, self.manifest.sha256[MODEL_FILE])
        features = verify_sha256(directory / FEATURES_FILE, self.manifest.sha256[FEATURES_FILE])
        try:
            self._featurizer = Featurizer(json.loads(features.decode("utf-8")))
        except (ValueError, KeyError, TypeError) as exc:
            raise ArtifactError(f"{directory / FEATURES_FILE}: invalid features ({exc!r})") from exc
        self._session = _session(model, directory / MODEL_FILE)
        m = self.manifest
        self.name: str = m.name
        self.version: str = m.version
        self.classes: tuple[str, ...] = m.classes
        self.oos_label: str | None = m.oos_label
        self.max_chars: int = m.max_chars
        self.directory = directory
        self._ids_name, self._weights_name = m.input_names
        self._outputs = [m.output_name]
        n_out = self._session.get_outputs()[0].shape[-1]
        if isinstance(n_out, int) and n_out != len(self.classes):
            raise ArtifactError(f"{directory / MODEL_FILE}: {n_out} outputs but {len(self.classes)} classes")

    def __repr__(self) -> str:
        return f"Specialist(name={self.name!r}, version={self.version!r}, classes={len(self.classes)})"

    def _run(self, ids: npt.NDArray[np.int64], weights: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        try:
            out = self._session.run(self._outputs, {self._ids_name: ids, self._weights_name: weights})
        except Exception as exc:
            raise InferenceError(f"{self.name}: onnxruntime failed ({exc})") from exc
        return np.asarray(out[0], dtype=np.float32)

    def _featurize(self, text: str) -> tuple[list[int], list[float], float]:
        if not isinstance(text, str):
            raise InferenceError(f"{self.name}: expected str, got {type(text).__name__}")
        return self._featurizer.featurize(text, self.max_chars)

    def _prediction(self, row: npt.NDArray[np.float32], novelty: float) -> Prediction:
        values = row.tolist()
        best = int(row.argmax())
        return Prediction(
            label=self.classes[best],
            confidence=values[best],
            probabilities=dict(zip(self.classes, values)),
            novelty=novelty,
            specialist=self.name,
            version=self.version,
        )

    def predict_one(self, text: str) -> Prediction:
        """Classify one text (fast path; identical results to ``predict([text])[0]``)."""
        ids, weights, novelty = self._featurize(text)
        if not ids:
            ids, weights = [0], [0.0]
        probs = self._run(np.array([ids], dtype=np.int64), np.array([weights], dtype=np.float32))
        return self._prediction(probs[0], novelty)

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        """Classify a batch of texts.

        Texts are featurized, sorted by feature count and cut into length buckets so that
        padding stays small; each bucket is one batched ``session.run`` (a single run for
        batches of similar-length texts, at most ``_BUCKET`` texts per run).
        """
        if isinstance(texts, str):
            raise InferenceError(f"{self.name}: predict() takes a sequence of texts, not a str")
        feats = [self._featurize(t) for t in texts]
        if not feats:
            return []
        order = sorted(range(len(feats)), key=lambda r: len(feats[r][0]))
        probs = np.empty((len(feats), len(self.classes)), dtype=np.float32)
        start, n = 0, len(order)
        while start < n:
            # a bucket holds rows at most twice as wide as its narrowest (>= 8) row
            limit = 2 * max(8, len(feats[order[start]][0]))
            stop = start + 1
            while stop < n and stop - start < _BUCKET and len(feats[order[stop]][0]) <= limit:
                stop += 1
            rows = order[start:stop]
            width = max(1, len(feats[order[stop - 1]][0]))
            ids = np.zeros((len(rows), width), dtype=np.int64)
            weights = np.zeros((len(rows), width), dtype=np.float32)
            for j, r in enumerate(rows):
                i, w, _ = feats[r]
                if i:
                    ids[j, : len(i)] = i
                    weights[j, : len(w)] = w
            probs[rows] = self._run(ids, weights)
            start = stop
        return [self._prediction(probs[r], f[2]) for r, f in enumerate(feats)]


class SpecialistSet:
    """A name-indexed, read-only collection of loaded specialists."""

    def __init__(self, specialists: Iterable[Specialist]) -> None:
        self._by_name: dict[str, Specialist] = {}
        for spec in specialists:
            if spec.name in self._by_name:
                raise ArtifactError(f"duplicate specialist name {spec.name!r}")
            self._by_name[spec.name] = spec

    @classmethod
    def load(cls, directory: Path, names: Iterable[str] | None = None) -> SpecialistSet:
        """Load every subdirectory of ``directory`` holding a manifest (or only ``names``)."""
        directory = Path(directory)
        if not directory.is_dir():
            raise ArtifactError(f"{directory}: specialists directory missing")
        if names is None:
            dirs = sorted(p for p in directory.iterdir() if (p / MANIFEST_FILE).is_file())
        else:
            dirs = [directory / n for n in names]
        return cls(Specialist(d) for d in dirs)

    def __getitem__(self, name: str) -> Specialist:
        return self._by_name[name]

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._by_name)


def load_specialists(directory: Path | None = None) -> SpecialistSet:
    """Load the bundled specialists (or every specialist under ``directory``)."""
    return SpecialistSet.load(BUNDLED_DIR if directory is None else Path(directory))
