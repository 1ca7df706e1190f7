"""Candidates in shadow: a sampled share of a route's traffic also goes to a candidate specialist or
threshold, off the request path; metrics compare it with the serving specialist and the foundation
answers, and project its escalation rate and cost. Real Redis, the fake upstream through litellm."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from prometheus_client import CollectorRegistry

from router.app import create_app
from router.policy import PolicyConfigError, parse_policy
from router.settings import Settings
from specialists import SpecialistSet
from tests.conftest import ROOT
from tests.server_thread import ServerThread

pytestmark = [pytest.mark.anyio, pytest.mark.redis]
POSITIVE = "a gorgeous , witty , seductive movie ."
BUNDLED = ROOT / "specialists" / "bundled"


def candidate(route_min: float, **cand: Any) -> Callable[[Any], None]:
    def edit(doc: Any) -> None:
        doc["routes"]["sentiment"]["min_confidence"] = route_min
        doc["routes"]["sentiment"]["candidate"] = {"sample_rate": 1.0, **cand}
    return edit


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value("hybrid_router_" + name, {"route": "sentiment", **labels})


async def test_candidate_threshold_projects_escalations_and_cost_without_changing_answers(
    write_policy: Callable[..., Path], make_settings: Callable[..., Settings], client_for: Any,
    registry: CollectorRegistry, redis_db: redis.Redis,
) -> None:
    # The route answers everything itself; the candidate threshold (1.0) would escalate everything.
    client = client_for(make_settings(write_policy(edit=candidate(0.0, min_confidence=1.0))))
    r = await client.post("/v1/classify", json={"task": "sentiment", "input": [f"{POSITIVE} {i}" for i in range(10)]})
    assert {x["path"] for x in r.json()["results"]} == {"specialist"}, "a candidate never answers"
    await client.app.state.gateway.candidates.drain()
    assert value(registry, "candidate_samples_total", outcome="compared") == 10
    assert value(registry, "candidate_compared") == 10
    assert value(registry, "candidate_agreement", against="serving") == 1.0  # same specialist
    assert value(registry, "candidate_agreement", against="foundation") is None  # no foundation answer yet
    assert value(registry, "candidate_projected_escalation_rate", version="serving") == 0.0
    assert value(registry, "candidate_projected_escalation_rate", version="candidate") == 1.0
    assert value(registry, "candidate_projected_cost_per_1k_usd", version="serving") == 0.0
    assert (value(registry, "candidate_projected_cost_per_1k_usd", version="candidate") or 0) > 0


async def test_candidate_specialist_is_compared_with_foundation_answers(
    write_policy: Callable[..., Path], make_settings: Callable[..., Settings], client_for: Any,
    registry: CollectorRegistry, redis_db: redis.Redis, tmp_path: Path,
) -> None:
    shutil.copytree(BUNDLED / "sentiment", tmp_path / "cand")

    def edit(doc: Any) -> None:
        candidate(1.0, specialist="sentiment_cand", min_confidence=0.0)(doc)
        doc["specialists"] = {"sentiment_cand": str(tmp_path / "cand")}

    client = client_for(make_settings(write_policy(edit=edit), admin_token="adm"))
    # Every input escalates (min_confidence 1.0); the foundation model answers "negative".
    r = await client.post("/v1/classify", json={"task": "sentiment", "input": [
        f"{POSITIVE} [[label:negative]] {i}" for i in range(6)]})
    assert {(x["path"], x["label"]) for x in r.json()["results"]} == {("foundation", "negative")}
    await client.app.state.gateway.candidates.drain()
    assert value(registry, "candidate_compared") == 6
    assert value(registry, "candidate_agreement", against="serving") == 1.0
    assert value(registry, "candidate_agreement", against="foundation") == 0.0
    assert value(registry, "candidate_projected_escalation_rate", version="serving") == 1.0
    assert value(registry, "candidate_projected_escalation_rate", version="candidate") == 0.0
    serving_cost = value(registry, "candidate_projected_cost_per_1k_usd", version="serving")
    assert serving_cost is not None and serving_cost > 0
    assert value(registry, "candidate_projected_cost_per_1k_usd", version="candidate") == 0.0
    status = (await client.get("/admin/policy", headers={"authorization": "Bearer adm"})).json()["candidates"]
    assert status["sentiment"]["compared"] == 6 and status["sentiment"]["with_foundation"] == 6


async def test_full_queue_drops_samples_and_counts_them(
    write_policy: Callable[..., Path], make_settings: Callable[..., Settings], client_for: Any,
    registry: CollectorRegistry, redis_db: redis.Redis,
) -> None:
    client = client_for(make_settings(write_policy(edit=candidate(0.0, min_confidence=0.5, max_queue=1))))
    # One batch: the samples are offered while the worker cannot run, so the queue holds one.
    r = await client.post("/v1/classify", json={"task": "sentiment", "input": [f"{POSITIVE} {i}" for i in range(20)]})
    assert r.status_code == 200 and len(r.json()["results"]) == 20
    await client.app.state.gateway.candidates.drain()
    assert value(registry, "candidate_samples_total", outcome="compared") == 1
    assert value(registry, "candidate_samples_total", outcome="dropped") == 19
    assert value(registry, "candidate_compared") == 1


async def test_sample_rate_zero_offers_nothing(
    write_policy: Callable[..., Path], make_settings: Callable[..., Settings], client_for: Any,
    registry: CollectorRegistry, redis_db: redis.Redis,
) -> None:
    client = client_for(make_settings(write_policy(edit=candidate(0.0, min_confidence=0.5, sample_rate=0.0))))
    await client.post("/v1/classify", json={"task": "sentiment", "input": [f"{POSITIVE} {i}" for i in range(5)]})
    await client.app.state.gateway.candidates.drain()
    assert value(registry, "candidate_samples_total", outcome="compared") == 0  # created at 0, never counted
    assert value(registry, "candidate_compared") is None


def _parse(write_policy: Callable[..., Path], edit: Callable[[Any], None]) -> None:
    path = write_policy(edit=edit)
    specs = SpecialistSet.load(BUNDLED)
    parse_policy(path.read_text(), str(path), {n: specs[n].classes for n in specs})


@pytest.mark.parametrize(("cand", "message"), [
    ({"specialist": "nope"}, "routes.sentiment.candidate.specialist: unknown specialist 'nope'"),
    ({"specialist": "spam"}, "routes.sentiment.candidate.specialist: specialist 'spam' has other labels"),
    ({"sample_rate": 0.5}, "routes.sentiment.candidate: a candidate names a specialist, a min_confidence or both"),
    ({"min_confidence": 1.5}, "routes.sentiment.candidate.min_confidence"),
    ({"min_confidence": 0.5, "max_queue": 0}, "routes.sentiment.candidate.max_queue"),
    ({"min_confidence": 0.5, "typo": 1}, "routes.sentiment.candidate.typo"),
])
async def test_candidate_keys_are_validated_with_file_and_line(
    write_policy: Callable[..., Path], cand: dict[str, Any], message: str,
) -> None:
    def edit(doc: Any) -> None:
        doc["routes"]["sentiment"]["candidate"] = cand

    with pytest.raises(PolicyConfigError) as err:
        _parse(write_policy, edit)
    issues = " ".join(err.value.issues)
    assert message in issues
    assert "policy.yaml:" in issues and any(c.isdigit() for c in issues.split("policy.yaml:")[1][:4])


async def test_hot_reload_starts_and_changes_the_candidate(
    write_policy: Callable[..., Path], make_settings: Callable[..., Settings], redis_db: redis.Redis,
) -> None:
    registry = CollectorRegistry()
    path = write_policy(edit=lambda doc: doc["routes"]["sentiment"].update(min_confidence=0.0))
    server = ServerThread(create_app(make_settings(path, policy_poll_s=0.2), registry=registry)).start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            async def compared_after_sending(expect: float) -> None:
                deadline = time.monotonic() + 15
                while True:
                    await client.post("/v1/classify", json={"task": "sentiment", "input": POSITIVE})
                    rate = value(registry, "candidate_projected_escalation_rate", version="candidate")
                    if rate == expect:
                        return
                    assert time.monotonic() < deadline, f"candidate escalation rate {rate}, expected {expect}"
                    await asyncio.sleep(0.1)

            await client.post("/v1/classify", json={"task": "sentiment", "input": POSITIVE})
            assert value(registry, "candidate_compared") is None
            write_policy(edit=candidate(0.0, min_confidence=1.0))  # the operator adds a candidate
            await compared_after_sending(1.0)
            write_policy(edit=candidate(0.0, min_confidence=0.0))  # a new threshold starts afresh
            await compared_after_sending(0.0)
    finally:
        server.stop()
