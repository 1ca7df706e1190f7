"""The seven bundled specialists: datasets, splits and tuned hyper-parameters."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from specialists.training.build import Job
from specialists.training.data import Split, load_split, merge, seeded_split
from specialists.training.finetune import FinetuneConfig
from specialists.training.train import TrainConfig

__all__ = [
    "AG_NEWS_SEED",
    "BUNDLED",
    "INTENT_OOS_SHARE",
    "TIER2",
    "encoder_job_for",
    "job_for",
    "source_info",
    "test_splits",
]

AG_NEWS_SEED = 20240601
AG_NEWS_FRACTIONS = (0.7, 0.1, 0.2)
OFFDOMAIN_ROWS = 300
# CLINC150's evaluation mix (4,500 in-scope + 1,000 oos rows): the oos share the intent
# temperature is calibrated for (dev has only 100 oos rows in 3,100, i.e. 3%)
INTENT_OOS_SHARE = 1000 / 5500
# small datasets whose dev split is better spent on training (calibration: 5-fold out-of-fold)
TRAIN_ON_DEV = ("sentiment",)

# name -> (dataset folder, config, description)
BUNDLED: dict[str, tuple[str, TrainConfig, str]] = {
    "sentiment": (
        "sst2",
        TrainConfig(char_ngram=(2, 5), char_min_df=2, C=4.0),
        "Binary sentiment (negative/positive) of a short English text (movie-review sentences).",
    ),
    "spam": (
        "sms_spam",
        TrainConfig(char_ngram=(2, 5), char_min_df=2, C=30.0),
        "SMS spam detection (ham/spam).",
    ),
    "intent": (
        "clinc150",
        TrainConfig(
            char_ngram=(2, 5),
            char_min_df=3,
            model="svm",
            C=0.5,
            word_max_features=8000,
            char_max_features=16000,
            weight_dtype="float16",
        ),
        "Virtual-assistant intent (150 intents over 10 domains) with an `oos` (out-of-scope) class.",
    ),
    "banking": (
        "banking77",
        TrainConfig(char_ngram=(2, 5), char_min_df=2, model="svm", C=0.5, weight_dtype="float16"),
        "Banking customer-support intent (77 fine-grained intents).",
    ),
    "question_type": (
        "trec",
        TrainConfig(
            char_ngram=(2, 5), char_min_df=2, model="svm", C=0.7, prefix_chars=40, prefix_ngram=(1, 2)
        ),
        "TREC coarse question type (ABBR, DESC, ENTY, HUM, LOC, NUM).",
    ),
    "request_type": (
        "dolly",
        TrainConfig(
            word_min_df=2, C=5.0, word_max_features=100_000, prefix_chars=120, marker_pattern=r"\n\s*\n"
        ),
        "Kind of LLM request (8 databricks-dolly categories: open_qa, brainstorming, ...).",
    ),
    "topic": (
        "ag_news",
        TrainConfig(char_ngram=(2, 5), char_min_df=2, C=10.0, char_max_features=150_000),
        "News topic (World, Sports, Business, Sci/Tech).",
    ),
}


# Tier-2 (transformer) specialists: name -> (tf-idf sibling, config, description). Trained on the
# train split only: the dev split (which the sentiment tf-idf recipe merges into its training
# data) picks the epoch, the int8/fp32 variant, the temperature and the thresholds.
TIER2: dict[str, tuple[str, FinetuneConfig, str]] = {
    "sentiment_minilm": (
        "sentiment",
        FinetuneConfig(),
        ("Binary sentiment (negative/positive) of a short English text: all-MiniLM-L6-v2 fine-tuned on "
        "SST-2 (tier 2: answers what the tf-idf `sentiment` specialist is unsure of)."),
    ),
}


def _paragraph(text: str, label: str) -> str:
    for para in re.split(r"\n\s*\n", text):
        if para.lstrip().startswith(f"**{label}"):
            body = re.sub(r"^\*\*[^*]*\*\*\s*", "", para.strip())
            return " ".join(body.split())
    return "not stated in SOURCE.md"


def source_info(folder: Path, splits: str, md_path: Path | None = None) -> dict[str, Any]:
    """Dataset, license and citation as written in ``<folder>/SOURCE.md``."""
    text = (md_path or folder / "SOURCE.md").read_text(encoding="utf-8")
    title = text.splitlines()[0].lstrip("# ").strip()
    return {
        "dataset": title,
        "fetched_from": _paragraph(text, "Fetched from"),
        "license": _paragraph(text, "License"),
        "citation": _paragraph(text, "Citation"),
        "splits": splits,
        "source_md": f"{folder.name}/SOURCE.md",
    }


def test_splits(name: str, root: Path) -> dict[str, Split]:
    """train/dev/test (and oos) splits of a bundled specialist's dataset."""
    folder = root / BUNDLED[name][0]
    load: Callable[[str], Split] = lambda f: load_split(folder / f)
    if name == "topic":
        train, dev, test = seeded_split(load("test.jsonl"), AG_NEWS_FRACTIONS, AG_NEWS_SEED)
        return {"train": train, "dev": dev, "test": test}
    out = {"train": load("train.jsonl"), "test": load("test.jsonl")}
    if (folder / "dev.jsonl").exists():
        out["dev"] = load("dev.jsonl")
    if name == "intent":
        out["oos_train"], out["oos_dev"], out["oos_test"] = (
            load("oos_train.jsonl"),
            load("oos_dev.jsonl"),
            load("oos_test.jsonl"),
        )
    return out


def _offdomain(name: str, root: Path) -> dict[str, list[str]]:
    out = {}
    for other, (folder, _, _) in BUNDLED.items():
        if other == name:
            continue
        path = root / folder / "test.jsonl"
        out[folder] = load_split(path).texts[:OFFDOMAIN_ROWS]
    return out


def job_for(name: str, root: Path, config: TrainConfig | None = None) -> Job:
    folder_name, default_config, description = BUNDLED[name]
    folder = root / folder_name
    s = test_splits(name, root)
    if name == "topic":
        splits = (
            f"ag_news test.jsonl (7,600 rows) shuffled with random.Random({AG_NEWS_SEED}) and cut "
            f"70/10/20 into train {len(s['train'])} / dev {len(s['dev'])} / test {len(s['test'])}"
        )
    elif name == "intent":
        splits = (
            "train.jsonl + oos_train.jsonl for training; dev.jsonl + oos_dev.jsonl for calibration and the "
            "oos threshold; test.jsonl + oos_test.jsonl for evaluation"
        )
    elif name in TRAIN_ON_DEV:
        splits = (
            "train.jsonl + dev.jsonl for training (calibration on 5-fold out-of-fold predictions), "
            "test.jsonl for evaluation"
        )
    elif "dev" in s:
        splits = "train.jsonl for training, dev.jsonl for calibration/thresholds, test.jsonl for evaluation"
    else:
        splits = (
            "train.jsonl for training (calibration on 5-fold out-of-fold predictions), "
            "test.jsonl for evaluation"
        )
    train, dev = s["train"], s.get("dev")
    if name == "intent":
        train = merge(train, s["oos_train"])
    if name in TRAIN_ON_DEV and dev is not None:
        train, dev = merge(train, dev), None
    return Job(
        name=name,
        config=config or default_config,
        train=train,
        test=s["test"],
        dev=dev,
        oos_label="oos" if name == "intent" else None,
        oos_dev=s.get("oos_dev"),
        oos_test=s.get("oos_test"),
        source=source_info(folder, splits),
        offdomain=_offdomain(name, root),
        description=description,
        oos_share=INTENT_OOS_SHARE if name == "intent" else None,
    )


def encoder_job_for(name: str, root: Path, config: FinetuneConfig | None = None) -> Any:
    """The :class:`EncoderJob` of a tier-2 specialist (train / dev / test of its sibling's dataset)."""
    from specialists.training.encoder_build import EncoderJob

    sibling, default_config, description = TIER2[name]
    folder = root / BUNDLED[sibling][0]
    s = test_splits(sibling, root)
    if "dev" not in s:
        raise ValueError(f"{name}: the {folder.name} dataset has no dev split")
    splits = (
        "train.jsonl for fine-tuning; dev.jsonl for the epoch, the int8/fp32 choice, the temperature and the "
        "thresholds; test.jsonl for evaluation"
    )
    classes = sorted(set(s["train"].labels))
    return EncoderJob(
        name=name,
        sibling=sibling,
        config=config or default_config,
        train=s["train"],
        dev=s["dev"],
        test=s["test"],
        classes=classes,
        source=source_info(folder, splits),
        offdomain=_offdomain(sibling, root),
        description=description,
    )
