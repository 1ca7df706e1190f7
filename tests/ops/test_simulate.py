"""`hybrid-router simulate`: the sweep engine against the bundled sentiment specialist, for real."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ops._offline import OfflineRequest, run_offline
from ops.cli import app
from ops.simulate import Simulation, SimulationError
from router.decision import Answer, decide
from router.policy import load_policy
from router.settings import FoundationSettings, Settings
from specialists import SpecialistSet
from tests.fake_upstream import Upstream

REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLED = REPO_ROOT / "specialists" / "bundled"
DATA_ROOT = (REPO_ROOT / ".." / "shared" / "data").resolve()
TOP = 1.0 + 1e-9  # above any confidence: everything escalates

POSITIVE = [
    "a gorgeous, witty and moving film", "one of the best movies of the year", "a delightful comedy",
    "brilliant performances and a smart script", "an absolute joy to watch", "warm, funny and wise",
    "the cast is superb", "a triumph of storytelling", "beautifully shot and deeply felt",
    "it is a charming little movie", "fresh, clever and entertaining", "a heartfelt and lovely story",
    "the film is a pleasure", "well worth seeing", "smart , funny and touching",
]
NEGATIVE = [
    "a dull, lifeless mess", "the worst film of the year", "boring and badly acted",
    "an incoherent and tedious movie", "the plot makes no sense", "a waste of a talented cast",
    "painfully unfunny", "clumsy, slow and forgettable", "the script is awful", "i hated every minute",
    "a tiresome , shallow film", "not worth the price of a ticket", "flat and lifeless",
    "ugly, cynical and mean", "a stupid and pointless sequel",
]
ROWS = [{"text": t, "label": "positive"} for t in POSITIVE] + [{"text": t, "label": "negative"} for t in NEGATIVE]

POLICY = """\
# test policy: sentiment only
version: 1
aliases:
  cheap:
    model: openai/gpt-4o-mini   # priced from litellm's table
routes:
  sentiment:
    kind: classify
    specialist: sentiment
    min_confidence: 0.85   # tuned by hand
    max_novelty: 1.0
    escalate_to: cheap
  support:
    kind: chat
    specialist: sentiment
    min_confidence: 0.6
    escalate_to: cheap
    answers:
      positive: "Glad you liked it!"
  auto:
    kind: auto
    specialist: sentiment
    low_confidence_tier: cheap
    tiers:
      positive: cheap
"""


def write_jsonl(path: Path, rows: Sequence[Mapping[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def specialists_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Only the sentiment specialist (others may be mid-build in the bundled directory)."""
    d = tmp_path_factory.mktemp("specialists")
    (d / "sentiment").symlink_to(BUNDLED / "sentiment", target_is_directory=True)
    return d


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("sim")
    policy = d / "policy.yaml"
    policy.write_text(POLICY, encoding="utf-8")
    return {"dir": d, "policy": policy, "data": write_jsonl(d / "data.jsonl", ROWS)}


@pytest.fixture(scope="module")
def settings(specialists_dir: Path, files: dict[str, Path]) -> Settings:
    return Settings(specialists_dir=specialists_dir, policy_path=files["policy"], foundation=FoundationSettings(),
                    _env_file=None)  # type: ignore[call-arg]


def run(settings: Settings, files: dict[str, Path], **kwargs: object) -> Simulation:
    req: dict[str, object] = {"policy_path": files["policy"], "route": "sentiment", "data_path": files["data"],
                              "sweep": f"0:0.99:0.01,{TOP}", **kwargs}
    sim, _ = run_offline(OfflineRequest(**req), settings)  # type: ignore[arg-type]
    return sim


@pytest.fixture(scope="module")
def assumed(settings: Settings, files: dict[str, Path]) -> Simulation:
    return run(settings, files, foundation_accuracy=0.9)


@pytest.fixture(scope="module")
def gold_predictions(specialists_dir: Path) -> tuple[list[str], list[bool]]:
    spec = SpecialistSet.load(specialists_dir)["sentiment"]
    preds = spec.predict([r["text"] for r in ROWS])
    return [p.label for p in preds], [p.label == r["label"] for p, r in zip(preds, ROWS)]


def test_shares_sum_to_one_everywhere(assumed: Simulation) -> None:
    for p in [*assumed.points, assumed.policy, assumed.all_foundation]:
        assert p.specialist_share + p.escalated_share == pytest.approx(1.0)
        assert 0.0 <= p.accuracy <= 1.0


def test_threshold_zero_is_the_specialist_alone(assumed: Simulation,
                                                gold_predictions: tuple[list[str], list[bool]]) -> None:
    _, right = gold_predictions
    zero = assumed.points[0]
    assert zero.min_confidence == 0.0
    assert zero.escalated_share == 0.0 and zero.cost_usd == 0.0
    assert zero.accuracy == pytest.approx(sum(right) / len(right))
    assert zero.specialist_accuracy == pytest.approx(zero.accuracy)


def test_top_threshold_escalates_everything_at_the_assumed_accuracy(assumed: Simulation) -> None:
    top = assumed.points[-1]
    assert top.min_confidence == TOP
    assert top.escalated_share == 1.0 and top.specialist_accuracy is None
    assert top.accuracy == pytest.approx(0.9) and top.foundation_accuracy == pytest.approx(0.9)
    assert top.cost_fraction == pytest.approx(1.0)
    assert top.cost_usd == pytest.approx(assumed.all_foundation.cost_usd)
    assert "ASSUMED foundation accuracy 0.9" in assumed.foundation_source


def test_cost_and_escalation_grow_with_the_threshold(assumed: Simulation) -> None:
    fractions = [p.cost_fraction for p in assumed.points]
    shares = [p.escalated_share for p in assumed.points]
    latencies = [p.latency_ms for p in assumed.points]
    assert all(np.diff(fractions) >= 0) and all(np.diff(shares) >= 0) and all(np.diff(latencies) >= 0)
    assert fractions[0] == 0.0 and fractions[-1] == pytest.approx(1.0)
    assert assumed.pricing.model == "openai/gpt-4o-mini" and assumed.pricing.usd_per_prompt_token > 0


def test_policy_point_matches_decide_row_by_row(assumed: Simulation, files: dict[str, Path],
                                                specialists_dir: Path) -> None:
    route = load_policy(files["policy"]).route("sentiment")
    assert route is not None
    spec = SpecialistSet.load(specialists_dir)["sentiment"]
    answered = sum(isinstance(decide(route, p), Answer) for p in spec.predict([r["text"] for r in ROWS]))
    assert assumed.decide_checked_rows == len(ROWS)
    assert assumed.policy.min_confidence == 0.85
    assert assumed.policy.specialist_share == pytest.approx(answered / len(ROWS))
    same = next(p for p in assumed.points if p.min_confidence == 0.85)
    assert same == assumed.policy


def test_replay_matching_missing_rows_and_recorded_tokens(settings: Settings, files: dict[str, Path]) -> None:
    replay = []
    for i, row in enumerate(ROWS[:-2]):  # the last two inputs have no recorded answer
        text = row["text"] if i % 2 else "  " + row["text"].upper() + " "  # matched after normalising
        answer = row["label"] if i % 5 else ("negative" if row["label"] == "positive" else "positive")
        replay.append({"text": text, "answer": answer, "model": "rec-model",
                       "prompt_tokens": 100, "completion_tokens": 2})
    path = write_jsonl(files["dir"] / "replay.jsonl", replay)
    right = sum(1 for i in range(len(ROWS) - 2) if i % 5)

    sim = run(settings, files, foundation_replay=path)
    assert sim.excluded == 2 and sim.evaluated == len(ROWS) - 2
    assert "2 of 30 inputs have no recorded answer" in sim.foundation_source
    assert "rec-model" in sim.foundation_source
    assert sim.all_foundation.accuracy == pytest.approx(right / (len(ROWS) - 2))
    expected_cost = (len(ROWS) - 2) * (100 * sim.pricing.usd_per_prompt_token + 2 * sim.pricing.usd_per_completion_token)
    assert sim.all_foundation.cost_usd == pytest.approx(expected_cost)

    counted = run(settings, files, foundation_replay=path, foundation_accuracy=0.5)
    assert counted.excluded == 0 and counted.evaluated == len(ROWS)
    assert counted.all_foundation.accuracy == pytest.approx((right + 2 * 0.5) / len(ROWS))
    assert "counted at the assumed accuracy 0.5" in counted.foundation_source


def test_chat_route_scores_the_gate_and_assumes_the_foundation(settings: Settings, files: dict[str, Path],
                                                               gold_predictions: tuple[list[str], list[bool]]) -> None:
    labels, right = gold_predictions
    sim = run(settings, files, route="support", foundation_accuracy=1.0)
    zero = sim.points[0]
    # Only `positive` has a canned answer: every `negative` prediction escalates (no_canned_answer).
    answered = [r for lab, r in zip(labels, right) if lab == "positive"]
    assert zero.specialist_share == pytest.approx(len(answered) / len(ROWS))
    assert zero.specialist_accuracy == pytest.approx(sum(answered) / len(answered))
    assert any("chat route" in n for n in sim.notes)


def test_chat_route_with_replay_and_auto_route_are_rejected(settings: Settings, files: dict[str, Path]) -> None:
    path = write_jsonl(files["dir"] / "r.jsonl", [{"text": "x", "answer": "positive"}])
    with pytest.raises(SimulationError, match="chat route"):
        run(settings, files, route="support", foundation_replay=path, sweep="0.5")
    with pytest.raises(SimulationError, match="auto route"):
        run(settings, files, route="auto", foundation_accuracy=0.9, sweep="0.5")
    with pytest.raises(SimulationError, match="no route 'nope'"):
        run(settings, files, route="nope", foundation_accuracy=0.9, sweep="0.5")
    with pytest.raises(SimulationError, match="--foundation-replay FILE"):
        run(settings, files, sweep="0.5")


@pytest.fixture()
def cli_env(monkeypatch: pytest.MonkeyPatch, specialists_dir: Path) -> Iterator[CliRunner]:
    monkeypatch.setenv("ROUTER_SPECIALISTS_DIR", str(specialists_dir))
    yield CliRunner()


def test_cli_prints_table_and_writes_json_and_png(cli_env: CliRunner, files: dict[str, Path],
                                                  tmp_path: Path) -> None:
    out_json, out_png = tmp_path / "sweep.json", tmp_path / "img" / "sweep.png"
    result = cli_env.invoke(app, ["simulate", "--policy", str(files["policy"]), "--route", "sentiment",
                                  "--data", str(files["data"]), "--foundation-accuracy", "0.95",
                                  "--foundation-latency-ms", "500", "--json", str(out_json), "--plot", str(out_png)])
    assert result.exit_code == 0, result.output
    assert "0.85 (policy)" in result.output and "all escalated" in result.output
    assert "ASSUMED foundation accuracy 0.95" in result.output and "500 ms (ASSUMED" in result.output
    raw = json.loads(out_json.read_text())
    assert len(raw["points"]) == 100 and raw["policy"]["min_confidence"] == 0.85
    assert raw["all_foundation"]["min_confidence"] is None  # +inf: every row escalates
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_rejects_bad_input_with_exit_2(cli_env: CliRunner, files: dict[str, Path]) -> None:
    result = cli_env.invoke(app, ["simulate", "--policy", str(files["policy"]), "--route", "auto",
                                  "--data", str(files["data"]), "--foundation-accuracy", "0.9"])
    assert result.exit_code == 2 and "auto route" in result.output


def test_live_foundation_against_the_fake_upstream(cli_env: CliRunner, files: dict[str, Path],
                                                   tmp_path: Path, upstream: Upstream) -> None:
    policy = tmp_path / "live.yaml"
    policy.write_text(POLICY.replace("model: openai/gpt-4o-mini   # priced from litellm's table",
                                     f"model: openai/fake-ok\n    api_base: {upstream.api_base}"))
    # fake-ok answers the [[label:X]] marker, else the first label ("negative").
    rows = [{"text": "[[label:positive]] a lovely film", "label": "positive"},
            {"text": "[[label:positive]] a dreadful film", "label": "negative"},
            {"text": "a dreadful film", "label": "negative"},
            {"text": "a lovely film", "label": "positive"},
            *ROWS]
    data = write_jsonl(tmp_path / "live.jsonl", rows)
    result = cli_env.invoke(app, ["simulate", "--policy", str(policy), "--route", "sentiment",
                                  "--data", str(data), "--foundation", "live", "--limit", "4",
                                  "--concurrency", "2", "--json", str(tmp_path / "live.json")])
    assert result.exit_code == 0, result.output
    assert len(upstream.received) == 4
    assert "live calls to alias 'cheap' (openai/fake-ok), 4 inputs" in result.output
    assert "priced as gpt-4o-mini" in result.output  # fake-ok has no price in litellm's table
    raw = json.loads((tmp_path / "live.json").read_text())
    assert raw["rows"] == 4 and raw["all_foundation"]["accuracy"] == pytest.approx(0.5)
    assert raw["all_foundation"]["cost_usd"] > 0  # the provider's usage figures, priced


@pytest.mark.shared_data
def test_sst2_test_split(settings: Settings) -> None:
    data = DATA_ROOT / "sst2" / "test.jsonl"
    if not data.is_file():
        pytest.skip(f"shared data absent: {data} (needs ../shared/data next to the repo)")
    sim, _ = run_offline(OfflineRequest(policy_path=settings.policy_path, route="sentiment", data_path=data,
                                        foundation_accuracy=0.95), settings)
    assert sim.rows > 1000
    # at threshold 0 only novel inputs (max_novelty) escalate: close to the accuracy the build recorded
    recorded = SpecialistSet.load(settings.specialists_dir)["sentiment"].manifest.metrics["accuracy"]
    assert sim.points[0].accuracy == pytest.approx(recorded, abs=0.02)
    assert math.isclose(sim.all_foundation.accuracy, 0.95)
