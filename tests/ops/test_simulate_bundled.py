"""`simulate` and `tune` on every bundled specialist with the shared datasets (when present)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import orjson
import pytest

from ops.cli import main
from ops.defaults import DEFAULT_POLICY, FOUNDATION_ACCURACY, PRICE_AS, choose_defaults, dev_split
from router.policy import load_policy
from tests.conftest import ROOT, SHARED_DATA, requires_shared_data

pytestmark = [pytest.mark.shared_data, requires_shared_data()]

# Every bundled classification route; each is simulated and tuned on its specialist's dev split
# (shipped, or carved from train: specialists.training.splits), never on test.
ROUTES = ("banking", "intent", "question_type", "request_type", "sentiment", "spam", "topic")


def run(args: list[str]) -> int:
    with pytest.raises(SystemExit) as done:
        main(args)
    return int(done.value.code or 0)


@pytest.mark.parametrize("route", ROUTES)
def test_simulate_and_tune_every_bundled_route(route: str, tmp_path: Path) -> None:
    # Both on the route's dev split: test splits are read once, by the build, to report.
    dev = dev_split(route, SHARED_DATA)
    dev_file = tmp_path / "dev.jsonl"
    dev_file.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in zip(dev.texts, dev.labels)),
                        encoding="utf-8")
    out = tmp_path / "sim.json"
    assert run(["simulate", "--route", route, "--data", str(dev_file), "--limit", "1500",
                "--foundation-accuracy", "0.95", "--json", str(out)]) == 0
    sim = orjson.loads(out.read_bytes())
    point = sim["policy"]
    assert point["specialist_share"] + point["escalated_share"] == pytest.approx(1.0)
    assert 0.5 < point["accuracy"] <= 1.0
    assert sim["decide_checked_rows"] == sim["rows"]
    policy = tmp_path / "policy.yaml"
    shutil.copy(ROOT / "policies" / "default.yaml", policy)
    assert run(["tune", "--route", route, "--policy", str(policy), "--data", str(dev_file),
                "--limit", "1500", "--target-accuracy", "0.9", "--foundation-accuracy", "0.95", "--write"]) == 0
    tuned = load_policy(policy).policy.routes[route]
    assert 0.0 <= tuned.min_confidence <= 1.0
    assert "# Hybrid Router default policy" in policy.read_text()  # comments kept


# The shipped `sentiment` cascade thresholds are chosen jointly by `ops.defaults` (both tiers at
# once, on SST-2 dev, for the cascade's goal against the TF-IDF-only route at its baseline). `tune`
# without `--last-tier-only` runs the same grid for the cheapest pair reaching a target accuracy: an
# operator giving it the baseline's accuracy must get a pair that reaches it and escalates no more
# than what ships (ops.defaults spends part of that slack on margin), and `simulate` must report the
# shipped pair as ops.defaults measured it.
SENTIMENT_CASCADE = ["--route", "sentiment", "--data", "sst2/dev.jsonl",
                     "--foundation-accuracy", str(FOUNDATION_ACCURACY), "--price-as", PRICE_AS]


def _dev_point(policy: Path, tmp_path: Path) -> dict[str, float]:
    out = tmp_path / f"{policy.stem}.json"
    args = [str(SHARED_DATA / a) if a.endswith(".jsonl") else a for a in SENTIMENT_CASCADE]
    assert run(["simulate", *args, "--policy", str(policy), "--json", str(out)]) == 0
    point: dict[str, float] = orjson.loads(out.read_bytes())["policy"]
    return point


def test_tune_reaches_the_cascade_baseline_no_dearer_than_what_ships(tmp_path: Path) -> None:
    (choice,) = [c for c in choose_defaults(DEFAULT_POLICY, SHARED_DATA, ROOT / "specialists" / "bundled")
                 if c.route == "sentiment"]
    assert choice.cascade is not None
    shipped = _dev_point(DEFAULT_POLICY, tmp_path)
    assert shipped["escalated_share"] == pytest.approx(choice.cascade.point.escalated_share)
    assert shipped["accuracy"] == pytest.approx(choice.cascade.point.accuracy)
    policy = tmp_path / "tuned.yaml"
    shutil.copy(DEFAULT_POLICY, policy)
    args = [str(SHARED_DATA / a) if a.endswith(".jsonl") else a for a in SENTIMENT_CASCADE]
    target = choice.cascade.baseline.accuracy
    assert run(["tune", *args, "--target-accuracy", repr(target), "--policy", str(policy), "--write"]) == 0
    tuned = _dev_point(policy, tmp_path)
    assert len(load_policy(policy).policy.routes["sentiment"].tiers()) == 2
    assert tuned["accuracy"] >= target - 1e-12
    assert tuned["escalated_share"] <= shipped["escalated_share"]
