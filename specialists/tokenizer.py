"""Featurizer: a stdlib + numpy re-implementation of sklearn's TfidfVectorizer analyzers.

It turns a text into the sparse ``(ids, weights)`` pairs the ONNX graph consumes.
Global feature ids start at 1: row 0 of the weight matrix is an all-zero padding row.
Each feature block mirrors one fitted ``TfidfVectorizer`` (``word`` or ``char_wb``
analyzer, lowercase, n-gram range, sublinear tf, smoothed idf, l2 norm); blocks are
concatenated like a ``FeatureUnion`` (each block normalised on its own, then scaled).

Vocabularies are :class:`~specialists.vocab.TermTable` s (sorted hashes + UTF-8 bytes, exact,
~22 bytes a term instead of ~150 for a ``dict``). In front of each, a bounded per-block cache
maps a recently seen key to the packed int32 ids it contributes: a word n-gram to its id (or
nothing), a word to the ids of all its char_wb n-grams (a word's n-grams never change). A
text is then a few ``dict`` lookups per token, one ``b"".join`` and numpy:

1. *collect* (per text): the cached id bytes of every key; keys seen for the first time are
   resolved together in one vectorized :meth:`TermTable.lookup` and cached.
2. *count + weigh* (numpy, per text or once for a whole batch): ``np.unique`` counts the
   occurrences; ``idf[id] * tf(count)``, the per-block l2 norm (``bincount`` over a
   block-index key) and the block scale give the weights.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Mapping, Sequence
from itertools import chain, pairwise
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from specialists.vocab import TermTable

__all__ = ["FEATURES_FORMAT", "FeatureBlock", "Featurizer"]

FEATURES_FORMAT = 1
# Keys cached per block (and known/unknown words per featurizer); a full cache is cleared.
# ~150 bytes an entry: at most ~2.5 MiB per block (old code: 200k char_wb words, ~60 MiB).
CACHE_LIMIT = 16384
_ID = struct.Struct("<i").pack
_IDS = np.dtype("<i4")

I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
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


def _count(raw: I32) -> tuple[I32, I64]:
    """``np.unique(raw, return_counts=True)`` in fewer numpy calls (sorted ids, occurrences).

    Array methods rather than the ``np.sort`` / ``np.flatnonzero`` functions: same results, without
    their Python-level dispatch (~1 µs each, on every request).
    """
    s = raw.copy()
    s.sort()
    n = len(s)
    starts = np.empty(n + 1, dtype=np.bool_)
    starts[0] = starts[n] = True
    np.not_equal(s[1:], s[:-1], out=starts[1:n])
    at = starts.nonzero()[0]
    return s[at[:-1]], at[1:] - at[:-1]


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
        "table",
        "token_re",
    )

    def __init__(self, spec: Mapping[str, Any], offset: int) -> None:
        self.analyzer: str = str(spec["analyzer"])
        if self.analyzer not in ("word", "char_wb"):
            raise ValueError(f"unsupported analyzer {self.analyzer!r}")
        lo, hi = spec["ngram_range"]
        self.min_n, self.max_n = int(lo), int(hi)
        if not 1 <= self.min_n <= self.max_n:
            raise ValueError(f"bad ngram_range {spec['ngram_range']!r}")
        self.sublinear_tf = bool(spec["sublinear_tf"])
        self.norm: str | None = spec.get("norm")
        if self.norm not in ("l2", None):
            raise ValueError(f"unsupported norm {self.norm!r}")
        self.scale = float(spec.get("scale", 1.0))
        terms: Sequence[str] = spec["terms"]
        self.idf: F64 = np.array(spec["idf"], dtype=np.float64)
        if len(terms) != len(self.idf):
            raise ValueError("terms and idf differ in length")
        if offset < 1:
            raise ValueError("global ids start at 1 (row 0 is the padding row)")
        self.table = TermTable(terms, offset)
        self.token_re = re.compile(str(spec.get("token_pattern", r"(?u)\b\w\w+\b")))
        self.reuse_tokens = False
        prefix = spec.get("prefix_chars")
        self.prefix_chars: int | None = None if prefix is None else int(prefix)
        self._cache: dict[str, bytes] = {}

    def __len__(self) -> int:
        return len(self.table)

    def collect(self, lowered: str, tokens: list[str], parts: list[bytes]) -> None:
        """Append the packed ids of this block's in-vocabulary n-gram occurrences in ``lowered``."""
        if self.prefix_chars is not None:
            lowered = lowered[: self.prefix_chars]
        if self.analyzer == "word":
            if not self.reuse_tokens:
                tokens = self.token_re.findall(lowered)
            if self.min_n == 1 and self.max_n == 2:
                keys = tokens + list(map(" ".join, pairwise(tokens)))
            else:
                keys = word_ngrams(tokens, self.min_n, self.max_n)
        else:
            # char_wb: sklearn squeezes whitespace runs, then splits; str.split() alone is equivalent
            keys = lowered.split()
        hits = list(map(self._cache.get, keys))
        if None in hits:
            self._resolve(keys, hits)
        parts += hits  # type: ignore[arg-type]

    def _resolve(self, keys: list[str], hits: list[bytes | None]) -> None:
        """Fill the ``None`` entries of ``hits`` (keys not cached) and cache them."""
        missing = [i for i, hit in enumerate(hits) if hit is None]
        cache = self._cache
        if len(cache) + len(missing) > CACHE_LIMIT:
            cache.clear()
        if self.analyzer == "word":
            ids = self.table.lookup([keys[i] for i in missing])
            for i, found in zip(missing, ids):
                hits[i] = cache[keys[i]] = _ID(found) if found else b""
            return
        grams = [char_wb_ngrams_of_word(keys[i], self.min_n, self.max_n) for i in missing]
        ids = self.table.lookup(list(chain.from_iterable(grams)))
        start = 0
        for i, word_grams in zip(missing, grams):
            stop = start + len(word_grams)
            hit = np.array([x for x in ids[start:stop] if x], dtype=_IDS).tobytes()
            hits[i] = cache[keys[i]] = hit
            start = stop


class Featurizer:
    """All feature blocks of one specialist plus the novelty vocabulary."""

    def __init__(self, spec: Mapping[str, Any]) -> None:
        if int(spec.get("format", -1)) != FEATURES_FORMAT:
            raise ValueError(f"unsupported features format {spec.get('format')!r}")
        self.lowercase = bool(spec.get("lowercase", True))
        self.blocks: list[FeatureBlock] = []
        offset = 1
        for block_spec in spec["blocks"]:
            block = FeatureBlock(block_spec, offset)
            self.blocks.append(block)
            offset += len(block)
        if not self.blocks:
            raise ValueError("no feature blocks")
        self.n_rows = offset  # rows of the weight matrix, padding row included
        self._idf: F64 = np.concatenate([np.zeros(1), *(b.idf for b in self.blocks)])
        for block in self.blocks:
            block.idf = self._idf[:0]  # one copy: the global table
        self._n_blocks = len(self.blocks)
        # block index of every global id (row 0 counts as block 0; it never occurs)
        self._block_of = np.repeat(
            np.arange(self._n_blocks, dtype=np.int8 if self._n_blocks < 128 else np.int64),
            [len(b) + (i == 0) for i, b in enumerate(self.blocks)],
        )
        self._scale: F64 = np.array([b.scale for b in self.blocks], dtype=np.float64)
        self._l2: npt.NDArray[np.bool_] = np.array([b.norm == "l2" for b in self.blocks])
        self._sublinear: npt.NDArray[np.bool_] = np.array([b.sublinear_tf for b in self.blocks])
        self._all_sublinear = bool(self._sublinear.all())
        self._any_sublinear = bool(self._sublinear.any())
        self._all_l2 = bool(self._l2.all())
        self._simple = self._all_sublinear and self._all_l2
        nov = spec["novelty"]
        self.novelty_re = re.compile(str(nov["token_pattern"]))
        self._known = TermTable(list(nov["known_words"]))
        self._known_cache: dict[str, bool] = {}
        for block in self.blocks:
            block.reuse_tokens = (
                block.token_re.pattern == self.novelty_re.pattern and block.prefix_chars is None
            )

    @classmethod
    def from_file(cls, path: Path) -> Featurizer:
        return cls(json.loads(path.read_text(encoding="utf-8")))

    @property
    def nbytes(self) -> int:
        """Bytes held by the vocabularies and idf tables (caches not included)."""
        tables = sum(b.table.nbytes for b in self.blocks) + self._known.nbytes
        return int(tables + self._idf.nbytes + self._block_of.nbytes)

    def _novelty(self, tokens: list[str]) -> float:
        n = len(tokens)
        if not n:
            return 1.0
        known = list(map(self._known_cache.get, tokens))
        if None in known:
            missing = [i for i, k in enumerate(known) if k is None]
            cache = self._known_cache
            if len(cache) + len(missing) > CACHE_LIMIT:
                cache.clear()
            found = self._known.lookup([tokens[i] for i in missing])
            for i, hit in zip(missing, found):
                known[i] = cache[tokens[i]] = hit != 0
        return (n - sum(known)) / n  # type: ignore[arg-type]

    def _collect(self, text: str, max_chars: int) -> tuple[bytes, float]:
        """Packed int32 ids of every n-gram occurrence (all blocks) and the novelty of one text."""
        lowered = text[:max_chars]
        if self.lowercase:
            lowered = lowered.lower()
        tokens: list[str] = self.novelty_re.findall(lowered)
        parts: list[bytes] = []
        for block in self.blocks:
            block.collect(lowered, tokens, parts)
        return b"".join(parts), self._novelty(tokens)

    def weigh(self, ids: npt.NDArray[np.integer[Any]], counts: npt.NDArray[Any], rows: I64 | None = None,
              n_rows: int = 1) -> F64:
        """tf-idf weights of ``ids`` occurring ``counts`` times, l2-normalised per block and row.

        ``rows`` gives each entry's text index for a flattened batch of ``n_rows`` texts
        (``None``: all entries belong to one text).
        """
        if self._all_sublinear:
            tf = np.log(counts)  # sklearn: np.log(X.data, X.data); X.data += 1
            tf += 1.0
        elif self._any_sublinear:
            tf = np.where(self._sublinear[self._block_of[ids]], np.log(counts) + 1.0, counts)
        else:
            tf = counts.astype(np.float64)
        w: F64 = self._idf[ids]
        w *= tf
        key: npt.NDArray[Any] = self._block_of[ids]
        if rows is not None:  # one (text, block) key per entry: int8 block indices would overflow
            key = key.astype(np.int64)
            key += rows * self._n_blocks
        # a non-empty block has sq >= idf**2 >= 1, so the floor only guards empty blocks
        sq = np.bincount(key, weights=w * w, minlength=n_rows * self._n_blocks)
        np.maximum(sq, 1e-300, out=sq)
        np.sqrt(sq, out=sq)
        if not self._all_l2:
            sq[np.tile(~self._l2, n_rows)] = 1.0
        factor = (np.tile(self._scale, n_rows) if rows is not None else self._scale) / sq
        w *= factor[key]
        return w

    def featurize(self, text: str, max_chars: int) -> tuple[I32, F64, float]:
        """Return ``(ids, weights, novelty)`` for one text (truncated to ``max_chars``); ids ascending.

        The single-text path is the request path: ``np.unique``'s Python layer and the batch
        weighing's generality cost more than the arithmetic here, so both are written out.
        """
        packed, novelty = self._collect(text, max_chars)
        if not packed:
            return np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.float64), novelty
        ids, counts = _count(np.frombuffer(packed, dtype=_IDS))
        if not self._simple:
            return ids, self.weigh(ids, counts), novelty
        # all blocks sublinear tf + l2 norm (every bundled specialist): sklearn's arithmetic
        w = np.log(counts)
        w += 1.0
        w *= self._idf[ids]
        key = self._block_of[ids]
        sq = np.bincount(key, weights=w * w, minlength=self._n_blocks)
        np.sqrt(sq, out=sq)
        np.maximum(sq, 1e-300, out=sq)  # an empty block has no entry to scale
        w *= (self._scale / sq)[key]
        return ids, w, novelty

    def featurize_batch(self, texts: Sequence[str], max_chars: int) -> tuple[I64, F64, I64, list[float]]:
        """Flattened ``(ids, weights, lengths, novelties)`` of many texts, counted and weighed in one pass.

        Text ``r`` owns ``lengths[r]`` consecutive entries of ``ids``/``weights`` (ids ascending).
        """
        packed: list[bytes] = []
        novelties: list[float] = []
        for text in texts:
            one, novelty = self._collect(text, max_chars)
            packed.append(one)
            novelties.append(novelty)
        n_texts = len(texts)
        occurrences = np.fromiter(map(len, packed), dtype=np.int64, count=n_texts) // _IDS.itemsize
        raw = np.frombuffer(b"".join(packed), dtype=_IDS).astype(np.int64)
        if not len(raw):
            return raw, np.zeros(0, dtype=np.float64), np.zeros(n_texts, dtype=np.int64), novelties
        # (text, id) pairs as one int64 key: np.unique sorts by text, then id
        raw += np.repeat(np.arange(n_texts, dtype=np.int64) * self.n_rows, occurrences)
        keys, counts = np.unique(raw, return_counts=True)
        rows, ids = np.divmod(keys, self.n_rows)
        lens = np.bincount(rows, minlength=n_texts).astype(np.int64)
        return ids, self.weigh(ids, counts, rows, n_texts), lens, novelties
