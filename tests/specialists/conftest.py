"""Shared fixtures for the specialists tests: a tiny specialist trained once per session."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA_ROOT = (REPO_ROOT / ".." / "shared" / "data").resolve()

_POS = ["great", "wonderful", "excellent", "lovely", "superb", "delightful", "brilliant", "charming"]
_NEG = ["awful", "terrible", "boring", "dreadful", "horrible", "dull", "clumsy", "tedious"]
_NOUNS = ["film", "movie", "story", "cast", "plot", "script", "ending", "soundtrack"]


def _rows(n: int, seed: int) -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.choice(["pos", "neg"])
        adjective = rng.choice(_POS if label == "pos" else _NEG)
        noun = rng.choice(_NOUNS)
        filler = rng.choice(["really", "truly", "quite", "so", "very"])
        rows.append({"text": f"the {noun} was {filler} {adjective}", "label": label})
    return rows


def _write(path: Path, rows: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("tiny_data")
    return {
        "train": _write(d / "train.jsonl", _rows(300, 1)),
        "dev": _write(d / "dev.jsonl", _rows(80, 2)),
        "test": _write(d / "test.jsonl", _rows(120, 3)),
    }


@pytest.fixture(scope="session")
def tiny_dir(tiny_data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    from specialists.training.cli import main

    out = tmp_path_factory.mktemp("tiny_model") / "tiny"
    rc = main(
        [
            "train",
            "--name",
            "tiny",
            "--train",
            str(tiny_data["train"]),
            "--dev",
            str(tiny_data["dev"]),
            "--test",
            str(tiny_data["test"]),
            "--out",
            str(out),
            "--char-ngrams",
            "--no-speed",
        ]
    )
    assert rc == 0
    return out
