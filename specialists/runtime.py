"""Serving runtime: ``Specialist`` (one ONNX classifier) and ``SpecialistSet``.

Only onnxruntime, numpy and the standard library are used here; training code lives
in ``specialists.training`` and is never imported by the runtime. A model that is exactly the
exporter's gather-and-sum graph is evaluated with numpy (:mod:`specialists.linear`: no
per-call onnxruntime overhead, the weights held once); any other ONNX model runs in an
onnxruntime session, imported only then.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from specialists.errors import ArtifactError, InferenceError
from specialists.linear import LinearGraph
from specialists.manifest import FEATURES_FILE, MANIFEST_FILE, MODEL_FILE, Manifest, verify_sha256
from specialists.tokenizer import Featurizer

if TYPE_CHECKING:
    import onnxruntime as ort

log = logging.getLogger(__name__)

__all__ = ["BUNDLED_DIR", "Prediction", "Specialist", "SpecialistSet", "load_specialists", "open_specialist"]

BUNDLED_DIR = Path(__file__).parent / "bundled"
_BUCKET = 512  # max texts per session.run in predict()
_EMPTY_IDS = np.zeros(1, dtype=np.int64)  # a text without known n-grams: the padding row only
_EMPTY_WEIGHTS = np.zeros(1, dtype=np.float32)
_LINEAR_IO = (("ids", "weights"), "probabilities")


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
    import onnxruntime as ort

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

    def __init__(self, directory: Path, *, cache_size: int = 0) -> None:
        """Load and verify the specialist in ``directory``.

        ``cache_size`` > 0 keeps an LRU of that many recent texts for ``predict_one`` (off by
        default so that latency figures are cold unless a caller opts in).
        """
        directory = Path(directory)
        self.manifest = Manifest.load(directory)
        m = self.manifest
        self.name: str = m.name
        self.version: str = m.version
        self.classes: tuple[str, ...] = m.classes
        self.oos_label: str | None = m.oos_label
        self.max_chars: int = m.max_chars
        self.kind: str = m.kind
        self.directory = directory
        self._load(directory)
        self.cache_size = max(0, int(cache_size))
        self._cached: Callable[[str], tuple[Sequence[float], float]] = (
            functools.lru_cache(maxsize=self.cache_size)(self._cache_entry)
            if self.cache_size
            else self._scores
        )

    def _load(self, directory: Path) -> None:
        """Verify and load the kind-specific artifacts (here: tf-idf features + gather-and-sum graph)."""
        m = self.manifest
        if m.kind != "tfidf":
            raise ArtifactError(f"{directory}: a {m.kind!r} specialist; load it with open_specialist()")
        model = verify_sha256(directory / MODEL_FILE, m.sha256[MODEL_FILE])
        features = verify_sha256(directory / FEATURES_FILE, m.sha256[FEATURES_FILE])
        try:
            self._featurizer = Featurizer(json.loads(features.decode("utf-8")))
        except (ValueError, KeyError, TypeError) as exc:
            raise ArtifactError(f"{directory / FEATURES_FILE}: invalid features ({exc!r})") from exc
        graph = LinearGraph.from_onnx(model) if (m.input_names, m.output_name) == _LINEAR_IO else None
        self._graph = graph
        self._session: Any = None
        if graph is None:
            self._session = _session(model, directory / MODEL_FILE)
        self._ids_name, self._weights_name = m.input_names
        self._outputs = [m.output_name]
        n_out: object = graph.n_classes if graph is not None else self._session.get_outputs()[0].shape[-1]
        if isinstance(n_out, int) and n_out != len(self.classes):
            raise ArtifactError(f"{directory / MODEL_FILE}: {n_out} outputs but {len(self.classes)} classes")

    def __repr__(self) -> str:
        return f"Specialist(name={self.name!r}, version={self.version!r}, classes={len(self.classes)})"

    def _cache_entry(self, text: str) -> tuple[tuple[float, ...], float]:
        row, novelty = self._scores(text)
        return tuple(row), novelty

    def _run(self, ids: npt.NDArray[np.int64], weights: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """One onnxruntime call (models that are not the exporter's linear graph)."""
        try:
            out = self._session.run(self._outputs, {self._ids_name: ids, self._weights_name: weights})
        except Exception as exc:
            raise InferenceError(f"{self.name}: onnxruntime failed ({exc})") from exc
        return np.asarray(out[0], dtype=np.float32)

    def _check(self, text: object) -> None:
        if not isinstance(text, str):
            raise InferenceError(f"{self.name}: expected str, got {type(text).__name__}")

    def _check_batch(self, texts: Sequence[str]) -> bool:
        """The input checks of every kind's ``predict``: a sequence (a bare str is refused, it
        would be read as characters) of str. False for an empty batch (nothing to run)."""
        if isinstance(texts, str):
            raise InferenceError(f"{self.name}: predict() takes a sequence of texts, not a str")
        for text in texts:
            self._check(text)
        return bool(texts)

    def _prediction(self, row: list[float], novelty: float) -> Prediction:
        best = row.index(max(row))
        return Prediction(
            label=self.classes[best],
            confidence=row[best],
            probabilities=dict(zip(self.classes, row)),
            novelty=novelty,
            specialist=self.name,
            version=self.version,
        )

    def follow(self, previous: Sequence[Prediction | None], preds: list[Prediction]) -> list[Prediction]:
        """This tier's answers given the previous cascade tier's for the same inputs.

        A tf-idf specialist answers alone: ``preds`` unchanged. A tier-2 specialist with a fitted
        ``blend`` combines its probabilities with its sibling's (:mod:`specialists.blend`).
        """
        return preds

    def _scores(self, text: str) -> tuple[list[float], float]:
        """Probabilities (class order) and novelty of one text, without the LRU."""
        ids, weights, novelty = self._featurizer.featurize(text, self.max_chars)
        if self._graph is not None:
            return self._graph.one(ids, weights), novelty
        if not len(ids):
            return self._run(_EMPTY_IDS.reshape(1, -1), _EMPTY_WEIGHTS.reshape(1, -1))[0].tolist(), novelty
        probs = self._run(ids.astype(np.int64).reshape(1, -1), weights.astype(np.float32).reshape(1, -1))
        return probs[0].tolist(), novelty

    def predict_one(self, text: str) -> Prediction:
        """Classify one text (fast path; identical results to ``predict([text])[0]``).

        With ``cache_size > 0`` repeated texts (same first ``max_chars`` characters) are
        answered from a bounded LRU of probabilities; every call still gets a fresh Prediction.
        """
        self._check(text)
        row, novelty = self._cached(text[: self.max_chars])
        return self._prediction(list(row), novelty)

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        """Classify a batch of texts.

        Texts are featurized (counts and weights computed in one numpy pass), then evaluated
        by the linear graph in chunks, or (other models) sorted by feature count and cut into
        length buckets so that padding stays small, one batched ``session.run`` per bucket (at
        most ``_BUCKET`` texts, rows at most twice as wide as the narrowest).
        """
        if not self._check_batch(texts):
            return []
        ids, weights, lens, novelties = self._featurizer.featurize_batch(texts, self.max_chars)
        if self._graph is not None:
            rows = self._graph.batch(ids, weights, lens).tolist()
            return [self._prediction(row, nov) for row, nov in zip(rows, novelties)]
        return self._predict_session(ids, weights.astype(np.float32), lens, novelties)

    def _predict_session(
        self, ids: npt.NDArray[np.int64], weights: npt.NDArray[np.float32], lens: npt.NDArray[np.int64],
        novelties: list[float],
    ) -> list[Prediction]:
        starts = np.cumsum(lens) - lens
        order = np.argsort(lens, kind="stable")
        sorted_lens = lens[order].tolist()
        probs = np.empty((len(lens), len(self.classes)), dtype=np.float32)
        start, n = 0, len(order)
        while start < n:
            limit = 2 * max(8, sorted_lens[start])
            stop = start + 1
            while stop < n and stop - start < _BUCKET and sorted_lens[stop] <= limit:
                stop += 1
            rows = order[start:stop]
            row_lens = lens[rows]
            width = max(1, sorted_lens[stop - 1])
            pad_ids = np.zeros((len(rows), width), dtype=np.int64)
            pad_weights = np.zeros((len(rows), width), dtype=np.float32)
            total = int(row_lens.sum())
            if total:
                r = np.repeat(np.arange(len(rows)), row_lens)
                col = np.arange(total) - np.repeat(np.cumsum(row_lens) - row_lens, row_lens)
                src = np.repeat(starts[rows], row_lens) + col
                pad_ids[r, col] = ids[src]
                pad_weights[r, col] = weights[src]
            probs[rows] = self._run(pad_ids, pad_weights)
            start = stop
        return [self._prediction(row, nov) for row, nov in zip(probs.tolist(), novelties)]


def open_specialist(directory: Path, *, cache_size: int = 0) -> Specialist:
    """Load the specialist in ``directory`` with the runtime class of its manifest's ``kind``."""
    if Manifest.load(Path(directory)).kind == "transformer":
        from specialists.encoder import EncoderSpecialist  # imported on demand: needs `tokenizers`

        return EncoderSpecialist(directory, cache_size=cache_size)
    return Specialist(directory, cache_size=cache_size)


class SpecialistSet:
    """A name-indexed, read-only collection of loaded specialists."""

    def __init__(self, specialists: Iterable[Specialist]) -> None:
        self._by_name: dict[str, Specialist] = {}
        for spec in specialists:
            if spec.name in self._by_name:
                raise ArtifactError(f"duplicate specialist name {spec.name!r}")
            self._by_name[spec.name] = spec
        for spec in self._by_name.values():
            blend = getattr(spec, "blend", None)
            sibling = self._by_name.get(blend.sibling) if blend is not None else None
            if blend is not None and sibling is not None and sibling.version != blend.sibling_version:
                log.warning("specialist %s: its blend was fitted with %s %s, loaded is %s: it answers unblended",
                            spec.name, blend.sibling, blend.sibling_version, sibling.version)

    @classmethod
    def load(
        cls, directory: Path, names: Iterable[str] | None = None, *, cache_size: int = 0
    ) -> SpecialistSet:
        """Load every subdirectory of ``directory`` holding a manifest (or only ``names``).

        ``cache_size`` is passed to every :class:`Specialist` (per-specialist ``predict_one`` LRU).
        """
        directory = Path(directory)
        if not directory.is_dir():
            raise ArtifactError(f"{directory}: specialists directory missing")
        if names is None:
            dirs = sorted(p for p in directory.iterdir() if (p / MANIFEST_FILE).is_file())
        else:
            dirs = [directory / n for n in names]
        return cls(open_specialist(d, cache_size=cache_size) for d in dirs)

    def with_named(self, extra: Mapping[str, Specialist]) -> SpecialistSet:
        """A new set: these specialists plus ``extra`` under the names given there (a promoted
        candidate shares its manifest name with the version it replaces); ``extra`` wins."""
        out = SpecialistSet(())
        out._by_name = {**self._by_name, **extra}
        return out

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


def load_specialists(directory: Path | None = None, *, cache_size: int = 0) -> SpecialistSet:
    """Load the bundled specialists (or every specialist under ``directory``).

    ``cache_size`` > 0 enables a per-specialist LRU of recent ``predict_one`` texts.
    """
    return SpecialistSet.load(BUNDLED_DIR if directory is None else Path(directory), cache_size=cache_size)
