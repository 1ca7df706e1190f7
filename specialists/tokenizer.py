"""Featurizer: a stdlib + numpy re-implementation of sklearn's TfidfVectorizer analyzers.

It turns a text into the sparse ``(ids, weights)`` pairs the ONNX graph consumes.
Global feature ids start at 1: row 0 of the weight matrix is an all-zero padding row.
Each feature block mirrors one fitted ``TfidfVectorizer`` (``word`` or ``char_wb``
analyzer, lowercase, n-gram range, sublinear tf, smoothed idf, l2 norm); blocks are
concatenated like a ``FeatureUnion`` (each block normalised on its own, then scaled).

Work is split in two steps so that the Python part stays small:

1. *collect* (pure Python, per text): the in-vocabulary ids of every n-gram occurrence,
   all blocks appended to one list. char_wb ids are cached per word, since the n-grams
   of a word never change; word n-grams are looked up in the vocabulary directly.
   ``collections.Counter`` then turns occurrences into ``{id: count}`` (block ids are
   disjoint, so one counter serves every block).
2. *weigh* (numpy, per text or once for a whole batch): ``idf[id] * tf(count)``, the
   per-block l2 norm (``bincount`` over a block-index key) and the block scale.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from itertools import chain, pairwise
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["FEATURES_FORMAT", "FeatureBlock", "Featurizer"]

FEATURES_FORMAT = 1
_CACHE_LIMIT = 200_000  # cached words per char_wb block; the cache is dropped when full

I64 = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]


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

    def __init__(self, spec: Mapping[str, Any], offset: int) -> None:
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
        self.idf: list[float] = [float(v) for v in spec["idf"]]
        if len(terms) != len(self.idf):
            raise ValueError("terms and idf differ in length")
        if offset < 1:
            raise ValueError("global ids start at 1 (row 0 is the padding row)")
        self.vocab: dict[str, int] = {t: offset + i for i, t in enumerate(terms)}
        if len(self.vocab) != len(terms):
            raise ValueError("duplicate terms in vocabulary")
        self.token_re = re.compile(str(spec.get("token_pattern", r"(?u)\b\w\w+\b")))
        self.reuse_tokens = False
        prefix = spec.get("prefix_chars")
        self.prefix_chars: int | None = None if prefix is None else int(prefix)
        self._cache: dict[str, tuple[int, ...]] = {}

    def __len__(self) -> int:
        return len(self.vocab)

    def collect(self, lowered: str, tokens: list[str], found: list[int]) -> None:
        """Append the ids of this block's in-vocabulary n-gram occurrences in ``lowered``."""
        if self.prefix_chars is not None:
            lowered = lowered[: self.prefix_chars]
        vocab_get = self.vocab.get
        if self.analyzer == "word":
            if not self.reuse_tokens:
                tokens = self.token_re.findall(lowered)
            if self.min_n == 1 and self.max_n == 2:
                found += filter(None, map(vocab_get, tokens))
                found += filter(None, map(vocab_get, map(" ".join, pairwise(tokens))))
            else:
                found += filter(None, map(vocab_get, word_ngrams(tokens, self.min_n, self.max_n)))
            return
        # char_wb: sklearn squeezes whitespace runs, then splits; str.split() alone is equivalent
        words = lowered.split()
        hits = list(map(self._cache.get, words))
        if None in hits:
            for i, hit in enumerate(hits):
                if hit is None:
                    hits[i] = self._word_ids(words[i])
        found += chain.from_iterable(hits)  # type: ignore[arg-type]

    def _word_ids(self, word: str) -> tuple[int, ...]:
        """In-vocabulary char_wb n-gram ids of one word (cached, bounded)."""
        hit = tuple(filter(None, map(self.vocab.get, char_wb_ngrams_of_word(word, self.min_n, self.max_n))))
        cache = self._cache
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        cache[word] = hit
        return hit


class Featurizer:
    """All feature blocks of one specialist plus the novelty vocabulary."""

    def __init__(self, spec: Mapping[str, Any]) -> None:
        if int(spec.get("format", -1)) != FEATURES_FORMAT:
            raise ValueError(f"unsupported features format {spec.get('format')!r}")
        self.lowercase = bool(spec.get("lowercase", True))
        self.blocks: list[FeatureBlock] = []
        idf: list[float] = [0.0]  # row 0: padding
        block_of: list[int] = [0]
        offset = 1
        for b, block_spec in enumerate(spec["blocks"]):
            block = FeatureBlock(block_spec, offset)
            self.blocks.append(block)
            idf += block.idf
            block_of += [b] * len(block)
            offset += len(block)
        if not self.blocks:
            raise ValueError("no feature blocks")
        self.n_rows = offset  # rows of the weight matrix, padding row included
        self._idf: F64 = np.array(idf, dtype=np.float64)
        self._block_of: I64 = np.array(block_of, dtype=np.int64)
        self._n_blocks = len(self.blocks)
        self._scale: F64 = np.array([b.scale for b in self.blocks], dtype=np.float64)
        self._l2: npt.NDArray[np.bool_] = np.array([b.norm == "l2" for b in self.blocks])
        self._sublinear: npt.NDArray[np.bool_] = np.array([b.sublinear_tf for b in self.blocks])
        self._all_sublinear = bool(self._sublinear.all())
        self._any_sublinear = bool(self._sublinear.any())
        self._all_l2 = bool(self._l2.all())
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

    def count(self, text: str, max_chars: int) -> tuple[Counter[int], float]:
        """``({global id: occurrences}, novelty)`` of one text (truncated to ``max_chars``)."""
        lowered = text[:max_chars]
        if self.lowercase:
            lowered = lowered.lower()
        tokens: list[str] = self.novelty_re.findall(lowered)
        found: list[int] = []
        for block in self.blocks:
            block.collect(lowered, tokens, found)
        n = len(tokens)
        novelty = (n - sum(map(self.known_words.__contains__, tokens))) / n if n else 1.0
        return Counter(found), novelty

    def weigh(self, ids: I64, counts: F64, rows: I64 | None = None, n_rows: int = 1) -> F32:
        """tf-idf weights of ``ids`` occurring ``counts`` times, l2-normalised per block and row.

        ``rows`` gives each entry's text index for a flattened batch of ``n_rows`` texts
        (``None``: all entries belong to one text). ``counts`` is overwritten.
        """
        if self._all_sublinear:
            tf = np.log(counts, out=counts)  # sklearn: np.log(X.data, X.data); X.data += 1
            tf += 1.0
        elif self._any_sublinear:
            tf = np.where(self._sublinear[self._block_of[ids]], np.log(counts) + 1.0, counts)
        else:
            tf = counts
        w = self._idf[ids]
        w *= tf
        key = self._block_of[ids]
        if rows is not None:
            key += rows * self._n_blocks
        # a non-empty block has sq >= idf**2 >= 1, so the floor only guards empty blocks
        sq = np.bincount(key, weights=w * w, minlength=n_rows * self._n_blocks)
        np.maximum(sq, 1e-300, out=sq)
        np.sqrt(sq, out=sq)
        if not self._all_l2:
            sq[np.tile(~self._l2, n_rows)] = 1.0
        factor = (np.tile(self._scale, n_rows) if rows is not None else self._scale) / sq
        w *= factor[key]
        return w.astype(np.float32)

    def featurize(self, text: str, max_chars: int) -> tuple[I64, F32, float]:
        """Return ``(ids, weights, novelty)`` for one text (truncated to ``max_chars``)."""
        counts, novelty = self.count(text, max_chars)
        n = len(counts)
        ids = np.fromiter(counts, dtype=np.int64, count=n)
        if not n:
            return ids, np.zeros(0, dtype=np.float32), novelty
        return ids, self.weigh(ids, np.fromiter(counts.values(), dtype=np.float64, count=n)), novelty

    def featurize_batch(self, texts: Sequence[str], max_chars: int) -> tuple[I64, F32, I64, list[float]]:
        """Flattened ``(ids, weights, lengths, novelties)`` of many texts, weighed in one numpy pass.

        Text ``r`` owns ``lengths[r]`` consecutive entries of ``ids``/``weights``.
        """
        flat_ids: list[int] = []
        flat_counts: list[int] = []
        lengths: list[int] = []
        novelties: list[float] = []
        for text in texts:
            counts, novelty = self.count(text, max_chars)
            flat_ids += counts
            flat_counts += counts.values()
            lengths.append(len(counts))
            novelties.append(novelty)
        ids = np.fromiter(flat_ids, dtype=np.int64, count=len(flat_ids))
        lens = np.array(lengths, dtype=np.int64)
        if not len(ids):
            return ids, np.zeros(0, dtype=np.float32), lens, novelties
        rows = np.repeat(np.arange(len(lens), dtype=np.int64), lens)
        tf = np.fromiter(flat_counts, dtype=np.float64, count=len(flat_counts))
        weights = self.weigh(ids, tf, rows, len(lens))
        return ids, weights, lens, novelties
