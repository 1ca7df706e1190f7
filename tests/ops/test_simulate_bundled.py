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
# once, on SST-2 dev, against the TF-IDF-only route at its default); `tune` without
# `--last-tier-only` is the same grid search, so an operator re-running it with that target and the
# same foundation assumption must land on what ships.
SENTIMENT_CASCADE_TUNE = ["tune", "--route", "sentiment", "--data", "sst2/dev.jsonl",
                          "--foundation-accuracy", str(FOUNDATION_ACCURACY), "--price-as", PRICE_AS]


def test_the_shipped_cascade_thresholds_are_what_tune_chooses_on_dev(tmp_path: Path) -> None:
    (choice,) = [c for c in choose_defaults(DEFAULT_POLICY, SHARED_DATA, ROOT / "specialists" / "bundled")
                 if c.route == "sentiment"]
    assert choice.cascade is not None
    policy = tmp_path / "policy.yaml"
    shutil.copy(DEFAULT_POLICY, policy)
    args = [str(SHARED_DATA / a) if a.endswith(".jsonl") else a for a in SENTIMENT_CASCADE_TUNE]
    assert run([*args, "--target-accuracy", repr(choice.cascade.target), "--policy", str(policy), "--write"]) == 0
    shipped = load_policy(DEFAULT_POLICY).policy.routes["sentiment"]
    tuned = load_policy(policy).policy.routes["sentiment"]
    assert [(t.specialist, t.min_confidence) for t in tuned.tiers()] == [
        (t.specialist, t.min_confidence) for t in shipped.tiers()]
    assert len(shipped.tiers()) == 2
