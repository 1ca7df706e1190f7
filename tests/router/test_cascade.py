"""Cascades through the gateway with real tiers: the bundled tf-idf `sentiment`, then a real
transformer specialist (`tests/fixtures/sentiment_tiny`: a tiny fine-tuned BERT served by the
`kind: transformer` runtime, onnxruntime + tokenizers, no torch), then the foundation model.

Thresholds are placed between the confidences the two specialists give the test texts (measured
here with the same artifacts), so the tests hold for any retrained model.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from prometheus_client import CollectorRegistry

from router.settings import Settings
from specialists import SpecialistSet
from specialists.runtime import BUNDLED_DIR
from tests.fake_upstream import Upstream

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

POOL = [
    "a gorgeous , witty , seductive movie .",
    "the film runs two hours .",
    "it 's a bad , bad movie , and a bad , bad idea .",
    "the plot is nothing but boilerplate clichés from start to finish .",
    "not the best film of the year , but not the worst either .",
    "the actors do what they can with a script that gives them little .",
    "an utterly charming and hilarious film that reminded me why i love movies .",
    "there are moments of real beauty , but the film never quite comes together .",
]
TIER2 = "sentiment_tiny"
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / TIER2


@pytest.fixture(scope="module")
def specialists_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled specialists plus the tier-2 fixture."""
    d = tmp_path_factory.mktemp("specialists")
    for p in BUNDLED_DIR.iterdir():
        if (p / "manifest.json").is_file():
            (d / p.name).symlink_to(p, target_is_directory=True)
    (d / TIER2).symlink_to(FIXTURE, target_is_directory=True)
    return d


@pytest.fixture(scope="module")
def specs(specialists_dir: Path) -> Any:
    return SpecialistSet.load(specialists_dir)


@pytest.fixture
def settings_for(make_settings: Callable[..., Settings], specialists_dir: Path) -> Callable[[Path], Settings]:
    return lambda policy: make_settings(policy, specialists_dir=specialists_dir)


def _cascade(t1: float, t2: float) -> Callable[[Any], None]:
    def edit(doc: Any) -> None:
        route = doc["routes"]["sentiment"]
        route["min_confidence"] = t1
        route["max_novelty"] = 1.0
        route["cascade"] = [{"specialist": TIER2, "min_confidence": t2}]
    return edit


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def test_unsure_tier1_is_answered_by_tier2(
    write_policy: Callable[..., Path], settings_for: Callable[[Path], Settings], client_for: Any,
    registry: CollectorRegistry, upstream: Upstream, redis_db: redis.Redis, specs: Any,
) -> None:
    text = POOL[1]
    t1 = specs["sentiment"].predict_one(text).confidence
    client = client_for(settings_for(write_policy(edit=_cascade(min(1.0, t1 + 1e-6), 0.0))))
    r = await client.post("/v1/classify", json={"task": "sentiment", "input": text})
    assert r.status_code == 200, r.text
    body = r.json()
    want = specs[TIER2].predict_one(text)
    assert (body["path"], body["reason"], body["tier"], body["specialist"]) == ("specialist", "confident", 2, TIER2)
    assert body["label"] == want.label and body["confidence"] == pytest.approx(want.confidence, abs=1e-5)
    assert body["specialist_version"] == specs[TIER2].version
    assert (r.headers["x-router-path"], r.headers["x-router-tier"], r.headers["x-router-specialist"]) == (
        "specialist", "2", TIER2)
    assert upstream.received == []
    assert sample(registry, "hybrid_router_tier_inputs_total", route="sentiment", tier="1") == 1
    assert sample(registry, "hybrid_router_tier_inputs_total", route="sentiment", tier="2") == 1
    assert sample(registry, "hybrid_router_tier_answers_total", route="sentiment", tier="2") == 1
    assert sample(registry, "hybrid_router_tier_answers_total", route="sentiment", tier="1") == 0
    assert sample(registry, "hybrid_router_requests_total", route="sentiment", path="specialist",
                  reason="confident") == 1


async def test_confident_tier1_answer_never_runs_tier2(
    write_policy: Callable[..., Path], settings_for: Callable[[Path], Settings], client_for: Any,
    registry: CollectorRegistry, upstream: Upstream, redis_db: redis.Redis,
) -> None:
    client = client_for(settings_for(write_policy(edit=_cascade(0.0, 0.0))))
    r = await client.post("/v1/classify", json={"task": "sentiment", "input": POOL[:4]})
    assert r.status_code == 200, r.text
    assert {(o["tier"], o["specialist"], o["path"]) for o in r.json()["results"]} == {(1, "sentiment", "specialist")}
    assert sample(registry, "hybrid_router_tier_inputs_total", route="sentiment", tier="2") == 0
    assert sample(registry, "hybrid_router_tier_duration_seconds_count", tier="2") == 0
    assert sample(registry, "hybrid_router_tier_answers_total", route="sentiment", tier="1") == 4


async def test_unsure_in_both_tiers_escalates_with_the_last_tier_named(
    write_policy: Callable[..., Path], settings_for: Callable[[Path], Settings], client_for: Any,
    registry: CollectorRegistry, upstream: Upstream, redis_db: redis.Redis,
) -> None:
    client = client_for(settings_for(write_policy(edit=_cascade(1.0, 1.0))))
    r = await client.post("/v1/classify", json={"task": "sentiment", "input": f"{POOL[1]} [[label:negative]]"})
    body = r.json()
    assert (body["path"], body["reason"], body["label"]) == ("foundation", "low_confidence", "negative")
    assert (body["tier"], body["specialist"]) == (2, TIER2)
    assert len(upstream.received) == 1
    assert sample(registry, "hybrid_router_escalations_total", route="sentiment", reason="low_confidence") == 1
    # the cache key covers both tiers' versions: the repeat is a hit and runs no model upstream
    again = (await client.post("/v1/classify", json={"task": "sentiment",
                                                     "input": f"{POOL[1]} [[label:negative]]"})).json()
    assert (again["path"], again["label"]) == ("cache", "negative")
    assert len(upstream.received) == 1


async def test_a_batch_mixing_all_three_tiers_runs_each_tier_once(
    write_policy: Callable[..., Path], settings_for: Callable[[Path], Settings], client_for: Any,
    registry: CollectorRegistry, upstream: Upstream, redis_db: redis.Redis, specs: Any,
) -> None:
    marked = [f"{t} [[label:positive]]" for t in POOL]
    c1 = [specs["sentiment"].predict_one(t).confidence for t in marked]
    c2 = [specs[TIER2].predict_one(t).confidence for t in marked]
    a = max(range(len(marked)), key=c1.__getitem__)  # tier 1 answers only this one
    rest = sorted((i for i in range(len(marked)) if i != a), key=c2.__getitem__)
    low, high = rest[0], rest[-1]  # tier 2 answers `high`, `low` goes to the foundation model
    assert c1[a] > max(c1[low], c1[high]) and c2[high] > c2[low], "need distinct confidences"
    client = client_for(settings_for(write_policy(edit=_cascade(c1[a], c2[high]))))
    batch = [marked[low], marked[a], marked[high]]
    r = await client.post("/v1/classify", json={"task": "sentiment", "input": batch})
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    assert [(o["path"], o["tier"], o["specialist"]) for o in res] == [
        ("foundation", 2, TIER2), ("specialist", 1, "sentiment"), ("specialist", 2, TIER2)]
    assert res[0]["label"] == "positive"
    assert res[1]["label"] == specs["sentiment"].predict_one(marked[a]).label
    assert res[2]["label"] == specs[TIER2].predict_one(marked[high]).label
    assert len(upstream.received) == 1
    assert sample(registry, "hybrid_router_tier_inputs_total", route="sentiment", tier="1") == 3
    assert sample(registry, "hybrid_router_tier_inputs_total", route="sentiment", tier="2") == 2
    assert sample(registry, "hybrid_router_tier_duration_seconds_count", tier="2") == 1  # one run per batch
    assert sample(registry, "hybrid_router_tier_answers_total", route="sentiment", tier="1") == 1
    assert sample(registry, "hybrid_router_tier_answers_total", route="sentiment", tier="2") == 1


async def test_tier2_runs_off_the_event_loop(
    write_policy: Callable[..., Path], settings_for: Callable[[Path], Settings], client_for: Any,
    registry: CollectorRegistry, upstream: Upstream, redis_db: redis.Redis, specs: Any,
) -> None:
    """While one large batch is inside tier 2, confident single requests keep being answered.

    Were tier 2 on the event loop, no other request could finish before the batch did.
    """
    t1 = max(specs["sentiment"].predict_one(t).confidence for t in POOL)

    def edit(doc: Any) -> None:
        _cascade(min(1.0, t1 + 1e-6), 0.0)(doc)
        doc["routes"]["quick"] = {"kind": "classify", "specialist": "sentiment", "min_confidence": 0.0}

    client = client_for(settings_for(write_policy(edit=edit)))
    # long texts (~120 word pieces each) make one tier-2 run over the batch take a while
    burst = [" ".join(POOL[(i + k) % len(POOL)] for k in range(8)) + f" ( take {i} )" for i in range(256)]

    async def big() -> float:
        r = await client.post("/v1/classify", json={"task": "sentiment", "input": burst})
        assert r.status_code == 200 and {o["tier"] for o in r.json()["results"]} == {2}
        return time.perf_counter()

    task = asyncio.create_task(big())
    deadline = time.perf_counter() + 30
    while sample(registry, "hybrid_router_tier_inputs_total", route="sentiment", tier="2") == 0:
        assert time.perf_counter() < deadline and not task.done()
        await asyncio.sleep(0.0005)
    async def confident(text: str) -> float:
        r = await client.post("/v1/classify", json={"task": "quick", "input": text})
        assert r.json()["tier"] == 1
        return time.perf_counter()

    finished = await asyncio.gather(*(confident(t) for t in POOL[:4]))
    burst_done = await task
    assert max(finished) < burst_done, "confident answers waited for the tier-2 batch"


async def test_policy_refuses_a_tier_with_other_labels(
    write_policy: Callable[..., Path], settings_for: Callable[[Path], Settings], client_for: Any,
) -> None:
    from router.policy import PolicyConfigError

    def edit(doc: Any) -> None:
        doc["routes"]["sentiment"]["cascade"] = [{"specialist": "spam", "min_confidence": 0.5}]

    with pytest.raises(PolicyConfigError, match="other labels"):
        client_for(settings_for(write_policy(edit=edit)))
