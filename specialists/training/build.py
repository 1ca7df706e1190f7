"""Build one specialist end to end: fit, calibrate, export, parity, metrics, manifest, card."""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import sklearn
from sklearn.model_selection import StratifiedKFold

from specialists.manifest import FEATURES_FILE, MANIFEST_FILE, MODEL_FILE, sha256_hex
from specialists.runtime import Specialist
from specialists.training import evaluate
from specialists.training.calibrate import fit_temperature
from specialists.training.card import write_card
from specialists.training.data import Split
from specialists.training.export import check_parity, write_artifacts
from specialists.training.graph import INPUT_IDS, INPUT_WEIGHTS, OPSET, OUTPUT
from specialists.training.train import LinearSpecialist, TrainConfig, fit, softmax

__all__ = ["MAX_CHARS", "NOVELTY_DOC", "Job", "build"]

MAX_CHARS = 2000
CV_FOLDS = 5
NOVELTY_DOC = (
    "share of the input's word tokens (lowercased, regex (?u)\\b\\w\\w+\\b) never seen in the "
    "training texts; 1.0 when the input has no word token"
)


@dataclass
class Job:
    """Everything needed to build one specialist."""

    name: str
    config: TrainConfig
    train: Split
    test: Split
    dev: Split | None = None
    oos_label: str | None = None
    oos_dev: Split | None = None
    oos_test: Split | None = None
    source: dict[str, Any] = field(default_factory=dict)
    offdomain: dict[str, list[str]] = field(default_factory=dict)
    description: str = ""
    # share of out-of-scope inputs expected in use: oos_dev rows are weighted to it when fitting
    # the temperature (None: unweighted dev + oos_dev)
    oos_share: float | None = None
    # per-row weights of ``train`` in the classifier's loss (None: all 1); calibration folds are unweighted
    train_weight: list[float] | None = None


def _calibration_logits(job: Job, model: LinearSpecialist) -> tuple[np.ndarray, list[str], str]:
    if job.dev is not None:
        dev = (
            job.dev
            if job.oos_dev is None
            else Split(job.dev.texts + job.oos_dev.texts, job.dev.labels + job.oos_dev.labels, "dev+oos_dev")
        )
        return model.logits(dev.texts), dev.labels, f"dev split ({len(dev)} rows)"
    labels = np.array(job.train.labels)
    logits = np.zeros((len(labels), len(model.classes)))
    folds = StratifiedKFold(n_splits=CV_FOLDS, shuffle=True, random_state=job.config.seed)
    for tr, va in folds.split(np.zeros(len(labels)), labels):
        fold = fit(job.config, [job.train.texts[i] for i in tr], [job.train.labels[i] for i in tr])
        col = [model.classes.index(c) for c in fold.classes]
        fold_logits = np.full((len(va), len(model.classes)), -1e4)
        fold_logits[:, col] = fold.logits([job.train.texts[i] for i in va])
        logits[va] = fold_logits
    return logits, list(job.train.labels), f"{CV_FOLDS}-fold out-of-fold predictions on train"


def _calibration_weight(job: Job, n: int) -> np.ndarray | None:
    """Row weights that give oos_dev the share ``job.oos_share`` of the calibration set."""
    if job.oos_share is None or job.dev is None or not job.oos_dev:
        return None
    n_in, n_oos = len(job.dev), len(job.oos_dev)
    weight = np.ones(n)
    weight[n_in:] = job.oos_share / (1.0 - job.oos_share) * n_in / n_oos
    return weight


def _write_manifest(out: Path, data: dict[str, Any]) -> None:
    (out / MANIFEST_FILE).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def build(job: Job, out: Path, measure_speed: bool = True) -> dict[str, Any]:
    """Train, calibrate, export and document ``job`` into ``out``; return the manifest dict."""
    out.mkdir(parents=True, exist_ok=True)
    train = job.train
    model = fit(job.config, train.texts, train.labels, job.train_weight)
    cal_logits, cal_labels, cal_how = _calibration_logits(job, model)
    y_cal = np.array([model.classes.index(lab) for lab in cal_labels])
    cal_weight = _calibration_weight(job, len(cal_labels))
    model.temperature = fit_temperature(cal_logits, y_cal, cal_weight)
    if cal_weight is not None:
        cal_how += f", oos_dev rows weighted to an oos share of {job.oos_share:.4f}"
    write_artifacts(model, train.texts, out, job.name)
    model_bytes = (out / MODEL_FILE).read_bytes()
    sha = {MODEL_FILE: sha256_hex(model_bytes), FEATURES_FILE: sha256_hex((out / FEATURES_FILE).read_bytes())}
    manifest: dict[str, Any] = {
        "name": job.name,
        "task": job.name,
        "version": sha[MODEL_FILE][:16],
        "sha256": sha,
        "classes": list(model.classes),
        "oos_label": job.oos_label,
        "input": {"max_chars": MAX_CHARS, "truncation": "texts longer than max_chars are cut to max_chars"},
        "io": {
            "inputs": [INPUT_IDS, INPUT_WEIGHTS],
            "output": OUTPUT,
            "ids": "int64 [N, K] n-gram ids (pad 0)",
            "weights": "float32 [N, K] tf-idf weights (pad 0.0)",
        },
        "opset": OPSET,
        "novelty": NOVELTY_DOC,
        "description": job.description,
        "temperature": model.temperature,
        "calibration": cal_how,
    }
    _write_manifest(out, manifest)
    spec = Specialist(out)
    test = (
        job.test
        if job.oos_test is None
        else Split(
            job.test.texts + job.oos_test.texts, job.test.labels + job.oos_test.labels, "test+oos_test"
        )
    )
    parity = check_parity(model, spec, test.texts)
    probs = evaluate.probabilities(spec, test.texts)
    cal_probs = softmax(cal_logits / model.temperature)
    metrics = evaluate.quality(spec.classes, probs, test.labels, cal_probs, cal_labels)
    metrics["parity"] = parity.as_dict()
    if job.oos_label is not None and job.oos_test is not None and job.dev is not None and job.oos_dev:
        n_in = len(job.test)
        dev_n = len(job.dev)
        metrics["oos"] = evaluate.oos_metrics(
            spec.classes,
            job.oos_label,
            probs[:n_in],
            job.test.labels,
            probs[n_in:],
            cal_probs[:dev_n],
            job.dev.labels,
            cal_probs[dev_n:],
        )
    if measure_speed:
        metrics.update(evaluate.speed(spec, test.texts))
    metrics["file_bytes"] = {
        MODEL_FILE: len(model_bytes),
        FEATURES_FILE: (out / FEATURES_FILE).stat().st_size,
    }
    threshold = float(metrics["thresholds"]["0.95"])
    correct = probs.argmax(axis=1) == np.array([spec.classes.index(x) for x in test.labels])
    in_nov = np.array([p.novelty for p in spec.predict(test.texts[:1000])])
    accepted = probs.max(axis=1) >= threshold
    metrics["novelty_report"] = {
        "operating_threshold": threshold,
        "operating_level": "0.95",
        "in_domain": {
            "n": len(test),
            "mean_confidence": round(float(probs.max(axis=1).mean()), 4),
            "accepted_at_threshold": round(float(accepted.mean()), 4),
            "accuracy_at_threshold": round(float(correct[accepted].mean()), 4) if accepted.any() else None,
            "mean_novelty": round(float(in_nov.mean()), 4),
        },
        "off_domain": {k: evaluate.offdomain(spec, v, threshold) for k, v in sorted(job.offdomain.items())},
    }
    manifest["metrics"] = metrics
    manifest["source"] = job.source
    manifest["trained_with"] = {
        "sklearn": sklearn.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "seed": job.config.seed,
        "config": job.config.as_dict(),
        "n_features": int(model.W.shape[0]),
        "train_rows": len(train),
    }
    _write_manifest(out, manifest)
    write_card(out, manifest)
    return manifest
