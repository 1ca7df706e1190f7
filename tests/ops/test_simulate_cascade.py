"""`simulate` and `tune` on a cascade route: the bundled tf-idf tier and the transformer test fixture."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from ops._offline import OfflineRequest, run_offline
from ops.cli import app
from ops.simulate import Simulation, format_table
from router.policy import load_policy
from router.settings import FoundationSettings, Settings
from specialists import SpecialistSet
from tests.ops.test_simulate import BUNDLED, ROWS, write_jsonl

POLICY = """\
version: 1
aliases:
  cheap:
    model: openai/gpt-4o-mini
routes:
  sentiment:
    kind: classify
    specialist: sentiment
    min_confidence: 0.9
    max_novelty: 1.0
    escalate_to: cheap
    cascade:
      - specialist: sentiment_tiny   # tier 2
        min_confidence: 0.9
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, Path, Path]:
    d = tmp_path_factory.mktemp("cascade")
    specs = d / "specialists"
    specs.mkdir()
    (specs / "sentiment").symlink_to(BUNDLED / "sentiment", target_is_directory=True)
    (specs / "sentiment_tiny").symlink_to(Path(__file__).resolve().parents[1] / "fixtures" / "sentiment_tiny",
                                          target_is_directory=True)
    policy = d / "policy.yaml"
    policy.write_text(POLICY, encoding="utf-8")
    settings = Settings(specialists_dir=specs, policy_path=policy, foundation=FoundationSettings(),
                        _env_file=None)  # type: ignore[call-arg]
    return settings, policy, write_jsonl(d / "data.jsonl", ROWS)


@pytest.fixture(scope="module")
def sim(setup: tuple[Settings, Path, Path]) -> Simulation:
    settings, policy, data = setup
    req = OfflineRequest(policy_path=policy, route="sentiment", data_path=data, foundation_accuracy=1.0,
                         sweep="0:1:0.1", grid=True)
    return run_offline(req, settings)[0]


def test_tier_shares_add_up_and_match_the_specialists(sim: Simulation, setup: tuple[Settings, Path, Path]) -> None:
    settings = setup[0]
    specs = SpecialistSet.load(settings.specialists_dir)
    texts = [r["text"] for r in ROWS]
    c1 = [p.confidence for p in specs["sentiment"].predict(texts)]
    c2 = [p.confidence for p in specs["sentiment_tiny"].predict(texts)]
    tier1 = sum(c >= 0.9 for c in c1)
    tier2 = sum(a < 0.9 <= b for a, b in zip(c1, c2))
    assert sim.tiers == ["sentiment", "sentiment_tiny"]
    assert sim.policy.thresholds == (0.9, 0.9)
    assert sim.policy.tier_shares == pytest.approx((tier1 / len(ROWS), tier2 / len(ROWS)))
    for p in [sim.policy, *sim.points, *sim.grid, sim.all_foundation]:
        assert sum(p.tier_shares) + p.escalated_share == pytest.approx(1.0)
    assert sim.all_foundation.escalated_share == 1.0 and sim.all_foundation.accuracy == 1.0
    # the route without its cascade escalates at least as much as with it
    assert sim.first_tier_only is not None
    assert sim.first_tier_only.escalated_share == pytest.approx(1 - tier1 / len(ROWS))
    assert sim.policy.escalated_share <= sim.first_tier_only.escalated_share
    assert len(sim.grid) == 11 * 11
    table = format_table(sim)
    assert "sentiment only" in table and "(policy)" in table and "all escalated" in table


def _tune_a_copy(setup: tuple[Settings, Path, Path], tmp_path: Path, *extra: str) -> Path:
    """`hybrid-router tune --write` (target 90%, a perfect foundation model) on a copy of the policy."""
    settings, policy, data = setup
    own = tmp_path / "policy.yaml"
    own.write_text(policy.read_text())
    result = CliRunner().invoke(app, [
        "tune", "--route", "sentiment", "--data", str(data), "--policy", str(own), "--target-accuracy", "0.9",
        "--foundation-accuracy", "1.0", "--sweep", "0:1:0.1", "--specialists-dir", str(settings.specialists_dir),
        *extra, "--write",
    ])
    assert result.exit_code == 0, result.output
    return own


def test_tune_writes_one_threshold_per_tier(setup: tuple[Settings, Path, Path], tmp_path: Path) -> None:
    settings, _, data = setup
    own = _tune_a_copy(setup, tmp_path)
    route = load_policy(own).policy.routes["sentiment"]
    tiers = route.tiers()  # type: ignore[union-attr]
    assert [t.specialist for t in tiers] == ["sentiment", "sentiment_tiny"]
    # the cheapest point meeting 90% escalates no more than the policy as written
    written = run_offline(OfflineRequest(policy_path=own, route="sentiment", data_path=data,
                                         foundation_accuracy=1.0, sweep="0:1:0.1"), settings)[0]
    assert written.policy.accuracy >= 0.9
    assert "# tier 2" in own.read_text()  # comments survive


def test_tune_last_tier_only_keeps_the_earlier_tiers(setup: tuple[Settings, Path, Path], tmp_path: Path) -> None:
    settings, policy, data = setup
    own = _tune_a_copy(setup, tmp_path, "--last-tier-only")
    tiers = load_policy(own).policy.routes["sentiment"].tiers()  # type: ignore[union-attr]
    assert tiers[0].min_confidence == 0.9  # held
    sim = run_offline(OfflineRequest(policy_path=policy, route="sentiment", data_path=data, foundation_accuracy=1.0,
                                     sweep="0:1:0.1"), settings)[0]
    meeting = [p for p in sim.points if p.accuracy >= 0.9]
    assert tiers[1].min_confidence == min(meeting, key=lambda p: (p.cost_usd, p.escalated_share,
                                                                  p.min_confidence)).min_confidence
