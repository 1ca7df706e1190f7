"""The dev carve: stratified, deterministic, and no text on both sides."""

from __future__ import annotations

from collections import Counter

import pytest

from specialists.training.data import Split
from specialists.training.splits import DEV_SHARE, carve_dev, dataset_splits
from tests.conftest import SHARED_DATA, requires_shared_data


def _split() -> Split:
    texts = [f"ham {i}" for i in range(200)] + [f"spam {i}" for i in range(40)] + ["repeated"] * 6
    labels = ["ham"] * 200 + ["spam"] * 40 + ["ham"] * 6
    return Split(texts, labels, "synthetic")


def test_carve_is_stratified_and_deterministic() -> None:
    carve = carve_dev(_split())
    dev = Counter(carve.dev.labels)
    assert dev["spam"] == round(DEV_SHARE * 40)
    assert dev["ham"] in (round(DEV_SHARE * 201), round(DEV_SHARE * 201) + 5)  # 201 groups, one of 6 rows
    assert len(carve.train) + len(carve.dev) == len(_split())
    again = carve_dev(_split())
    assert again.dev.texts == carve.dev.texts and again.train.texts == carve.train.texts
    assert carve_dev(_split(), seed=1).dev.texts != carve.dev.texts


def test_repeated_texts_stay_on_one_side() -> None:
    carve = carve_dev(_split())
    assert carve.duplicate_rows == 6
    assert not set(carve.train.texts) & set(carve.dev.texts)
    assert carve.train.texts.count("repeated") in (0, 6)


@requires_shared_data()
@pytest.mark.shared_data
@pytest.mark.parametrize("name", ["spam", "banking", "question_type"])
def test_carved_dev_of_shared_data_is_disjoint_from_train(name: str) -> None:
    s = dataset_splits(name, SHARED_DATA)
    assert not set(s["train"].texts) & set(s["dev"].texts)
    share = len(s["dev"]) / (len(s["train"]) + len(s["dev"]))
    assert share == pytest.approx(DEV_SHARE, abs=0.01)
    assert set(s["dev"].labels) == set(s["train"].labels)
