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


class Cascade:
    """What every cascade test needs: an app on a policy (litellm loaded, as the lifespan would:
    the in-process client runs none, and the first import must not eat a route's deadline) and
    the tier metrics read back from its registry."""

    def __init__(self, write_policy: Callable[..., Path], make_settings: Callable[..., Settings],
                 client_for: Any, registry: CollectorRegistry, specialists_dir: Path) -> None:
        self._write, self._settings, self._client_for = write_policy, make_settings, client_for
        self.registry, self.specialists_dir = registry, specialists_dir

    async def client(self, t1: float | None = None, t2: float | None = None,
                     edit: Callable[[Any], None] | None = None) -> Any:
        """A client on default.yaml, with `sentiment`'s tiers at (t1, TIER2 >= t2) when given."""
        def change(doc: Any) -> None:
            if t1 is not None and t2 is not None:
                _cascade(t1, t2)(doc)
            if edit is not None:
                edit(doc)
        c = self._client_for(self._settings(self._write(edit=change, cascades=True),
                                            specialists_dir=self.specialists_dir))
        escalator = c.app.state.gateway.escalator
        escalator.start()
        await escalator.wait_loaded()
        return c

    def sample(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    def assert_tiers(self, route: str = "sentiment", *, inputs: tuple[int, int], answers: tuple[int, int],
                     tier2_runs: int) -> None:
        """Inputs each tier evaluated and answered, and how many times tier 2 ran (once per batch)."""
        got = (
            tuple(int(self.sample("hybrid_router_tier_inputs_total", route=route, tier=t)) for t in "12"),
            tuple(int(self.sample("hybrid_router_tier_answers_total", route=route, tier=t)) for t in "12"),
            int(self.sample("hybrid_router_tier_duration_seconds_count", tier="2")),
        )
        assert got == (inputs, answers, tier2_runs)


@pytest.fixture
def cascade(write_policy: Callable[..., Path], make_settings: Callable[..., Settings], client_for: Any,
            registry: CollectorRegistry, specialists_dir: Path, upstream: Upstream,
            redis_db: redis.Redis) -> Cascade:
    return Cascade(write_policy, make_settings, client_for, registry, specialists_dir)


def _cascade(t1: float, t2: float) -> Callable[[Any], None]:
    def edit(doc: Any) -> None:
        route = doc["routes"]["sentiment"]
        route["min_confidence"] = t1
        route["max_novelty"] = 1.0
        route["cascade"] = [{"specialist": TIER2, "min_confidence": t2}]
    return edit


async def test_unsure_tier1_is_answered_by_tier2(cascade: Cascade, upstream: Upstream, specs: Any) -> None:
    text = POOL[1]
    t1 = specs["sentiment"].predict_one(text).confidence
    client = await cascade.client(min(1.0, t1 + 1e-6), 0.0)
    r = await client.post("/v1/classify", json={"task": "sentiment", "input": text})
    assert r.status_code == 200, r.text
    body = r.json()
    want = specs[TIER2].predict_one(text)
    assert (body["path"], body["reason"], body["tier"], body["specialist"]) == ("specialist", "confident", 2, TIER2)
    assert body["label"] == want.label and body["confidence"] == pytest.approx(want.confidence, abs=1e-5)
    assert body["specialist_version"] == specs[TIER2].version
    assert (r.headers["x-router-path"], r.headers["x-router-reason"], r.headers["x-router-tier"],
            r.headers["x-router-specialist"]) == ("specialist", "confident", "2", TIER2)
    assert upstream.received == []
    cascade.assert_tiers(inputs=(1, 1), answers=(0, 1), tier2_runs=1)
    assert cascade.sample("hybrid_router_requests_total", route="sentiment", path="specialist",
                          reason="confident") == 1


async def test_chat_on_a_cascade_route_names_the_tier(cascade: Cascade, upstream: Upstream, specs: Any) -> None:
    text = POOL[1]
    t1 = specs["sentiment"].predict_one(text).confidence
    client = await cascade.client(min(1.0, t1 + 1e-6), 0.0)
    r = await client.post("/v1/chat/completions", json={"model": "sentiment",
                                                        "messages": [{"role": "user", "content": text}]})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == specs[TIER2].predict_one(text).label
    assert (r.headers["x-router-path"], r.headers["x-router-tier"], r.headers["x-router-specialist"]) == (
        "specialist", "2", TIER2)
    assert upstream.received == []
    cascade.assert_tiers(inputs=(1, 1), answers=(0, 1), tier2_runs=1)


async def test_confident_tier1_answer_never_runs_tier2(cascade: Cascade) -> None:
    client = await cascade.client(0.0, 0.0)
    r = await client.post("/v1/classify", json={"task": "sentiment", "input": POOL[:4]})
    assert r.status_code == 200, r.text
    assert {(o["tier"], o["specialist"], o["path"]) for o in r.json()["results"]} == {(1, "sentiment", "specialist")}
    cascade.assert_tiers(inputs=(4, 0), answers=(4, 0), tier2_runs=0)


async def test_unsure_in_both_tiers_escalates_with_the_last_tier_named(cascade: Cascade, upstream: Upstream) -> None:
    client = await cascade.client(1.0, 1.0)
    text = f"{POOL[1]} [[label:negative]]"
    r = await client.post("/v1/classify", json={"task": "sentiment", "input": text})
    body = r.json()
    assert (body["path"], body["reason"], body["label"]) == ("foundation", "low_confidence", "negative"), body
    assert (body["tier"], body["specialist"]) == (2, TIER2)
    assert (r.headers["x-router-path"], r.headers["x-router-tier"]) == ("foundation", "2")
    assert len(upstream.received) == 1
    assert cascade.sample("hybrid_router_escalations_total", route="sentiment", reason="low_confidence") == 1
    cascade.assert_tiers(inputs=(1, 1), answers=(0, 0), tier2_runs=1)
    # the cache key covers both tiers' versions: the repeat is a hit and runs no model upstream
    again = (await client.post("/v1/classify", json={"task": "sentiment", "input": text})).json()
    assert (again["path"], again["label"]) == ("cache", "negative")
    assert len(upstream.received) == 1


async def test_a_batch_mixing_all_three_tiers_runs_each_tier_once(
    cascade: Cascade, upstream: Upstream, specs: Any,
) -> None:
    marked = [f"{t} [[label:positive]]" for t in POOL]
    c1 = [specs["sentiment"].predict_one(t).confidence for t in marked]
    c2 = [specs[TIER2].predict_one(t).confidence for t in marked]
    a = max(range(len(marked)), key=c1.__getitem__)  # tier 1 answers only this one
    rest = sorted((i for i in range(len(marked)) if i != a), key=c2.__getitem__)
    low, high = rest[0], rest[-1]  # tier 2 answers `high`, `low` goes to the foundation model
    assert c1[a] > max(c1[low], c1[high]) and c2[high] > c2[low], "need distinct confidences"
    client = await cascade.client(c1[a], c2[high])
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
    cascade.assert_tiers(inputs=(3, 2), answers=(1, 1), tier2_runs=1)


INTENT_POOL = [
    "what is the weather like in paris tomorrow",
    "please transfer 200 dollars from checking to savings",
    "how do i say thank you in japanese",
    "set an alarm for six thirty in the morning",
    "can you find my phone",
    "i want to book a table for two at an italian place",
    "what's my credit score looking like",
    "tell me something funny about penguins",
]


@pytest.mark.parametrize(("route_name", "tier2_name", "pool", "foundation_label"), [
    ("sentiment", "sentiment_minilm", POOL, "positive"),
    ("intent", "intent_minilm", INTENT_POOL, "weather"),
])
async def test_the_default_policy_cascade_runs_the_bundled_tier2(
    cascade: Cascade, upstream: Upstream, specs: Any, route_name: str, tier2_name: str, pool: list[str],
    foundation_label: str,
) -> None:
    """default.yaml as shipped: `route` -> its bundled tier 2 -> `cheap`, thresholds read from the
    policy (whatever `ops.defaults` chose), every input's path predicted from the two models'
    confidences, tier 2's blended with tier 1's as its manifest's `blend` says."""
    client = await cascade.client()
    route = client.app.state.gateway.policy.policy.routes[route_name]
    assert [t.specialist for t in route.tiers()] == [route_name, tier2_name]
    (g1, g2) = route.tiers()
    marked = [f"{t} [[label:{foundation_label}]]" for t in pool]
    tier2 = specs[tier2_name]
    assert tier2.blend is not None and tier2.blend.applies(route_name, specs[route_name].version)
    want, confidence = [], []
    for t in marked:
        p1 = specs[route_name].predict_one(t)
        alone = tier2.predict_one(t)
        (p2,) = tier2.follow([p1], [alone])
        assert p2.confidence != pytest.approx(alone.confidence, abs=1e-6)  # the blend moved it
        stop = p1.label in route.escalate_labels  # e.g. out-of-scope: straight to the foundation model
        if p1.confidence >= g1.min_confidence and p1.novelty <= g1.max_novelty and not stop:
            want.append(("specialist", 1, p1.label))
            confidence.append(p1.confidence)
        elif stop:
            want.append(("foundation", 1, foundation_label))
            confidence.append(None)
        elif (p2.confidence >= g2.min_confidence and p2.novelty <= g2.max_novelty
              and p2.label not in route.escalate_labels):
            want.append(("specialist", 2, p2.label))
            confidence.append(p2.confidence)
        else:
            want.append(("foundation", 2, foundation_label))
            confidence.append(None)
    r = await client.post("/v1/classify", json={"task": route_name, "input": marked})
    assert r.status_code == 200, r.text
    got = r.json()["results"]
    assert [(o["path"], o["tier"], o["label"]) for o in got] == want
    for o, c in zip(got, confidence, strict=True):
        if c is not None:
            assert o["confidence"] == pytest.approx(c, abs=1e-5)
    n1 = sum(w[1] == 1 for w in want)
    n1_answers = sum(w[:2] == ("specialist", 1) for w in want)
    n2 = sum(w[:2] == ("specialist", 2) for w in want)
    cascade.assert_tiers(route_name, inputs=(len(marked), len(marked) - n1), answers=(n1_answers, n2),
                         tier2_runs=int(n1 < len(marked)))
    assert len(upstream.received) == len(marked) - n1_answers - n2
    assert n1 < len(marked), "no input reached tier 2: the pool no longer tests the cascade"


async def test_tier2_runs_off_the_event_loop(cascade: Cascade, specs: Any) -> None:
    """While one large batch is inside tier 2, confident single requests keep being answered.

    Were tier 2 on the event loop, no other request could finish before the batch did.
    """
    t1 = max(specs["sentiment"].predict_one(t).confidence for t in POOL)

    def quick(doc: Any) -> None:
        doc["routes"]["quick"] = {"kind": "classify", "specialist": "sentiment", "min_confidence": 0.0}

    client = await cascade.client(min(1.0, t1 + 1e-6), 0.0, edit=quick)
    # long texts (~120 word pieces each) make one tier-2 run over the batch take a while
    burst = [" ".join(POOL[(i + k) % len(POOL)] for k in range(8)) + f" ( take {i} )" for i in range(256)]

    async def big() -> float:
        r = await client.post("/v1/classify", json={"task": "sentiment", "input": burst})
        assert r.status_code == 200 and {o["tier"] for o in r.json()["results"]} == {2}
        return time.perf_counter()

    task = asyncio.create_task(big())
    deadline = time.perf_counter() + 30
    while cascade.sample("hybrid_router_tier_inputs_total", route="sentiment", tier="2") == 0:
        assert time.perf_counter() < deadline and not task.done()
        await asyncio.sleep(0.0005)

    async def confident(text: str) -> float:
        r = await client.post("/v1/classify", json={"task": "quick", "input": text})
        assert r.json()["tier"] == 1
        return time.perf_counter()

    finished = await asyncio.gather(*(confident(t) for t in POOL[:4]))
    burst_done = await task
    assert max(finished) < burst_done, "confident answers waited for the tier-2 batch"
    cascade.assert_tiers(inputs=(256, 256), answers=(0, 256), tier2_runs=1)


async def test_policy_refuses_a_tier_with_other_labels(cascade: Cascade) -> None:
    from router.policy import PolicyConfigError

    def edit(doc: Any) -> None:
        doc["routes"]["sentiment"]["cascade"] = [{"specialist": "spam", "min_confidence": 0.5}]

    with pytest.raises(PolicyConfigError, match="other labels"):
        await cascade.client(edit=edit)
