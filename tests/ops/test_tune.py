"""`hybrid-router tune`: the cheapest threshold meeting a target, written back with comments intact."""

from __future__ import annotations

import difflib
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ops._offline import OfflineRequest, run_offline
from ops.cli import app
from ops.simulate import Simulation
from ops.tune import choose_threshold, write_threshold
from router.policy import ClassifyRoute, load_policy
from router.settings import FoundationSettings, Settings
from tests.ops.test_simulate import POLICY, ROWS, write_jsonl

REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLED = REPO_ROOT / "specialists" / "bundled"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("tune")
    specialists = d / "specialists"
    specialists.mkdir()
    (specialists / "sentiment").symlink_to(BUNDLED / "sentiment", target_is_directory=True)
    policy = d / "policy.yaml"
    policy.write_text(POLICY, encoding="utf-8")
    return {"dir": d, "specialists": specialists, "policy": policy, "data": write_jsonl(d / "dev.jsonl", ROWS)}


@pytest.fixture(scope="module")
def sim(setup: dict[str, Path]) -> Simulation:
    settings = Settings(specialists_dir=setup["specialists"], foundation=FoundationSettings(),
                        _env_file=None)  # type: ignore[call-arg]
    result, _ = run_offline(OfflineRequest(policy_path=setup["policy"], route="sentiment", data_path=setup["data"],
                                           foundation_accuracy=1.0), settings)
    return result


@pytest.fixture()
def runner(monkeypatch: pytest.MonkeyPatch, setup: dict[str, Path]) -> CliRunner:
    monkeypatch.setenv("ROUTER_SPECIALISTS_DIR", str(setup["specialists"]))
    return CliRunner()


def test_picks_the_cheapest_threshold_that_meets_the_target(sim: Simulation) -> None:
    zero, top = sim.points[0].accuracy, max(p.accuracy for p in sim.points)
    assert zero < top
    target = (zero + top) / 2
    chosen = choose_threshold(sim, target)
    assert chosen is not None and chosen.accuracy >= target
    cheaper = [p for p in sim.points if p.cost_usd < chosen.cost_usd]
    assert cheaper and all(p.accuracy < target for p in cheaper)
    same_cost = [p for p in sim.points if p.cost_usd == chosen.cost_usd and p.accuracy >= target]
    assert chosen.min_confidence == min(p.min_confidence for p in same_cost)


def test_no_threshold_meets_an_impossible_target(sim: Simulation) -> None:
    assert choose_threshold(sim, 1.01) is None


def test_tune_write_changes_one_line_and_keeps_comments(runner: CliRunner, setup: dict[str, Path],
                                                        tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    shutil.copy(setup["policy"], policy)
    before = policy.read_text()
    result = runner.invoke(app, ["tune", "--policy", str(policy), "--route", "sentiment", "--data",
                                 str(setup["data"]), "--foundation-accuracy", "1.0", "--target-accuracy", "0.9",
                                 "--write"])
    assert result.exit_code == 0, result.output
    assert "(tuned)" in result.output and "re-validated" in result.output
    after = policy.read_text()
    changed = [ln for ln in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
               if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]
    assert len(changed) == 2 and changed[0] == "-    min_confidence: 0.85   # tuned by hand"
    assert changed[1].startswith("+    min_confidence: ") and changed[1].endswith("   # tuned by hand")
    assert "# test policy: sentiment only" in after and '"Glad you liked it!"' in after
    route = load_policy(policy).route("sentiment")
    assert isinstance(route, ClassifyRoute)
    assert f"min_confidence {0.85:g} -> {route.min_confidence:g}" in result.output
    assert route.min_confidence != 0.85


def test_tune_without_write_leaves_the_file_alone(runner: CliRunner, setup: dict[str, Path]) -> None:
    before = setup["policy"].read_text()
    result = runner.invoke(app, ["tune", "--policy", str(setup["policy"]), "--route", "sentiment", "--data",
                                 str(setup["data"]), "--foundation-accuracy", "1.0", "--target-accuracy", "0.9"])
    assert result.exit_code == 0 and "dry run" in result.output
    assert setup["policy"].read_text() == before


def test_unreachable_target_exits_1_without_writing(runner: CliRunner, setup: dict[str, Path],
                                                    tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    shutil.copy(setup["policy"], policy)
    before = policy.read_text()
    result = runner.invoke(app, ["tune", "--policy", str(policy), "--route", "sentiment", "--data",
                                 str(setup["data"]), "--foundation-accuracy", "0.5", "--target-accuracy", "0.999",
                                 "--write"])
    assert result.exit_code == 1
    assert "no min_confidence in the sweep reaches accuracy 0.999" in result.output
    assert policy.read_text() == before


def test_write_inserts_a_missing_key_and_keeps_the_default_policy_layout(tmp_path: Path) -> None:
    policy = tmp_path / "default.yaml"
    text = (REPO_ROOT / "policies" / "default.yaml").read_text()
    spam_line = re.search(r"  spam:\n(?:    .*\n)*?(    min_confidence: .*\n)", text)
    assert spam_line is not None
    line = spam_line.group(1)
    start = text.index(line, spam_line.start())
    policy.write_text(text[:start] + text[start + len(line):])  # the spam route without its threshold
    loaded = write_threshold(policy, "spam", 0.42)
    route = loaded.route("spam")
    assert isinstance(route, ClassifyRoute) and route.min_confidence == 0.42
    assert policy.read_text() == text[:start] + "    min_confidence: 0.42\n" + text[start + len(line):]
