"""`python -m bench.tier2`: the tier-2 (transformer) specialists and the cascades that use them.

For every classification route of the default policy with a `cascade`:

- latency of each tier-2 specialist, `predict_one` on its task's test texts, one intra-op thread:
  p50/p99 wall time and p50 CPU time of the calling thread (`time.thread_time`, the figure that
  does not grow when other processes share the cores);
- batch throughput (texts/s) of `predict` on 256 texts;
- resident memory a worker gains by using the tier: RSS of a fresh process after loading every
  bundled specialist, then after the tier-2 session is created and has answered 300 texts;
- the cascade on the test split with `simulate`, the foundation model assumed 97% accurate (the
  assumption `ops.defaults` chose the thresholds under) and 95% (earlier BENCHMARKS sections):
  the share each tier answers, escalated share, accuracy, foundation cost (priced as gpt-4o-mini),
  against the TF-IDF-only route at its default (the route without its cascade, tier 1 at the
  threshold `ops.defaults` gives it alone), against the TF-IDF-only route at the cascade's
  baseline (`ops.defaults.CASCADE_BASELINE`: what the joint tune must halve) and against
  all-foundation. This reads the test split: run it to report, never to choose a threshold
  (`python -m ops.defaults` and `hybrid-router tune` do that on dev).

Needs ../shared/data. Prints a Markdown section; `--json PATH` writes the raw figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATA = (ROOT / ".." / "shared" / "data").resolve()
FOUNDATION_ACCURACIES = (0.97, 0.95)
PRICE_AS = "gpt-4o-mini"  # the foundation bill is priced as this model (litellm's bundled table)

_RSS_PROBE = """
import json, sys
from specialists import load_specialists
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
specs = load_specialists()
for n in specs.names:
    if specs[n].kind == "tfidf":
        specs[n].predict_one("warm up")
before = rss()
texts = json.loads(sys.stdin.read())
spec = specs[sys.argv[1]]
for t in texts:
    spec.predict_one(t)
spec.predict(texts[:64])
print(json.dumps({"before": before, "after": rss()}))
"""


def _latency(spec: Any, texts: list[str]) -> dict[str, float]:
    for t in texts[:30]:
        spec.predict_one(t)
    wall, cpu = [], []
    for t in texts:
        w0, c0 = time.perf_counter(), time.thread_time()
        spec.predict_one(t)
        cpu.append(time.thread_time() - c0)
        wall.append(time.perf_counter() - w0)
    batch = texts[:256]
    t0 = time.perf_counter()
    spec.predict(batch)
    rate = len(batch) / (time.perf_counter() - t0)
    return {
        "p50_ms": round(statistics.median(wall) * 1000, 3),
        "p99_ms": round(float(np.percentile(wall, 99)) * 1000, 3),
        "cpu_p50_ms": round(statistics.median(cpu) * 1000, 3),
        "batch_texts_per_s": round(rate, 1),
        "n": len(texts),
    }


def _rss(name: str, texts: list[str]) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", _RSS_PROBE, name], input=json.dumps(texts[:300]), text=True,
                         capture_output=True, cwd=ROOT, check=True, timeout=600)
    got = json.loads(out.stdout)
    return {"rss_before_mib": round(got["before"] / 2**20, 1), "rss_after_mib": round(got["after"] / 2**20, 1),
            "added_mib": round((got["after"] - got["before"]) / 2**20, 1)}


def _flat_policy(route: str, tmp: Path, threshold: float) -> Path:
    """The default policy with `route` as the TF-IDF-only route at `threshold`."""
    import io

    from ruamel.yaml import YAML

    from ops.tune import render_threshold

    yaml = YAML()
    doc = yaml.load((ROOT / "policies" / "default.yaml").read_text(encoding="utf-8"))
    doc["routes"][route].pop("cascade", None)
    doc["routes"][route]["min_confidence"] = render_threshold(threshold)  # tier 1 alone
    buf = io.StringIO()
    yaml.dump(doc, buf)
    out = tmp / f"flat-{threshold:g}.yaml"
    out.write_text(buf.getvalue(), encoding="utf-8")
    return out


def _cascade(route: str, test_path: Path) -> dict[str, Any]:
    import tempfile

    from ops._offline import OfflineRequest, run_offline
    from ops.simulate import format_table

    def point(p: Any) -> dict[str, Any]:
        return {"thresholds": list(p.thresholds) or [p.min_confidence], "tier_shares": list(p.tier_shares) or
                [p.specialist_share], "escalated": p.escalated_share, "answered_accuracy": p.specialist_accuracy,
                "accuracy": p.accuracy, "foundation_usd": p.cost_usd, "cost_fraction": p.cost_fraction,
                "latency_ms": p.latency_ms}

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-tier2-") as tmp:
        from ops.defaults import CASCADE_BASELINE, choose_defaults

        policy = ROOT / "policies" / "default.yaml"
        (choice,) = [c for c in choose_defaults(policy, DATA, ROOT / "specialists" / "bundled") if c.route == route]
        flat_policy = _flat_policy(route, Path(tmp), choice.point.min_confidence)  # ops.defaults' tier 1 alone
        baseline = CASCADE_BASELINE.get(route)
        base_policy = _flat_policy(route, Path(tmp), baseline) if baseline is not None else None
        for fm in FOUNDATION_ACCURACIES:
            def run(policy: Path, fm: float = fm) -> Any:
                return run_offline(OfflineRequest(policy_path=policy, route=route, data_path=test_path,
                                                  foundation_accuracy=fm, price_as=PRICE_AS,
                                                  sweep="0.5:0.99:0.01"))[0]

            sim, flat = run(ROOT / "policies" / "default.yaml"), run(flat_policy)
            out[f"{fm:g}"] = {"table": format_table(sim, every=0.05), "policy": point(sim.policy),
                              "first_tier_only": point(sim.first_tier_only) if sim.first_tier_only else None,
                              "tfidf_at_default": point(flat.policy), "all_foundation": point(sim.all_foundation),
                              "tfidf_at_baseline": point(run(base_policy).policy) if base_policy else None,
                              "rows": sim.evaluated}
    return out


def _row(label: str, p: dict[str, Any]) -> str:
    shares = [*p["tier_shares"], *["-"] * (2 - len(p["tier_shares"]))]
    pct = [f"{100 * x:.1f}%" if isinstance(x, float) else x for x in shares]
    answered = "-" if p["answered_accuracy"] is None else f"{100 * p['answered_accuracy']:.1f}%"
    thresholds = " / ".join("-" if t == float("inf") else f"{t:g}" for t in p["thresholds"])
    return (f"| {label} | {thresholds} | {pct[0]} | {pct[1]} | "
            f"{100 * p['escalated']:.1f}% | {answered} | {100 * p['accuracy']:.1f}% | {100 * p['cost_fraction']:.1f}% |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tier2", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if not DATA.is_dir():
        print(f"{DATA} not present: the tier-2 benchmark needs the shared test splits", file=sys.stderr)
        return 2
    from router.policy import ClassifyRoute, load_policy
    from specialists import load_specialists
    from specialists.training.data import load_split
    from specialists.training.recipes import BUNDLED

    specs = load_specialists()
    policy = load_policy(ROOT / "policies" / "default.yaml", {n: specs[n].classes for n in specs})
    results: dict[str, Any] = {}
    load = Path("/proc/loadavg").read_text().split()[:3]
    lines = ["## Tier-2 specialists and cascades (`python -m bench.tier2`)", "",
             (f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load average at start {' '.join(load)} "
             f"({len(os.sched_getaffinity(0))} CPUs); foundation priced as {PRICE_AS}."), ""]
    for route_name, route in policy.policy.routes.items():
        if not isinstance(route, ClassifyRoute) or not route.cascade:
            continue
        test_path = DATA / BUNDLED[route.specialist][0] / "test.jsonl"
        texts = load_split(test_path).texts
        entry: dict[str, Any] = {"tiers": {}}
        for tier in route.tiers():
            spec = specs[tier.specialist]
            entry["tiers"][tier.specialist] = {"kind": spec.kind, **_latency(spec, texts[:500])}
            if spec.kind != "tfidf":
                entry["tiers"][tier.specialist].update(_rss(tier.specialist, texts))
        entry["cascade"] = _cascade(route_name, test_path)
        results[route_name] = entry
        lines += [f"### Route `{route_name}` ({len(texts)} test rows)", "",
                  "| tier | kind | p50 ms | p99 ms | CPU p50 ms | batch texts/s | RSS added (MiB) |",
                  "|---|---|---|---|---|---|---|"]
        for name, t in entry["tiers"].items():
            lines.append(f"| {name} | {t['kind']} | {t['p50_ms']} | {t['p99_ms']} | {t['cpu_p50_ms']} | "
                         f"{t['batch_texts_per_s']} | {t.get('added_mib', '-')} |")
        for fm, c in entry["cascade"].items():
            lines += ["", f"Foundation model assumed {100 * float(fm):g}% accurate:", "",
                      ("| route | thresholds | tier 1 answers | tier 2 answers | escalated | accuracy when answered | "
                       "overall | foundation bill (vs all-foundation) |"), "|---|---|---|---|---|---|---|---|",
                      _row("cascade (ships)", c["policy"]), _row("TF-IDF only at its default", c["tfidf_at_default"]),
                      *([_row("TF-IDF only at the cascade's baseline (ops.defaults.CASCADE_BASELINE)",
                              c["tfidf_at_baseline"])] if c["tfidf_at_baseline"] else []),
                      _row("all-foundation", c["all_foundation"]), "", "```", c["table"], "```"]
        lines.append("")
    section = "\n".join(lines)
    print(section)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
