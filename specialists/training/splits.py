"""The train/dev/test splits of the bundled specialists' datasets (no sklearn: `ops.defaults` reads them).

Held-out protocol: every recipe choice (`select`), calibration and default threshold is made on
`train` and `dev`; `test` is read once per recipe version, by the build, to report.

- SST-2, CLINC150 and dolly ship a dev split; it is used for selection and calibration only.
- SMS spam, TREC and Banking77 ship none: a dev split is carved from train (`DEV_SHARE`, seed
  `DEV_SEED`, stratified by label). Identical texts form one group and go to the same side, so no
  dev text is also a training text (SMS and TREC repeat texts; `carve_dev` counts them).
- ag_news ships a test file only: train/dev/test are a seeded 70/10/20 cut of it (`AG_NEWS_SEED`).
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from specialists.training.data import Split, load_split, seeded_split

__all__ = [
    "AG_NEWS_SEED",
    "CARVED",
    "DATASETS",
    "DEV_SEED",
    "DEV_SHARE",
    "Carve",
    "carve_dev",
    "dataset_splits",
]

DEV_SHARE = 0.15
DEV_SEED = 20261206
AG_NEWS_SEED = 20240601
AG_NEWS_FRACTIONS = (0.7, 0.1, 0.2)
# specialist -> dataset folder under the shared data root
DATASETS = {
    "sentiment": "sst2",
    "spam": "sms_spam",
    "intent": "clinc150",
    "banking": "banking77",
    "question_type": "trec",
    "request_type": "dolly",
    "topic": "ag_news",
}
CARVED = ("spam", "banking", "question_type")


@dataclass(frozen=True)
class Carve:
    """A dev split carved from train, and what the carve did with repeated texts."""

    train: Split
    dev: Split
    duplicate_rows: int
    """Rows of the original train whose text occurs more than once there (kept on one side)."""


def carve_dev(split: Split, share: float = DEV_SHARE, seed: int = DEV_SEED) -> Carve:
    """Stratified, grouped dev carve: ``round(share * groups)`` text groups of each label go to dev.

    A group is all rows with the same text; its label for stratification is its first row's.
    Deterministic for a seed (groups are visited in first-occurrence order before shuffling).
    """
    groups: dict[str, list[int]] = {}
    for i, text in enumerate(split.texts):
        groups.setdefault(text, []).append(i)
    by_label: dict[str, list[str]] = defaultdict(list)
    for text, rows in groups.items():
        by_label[split.labels[rows[0]]].append(text)
    rng = random.Random(seed)
    dev_rows: set[int] = set()
    for label in sorted(by_label):
        texts = by_label[label]
        rng.shuffle(texts)
        for text in texts[: round(share * len(texts))]:
            dev_rows.update(groups[text])

    def part(keep: Callable[[int], bool], name: str) -> Split:
        rows = [i for i in range(len(split)) if keep(i)]
        return Split(
            [split.texts[i] for i in rows],
            [split.labels[i] for i in rows],
            f"{split.origin}[{name} carve: {share:g} of text groups per label, seed={seed}]",
        )

    duplicates = sum(len(rows) for rows in groups.values() if len(rows) > 1)
    return Carve(part(lambda i: i not in dev_rows, "train"), part(lambda i: i in dev_rows, "dev"), duplicates)


def dataset_splits(name: str, root: Path) -> dict[str, Split]:
    """train/dev/test (and, for intent, oos_*) splits of a bundled specialist's dataset."""
    folder = root / DATASETS[name]

    def load(file: str) -> Split:
        return load_split(folder / file)

    if name == "topic":
        train, dev, test = seeded_split(load("test.jsonl"), AG_NEWS_FRACTIONS, AG_NEWS_SEED)
        return {"train": train, "dev": dev, "test": test}
    out = {"train": load("train.jsonl"), "test": load("test.jsonl")}
    if name in CARVED:
        carve = carve_dev(out["train"])
        out["train"], out["dev"] = carve.train, carve.dev
    else:
        out["dev"] = load("dev.jsonl")
    if name == "intent":
        for part in ("oos_train", "oos_dev", "oos_test"):
            out[part] = load(f"{part}.jsonl")
    return out
