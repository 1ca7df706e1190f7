"""The learning loop on Banking77: traffic -> distill -> candidate in shadow -> promote, round by round.

    python -m bench.learning_loop [--rounds 5] [--append BENCHMARKS.md] [--png docs/img/learning-loop.png]

Data (the held-out protocol of `specialists/training/splits.py`): Banking77's training split is
cut into *train* and the *dev* carved from it (15%, seed 20261206). The first specialist, v0, is
trained on a stratified 10% of train; dev is the held-out set every round's accuracy and every
promotion gate use. Two runs, each against a real gateway (`hybrid-router serve`), a private
Redis on a free loopback port, and a replay upstream on 127.0.0.1 reached through litellm:

- **gold**: the traffic is the other 90% of train, and the foundation model answers with the gold
  labels (a near-perfect model). The test split is read once, at the end, to report v0 and the
  final specialist.
- **qwen3-8b**: the foundation model replays `../shared/replay/banking77/qwen3-8b.test.jsonl`
  (about 55% accurate), which covers only the Banking77 *test* inputs: in this run the traffic is
  those test inputs (held-out is still dev).

Each round sends one slice of the traffic (the route keeps its escalations' inputs, and shadow
checks re-ask 20% of the confident answers), then: the candidate that ran in shadow during that
slice is promoted (`router.promote`, refused if worse on dev) and the gateway picks it up by hot
reload; a new candidate is distilled from v0's data plus every foundation-labelled escalation so
far (`router.distill`, refused when the shadow checks measure the foundation model weaker than the
specialist) and put in shadow (`candidate:`) for the next slice. Printed per round: the share
escalated, the cost per 1,000 requests (foundation calls at gpt-4o-mini prices plus specialist
CPU; the shadow checks' cost shown apart), the serving specialist's dev accuracy, the candidate
against it (dev accuracy, and the live shadow figures) and the promotion verdict.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import math
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from ruamel.yaml import YAML

from bench.servers import REPO, VENV_BIN, Server, clean_env, free_port, spawn, start_redis
from ops.distill import DistillError, DistillRequest, FoundationWeakerError, distill
from ops.promote import PromotionError, promote
from router.settings import RedisSettings
from specialists import Specialist
from specialists.training.build import Job, build
from specialists.training.data import Split, load_split
from specialists.training.recipes import BUNDLED
from specialists.training.splits import DEV_SEED, carve_dev
from tests.oracle_upstream import OracleUpstream

ROUTE = "banking"
DATA = REPO.parent / "shared" / "data" / "banking77"
QWEN = REPO.parent / "shared" / "replay" / "banking77" / "qwen3-8b.test.jsonl"
BUNDLED_DIR = REPO / "specialists" / "bundled"
MIN_CONFIDENCE = 0.79  # policies/default.yaml's banking threshold (chosen on dev by router.defaults)
SHADOW_RATE = 0.2
CANDIDATE_RATE = 0.5
BATCH = 32


@dataclass
class Round:
    n: int
    requests: int
    escalated: float
    cost_per_1k: float
    shadow_per_1k: float
    answer_accuracy: float
    serving: str
    serving_dev: float
    candidate: str = "-"
    candidate_dev: float | None = None
    shadow: dict[str, float] = field(default_factory=dict)
    verdict: str = "-"
    distilled: str = "-"
    unguarded: str = "-"
    """Weak run: a candidate distilled anyway (foundation check off) and the held-out gate's verdict."""


def _stratified(split: Split, share: float, seed: int) -> tuple[Split, Split]:
    by_label: dict[str, list[int]] = defaultdict(list)
    for i, y in enumerate(split.labels):
        by_label[y].append(i)
    rng = random.Random(seed)
    small: list[int] = []
    for y in sorted(by_label):
        rows = by_label[y]
        rng.shuffle(rows)
        small += rows[: max(1, round(share * len(rows)))]
    chosen = set(small)
    rest = [i for i in range(len(split)) if i not in chosen]
    rng.shuffle(rest)
    pick = sorted(small)
    return (Split([split.texts[i] for i in pick], [split.labels[i] for i in pick], f"{split.origin} {share:.0%}"),
            Split([split.texts[i] for i in rest], [split.labels[i] for i in rest], f"{split.origin} rest"))


def _jsonl(path: Path, split: Split) -> Path:
    with path.open("w", encoding="utf-8") as f:
        for t, y in zip(split.texts, split.labels, strict=True):
            f.write(json.dumps({"text": t, "label": y}) + "\n")
    return path


def _accuracy(spec: Specialist, split: Split) -> float:
    preds = spec.predict(split.texts)
    return sum(p.label == y for p, y in zip(preds, split.labels, strict=True)) / len(split)


def _metrics(gw: Server) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in httpx.get(gw.url + "/metrics", timeout=30).text.splitlines():
        if line.startswith("hybrid_router_") and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def _cost(m: dict[str, float], path: str | None) -> float:
    return sum(v for k, v in m.items() if k.startswith("hybrid_router_cost_usd_total{")
               and (path is None or f'path="{path}"' in k))


class Loop:
    """One run: a gateway on its own Redis and replay upstream, and the policy file it watches."""

    def __init__(self, work: Path, name: str, v0: Path, answers: dict[str, str], base: Path, dev_file: Path) -> None:
        self.work, self.name, self.base, self.dev_file = work, name, base, dev_file
        self.redis = start_redis(work)
        self.redis_url = f"redis://127.0.0.1:{self.redis.port}/0"
        self.upstream = OracleUpstream(answers).start()
        self.policy = work / "policy.yaml"
        self._write_policy(v0)
        port = free_port()
        env = clean_env()
        env.update({"ROUTER_REDIS__URL": self.redis_url, "ROUTER_LOG_LEVEL": "WARNING", "ROUTER_POLICY_POLL_S": "0.2"})
        self.gw = spawn("gateway", [str(VENV_BIN / "hybrid-router"), "serve", "--port", str(port), "--policy",
                                    str(self.policy)], env, work, port, work)
        self.gw.wait_ready("/readyz", 180)

    def _write_policy(self, v0: Path) -> None:
        doc = {
            "version": 1,
            "description": f"bench.learning_loop ({self.name})",
            "aliases": {"cheap": {"model": "openai/fake-ok", "api_base": self.upstream.api_base,
                                  "price_as": "gpt-4o-mini", "max_retries": 0, "timeout_s": 30,
                                  "max_concurrency": 16, "max_queue": 512}},
            "specialists": {"banking_v0": str(v0)},
            "routes": {ROUTE: {"kind": "classify", "specialist": "banking_v0", "min_confidence": MIN_CONFIDENCE,
                               "escalate_to": "cheap", "keep_inputs": True, "deadline_s": 60,
                               "on_invalid_label": "degrade", "cache_ttl_s": 3600}},
            "shadow": {"sample_rate": SHADOW_RATE, "window": 200, "min_agreement": 0.0, "max_in_flight": 16},
        }
        with self.policy.open("w") as f:
            YAML(typ="rt").dump(doc, f)

    def edit(self, change: Any) -> str:
        """Apply `change(doc)` to the policy file atomically; returns the new text."""
        yaml = YAML(typ="rt")
        doc = yaml.load(self.policy.read_text())
        change(doc)
        tmp = self.policy.with_suffix(".tmp")
        with tmp.open("w") as f:
            yaml.dump(doc, f)
        tmp.replace(self.policy)
        return self.policy.read_text()

    def classify(self, texts: list[str]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        with httpx.Client(base_url=self.gw.url, timeout=120) as client:
            for i in range(0, len(texts), BATCH):
                r = client.post("/v1/classify", json={"task": ROUTE, "input": texts[i:i + BATCH]})
                r.raise_for_status()
                out.extend(r.json()["results"])
        return out

    def wait_serving(self, version: str, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            r = httpx.post(self.gw.url + "/v1/classify", json={"task": ROUTE, "input": "ping"}, timeout=30).json()
            if r["specialist_version"] == version:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the gateway still serves {r['specialist_version']}, not {version}")
            time.sleep(0.2)

    def wait_policy(self, text: str, timeout_s: float = 60) -> None:
        from router.policy import policy_version

        want = policy_version(text)
        deadline = time.monotonic() + timeout_s
        while httpx.post(self.gw.url + "/v1/classify", json={"task": ROUTE, "input": "ping"},
                         timeout=30).json()["policy_version"] != want:
            if time.monotonic() > deadline:
                raise RuntimeError("the gateway did not reload the policy")
            time.sleep(0.2)

    def stop(self) -> None:
        self.gw.stop()
        self.upstream.stop()
        self.redis.stop()


def _unguarded(loop: Loop, out: Path, base: Path, dev_file: Path) -> str:
    """What the held-out gate alone would say of a candidate distilled without the foundation check."""
    report = distill(DistillRequest(policy_path=loop.policy, route=ROUTE, out=out, redis=RedisSettings(url=loop.redis_url),
                                    train_data=base, heldout_data=dev_file, specialists_dir=BUNDLED_DIR,
                                    min_checks=10**9))
    h = report["heldout"]
    gate = "promote would refuse it" if h["candidate_accuracy"] < h["serving_accuracy"] else "promote would pass it"
    return f"dev {_pct(h['candidate_accuracy'])}: {gate}"


def _serving_dir(policy: Path) -> Path:
    doc = YAML(typ="safe").load(policy.read_text())
    return Path(doc["specialists"][doc["routes"][ROUTE]["specialist"]])


def run_loop(name: str, work: Path, v0: Path, traffic: Split, answers: dict[str, str], base: Path, dev: Split,
             dev_file: Path, rounds: int) -> list[Round]:
    loop = Loop(work, name, v0, answers, base, dev_file)
    out: list[Round] = []
    candidate: tuple[str, Path, dict[str, Any]] | None = None
    try:
        size = -(-len(traffic) // rounds)
        for k in range(rounds):
            texts, labels = traffic.texts[k * size:(k + 1) * size], traffic.labels[k * size:(k + 1) * size]
            serving = Specialist(_serving_dir(loop.policy))
            before = _metrics(loop.gw)
            results = loop.classify(texts)
            time.sleep(1.0)  # the last shadow checks and stream writes land
            after = _metrics(loop.gw)
            n = len(results)
            row = Round(
                n=k + 1, requests=n,
                escalated=sum(r["path"] != "specialist" for r in results) / n,
                cost_per_1k=1000 * (_cost(after, None) - _cost(before, None) - _cost(after, "shadow")
                                    + _cost(before, "shadow")) / n,
                shadow_per_1k=1000 * (_cost(after, "shadow") - _cost(before, "shadow")) / n,
                answer_accuracy=sum(r["label"] == y for r, y in zip(results, labels, strict=True)) / n,
                serving=serving.version[:8], serving_dev=_accuracy(serving, dev))
            if candidate is not None:
                cname, cdir, report = candidate
                row.candidate = report["candidate"]["version"][:8]
                row.candidate_dev = report["heldout"]["candidate_accuracy"]
                q = f'{{route="{ROUTE}"'
                row.shadow = {
                    "compared": after.get(f"hybrid_router_candidate_compared{q}}}", 0.0),
                    "agree_foundation": after.get(
                        f'hybrid_router_candidate_agreement{{against="foundation",route="{ROUTE}"}}', float("nan")),
                    "esc_serving": after.get(f'hybrid_router_candidate_projected_escalation_rate{q},version="serving"}}',
                                             float("nan")),
                    "esc_candidate": after.get(
                        f'hybrid_router_candidate_projected_escalation_rate{q},version="candidate"}}', float("nan")),
                    "cost_serving": after.get(
                        f'hybrid_router_candidate_projected_cost_per_1k_usd{q},version="serving"}}', float("nan")),
                    "cost_candidate": after.get(
                        f'hybrid_router_candidate_projected_cost_per_1k_usd{q},version="candidate"}}', float("nan")),
                }
                try:
                    promote(loop.policy, ROUTE, cdir, BUNDLED_DIR)
                    loop.wait_serving(report["candidate"]["version"])
                    row.verdict = "promoted"
                except PromotionError as exc:
                    row.verdict = "refused: " + str(exc).split(" (")[0].removeprefix("refusing to promote: ")
                candidate = None
            if k + 1 < rounds:
                cdir = work / f"candidate-{k + 1}"
                try:
                    report = distill(DistillRequest(policy_path=loop.policy, route=ROUTE, out=cdir,
                                                    redis=RedisSettings(url=loop.redis_url), train_data=base,
                                                    heldout_data=dev_file, specialists_dir=BUNDLED_DIR))
                except FoundationWeakerError as exc:
                    row.distilled = "refused: foundation measured weaker"
                    print(f"  distill refused: {exc}", flush=True)
                    row.unguarded = _unguarded(loop, work / f"unguarded-{k + 1}", base, dev_file)
                except DistillError as exc:
                    row.distilled = f"refused: {exc}"
                else:
                    cname = f"banking_c{k + 1}"
                    candidate = (cname, cdir, report)
                    row.distilled = f"{report['candidate']['version'][:8]} ({report['data']['escalations_trained']} " \
                                    "escalations)"

                    def shadow_it(doc: Any, cname: str = cname, cdir: Path = cdir) -> None:
                        doc["specialists"][cname] = str(cdir)
                        doc["routes"][ROUTE]["candidate"] = {"specialist": cname, "sample_rate": CANDIDATE_RATE,
                                                             "max_queue": 1024}

                    loop.wait_policy(loop.edit(shadow_it))
            out.append(row)
            print(_line(name, row), flush=True)
        return out
    finally:
        loop.stop()


def _pct(x: float | None) -> str:
    return "–" if x is None or math.isnan(x) else f"{100 * x:.1f}%"


def _line(name: str, r: Round) -> str:
    s = r.shadow
    shadow = "" if not s else (f" | shadow n={s['compared']:.0f}: esc {_pct(s['esc_serving'])}→{_pct(s['esc_candidate'])}"
                               f", ${s['cost_serving']:.3f}→${s['cost_candidate']:.3f}/1k, agrees w/ FM "
                               f"{_pct(s['agree_foundation'])}")
    return (f"{name} round {r.n}: {r.requests} req, escalated {_pct(r.escalated)}, ${r.cost_per_1k:.4f}/1k "
            f"(+${r.shadow_per_1k:.4f} shadow), answers {_pct(r.answer_accuracy)}, serving {r.serving} dev "
            f"{_pct(r.serving_dev)}; candidate {r.candidate} dev {_pct(r.candidate_dev)}{shadow}; {r.verdict}; "
            f"distilled {r.distilled}" + (f"; unguarded candidate {r.unguarded}" if r.unguarded != "-" else ""))


def table(name: str, rows: list[Round]) -> str:
    head = ("| round | requests | escalated | cost / 1k req (shadow checks) | answer accuracy | serving: dev acc. "
            "| candidate in shadow: dev acc. | shadow: escalation serving → candidate | shadow: cost / 1k serving → "
            "candidate | shadow: agrees with FM | promotion | distilled next |\n|" + "---|" * 12)
    lines = [head]
    for r in rows:
        s = r.shadow
        lines.append(
            f"| {r.n} | {r.requests} | {_pct(r.escalated)} | ${r.cost_per_1k:.4f} (+${r.shadow_per_1k:.4f}) | "
            f"{_pct(r.answer_accuracy)} | `{r.serving}` {_pct(r.serving_dev)} | "
            + (f"`{r.candidate}` {_pct(r.candidate_dev)} | {_pct(s['esc_serving'])} → {_pct(s['esc_candidate'])} "
               f"(n={s['compared']:.0f}) | ${s['cost_serving']:.4f} → ${s['cost_candidate']:.4f} | "
               f"{_pct(s['agree_foundation'])} | {r.verdict} |" if s else "– | – | – | – | – |")
            + f" {r.distilled}" + (f" (distilled anyway: {r.unguarded})" if r.unguarded != "-" else "") + " |")
    return "\n".join(lines)


def plot(runs: dict[str, list[Round]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=100)
    for (name, rows), colour in zip(runs.items(), ("tab:green", "tab:red"), strict=False):
        xs = [r.n for r in rows]
        ax1.plot(xs, [100 * r.escalated for r in rows], marker="o", color=colour, label=name)
        ax2.plot(xs, [r.cost_per_1k for r in rows], marker="o", color=colour, label=name)
        for prev, r in itertools.pairwise(rows):
            if prev.verdict == "promoted":  # promoted after `prev`: the candidate served round `r`
                ax1.annotate("▲", (r.n, 100 * r.escalated), textcoords="offset points", xytext=(0, 6),
                             ha="center", fontsize=8, color=colour)
    ax1.set_title("escalated to the foundation model (%)")
    ax2.set_title("cost per 1,000 requests (USD)")
    for ax in (ax1, ax2):
        ax.set_xlabel("round (▲ = a promoted candidate served it)")
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
        ax.set_xticks(range(1, max(len(r) for r in runs.values()) + 1))
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, pil_kwargs={"optimize": True})
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--base-share", type=float, default=0.10)
    parser.add_argument("--seed", type=int, default=DEV_SEED)
    parser.add_argument("--append", type=Path, help="append the tables to this markdown file")
    parser.add_argument("--png", type=Path, help="write the plot here")
    parser.add_argument("--json", type=Path, help="write the raw rounds here")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)

    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="learning-loop-"))
    try:
        carve = carve_dev(load_split(DATA / "train.jsonl"))
        train, dev = carve.train, carve.dev
        base, rest = _stratified(train, args.base_share, args.seed)
        base_file, dev_file = _jsonl(work / "base.jsonl", base), _jsonl(work / "dev.jsonl", dev)
        v0 = work / "banking-v0"
        build(Job(name="banking", config=BUNDLED["banking"][1], train=base, test=dev,
                  source={"splits": f"{base.origin} ({len(base)} rows), held-out: dev carved from train "
                          f"({len(dev)} rows)"}), v0, measure_speed=False)
        print(f"v0: {len(base)} rows ({args.base_share:.0%} of train), dev {len(dev)} rows, "
              f"dev accuracy {_pct(_accuracy(Specialist(v0), dev))}", flush=True)

        runs: dict[str, list[Round]] = {}
        (work / "gold").mkdir()
        gold = dict(zip(rest.texts, rest.labels, strict=True))
        runs["gold answers"] = run_loop("gold", work / "gold", v0, rest, gold, base_file, dev, dev_file, args.rounds)

        test = load_split(DATA / "test.jsonl")
        replay = {json.loads(line)["text"]: json.loads(line)["answer"]
                  for line in QWEN.read_text(encoding="utf-8").splitlines() if line.strip()}
        weak = Split([t for t in test.texts if t in replay], [y for t, y in zip(test.texts, test.labels, strict=True)
                                                              if t in replay], "banking77 test (replayed inputs)")
        order = list(range(len(weak)))
        random.Random(args.seed).shuffle(order)
        weak = Split([weak.texts[i] for i in order], [weak.labels[i] for i in order], weak.origin)
        (work / "qwen").mkdir()
        runs["qwen3-8b replay"] = run_loop("qwen3-8b", work / "qwen", v0, weak, replay, base_file, dev, dev_file,
                                           args.rounds)

        # The test split, read once to report: v0 and the specialist the gold run ended with.
        final = Specialist(_serving_dir(work / "gold" / "policy.yaml"))
        test_v0, test_final = _accuracy(Specialist(v0), test), _accuracy(final, test)
        elapsed = time.monotonic() - started
        print(f"test split (read once): v0 {_pct(test_v0)}, final gold-run specialist {_pct(test_final)}; "
              f"{elapsed:.0f} s", flush=True)
        if args.json:
            args.json.write_text(json.dumps({k: [r.__dict__ for r in v] for k, v in runs.items()}, indent=1))
        if args.png:
            plot(runs, args.png)
        if args.append:
            _append(args.append, runs, len(base), len(dev), len(rest), len(weak), test_v0, test_final, elapsed, args)
    finally:
        if args.keep:
            print(f"work directory: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def _append(path: Path, runs: dict[str, list[Round]], n_base: int, n_dev: int, n_rest: int, n_weak: int,
            test_v0: float, test_final: float, elapsed: float, args: argparse.Namespace) -> None:
    cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], capture_output=True,
                         text=True, check=False).stdout.strip()
    gold, weak = runs["gold answers"], runs["qwen3-8b replay"]
    text = [
        "",
        f"## The learning loop on Banking77 ({dt.date.today().isoformat()})",
        "",
        (f"`python -m bench.learning_loop --rounds {args.rounds}` (`make bench-loop`), under `flock /tmp/heavy.lock`, "
        f"{platform.machine()} {cpu or 'CPU'}, {_cores()} cores shared, Python {platform.python_version()}; "
        f"{elapsed:.0f} s for both runs. Each run: `hybrid-router serve`, a private `redis-server` on a free "
        "loopback port, the replay upstream on 127.0.0.1 through litellm (priced as gpt-4o-mini); route "
        f"`banking` at `min_confidence: {MIN_CONFIDENCE}` with `keep_inputs`, shadow checks on {SHADOW_RATE:.0%} of "
        f"the confident answers, the distilled candidate in shadow on {CANDIDATE_RATE:.0%} of the traffic."),
        "",
        (f"Held-out protocol: v0 is trained on a stratified {args.base_share:.0%} of Banking77's training split "
        f"({n_base} rows; training split = train minus the dev carved from it, 15%, seed {DEV_SEED}); the dev "
        f"split ({n_dev} rows) is the held-out set of every round and of every promotion gate; the test split is "
        "read once, at the end, to report. *Cost / 1k* is what the requests cost (foundation calls plus "
        "specialist CPU); the shadow checks' own foundation calls are shown apart. The *shadow* columns are the "
        "live evidence of the candidate distilled after the previous round (`hybrid_router_candidate_*`); "
        "promotion is `hybrid-router promote`'s gate (refused when worse on dev), and the promoted candidate "
        "serves from the next round."),
        "",
        (f"**Run 1: a near-perfect foundation model** (the gold labels), traffic = the other {n_rest} training rows "
        f"in {args.rounds} slices:"),
        "",
        table("gold", gold),
        "",
        (f"Escalated {_pct(gold[0].escalated)} → {_pct(gold[-1].escalated)}, cost per 1k requests "
        f"${gold[0].cost_per_1k:.4f} → ${gold[-1].cost_per_1k:.4f}, dev accuracy of the serving specialist "
        f"{_pct(gold[0].serving_dev)} → {_pct(gold[-1].serving_dev)}. Test split (read once): v0 {_pct(test_v0)}, "
        f"the final specialist {_pct(test_final)}."),
        "",
        (f"**Run 2: a weak foundation model** (the shared qwen3-8b replay, about 55% accurate). The replay covers only "
        f"the Banking77 *test* inputs, so in this run the traffic is those {n_weak} test inputs (the held-out set is "
        "still dev; answer accuracy is measured against their gold labels, for this report only):"),
        "",
        table("qwen3-8b", weak),
        "",
        "![escalation and cost per round, both runs](docs/img/learning-loop.png)",
        "",
    ]
    with path.open("a", encoding="utf-8") as f:
        f.write("\n".join(text))


def _cores() -> int:
    import os

    return os.cpu_count() or 1


if __name__ == "__main__":
    sys.exit(main())
