"""Recipe selection on dev: each bundled specialist's `GRID` candidates -> `selection.json`.

A candidate is the base recipe with one change (C scaled, an n-gram range, a feature block
dropped: `recipes.GRID`). Every candidate is fitted on train and scored by accuracy on the dev split (intent: dev +
oos_dev, at dev's own mix); the best wins, ties going to the earlier candidate (the base recipe
first). Test splits are never read here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from specialists.training.data import Split, merge
from specialists.training.recipes import BUNDLED, GRID, SELECTION_FILE, load_selection, recipe_config
from specialists.training.splits import dataset_splits
from specialists.training.train import fit

__all__ = ["select", "write_selection"]


def _dev_accuracy(name: str, overrides: dict[str, Any], train: Split, dev: Split) -> float:
    model = fit(recipe_config(name, overrides), train.texts, train.labels)
    predicted = np.array(model.classes)[model.logits(dev.texts).argmax(axis=1)]
    return float(np.mean(predicted == np.array(dev.labels)))


def select(name: str, root: Path) -> dict[str, Any]:
    """Score every candidate of ``name`` on dev; the entry ``selection.json`` records for it."""
    s = dataset_splits(name, root)
    train, dev = s["train"], s["dev"]
    if name == "intent":
        train, dev = merge(train, s["oos_train"]), merge(dev, s["oos_dev"])
    scored: list[dict[str, Any]] = [
        {"overrides": overrides, "dev_accuracy": round(_dev_accuracy(name, overrides, train, dev), 6)}
        for overrides in GRID[name]
    ]
    best = max(scored, key=lambda c: float(c["dev_accuracy"]))  # max keeps the first of equals
    return {
        "overrides": best["overrides"],
        "dev_accuracy": best["dev_accuracy"],
        "candidates_n": len(scored),
        "candidates": scored,
        "dev": {"rows": len(dev), "origin": dev.origin.replace(str(root), "<data>")},
        "base": {k: v for k, v in BUNDLED[name][1].as_dict().items() if k not in ("extra",)},
    }


def write_selection(names: list[str], root: Path, path: Path = SELECTION_FILE) -> dict[str, Any]:
    """Select ``names`` and merge their entries into ``path`` (other entries are kept)."""
    data = load_selection(path)
    for name in names:
        data[name] = select(name, root)
        best = data[name]
        print(f"{name}: {best['overrides'] or 'base recipe'} dev accuracy {best['dev_accuracy']:.4f} "
              f"({best['candidates_n']} candidates)", flush=True)
    path.write_text(json.dumps(dict(sorted(data.items())), indent=2) + "\n", encoding="utf-8")
    return data
