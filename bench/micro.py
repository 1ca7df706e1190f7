"""Specialist micro-benchmarks, in process: `predict_one` latency and batch throughput per specialist.

Every bundled tier-1 (tf-idf) specialist (a subdirectory of specialists/bundled with a manifest)
is loaded on its own, so one that is half-written or fails its sha256 check is reported instead of
stopping the run. Tier-2 transformers (manifest ``kind: transformer``) are measured by
`bench.tier2`, not here: the per-text goals of issue 15 are the tf-idf tier's. Sessions run with one intra-op thread, as the runtime builds them for serving.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from specialists.errors import SpecialistError
from specialists.manifest import MANIFEST_FILE
from specialists.runtime import BUNDLED_DIR, Specialist

from .texts import TEXTS

__all__ = ["run_micro"]


def _pct(values: list[int], q: float) -> float:
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(q / 100 * len(values) + 0.5) - 1))
    return values[k] / 1e3  # ns -> µs


def _predict_one(spec: Specialist, iterations: int) -> dict[str, float]:
    times: list[int] = []
    n = len(TEXTS)
    for i in range(iterations):
        text = TEXTS[i % n]
        t0 = time.perf_counter_ns()
        spec.predict_one(text)
        times.append(time.perf_counter_ns() - t0)
    return {"p50_us": round(_pct(times, 50), 2), "p99_us": round(_pct(times, 99), 2),
            "mean_us": round(sum(times) / len(times) / 1e3, 2), "iterations": iterations}


def _batch(spec: Specialist, size: int, seconds: float) -> dict[str, float]:
    batch = [TEXTS[i % len(TEXTS)] for i in range(size)]
    spec.predict(batch)
    done = 0
    t0 = time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < seconds:
        spec.predict(batch)
        done += size
    return {"batch": size, "texts_per_s": round(done / elapsed, 1), "ms_per_batch": round(elapsed / (done / size) * 1e3, 4)}


def run_micro(quick: bool, directory: Path = BUNDLED_DIR) -> dict[str, Any]:
    iterations = 2_000 if quick else 10_000
    seconds = 0.5 if quick else 2.0
    results: dict[str, Any] = {}
    for d in sorted(p for p in directory.iterdir() if (p / MANIFEST_FILE).is_file()):
        if _kind(d) != "tfidf":
            continue
        try:
            spec = Specialist(d)
        except SpecialistError as exc:
            results[d.name] = {"error": str(exc)}
            continue
        for text in TEXTS[:50]:  # warm caches and onnxruntime's first-run allocations
            spec.predict_one(text)
        results[spec.name] = {
            "version": spec.version,
            "classes": len(spec.classes),
            "predict_one": _predict_one(spec, iterations),
            "predict_list_of_one": _predict_list(spec, iterations),
            "batches": [_batch(spec, size, seconds) for size in (8, 64)],
        }
    return results


def _predict_list(spec: Specialist, iterations: int) -> dict[str, float]:
    """`predict([text])`: what the gateway calls today for a single input."""
    times: list[int] = []
    n = len(TEXTS)
    for i in range(iterations):
        texts = [TEXTS[i % n]]
        t0 = time.perf_counter_ns()
        spec.predict(texts)
        times.append(time.perf_counter_ns() - t0)
    return {"p50_us": round(_pct(times, 50), 2), "p99_us": round(_pct(times, 99), 2)}


def _kind(directory: Path) -> str:
    try:
        return str(json.loads((directory / MANIFEST_FILE).read_text()).get("kind", "tfidf"))
    except (OSError, ValueError, AttributeError):
        return "tfidf"  # unreadable: let Specialist() report it
