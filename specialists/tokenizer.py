"""Featurizer: a stdlib re-implementation of sklearn's TfidfVectorizer analyzers.

It turns a text into the sparse ``(ids, weights)`` pairs the ONNX graph consumes.
Global feature ids start at 1: row 0 of the weight matrix is an all-zero padding row.
Each feature block mirrors one fitted ``TfidfVectorizer`` (``word`` or ``char_wb``
analyzer, lowercase, n-gram range, sublinear tf, smoothed idf, l2 norm); blocks are
concatenated like a ``FeatureUnion`` (each block normalised on its own, then scaled).
"""

from __future__ import annotations

import json
import math
import operator
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["FEATURES_FORMAT", "FeatureBlock", "Featurizer"]

FEATURES_FORMAT = 1
_WHITE_SPACES = re.compile(r"\s\s+")
_CACHE_LIMIT = 200_000
_NUMPY_MIN = 96  # above this many term occurrences, aggregate with numpy


def word_ngrams(tokens: list[str], min_n: int, max_n: int) -> list[str]:
    """sklearn ``_VectorizerMixin._word_ngrams`` without stop words."""
    if max_n == 1:
        return tokens
    if min_n == 1:
        out = list(tokens)
        min_n += 1
    else:
        out = []
    n_tok = len(tokens)
    join = " ".join
    for n in range(min_n, min(max_n + 1, n_tok + 1)):
        for i in range(n_tok - n + 1):
            out.append(join(tokens[i : i + n]))
    return out


def char_wb_ngrams_of_word(word: str, min_n: int, max_n: int) -> list[str]:
    """sklearn ``_char_wb_ngrams`` for one whitespace-free word."""
    w = " " + word + " "
    w_len = len(w)
    out: list[str] = []
    for n in range(min_n, max_n + 1):
        offset = 0
        out.append(w[offset : offset + n])
        while offset + n < w_len:
            offset += 1
            out.append(w[offset : offset + n])
        if offset == 0:  # a short word is counted only once
            break
    return out


class FeatureBlock:
    """One fitted vectorizer: analyzer settings, vocabulary (global ids) and idf."""

    __slots__ = (
        "_cache",
        "_idf_np",
        "analyzer",
        "idf",
        "max_n",
        "min_n",
        "norm",
        "prefix_chars",
        "reuse_tokens",
        "scale",
        "sublinear_tf",
        "token_re",
        "vocab",
    )

    def __init__(self, spec: Mapping[str, Any], offset: int, idf_table: list[float]) -> None:
        self.analyzer: str = str(spec["analyzer"])
        if self.analyzer not in ("word", "char_wb"):
            raise ValueError(f"unsupported analyzer {self.analyzer!r}")
        lo, hi = spec["ngram_range"]
        self.min_n, self.max_n = int(lo), int(hi)
        self.sublinear_tf = bool(spec["sublinear_tf"])
        self.norm: str | None = spec.get("norm")
        if self.norm not in ("l2", None):
            raise ValueError(f"unsupported norm {self.norm!r}")
        self.scale = float(spec.get("scale", 1.0))
        terms: Sequence[str] = spec["terms"]
        idf: Sequence[float] = spec["idf"]
        if len(terms) != len(idf):
            raise ValueError("terms and idf differ in length")
        if offset < 1:
            raise ValueError("global ids start at 1 (row 0 is the padding row)")
        self.vocab: dict[str, int] = {t: offset + i for i, t in enumerate(terms)}
        if len(self.vocab) != len(terms):
            raise ValueError("duplicate terms in vocabulary")
        idf_table.extend(float(v) for v in idf)
        self.idf = idf_table  # shared table indexed by global id
        self.token_re = re.compile(str(spec.get("token_pattern", r"(?u)\b\w\w+\b")))
        self.reuse_tokens = False
        prefix = spec.get("prefix_chars")
        self.prefix_chars: int | None = None if prefix is None else int(prefix)
        self._cache: dict[str, tuple[int, ...]] = {}
        self._idf_np: npt.NDArray[np.float64] | None = None

    def __len__(self) -> int:
        return len(self.vocab)

    def _emit(self, found: list[int], ids: list[int], weights: list[float]) -> None:
        """Aggregate term ids into tf-idf weights (sklearn TfidfTransformer + l2 normalize)."""
        if not found:
            return
        if len(found) > _NUMPY_MIN:
            self._emit_numpy(found, ids, weights)
            return
        idf = self.idf
        counts = Counter(found)
        if len(counts) == len(found):  # every term once: tf == 1 (also after sublinear scaling)
            block_ids = found
            ws = list(map(idf.__getitem__, found))
        else:
            block_ids = list(counts)
            if self.sublinear_tf:
                log = math.log
                ws = [idf[i] * (1.0 + log(c)) for i, c in counts.items()]
            else:
                ws = [idf[i] * c for i, c in counts.items()]
        factor = self.scale
        if self.norm == "l2":
            sq = sum(map(operator.mul, ws, ws))
            if sq > 0.0:
                factor /= math.sqrt(sq)
        if factor != 1.0:
            ws = [w * factor for w in ws]
        ids.extend(block_ids)
        weights.extend(ws)

    def _emit_numpy(self, found: list[int], ids: list[int], weights: list[float]) -> None:
        """Same as :meth:`_emit` for long id lists, vectorised with numpy."""
        uniq, counts = np.unique(np.array(found, dtype=np.int64), return_counts=True)
        tf = counts.astype(np.float64)
        if self.sublinear_tf:
            tf = np.log(tf) + 1.0
        ws = self._idf_array()[uniq] * tf
        factor = self.scale
        if self.norm == "l2":
            sq = float(np.dot(ws, ws))
            if sq > 0.0:
                factor /= math.sqrt(sq)
        ids.extend(uniq.tolist())
        weights.extend((ws * factor).tolist())

    def _idf_array(self) -> npt.NDArray[np.float64]:
        arr = self._idf_np
        if arr is None or len(arr) != len(self.idf):
            arr = self._idf_np = np.array(self.idf, dtype=np.float64)
        return arr

    def add(self, lowered: str, tokens: list[str], ids: list[int], weights: list[float]) -> None:
        """Append this block's (id, weight) pairs for an already lowercased text."""
        if self.prefix_chars is not None:
            lowered = lowered[: self.prefix_chars]
        if self.analyzer == "word":
            if not self.reuse_tokens:
                tokens = self.token_re.findall(lowered)
            if self.min_n == 1 and self.max_n == 2:
                terms = tokens + [a + " " + b for a, b in pairwise(tokens)]
            else:
                terms = word_ngrams(tokens, self.min_n, self.max_n)
            self._emit(list(filter(None, map(self.vocab.get, terms))), ids, weights)
            return
        cache, vocab = self._cache, self.vocab
        found: list[int] = []
        for word in _WHITE_SPACES.sub(" ", lowered).split():
            hit = cache.get(word)
            if hit is None:
                grams = char_wb_ngrams_of_word(word, self.min_n, self.max_n)
                hit = tuple(filter(None, map(vocab.get, grams)))
                if len(cache) >= _CACHE_LIMIT:
                    cache.clear()
                cache[word] = hit
            found.extend(hit)
        self._emit(found, ids, weights)


class Featurizer:
    """All feature blocks of one specialist plus the novelty vocabulary."""

    def __init__(self, spec: Mapping[str, Any]) -> None:
        if int(spec.get("format", -1)) != FEATURES_FORMAT:
            raise ValueError(f"unsupported features format {spec.get('format')!r}")
        self.lowercase = bool(spec.get("lowercase", True))
        self.blocks: list[FeatureBlock] = []
        idf_table: list[float] = [0.0]  # row 0: padding
        offset = 1
        for block_spec in spec["blocks"]:
            block = FeatureBlock(block_spec, offset, idf_table)
            self.blocks.append(block)
            offset += len(block)
        self.n_rows = offset  # rows of the weight matrix, padding row included
        nov = spec["novelty"]
        self.novelty_re = re.compile(str(nov["token_pattern"]))
        self.known_words: frozenset[str] = frozenset(nov["known_words"])
        for block in self.blocks:
            block.reuse_tokens = (
                block.token_re.pattern == self.novelty_re.pattern and block.prefix_chars is None
            )

    @classmethod
    def from_file(cls, path: Path) -> Featurizer:
        return cls(json.loads(path.read_text(encoding="utf-8")))

    def featurize(self, text: str, max_chars: int) -> tuple[list[int], list[float], float]:
        """Return ``(ids, weights, novelty)`` for one text (truncated to ``max_chars``)."""
        lowered = text[:max_chars]
        if self.lowercase:
            lowered = lowered.lower()
        tokens: list[str] = self.novelty_re.findall(lowered)
        ids: list[int] = []
        weights: list[float] = []
        for block in self.blocks:
            block.add(lowered, tokens, ids, weights)
        if tokens:
            known = self.known_words
            novelty = sum(1 for t in tokens if t not in known) / len(tokens)
        else:
            novelty = 1.0
        return ids, weights, novelty
