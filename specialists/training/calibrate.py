"""Calibration and selective-prediction metrics: temperature, ECE, risk-coverage."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from scipy.optimize import minimize, minimize_scalar

__all__ = ["ACCURACY_LEVELS", "coverage_at", "ece", "fit_blend", "fit_temperature", "threshold_for"]

ACCURACY_LEVELS = ("0.90", "0.95", "0.98", "0.99")
F64 = npt.NDArray[np.float64]


def _nll(logits: F64, y: npt.NDArray[np.int64], temperature: float, weight: F64 | None = None) -> float:
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    logz = np.log(np.exp(z).sum(axis=1))
    return float(np.average(logz - z[np.arange(len(y)), y], weights=weight))


def fit_temperature(logits: F64, y: npt.NDArray[np.int64], sample_weight: F64 | None = None) -> float:
    """Temperature minimising the (optionally weighted) negative log-likelihood of ``softmax(logits / T)``."""
    res = minimize_scalar(
        lambda lt: _nll(logits, y, math.exp(lt), sample_weight),
        bounds=(-5.0, 5.0),
        method="bounded",
        options={"xatol": 1e-6},
    )
    # rounded so the value is short, stable across platforms and exactly representable in the graph
    return float(np.float32(round(math.exp(float(res.x)), 5)))


def fit_blend(sibling: F64, own: F64, y: npt.NDArray[np.int64]) -> tuple[float, float, list[float]]:
    """Weights and per-class biases of ``softmax(a * log p_sibling + b * log p_own + c)`` minimising the
    negative log-likelihood on (sibling, own, y): the tier-2 blend of :mod:`specialists.blend`.

    Rounded like the temperature (short, stable values); the first class's bias is fixed at 0.
    """
    from specialists.blend import EPS

    ls, lo = np.log(np.clip(sibling, EPS, 1.0)), np.log(np.clip(own, EPS, 1.0))
    k = sibling.shape[1]

    def nll(x: F64) -> float:
        z = x[0] * ls + x[1] * lo + np.concatenate([[0.0], x[2:]])
        z = z - z.max(axis=1, keepdims=True)
        return float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(y)), y]))

    res = minimize(nll, np.array([0.0, 1.0, *([0.0] * (k - 1))]), method="L-BFGS-B",
                   bounds=[(-10.0, 10.0)] * 2 + [(-20.0, 20.0)] * (k - 1))
    x = [round(float(v), 5) for v in res.x]
    return x[0], x[1], [0.0, *x[2:]]


def ece(confidence: F64, correct: npt.NDArray[np.bool_], n_bins: int = 15) -> float:
    """Expected calibration error with ``n_bins`` equal-width confidence bins."""
    bins = np.minimum((confidence * n_bins).astype(int), n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        mask = bins == b
        if mask.any():
            total += mask.sum() * abs(float(correct[mask].mean()) - float(confidence[mask].mean()))
    return total / max(1, len(confidence))


def _curve(confidence: F64, correct: npt.NDArray[np.bool_]) -> tuple[F64, F64, F64]:
    order = np.argsort(-confidence, kind="stable")
    conf = confidence[order]
    acc = np.cumsum(correct[order]) / np.arange(1, len(order) + 1)
    cov = np.arange(1, len(order) + 1) / len(order)
    return conf, acc, cov


def risk_coverage_curve(confidence: F64, correct: npt.NDArray[np.bool_]) -> tuple[F64, F64]:
    """(coverage, accuracy of the most confident ``coverage`` share) for plotting."""
    _, acc, cov = _curve(confidence, correct)
    return cov, acc


def coverage_at(confidence: F64, correct: npt.NDArray[np.bool_], accuracy: float) -> float:
    """Largest share of inputs (most confident first) whose accuracy is >= ``accuracy``."""
    conf, acc, cov = _curve(confidence, correct)
    # only cut between distinct confidence values
    valid = np.append(conf[1:] < conf[:-1], True)
    ok = (acc >= accuracy) & valid
    return float(cov[ok].max()) if ok.any() else 0.0


def threshold_for(confidence: F64, correct: npt.NDArray[np.bool_], accuracy: float) -> float:
    """Smallest confidence threshold whose accepted set reaches ``accuracy`` (1.0 if none)."""
    conf, acc, _ = _curve(confidence, correct)
    valid = np.append(conf[1:] < conf[:-1], True)
    ok = np.nonzero((acc >= accuracy) & valid)[0]
    return float(conf[ok.max()]) if len(ok) else 1.0
