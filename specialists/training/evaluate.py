"""Evaluation of an exported specialist: quality, calibration, selective accuracy, speed, plots."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.metrics import f1_score

from specialists.runtime import Specialist
from specialists.training.calibrate import (
    ACCURACY_LEVELS,
    coverage_at,
    ece,
    risk_coverage_curve,
    threshold_for,
)

__all__ = [
    "offdomain",
    "oos_metrics",
    "plot_reliability",
    "plot_risk_coverage",
    "probabilities",
    "quality",
    "speed",
]

F64 = npt.NDArray[np.float64]


def probabilities(spec: Specialist, texts: list[str]) -> F64:
    """Runtime probabilities, columns in ``spec.classes`` order."""
    out = np.zeros((len(texts), len(spec.classes)))
    for start in range(0, len(texts), 1000):
        preds = spec.predict(texts[start : start + 1000])
        out[start : start + len(preds)] = [[p.probabilities[c] for c in spec.classes] for p in preds]
    return out


def quality(
    classes: tuple[str, ...] | list[str],
    probs: F64,
    labels: list[str],
    cal_probs: F64 | None = None,
    cal_labels: list[str] | None = None,
) -> dict[str, Any]:
    """Accuracy, macro-F1, ECE, coverage at accuracy levels; thresholds from the calibration set."""
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[lab] for lab in labels])
    pred = probs.argmax(axis=1)
    conf = probs.max(axis=1)
    correct = pred == y
    out: dict[str, Any] = {
        "n": len(labels),
        "accuracy": round(float(correct.mean()), 5),
        "macro_f1": round(
            float(f1_score(y, pred, average="macro", labels=list(range(len(classes))), zero_division=0)), 5
        ),
        "ece": round(ece(conf, correct), 5),
        "mean_confidence": round(float(conf.mean()), 5),
        "risk_coverage": {a: round(coverage_at(conf, correct, float(a)), 4) for a in ACCURACY_LEVELS},
    }
    if cal_probs is not None and cal_labels is not None:
        cy = np.array([index[lab] for lab in cal_labels])
        ccorrect = cal_probs.argmax(axis=1) == cy
        cconf = cal_probs.max(axis=1)
        thresholds = {a: round(threshold_for(cconf, ccorrect, float(a)), 5) for a in ACCURACY_LEVELS}
        out["thresholds"] = thresholds
        check = {}
        for a, t in thresholds.items():
            acc_mask = conf >= t
            check[a] = {
                "coverage": round(float(acc_mask.mean()), 4),
                "accuracy": round(float(correct[acc_mask].mean()), 4) if acc_mask.any() else None,
            }
        out["threshold_check"] = check
    return out


def oos_metrics(
    classes: tuple[str, ...],
    oos_label: str,
    probs_in: F64,
    labels_in: list[str],
    probs_oos: F64,
    dev_in: F64,
    dev_labels: list[str],
    dev_oos: F64,
    target: float = 0.90,
) -> dict[str, Any]:
    """In-scope accuracy and oos recall, raw and with a dev-fitted rejection threshold."""
    k = classes.index(oos_label)
    index = {c: i for i, c in enumerate(classes)}

    def rates(p_in: F64, lab: list[str], p_oos: F64, t: float) -> tuple[float, float]:
        y = np.array([index[x] for x in lab])
        pred_in = np.where(p_in.max(axis=1) < t, k, p_in.argmax(axis=1))
        pred_oos = np.where(p_oos.max(axis=1) < t, k, p_oos.argmax(axis=1))
        return float((pred_in == y).mean()), float((pred_oos == k).mean())

    def best_threshold(p_in: F64, lab: list[str], p_oos: F64) -> float:
        best_t, best_r = 0.0, -1.0
        for t in np.unique(np.round(np.concatenate([p_in.max(axis=1), p_oos.max(axis=1)]), 4)):
            acc, rec = rates(p_in, lab, p_oos, float(t))
            if acc >= target and rec > best_r:
                best_t, best_r = float(t), rec
        return best_t

    acc0, rec0 = rates(probs_in, labels_in, probs_oos, 0.0)
    t_dev = best_threshold(dev_in, dev_labels, dev_oos)
    acc_t, rec_t = rates(probs_in, labels_in, probs_oos, t_dev)
    t_test = best_threshold(probs_in, labels_in, probs_oos)
    acc_o, rec_o = rates(probs_in, labels_in, probs_oos, t_test)
    y_in = np.array([index[x] for x in labels_in])
    ece_in = ece(probs_in.max(axis=1), probs_in.argmax(axis=1) == y_in)
    return {
        "in_scope_accuracy": round(acc0, 5),
        "oos_recall": round(rec0, 5),
        "ece_in_scope": round(ece_in, 5),
        "oos_threshold_dev": round(t_dev, 4),
        "in_scope_accuracy_at_threshold": round(acc_t, 5),
        "oos_recall_at_threshold": round(rec_t, 5),
        "oos_recall_at_in_scope_accuracy_0.90_test_oracle": round(rec_o, 5),
        "oos_threshold_test_oracle": round(t_test, 4),
        "in_scope_accuracy_at_test_oracle": round(acc_o, 5),
    }


def speed(
    spec: Specialist, texts: list[str], n_single: int = 3000, batch: int = 1000, rounds: int = 3
) -> dict[str, Any]:
    """predict_one p50/p99 latency (µs) and batch throughput (texts/s), one intra-op thread.

    Cold figures: no whole-text cache (``spec`` is used as given; build it with the default
    ``cache_size=0``), per-word n-gram caches warmed by one pass, median over ``rounds``.
    ``lru_hit_p50_us`` is reported apart: ``predict_one`` of a text already in the LRU.
    """
    sample = [texts[i % len(texts)] for i in range(n_single)]
    for t in sample[:300]:
        spec.predict_one(t)
    p50s, p99s, rates = [], [], []
    chunk = [texts[i % len(texts)] for i in range(batch)]
    spec.predict(chunk)
    clock = time.perf_counter_ns
    for _ in range(rounds):
        times = []
        for t in sample:
            start = clock()
            spec.predict_one(t)
            times.append(clock() - start)
        p50s.append(float(np.percentile(times, 50)) / 1000)
        p99s.append(float(np.percentile(times, 99)) / 1000)
        n, start_s = 0, time.perf_counter()
        while n < 2 or time.perf_counter() - start_s < 0.5:
            spec.predict(chunk)
            n += 1
        rates.append(n * batch / (time.perf_counter() - start_s))
    cached = type(spec)(spec.directory, cache_size=len(chunk))
    for t in chunk:
        cached.predict_one(t)
    hits = []
    for t in chunk:
        start = clock()
        cached.predict_one(t)
        hits.append(clock() - start)
    return {
        "latency_p50_us": round(float(np.median(p50s)), 1),
        "latency_p99_us": round(float(np.median(p99s)), 1),
        "batch_size": batch,
        "batch_texts_per_s": int(np.median(rates)),
        "lru_hit_p50_us": round(float(np.percentile(hits, 50)) / 1000, 1),
    }


def offdomain(spec: Specialist, texts: list[str], threshold: float) -> dict[str, Any]:
    """Confidence / acceptance / novelty of ``spec`` on texts from another task."""
    preds = spec.predict(texts)
    conf = np.array([p.confidence for p in preds])
    nov = np.array([p.novelty for p in preds])
    return {
        "n": len(texts),
        "mean_confidence": round(float(conf.mean()), 4),
        "accepted_at_threshold": round(float((conf >= threshold).mean()), 4),
        "mean_novelty": round(float(nov.mean()), 4),
    }


def plot_reliability(
    probs: F64, correct: npt.NDArray[np.bool_], title: str, path: Path, n_bins: int = 15
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conf = probs.max(axis=1)
    bins = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    centers, accs, counts = [], [], []
    for b in range(n_bins):
        m = bins == b
        if m.any():
            centers.append(float(conf[m].mean()))
            accs.append(float(correct[m].mean()))
            counts.append(int(m.sum()))
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect")
    ax.plot(centers, accs, "o-", label=f"model (ECE {ece(conf, correct):.3f})")
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=90, metadata={"Software": None})
    plt.close(fig)


def plot_risk_coverage(probs: F64, correct: npt.NDArray[np.bool_], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cov, acc = risk_coverage_curve(probs.max(axis=1), correct)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot(cov, acc)
    for level in (0.90, 0.95, 0.98, 0.99):
        ax.axhline(level, color="grey", lw=0.5, ls=":")
    ax.set_xlabel("coverage (most confident share answered)")
    ax.set_ylabel("accuracy on covered inputs")
    ax.set_ylim(max(0.0, float(acc.min()) - 0.02), 1.005)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90, metadata={"Software": None})
    plt.close(fig)
