"""``TermTable``: an exact, compact ``str -> id`` map for a specialist's vocabulary.

A vocabulary held as a Python ``dict`` costs ~150 bytes per term (the key ``str``, a boxed
``int`` and the hash slot): ~140 MiB for the seven bundled specialists. Here a vocabulary is
three numpy arrays and one ``bytes``: the terms' 64-bit ``hash()`` values sorted (8 bytes per
term), the term index in that order (4 bytes) and the UTF-8 text of every term with its end
offsets (~10 bytes per term), ~22 bytes per term in all.

A lookup hashes the queried strings (CPython's ``str`` hash is SipHash, computed in C and
cached in the string), finds them with one ``np.searchsorted`` and then compares each hit's
bytes with the query, so a hash collision with a term that is not in the vocabulary can never
produce a false hit: results are exactly those of a ``dict``. ``hash()`` is salted per process
(PYTHONHASHSEED), which is why the table is built at load time and never stored.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["TermTable"]

_UTF8 = "utf-8"
_LONE_SURROGATES = "surrogatepass"  # queries are arbitrary str; encoding must never raise


class TermTable:
    """Terms ``0..n-1`` of a vocabulary; :meth:`lookup` maps strings to ``first_id + index`` or 0."""

    __slots__ = ("_blob", "_collisions", "_ends", "_first_id", "_hashes", "_order")

    def __init__(self, terms: Sequence[str], first_id: int = 1) -> None:
        if first_id < 1:
            raise ValueError("ids start at 1 (0 means absent)")
        n = len(terms)
        hashes = np.fromiter(map(hash, terms), dtype=np.int64, count=n)
        order = np.argsort(hashes, kind="stable")
        self._hashes: npt.NDArray[np.int64] = hashes[order]
        self._order: npt.NDArray[np.int32] = order.astype(np.int32)
        encoded = [t.encode(_UTF8, _LONE_SURROGATES) for t in terms]
        self._blob = b"".join(encoded)
        self._ends: npt.NDArray[np.int64] = np.cumsum(
            np.fromiter(map(len, encoded), dtype=np.int64, count=n), dtype=np.int64
        )
        self._first_id = first_id
        # Two terms with one 64-bit hash: ~n**2 / 2**65, i.e. ~1e-9 for the largest vocabulary.
        self._collisions = bool(n > 1 and (self._hashes[1:] == self._hashes[:-1]).any())
        if n and len(set(terms)) != n:
            raise ValueError("duplicate terms in vocabulary")

    def __len__(self) -> int:
        return len(self._hashes)

    @property
    def nbytes(self) -> int:
        return int(self._hashes.nbytes + self._order.nbytes + self._ends.nbytes + len(self._blob))

    def term(self, index: int) -> str:
        """The term with vocabulary index ``index`` (0-based)."""
        start = int(self._ends[index - 1]) if index else 0
        return self._blob[start : int(self._ends[index])].decode(_UTF8, _LONE_SURROGATES)

    def lookup(self, queries: Sequence[str]) -> list[int]:
        """``first_id + index`` of every query that is a term, 0 for the others (exact)."""
        n = len(queries)
        hashes = self._hashes
        if not n or not len(hashes):
            return [0] * n
        h = np.fromiter(map(hash, queries), dtype=np.int64, count=n)
        pos = np.searchsorted(hashes, h)
        np.minimum(pos, len(hashes) - 1, out=pos)
        found = [0] * n
        candidates = np.flatnonzero(hashes[pos] == h)
        if not len(candidates):
            return found
        where = pos[candidates]
        index = self._order[where]
        ends = self._ends[index]
        starts = np.where(index > 0, self._ends[index - 1], 0)  # index - 1 = -1 is masked out
        blob, first = self._blob, self._first_id
        for j, k, a, b in zip(candidates.tolist(), index.tolist(), starts.tolist(), ends.tolist()):
            if blob[a:b] == queries[j].encode(_UTF8, _LONE_SURROGATES):
                found[j] = first + k
        if self._collisions:
            self._resolve_collisions(queries, h, where, candidates, found)
        return found

    def _resolve_collisions(self, queries: Sequence[str], h: npt.NDArray[np.int64], where: npt.NDArray[np.intp],
                            candidates: npt.NDArray[np.intp], found: list[int]) -> None:
        """Queries whose hash several terms share: compare along the run of equal hashes."""
        hashes, last = self._hashes, len(self._hashes)
        for j, p in zip(candidates.tolist(), where.tolist()):
            if found[j] or p + 1 >= last or hashes[p + 1] != h[j]:
                continue
            want = queries[j]
            p += 1
            while p < last and hashes[p] == h[j]:
                k = int(self._order[p])
                if self.term(k) == want:
                    found[j] = self._first_id + k
                    break
                p += 1
