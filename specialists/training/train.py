"""Fitting a specialist: a FeatureUnion of tf-idf blocks and a linear classifier.

The decision of every supported model is ``logits = x @ W + b`` so it maps onto the
gather-and-sum ONNX graph; the probability is ``softmax(logits / T)`` with ``T`` the
temperature fitted by :mod:`specialists.training.calibrate`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion
from sklearn.svm import LinearSVC

__all__ = ["TOKEN_PATTERN", "LinearSpecialist", "TrainConfig", "fit", "softmax"]

TOKEN_PATTERN = r"(?u)\b\w\w+\b"
F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one specialist (all recorded in its manifest)."""

    word_ngram: tuple[int, int] = (1, 2)
    word_min_df: int = 1
    char_ngram: tuple[int, int] | None = None
    char_min_df: int = 2
    char_scale: float = 1.0
    sublinear_tf: bool = True
    model: str = "lr"  # "lr" (multinomial logistic regression) or "svm" (LinearSVC, one-vs-rest)
    C: float = 10.0
    class_weight: str | None = None
    word_max_features: int | None = None  # most frequent terms kept (sklearn max_features)
    char_max_features: int | None = None
    prefix_chars: int | None = None  # extra word block over the first N (lowercased) characters only
    prefix_ngram: tuple[int, int] = (1, 3)
    # extra word block whose "tokens" are matches of this regex (e.g. a paragraph break, which
    # marks a pasted context in instruction data); every match kind is one feature, l2-normalised
    marker_pattern: str | None = None
    marker_scale: float = 1.0
    weight_dtype: str = "float32"  # or "float16" (halves model.onnx, Cast in-graph)
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def softmax(z: F64) -> F64:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)  # type: ignore[no-any-return]


class LinearSpecialist:
    """Fitted vectorizer + linear model + temperature; the sklearn-side reference."""

    def __init__(self, config: TrainConfig, union: FeatureUnion, classifier: Any, classes: list[str]) -> None:
        self.config = config
        self.union = union
        self.classifier = classifier
        self.classes = classes
        self.temperature = 1.0
        coef = np.asarray(classifier.coef_, dtype=np.float64)
        bias = np.asarray(classifier.intercept_, dtype=np.float64)
        if len(classes) == 2 and coef.shape[0] == 1:  # binary: logits [0, d]
            coef = np.vstack([np.zeros_like(coef), coef])
            bias = np.array([0.0, bias[0]])
        if config.weight_dtype == "float16":
            coef = coef.astype(np.float16).astype(np.float64)
            bias = bias.astype(np.float16).astype(np.float64)
        self.W: F64 = coef.T.copy()  # [V, C]
        self.b: F64 = bias

    @property
    def vectorizers(self) -> list[tuple[str, TfidfVectorizer]]:
        return list(self.union.transformer_list)

    def transform(self, texts: list[str]) -> sparse.csr_matrix:
        return sparse.csr_matrix(self.union.transform(texts))

    def logits(self, texts: list[str]) -> F64:
        return np.asarray(self.transform(texts) @ self.W + self.b, dtype=np.float64)

    def predict_proba(self, texts: list[str]) -> F64:
        """Calibrated probabilities computed entirely by sklearn/numpy (float64)."""
        return softmax(self.logits(texts) / self.temperature)


class PrefixLower:
    """sklearn preprocessor: lowercase, then keep the first ``n`` characters."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __call__(self, doc: str) -> str:
        return doc.lower()[: self.n]


def _union(config: TrainConfig) -> FeatureUnion:
    blocks: list[tuple[str, TfidfVectorizer]] = []
    weights: dict[str, float] = {}
    if config.word_ngram[1] > 0:
        blocks.append(
            (
                "word",
                TfidfVectorizer(
                    analyzer="word",
                    lowercase=True,
                    token_pattern=TOKEN_PATTERN,
                    ngram_range=config.word_ngram,
                    min_df=config.word_min_df,
                    sublinear_tf=config.sublinear_tf,
                    max_features=config.word_max_features,
                    dtype=np.float64,
                ),
            )
        )
        weights["word"] = 1.0
    if config.char_ngram is not None:
        blocks.append(
            (
                "char",
                TfidfVectorizer(
                    analyzer="char_wb",
                    lowercase=True,
                    ngram_range=config.char_ngram,
                    min_df=config.char_min_df,
                    sublinear_tf=config.sublinear_tf,
                    max_features=config.char_max_features,
                    dtype=np.float64,
                ),
            )
        )
        weights["char"] = config.char_scale
    if config.prefix_chars is not None:
        blocks.append(
            (
                "prefix",
                TfidfVectorizer(
                    analyzer="word",
                    preprocessor=PrefixLower(config.prefix_chars),
                    token_pattern=TOKEN_PATTERN,
                    ngram_range=config.prefix_ngram,
                    min_df=2,
                    sublinear_tf=config.sublinear_tf,
                    dtype=np.float64,
                ),
            )
        )
        weights["prefix"] = 1.0
    if config.marker_pattern is not None:
        blocks.append(
            (
                "marker",
                TfidfVectorizer(
                    analyzer="word",
                    lowercase=True,
                    token_pattern=config.marker_pattern,
                    ngram_range=(1, 1),
                    min_df=2,
                    sublinear_tf=config.sublinear_tf,
                    dtype=np.float64,
                ),
            )
        )
        weights["marker"] = config.marker_scale
    return FeatureUnion(blocks, transformer_weights=weights, n_jobs=None)


def fit(
    config: TrainConfig, texts: list[str], labels: list[str], sample_weight: list[float] | None = None
) -> LinearSpecialist:
    """Fit vectorizers and classifier on ``texts``/``labels`` (deterministic for a seed).

    ``sample_weight`` (one per text) weighs rows in the classifier's loss; the vectorizers'
    vocabulary and idf count every text once.
    """
    union = _union(config)
    X = union.fit_transform(texts)
    classes = sorted(set(labels))
    y = np.array([classes.index(lab) for lab in labels])
    clf: Any
    if config.model == "lr":
        clf = LogisticRegression(
            C=config.C, max_iter=3000, class_weight=config.class_weight, random_state=config.seed, tol=1e-6
        )
    elif config.model == "svm":
        clf = LinearSVC(
            C=config.C, class_weight=config.class_weight, random_state=config.seed, max_iter=20000, tol=1e-5
        )
    else:
        raise ValueError(f"unknown model {config.model!r}")
    clf.fit(X, y, sample_weight=None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64))
    return LinearSpecialist(config, union, clf, classes)
