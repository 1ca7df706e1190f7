"""The learning loop end to end: a real gateway process, real Redis, a replay upstream through litellm.

Traffic goes through `hybrid-router serve`; the escalation stream fills with the foundation
model's answers (inputs kept because the route opts in); `hybrid-router distill`, `promote` and
`rollback` run as the operator would run them, and the gateway picks the switch up by hot reload.
The specialists are small (800 SST-2 rows) so that each test costs seconds of CPU: the
point is the loop, not accuracy.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from ruamel.yaml import YAML

from router.escalation_log import STREAM
from router.policy import policy_version
from specialists.training.build import Job, build
from specialists.training.data import Split, load_split
from specialists.training.recipes import BUNDLED
from tests.conftest import SHARED_DATA, requires_shared_data
from tests.gateway_process import ROOT, GatewayProcess
from tests.oracle_upstream import OracleUpstream

pytestmark = [pytest.mark.redis, requires_shared_data()]

SST2 = SHARED_DATA / "sst2"
MIN_CONFIDENCE = 0.8
FLIP = {"negative": "positive", "positive": "negative"}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Small splits from SST-2 (train rows only; dev as the held-out set) and a v0 specialist."""
    d = tmp_path_factory.mktemp("loop-data")
    train = load_split(SST2 / "train.jsonl")
    dev = load_split(SST2 / "dev.jsonl")
    base = Split(train.texts[:800], train.labels[:800], "sst2 train[:800]")
    traffic = Split(train.texts[800:1400], train.labels[800:1400], "sst2 train[800:1400]")
    heldout = Split(dev.texts[:400], dev.labels[:400], "sst2 dev[:400]")
    for name, split in (("train", base), ("heldout", heldout)):
        with (d / f"{name}.jsonl").open("w") as f:
            for t, y in zip(split.texts, split.labels, strict=True):
                f.write(json.dumps({"text": t, "label": y}) + "\n")
    v0 = d / "sentiment-v0"
    build(Job(name="sentiment", config=BUNDLED["sentiment"][1], train=base, test=heldout), v0, measure_speed=False)
    return {"dir": d, "traffic": traffic, "v0": v0}


def _policy(path: Path, api_base: str, v0: Path | None, **route: Any) -> Path:
    yaml = YAML(typ="rt")
    doc = yaml.load((ROOT / "policies" / "default.yaml").read_text())
    for alias in doc["aliases"].values():
        alias.update(model="openai/fake-ok", api_base=api_base, price_as="gpt-4o-mini", max_retries=0, timeout_s=5)
    doc["routes"] = {"sentiment": doc["routes"]["sentiment"]}
    doc["routes"]["sentiment"].pop("cascade", None)  # the loop under test is the tf-idf tier's
    doc["routes"]["sentiment"].update(keep_inputs=True, deadline_s=10, min_confidence=MIN_CONFIDENCE, max_novelty=1.0, **route)
    if v0 is not None:
        doc["specialists"] = {"sentiment_v0": str(v0)}
        doc["routes"]["sentiment"]["specialist"] = "sentiment_v0"
    doc["shadow"] = {"sample_rate": 1.0, "window": 10, "min_agreement": 0.0, "max_in_flight": 64}
    with path.open("w") as f:
        yaml.dump(doc, f)
    return path


@pytest.fixture
def loop(tmp_path: Path, redis_url: str, redis_db: redis.Redis) -> Iterator[Callable[..., GatewayProcess]]:
    started: list[tuple[GatewayProcess, OracleUpstream]] = []

    def start(answers: dict[str, str], v0: Path | None, **route: Any) -> GatewayProcess:
        upstream = OracleUpstream(answers).start()
        policy = _policy(tmp_path / "policy.yaml", upstream.api_base, v0, **route)
        gw = GatewayProcess(policy, {"ROUTER_REDIS__URL": redis_url, "ROUTER_POLICY_POLL_S": "0.2"})
        started.append((gw, upstream))
        return gw.wait_ready()

    yield start
    for gw, upstream in started:
        gw.stop()
        upstream.stop()


def _send(gw: GatewayProcess, texts: list[str], batch: int = 50) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i in range(0, len(texts), batch):
        r = httpx.post(gw.url + "/v1/classify", json={"task": "sentiment", "input": texts[i:i + batch]}, timeout=60)
        assert r.status_code == 200, r.text
        out.extend(r.json()["results"])
    return out


def _cli(*args: str, redis_url: str, policy: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ROUTER_REDIS__URL": redis_url, "ROUTER_POLICY_PATH": str(policy)}
    return subprocess.run([sys.executable, "-m", "router", *args], check=False, cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)


def _stream(redis_db: redis.Redis) -> list[dict[str, str]]:
    return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in redis_db.xrange(STREAM)]


def _serving_version(gw: GatewayProcess, text: str) -> str:
    r = httpx.post(gw.url + "/v1/classify", json={"task": "sentiment", "input": text}, timeout=30)
    return str(r.json()["specialist_version"])


def _wait_version(gw: GatewayProcess, text: str, version: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while (seen := _serving_version(gw, text)) != version:
        assert time.monotonic() < deadline, f"still serving {seen}, expected {version}"
        time.sleep(0.2)


def test_distill_promote_rollback(loop: Callable[..., GatewayProcess], data: dict[str, Any], redis_url: str,
                                  redis_db: redis.Redis, tmp_path: Path) -> None:
    traffic: Split = data["traffic"]
    gold = dict(zip(traffic.texts, traffic.labels, strict=True))
    gw = loop(gold, data["v0"])
    v0_version = _serving_version(gw, "warm")
    results = _send(gw, traffic.texts)
    escalated = [r for r in results if r["path"] == "foundation"]
    assert len(escalated) > 100, "the small v0 should be unsure about much of the traffic"
    # The foundation (replaying gold labels) answered; the inputs are in the stream with its labels.
    deadline = time.monotonic() + 10
    while len([e for e in _stream(redis_db) if e.get("kind") == "escalation"]) < len(escalated):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    entries = _stream(redis_db)
    esc = [e for e in entries if e["kind"] == "escalation"]
    esc = [e for e in esc if e["text"] != "warm"]  # the version probe above escalated too
    assert len(esc) == len(escalated)
    assert all(e["text"] in gold and e["foundation_label"] == gold[e["text"]] for e in esc)
    assert all(e["specialist_version"] == v0_version for e in esc)
    shadow = [e for e in entries if e["kind"] == "shadow"]
    assert shadow and all(float(e["confidence"]) >= MIN_CONFIDENCE and e["text"] in gold for e in shadow)

    policy = tmp_path / "policy.yaml"
    cand = tmp_path / "candidate"
    args = ["--route", "sentiment", "--out", str(cand), "--train-data", str(data["dir"] / "train.jsonl"),
            "--heldout-data", str(data["dir"] / "heldout.jsonl"), "--min-checks", "5"]
    done = _cli("distill", *args, redis_url=redis_url, policy=policy)
    assert done.returncode == 0, done.stderr
    report = json.loads((cand / "distill.json").read_text())
    assert report["serving"]["version"] == v0_version
    assert report["data"]["escalations_held_out"] == round(0.2 * report["data"]["escalations_deduplicated"])
    assert report["heldout"]["candidate_accuracy"] > report["heldout"]["serving_accuracy"]
    assert report["foundation"]["shadow"]["checks"] == len(shadow)
    assert "Distilled candidate" in (cand / "MODEL_CARD.md").read_text()

    # Distill never overwrites: a second run into the same directory is refused.
    again = _cli("distill", *args, redis_url=redis_url, policy=policy)
    assert again.returncode == 2 and "not empty" in again.stderr

    # The candidate in shadow on live traffic (off the request path): its live figures on /metrics.
    _wait_policy(gw, _edit_policy(policy, candidate={"specialist": "sentiment_c1", "sample_rate": 1.0},
                                  specialists={"sentiment_c1": str(cand)}))
    served = _send(gw, traffic.texts[:200])
    assert all(r["specialist_version"] == v0_version for r in served), "a candidate in shadow never answers"
    deadline = time.monotonic() + 30
    while (live := _candidate_metrics(gw)).get('compared{route="sentiment"}', 0) < 200:
        assert time.monotonic() < deadline, live
        time.sleep(0.2)
    assert live['agreement{against="serving",route="sentiment"}'] < 1.0  # another model
    assert live['agreement{against="foundation",route="sentiment"}'] > 0.5  # it learned the foundation's answers
    esc = {v: live[f'projected_escalation_rate{{route="sentiment",version="{v}"}}'] for v in ("serving", "candidate")}
    # the samples are these 200 inputs and the probe that saw the new policy first
    assert esc["serving"] == pytest.approx(sum(r["path"] != "specialist" for r in served) / 200, abs=0.01)
    assert esc["candidate"] < esc["serving"], esc
    cost = {v: live[f'projected_cost_per_1k_usd{{route="sentiment",version="{v}"}}'] for v in ("serving", "candidate")}
    assert 0 < cost["candidate"] < cost["serving"], cost

    promoted = _cli("promote", "--route", "sentiment", "--candidate", str(cand), redis_url=redis_url, policy=policy)
    assert promoted.returncode == 0, promoted.stderr
    _wait_version(gw, "a new text", report["candidate"]["version"])
    doc = YAML(typ="safe").load(policy.read_text())
    assert doc["routes"]["sentiment"]["rollback_to"] == "sentiment_v0"

    rolled = _cli("rollback", "--route", "sentiment", redis_url=redis_url, policy=policy)
    assert rolled.returncode == 0, rolled.stderr
    _wait_version(gw, "another new text", v0_version)
    doc = YAML(typ="safe").load(policy.read_text())
    assert "rollback_to" not in doc["routes"]["sentiment"] and list(doc["specialists"]) == ["sentiment_v0"]
    again = _cli("rollback", "--route", "sentiment", redis_url=redis_url, policy=policy)
    assert again.returncode == 2 and "nothing to roll back" in again.stderr


def _candidate_metrics(gw: GatewayProcess) -> dict[str, float]:
    prefix = "hybrid_router_candidate_"
    return {line[len(prefix):].rpartition(" ")[0]: float(line.rpartition(" ")[2])
            for line in httpx.get(gw.url + "/metrics", timeout=10).text.splitlines() if line.startswith(prefix)}


def _edit_policy(path: Path, specialists: dict[str, str] | None = None, **route: Any) -> str:
    yaml = YAML(typ="rt")
    doc = yaml.load(path.read_text())
    doc["routes"]["sentiment"].update(route)
    if specialists:
        doc["specialists"].update(specialists)
    with path.open("w") as f:
        yaml.dump(doc, f)
    return policy_version(path.read_text())


def _wait_policy(gw: GatewayProcess, version: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while httpx.post(gw.url + "/v1/classify", json={"task": "sentiment", "input": "x"},
                     timeout=30).json()["policy_version"] != version:
        assert time.monotonic() < deadline, "the policy change was not picked up"
        time.sleep(0.2)


def test_weak_foundation_is_refused_and_stops_escalation(
        loop: Callable[..., GatewayProcess], data: dict[str, Any], redis_url: str, redis_db: redis.Redis,
        tmp_path: Path) -> None:
    traffic: Split = data["traffic"]
    wrong = {t: FLIP[y] for t, y in zip(traffic.texts, traffic.labels, strict=True)}
    gw = loop(wrong, data["v0"])
    first = _send(gw, traffic.texts)
    assert sum(r["path"] == "foundation" for r in first) > 100
    metrics = httpx.get(gw.url + "/metrics", timeout=10).text
    # Measured weaker (exported), but this route still escalates: it did not opt in to the guard.
    assert 'hybrid_router_foundation_weaker{route="sentiment"} 1.0' in metrics
    upper = [line for line in metrics.splitlines()
             if line.startswith('hybrid_router_foundation_accuracy_estimate{bound="upper",route="sentiment"}')]
    assert upper and float(upper[0].split()[-1]) < 0.5

    # With the guard on, once the (new policy's) shadow window is full again, low-confidence inputs
    # are answered by the specialist, flagged.
    policy = tmp_path / "policy.yaml"
    _wait_policy(gw, _edit_policy(policy, when_foundation_weaker="answer"))
    later = _send(gw, traffic.texts[:400])
    unsure = [r for r in later[200:] if r["confidence"] < MIN_CONFIDENCE]
    assert unsure and all(r["path"] == "degraded" and r["reason"] == "foundation_weaker" for r in unsure)

    cand = tmp_path / "candidate"
    args = ["--route", "sentiment", "--train-data", str(data["dir"] / "train.jsonl"),
            "--heldout-data", str(data["dir"] / "heldout.jsonl")]
    refused = _cli("distill", *args, "--out", str(cand), redis_url=redis_url, policy=policy)
    assert refused.returncode == 3, refused.stderr
    assert "measured weaker than the specialist" in refused.stderr and not cand.exists()

    # Spot labels are evidence too (gold labels of logged inputs).
    spot = tmp_path / "spot.jsonl"
    spot.write_text("".join(json.dumps({"text": t, "label": y}) + "\n"
                            for t, y in zip(traffic.texts, traffic.labels, strict=True)))
    refused = _cli("distill", *args, "--out", str(cand), "--spot-labels", str(spot),
                   redis_url=redis_url, policy=policy)
    assert refused.returncode == 3 and "spot labels: foundation accuracy 0.000" in refused.stderr

    # With too little evidence to judge (a high --min-checks), distill learns from the wrong labels,
    # and the held-out gate refuses the worse candidate at promotion.
    built = _cli("distill", *args, "--out", str(cand), "--min-checks", "100000", redis_url=redis_url, policy=policy)
    assert built.returncode == 0, built.stderr
    before = policy.read_text()
    promoted = _cli("promote", "--route", "sentiment", "--candidate", str(cand), redis_url=redis_url, policy=policy)
    assert promoted.returncode == 3 and "worse on held-out data" in promoted.stderr
    assert policy.read_text() == before
