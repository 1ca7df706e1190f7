"""TermTable: exact string -> id lookups, including hash collisions between terms."""

from __future__ import annotations

import numpy as np
import pytest

from specialists.vocab import TermTable

TERMS = ["a", "bb", "ccc", "żółć", "\ud800x", "two words", "line\n\nbreak", *(f"t{i}" for i in range(500))]
ABSENT = ["", "zz", "t500", "t-1", "a ", " a", "\udcff", "ccc\x00", "bb" * 100]


def test_lookup_is_exact() -> None:
    table = TermTable(TERMS, first_id=7)
    assert len(table) == len(TERMS)
    assert table.lookup(TERMS) == [7 + i for i in range(len(TERMS))]
    assert table.lookup(ABSENT) == [0] * len(ABSENT)
    assert table.lookup([]) == []
    assert [table.term(i) for i in range(len(TERMS))] == TERMS
    assert TermTable([]).lookup(["a"]) == [0]


def test_a_query_whose_hash_matches_a_term_is_not_a_hit() -> None:
    table = TermTable(["bb", "ccc"])
    # make "bb"'s stored hash the hash of an absent string: the bytes comparison must reject it
    table._hashes[table._hashes == hash("bb")] = hash("zz")
    order = np.argsort(table._hashes, kind="stable")
    table._hashes, table._order = table._hashes[order], table._order[order]
    assert table.lookup(["zz", "ccc"]) == [0, 2]


@pytest.mark.parametrize("target", ["a", "bb", "t0", "t499"])
@pytest.mark.parametrize("other", ["ccc", "t7", "żółć"])
@pytest.mark.parametrize("target_first", [True, False])
def test_terms_sharing_a_hash_are_both_found(target: str, other: str, target_first: bool) -> None:
    table = TermTable(TERMS)
    hashes = np.fromiter(map(hash, TERMS), dtype=np.int64)
    hashes[TERMS.index(other)] = hash(target)  # a forced 64-bit collision between two terms
    order = np.argsort(hashes, kind="stable")
    run = np.flatnonzero(hashes[order] == hash(target))
    assert len(run) == 2
    first = TERMS.index(target) if target_first else TERMS.index(other)
    order[run] = [first, TERMS.index(other) + TERMS.index(target) - first]
    table._hashes, table._order, table._collisions = hashes[order], order.astype(np.int32), True
    assert table.lookup([target, "zz", "bb" if target != "bb" else "a"]) == [
        1 + TERMS.index(target), 0, 1 + TERMS.index("bb" if target != "bb" else "a")]


def test_duplicate_terms_rejected() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        TermTable(["a", "b", "a"])
