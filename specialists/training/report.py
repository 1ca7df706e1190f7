"""``eval`` command: re-measure bundled specialists on their test splits, print a table, draw plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from specialists.runtime import Specialist, SpecialistSet
from specialists.training import evaluate
from specialists.training.data import Split, load_split, merge
from specialists.training.recipes import BUNDLED, TIER2
from specialists.training.splits import dataset_splits

__all__ = ["evaluate_dir", "format_table"]

_COLUMNS = (
    "name",
    "n",
    "acc",
    "macroF1",
    "ECE",
    "cov@90",
    "cov@95",
    "cov@98",
    "cov@99",
    "p50us",
    "p99us",
    "texts/s",
    "onnx_KB",
    "parity",
)


def _test_split(spec: Specialist, data_root: Path) -> Split | None:
    """The test split named in the manifest: bundled recipe or the custom ``--test`` file."""
    task = TIER2[spec.name][0] if spec.name in TIER2 else spec.name
    if task in BUNDLED and data_root.is_dir():
        s = dataset_splits(task, data_root)
        return merge(s["test"], s["oos_test"]) if "oos_test" in s else s["test"]
    splits = str(spec.manifest.source.get("splits", ""))
    for part in splits.split():
        if part.startswith("test=") and Path(part[5:]).is_file():
            return load_split(Path(part[5:]))
    return None


def _row(spec: Specialist, test: Split, out: Path) -> dict[str, Any]:
    probs = evaluate.probabilities(spec, test.texts)
    from specialists.training.export import PARITY_TOL

    metrics = evaluate.quality(spec.classes, probs, test.labels)
    recorded = spec.manifest.metrics
    correct = probs.argmax(axis=1) == np.array([spec.classes.index(x) for x in test.labels])
    evaluate.plot_reliability(
        probs, correct, f"{spec.name}: reliability (test)", out / f"{spec.name}_reliability.png"
    )
    evaluate.plot_risk_coverage(
        probs, correct, f"{spec.name}: risk-coverage (test)", out / f"{spec.name}_risk_coverage.png"
    )
    fast = spec.kind == "tfidf"  # a transformer takes ms per text: fewer timed calls
    metrics.update(evaluate.speed(spec, test.texts, n_single=2000 if fast else 300, batch=1000 if fast else 256))
    recorded_acc = recorded.get("accuracy")
    metrics["matches_manifest_accuracy"] = (
        recorded_acc is not None and abs(recorded_acc - metrics["accuracy"]) < 1e-4
    )
    par = recorded.get("parity", {})
    metrics["parity_recorded"] = par
    metrics["parity_ok"] = par.get("label_agreement") == 1.0 and par.get("max_abs_prob_diff", 1) <= PARITY_TOL
    metrics["onnx_bytes"] = (spec.directory / "model.onnx").stat().st_size
    if "oos" in recorded:
        metrics["oos"] = recorded["oos"]
    return metrics


def format_table(rows: dict[str, dict[str, Any]]) -> str:
    lines = [" | ".join(_COLUMNS), " | ".join("---" for _ in _COLUMNS)]
    for name, m in rows.items():
        rc = m["risk_coverage"]
        par = m["parity_recorded"]
        lines.append(
            " | ".join(
                str(x)
                for x in (
                    name,
                    m["n"],
                    f"{m['accuracy']:.4f}",
                    f"{m['macro_f1']:.4f}",
                    f"{m['ece']:.4f}",
                    rc["0.90"],
                    rc["0.95"],
                    rc["0.98"],
                    rc["0.99"],
                    m["latency_p50_us"],
                    m["latency_p99_us"],
                    m["batch_texts_per_s"],
                    m["onnx_bytes"] // 1024,
                    f"{par.get('label_agreement', 0):.0%}/{par.get('max_abs_prob_diff', float('nan')):.1e}",
                )
            )
        )
    return "\n".join(lines)


def _versus(specs: SpecialistSet, rows: dict[str, dict[str, Any]], tests: dict[str, Any]) -> str:
    """Each tier-2 specialist against its tier-1 (tf-idf) sibling, both measured here (and, with a
    fitted blend, the tier-2 answer blended with the sibling's, as a cascade serves it)."""
    lines = []
    for name, m in rows.items():
        sibling = specs[name].manifest.raw.get("sibling")
        if not sibling or sibling not in rows:
            continue
        s = rows[sibling]
        line = (
            f"{name} (tier 2) vs {sibling} (tier 1): accuracy {m['accuracy']:.4f} vs {s['accuracy']:.4f}, "
            f"ECE {m['ece']:.4f} vs {s['ece']:.4f}, coverage at 95% accuracy {m['risk_coverage']['0.95']} vs "
            f"{s['risk_coverage']['0.95']}, p50 {m['latency_p50_us']} vs {s['latency_p50_us']} µs"
        )
        if getattr(specs[name], "blend", None) is not None:
            test = tests[name]
            blended = specs[name].follow(specs[sibling].predict(test.texts), specs[name].predict(test.texts))
            acc = sum(p.label == y for p, y in zip(blended, test.labels)) / len(test.labels)
            m["blended_accuracy"] = acc
            line += f"; blended with {sibling} (as the cascade serves it): accuracy {acc:.4f}"
        lines.append(line)
    return ("\n\n" + "\n".join(lines)) if lines else ""


def evaluate_dir(directory: Path, data_root: Path, out: Path) -> dict[str, dict[str, Any]]:
    """Evaluate every specialist in ``directory``; write ``eval.json``, ``eval.md`` and PNGs into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    specs = SpecialistSet.load(directory)
    rows: dict[str, dict[str, Any]] = {}
    tests: dict[str, Any] = {}
    for name in specs.names:
        spec = specs[name]
        test = _test_split(spec, data_root)
        if test is None:
            print(f"{name}: no test split found (data root {data_root}); skipped")
            continue
        rows[name], tests[name] = _row(spec, test, out), test
    table = format_table(rows) + _versus(specs, rows, tests)
    print(table)
    for name, m in rows.items():
        if "oos" in m:
            print(f"{name} oos: " + json.dumps(m["oos"]))
    (out / "eval.md").write_text(table + "\n", encoding="utf-8")
    (out / "eval.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return rows
