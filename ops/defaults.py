"""Default `min_confidence` of the bundled classification routes, chosen by cost and accuracy on dev data.

For each classification route of the policy whose specialist is bundled, on that specialist's
*dev* split (never test; `specialists.training.splits`): simulate the route against an assumed
foundation model (`FOUNDATION_ACCURACY`, priced as `PRICE_AS`) with the `simulate` machinery, and
let `tune.choose_threshold` pick the cheapest threshold whose hybrid accuracy is at least that of
the better of specialist alone and foundation alone. When no swept threshold reaches it, the most
accurate point is taken (cheapest among equals) and the comment says so. Each chosen value is
written back with `tune.write_threshold`, with an end-of-line comment stating how it was chosen.

A route with a `cascade:` is then tuned jointly, to the goal it was built for (issue 18): escalate
at most half of what the TF-IDF-only route escalates at its baseline threshold (`CASCADE_BASELINE`:
the route's default before it had a cascade), while staying at least as accurate overall. Every
tier's threshold is chosen together (the `tune` grid) on dev; among the combinations meeting both,
the one with the widest margin on its tighter side is taken (the escalation share under the
budget and the accuracy over the baseline's, each in its binomial standard error on the dev rows),
so that neither side of the goal rests on a few dev rows. When none meets both: the cheapest
reaching the baseline's accuracy, else the most accurate. A route without a `CASCADE_BASELINE`
is measured against itself without its cascade at its own default.
Caveat, stated in the comment and in BENCHMARKS.md: the bundled specialists' temperatures (and
tier 2's epoch, export and blend) were fitted on the same dev rows, so dev figures are slightly
optimistic.

    python -m ops.defaults            # write policies/default.yaml
    python -m ops.defaults --check    # exit 1 if the file differs from what would be written

Offline tool: reads ../shared/data (or --data-root / $HYBRID_ROUTER_DATA); never imported by the app.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ruamel.yaml import YAML

from router.policy import ClassifyRoute, load_policy
from specialists import SpecialistSet
from specialists.training.data import REPO_ROOT, Split, default_data_root, merge
from specialists.training.splits import DATASETS, dataset_splits

from ._offline import OfflineRequest, checked_classes, run_offline
from .simulate import Simulation, SweepPoint, predict_all
from .tune import choose_threshold, render_threshold, write_threshold

__all__ = ["FOUNDATION_ACCURACY", "PRICE_AS", "CascadeChoice", "Choice", "choose_defaults", "main"]

FOUNDATION_ACCURACY = 0.97
PRICE_AS = "gpt-4o-mini"
SWEEP = "0:0.99:0.01"
DEFAULT_POLICY = REPO_ROOT / "policies" / "default.yaml"
# route -> the TF-IDF-only route's default before its cascade: what the cascade must beat (issue 18:
# sentiment escalated 54% of SST-2 test at 0.88 with the tier 1 of the time, 58.6% with today's; the
# goal is at most half of that share, as accurate)
CASCADE_BASELINE = {"sentiment": 0.88}
ESCALATION_RATIO = 0.5


@dataclass(frozen=True, slots=True)
class CascadeChoice:
    """Every tier's threshold of a cascade route, chosen together on dev."""

    baseline: SweepPoint
    """The route without its cascade at its baseline threshold (`CASCADE_BASELINE`), on dev."""
    point: SweepPoint
    """The chosen grid point (`point.thresholds` holds one value per tier)."""
    met: bool
    """Both sides of the goal met on dev (else the fallback's point)."""


@dataclass(frozen=True, slots=True)
class Choice:
    route: str
    dev_rows: int
    specialist_accuracy: float
    foundation_accuracy: float
    point: SweepPoint
    """Tier 1 alone (the route as if it had no cascade)."""
    met: bool
    """False when no swept threshold reached the target (the most accurate point was taken)."""
    cascade: CascadeChoice | None = None
    """Cascade routes: the thresholds of all tiers, tuned jointly against `point.accuracy`."""

    @property
    def thresholds(self) -> tuple[float, ...]:
        """What is written: one value per tier, rendered as in the YAML."""
        raw = self.cascade.point.thresholds if self.cascade else (self.point.min_confidence,)
        return tuple(render_threshold(t) for t in raw)

    @property
    def comment(self) -> str:
        how = "cheapest reaching" if self.met else "none reaches; most accurate vs"
        head = f"ops.defaults, dev {self.dev_rows} rows, FM {self.foundation_accuracy:.0%} as {PRICE_AS}: "
        flat = (f"{how} max(specialist, FM); hybrid {100 * self.point.accuracy:.2f}% (specialist "
                f"{100 * self.specialist_accuracy:.2f}%), escalates {100 * self.point.escalated_share:.1f}%")
        if self.cascade is None:
            return head + flat
        c, b = self.cascade, self.cascade.baseline
        how = "widest margin meeting" if c.met else "none meets; cheapest reaching the accuracy of"
        return (head + f"all tiers jointly, {how} the goal: at most {ESCALATION_RATIO:g}x the escalations of the "
                f"route without cascade at {render_threshold(b.min_confidence):g} ({100 * b.escalated_share:.1f}%, "
                f"{100 * b.accuracy:.2f}%), as accurate; cascade escalates {100 * c.point.escalated_share:.1f}%, "
                f"{100 * c.point.accuracy:.2f}%; dev also calibrated the tiers")


def dev_split(specialist: str, root: Path) -> Split:
    """The dev rows a route is tuned on (intent: dev + oos_dev at dev's own mix)."""
    s = dataset_splits(specialist, root)
    return merge(s["dev"], s["oos_dev"]) if "oos_dev" in s else s["dev"]


def _choose(sim: Simulation, specialist_accuracy: float) -> tuple[SweepPoint, bool]:
    target = max(specialist_accuracy, sim.all_foundation.accuracy)
    chosen = choose_threshold(sim, target)
    if chosen is not None:
        return chosen, True
    best = max(p.accuracy for p in sim.points)
    return min((p for p in sim.points if p.accuracy == best), key=lambda p: (p.cost_usd, p.min_confidence)), False


def _choose_cascade(sim: Simulation, baseline: SweepPoint) -> CascadeChoice:
    budget = ESCALATION_RATIO * baseline.escalated_share
    meeting = [p for p in sim.grid if p.escalated_share <= budget and p.accuracy >= baseline.accuracy]
    if meeting:
        n = sim.evaluated

        def margin(p: SweepPoint) -> tuple[float, float, tuple[float, ...]]:
            # each side in its own binomial standard error on these n rows: an escalation share near
            # 30% moves ~2.3x more between samples than an accuracy near 96%
            e, a = p.escalated_share, p.accuracy
            sides = ((budget - e) / math.sqrt(max(e * (1 - e), 1e-9) / n),
                     (a - baseline.accuracy) / math.sqrt(max(a * (1 - a), 1e-9) / n))
            return (min(sides), -p.cost_usd, p.thresholds)

        return CascadeChoice(baseline, max(meeting, key=margin), True)
    chosen = choose_threshold(sim, baseline.accuracy)
    if chosen is not None:
        return CascadeChoice(baseline, chosen, False)
    best = max(p.accuracy for p in sim.grid)
    return CascadeChoice(baseline, min((p for p in sim.grid if p.accuracy == best),
                                       key=lambda p: (p.cost_usd, p.escalated_share, p.thresholds)), False)


def _baseline(sim: Simulation, route: str, default: SweepPoint) -> SweepPoint:
    """The flat route at its `CASCADE_BASELINE` threshold (a swept point), else at its own default."""
    t = CASCADE_BASELINE.get(route)
    return next((p for p in sim.points if t is not None and abs(p.min_confidence - t) < 1e-9), default)


def _without_cascades(text: str) -> str:
    yaml = YAML()
    doc = yaml.load(text)
    for route in (doc.get("routes") or {}).values():
        if isinstance(route, dict):
            route.pop("cascade", None)
    buf = io.StringIO()
    yaml.dump(doc, buf)
    return buf.getvalue()


def choose_defaults(policy_path: Path, data_root: Path, specialists_dir: Path,
                    foundation_accuracy: float = FOUNDATION_ACCURACY) -> list[Choice]:
    """One `Choice` per classification route whose specialist is bundled and has a dataset."""
    specialists = SpecialistSet.load(specialists_dir)
    policy = load_policy(policy_path).policy
    choices = []
    with tempfile.TemporaryDirectory(prefix="router-defaults-") as tmp:
        # Tier 1 is chosen as if the route had no cascade (the TF-IDF specialist against the
        # foundation model); the cascade is then tuned against that route at its `CASCADE_BASELINE`.
        flat = Path(tmp) / "policy.yaml"
        flat.write_text(_without_cascades(policy_path.read_text(encoding="utf-8")), encoding="utf-8")
        for name, route in policy.routes.items():
            if not isinstance(route, ClassifyRoute) or route.specialist not in DATASETS:
                continue
            dev = dev_split(route.specialist, data_root)
            data = Path(tmp) / f"{name}.jsonl"
            data.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in zip(dev.texts, dev.labels)),
                            encoding="utf-8")
            sim, _ = run_offline(OfflineRequest(policy_path=flat, route=name, data_path=data,
                                                foundation_accuracy=foundation_accuracy, price_as=PRICE_AS,
                                                sweep=SWEEP, specialists_dir=specialists_dir))
            preds = predict_all(specialists[route.specialist], dev.texts)
            alone = float(np.mean([p.label == y for p, y in zip(preds, dev.labels)]))
            point, met = _choose(sim, alone)
            cascade = None
            if route.cascade:
                joint, _ = run_offline(OfflineRequest(policy_path=policy_path, route=name, data_path=data,
                                                      foundation_accuracy=foundation_accuracy, price_as=PRICE_AS,
                                                      sweep=SWEEP, specialists_dir=specialists_dir, grid=True))
                cascade = _choose_cascade(joint, _baseline(sim, name, point))
            choices.append(Choice(name, len(dev), alone, sim.all_foundation.accuracy, point, met, cascade))
    return choices


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ops.defaults", description=__doc__.split("\n\n")[0])
    p.add_argument("--policy", type=Path, default=DEFAULT_POLICY)
    p.add_argument("--data-root", type=Path)
    p.add_argument("--specialists-dir", type=Path, default=REPO_ROOT / "specialists" / "bundled")
    p.add_argument("--foundation-accuracy", type=float, default=FOUNDATION_ACCURACY)
    p.add_argument("--check", action="store_true", help="compare with the file instead of writing it")
    args = p.parse_args(argv)
    root = default_data_root(args.data_root)
    if not root.is_dir():
        print(f"data root {root} not found (use --data-root or HYBRID_ROUTER_DATA)", file=sys.stderr)
        return 2
    choices = choose_defaults(args.policy, root, args.specialists_dir, args.foundation_accuracy)
    routes = load_policy(args.policy).policy.routes
    differ = []
    for c in choices:
        route = routes[c.route]
        assert isinstance(route, ClassifyRoute)
        now = tuple(t.min_confidence for t in route.tiers())
        print(f"{c.route}: {'/'.join(f'{t:g}' for t in now)} -> {'/'.join(f'{t:g}' for t in c.thresholds)}  "
              f"({c.comment})")
        if now != c.thresholds:
            differ.append(c.route)
    if args.check:
        if differ:
            print(f"{args.policy}: differs from ops.defaults for {', '.join(differ)}", file=sys.stderr)
        return 1 if differ else 0
    classes, _ = checked_classes(load_policy(args.policy).policy, SpecialistSet.load(args.specialists_dir))
    for c in choices:
        write_threshold(args.policy, c.route, c.thresholds, classes, comment=c.comment)
    print(f"wrote {len(choices)} thresholds to {args.policy}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
