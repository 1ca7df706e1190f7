"""Labeled text loading (JSONL / CSV) and the shared-data location."""

from __future__ import annotations

import csv
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

__all__ = ["REPO_ROOT", "Split", "default_data_root", "load_split", "merge", "seeded_split"]

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA_ENV = "HYBRID_ROUTER_DATA"


@dataclass(frozen=True)
class Split:
    """Texts and string labels of one dataset split."""

    texts: list[str]
    labels: list[str]
    origin: str

    def __len__(self) -> int:
        return len(self.texts)


def default_data_root(explicit: str | Path | None = None) -> Path:
    """``--data-root`` if given, else ``$HYBRID_ROUTER_DATA``, else ``<repo>/../shared/data``."""
    if explicit:
        return Path(explicit)
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env)
    return (REPO_ROOT / ".." / "shared" / "data").resolve()


def load_split(
    path: Path, fmt: str | None = None, text_field: str = "text", label_field: str = "label"
) -> Split:
    """Read a JSONL (one object per line) or CSV (header row) file of labeled texts."""
    path = Path(path)
    fmt = fmt or ("csv" if path.suffix.lower() == ".csv" else "jsonl")
    texts: list[str] = []
    labels: list[str] = []
    with path.open(encoding="utf-8", newline="") as fh:
        if fmt == "csv":
            for row in csv.DictReader(fh):
                texts.append(str(row[text_field] or ""))
                labels.append(str(row[label_field]))
        elif fmt == "jsonl":
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                obj = json.loads(line)
                if text_field not in obj or label_field not in obj:
                    raise ValueError(f"{path}:{n}: missing {text_field!r} or {label_field!r}")
                texts.append(str(obj[text_field] or ""))
                labels.append(str(obj[label_field]))
        else:
            raise ValueError(f"unknown format {fmt!r} (jsonl or csv)")
    if not texts:
        raise ValueError(f"{path}: no rows")
    return Split(texts, labels, str(path))


def merge(*splits: Split) -> Split:
    texts = [t for s in splits for t in s.texts]
    labels = [lab for s in splits for lab in s.labels]
    return Split(texts, labels, " + ".join(s.origin for s in splits))


def seeded_split(
    split: Split, fractions: tuple[float, float, float], seed: int
) -> tuple[Split, Split, Split]:
    """Shuffle with ``random.Random(seed)`` and cut into train/dev/test by ``fractions``."""
    order = list(range(len(split)))
    random.Random(seed).shuffle(order)
    n_train = round(fractions[0] * len(order))
    n_dev = round(fractions[1] * len(order))
    parts = (order[:n_train], order[n_train : n_train + n_dev], order[n_train + n_dev :])
    names = ("train", "dev", "test")
    return tuple(  # type: ignore[return-value]
        Split(
            [split.texts[i] for i in p], [split.labels[i] for i in p], f"{split.origin}[seed={seed} {name}]"
        )
        for p, name in zip(parts, names)
    )
