"""Shadow checks: sampled specialist answers are re-asked off the request path; low agreement
alerts or escalates the whole route until an operator resets it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from prometheus_client import CollectorRegistry

from router.settings import Settings
from tests.fake_upstream import Upstream

pytestmark = [pytest.mark.anyio, pytest.mark.redis]
CONFIDENT = "a gorgeous , witty , seductive movie ."


def shadow(on_low: str) -> Callable[[Any], None]:
    def edit(doc: Any) -> None:
        doc["routes"]["sentiment"]["min_confidence"] = 0.0
        doc["shadow"] = {"sample_rate": 1.0, "window": 10, "min_agreement": 0.8, "on_low_agreement": on_low}
    return edit


async def _drain(client: Any) -> None:
    await client.app.state.gateway.shadow.drain()


async def test_agreeing_foundation_keeps_the_route_served_by_the_specialist(
    write_policy: Callable[..., Path], make_settings: Callable[..., Settings], client_for: Any,
    registry: CollectorRegistry, upstream: Upstream, redis_db: redis.Redis,
) -> None:
    client = client_for(make_settings(write_policy(edit=shadow("escalate_route"))))
    for i in range(12):
        r = await client.post("/v1/classify", json={"task": "sentiment", "input": f"{CONFIDENT} [[label:positive]] {i}"})
        assert r.json()["path"] == "specialist"
        await _drain(client)
    assert registry.get_sample_value("hybrid_router_shadow_checks_total", {"route": "sentiment", "outcome": "agree"}) == 12
    assert registry.get_sample_value("hybrid_router_shadow_agreement", {"route": "sentiment"}) == 1.0
    assert registry.get_sample_value("hybrid_router_cost_usd_total", {"route": "sentiment", "path": "shadow", "alias": "cheap"}) > 0


async def test_drift_escalates_the_route_until_reset(
    write_policy: Callable[..., Path], make_settings: Callable[..., Settings], client_for: Any,
    registry: CollectorRegistry, upstream: Upstream, redis_db: redis.Redis,
) -> None:
    client = client_for(make_settings(write_policy(edit=shadow("escalate_route")), admin_token="adm"))
    # The foundation model now disagrees with the specialist on everything it sees.
    for i in range(10):
        r = await client.post("/v1/classify", json={"task": "sentiment", "input": f"{CONFIDENT} [[label:negative]] {i}"})
        assert r.json()["path"] == "specialist", "shadow checks never change the answer they sample"
        await _drain(client)
    assert registry.get_sample_value("hybrid_router_shadow_tripped", {"route": "sentiment"}) == 1
    r = await client.post("/v1/classify", json={"task": "sentiment", "input": f"{CONFIDENT} [[label:negative]]"})
    assert (r.json()["path"], r.json()["reason"], r.json()["label"]) == ("foundation", "shadow_drift", "negative")
    status = (await client.get("/admin/policy", headers={"authorization": "Bearer adm"})).json()["shadow"]
    assert status["sentiment"]["tripped"] is True and status["sentiment"]["agreement"] == 0.0
    reset = await client.post("/admin/shadow/reset?route=sentiment", headers={"authorization": "Bearer adm"})
    assert reset.json() == {"reset": ["sentiment"]}
    r = await client.post("/v1/classify", json={"task": "sentiment", "input": CONFIDENT + " again"})
    assert r.json()["path"] == "specialist"
    await _drain(client)


async def test_alert_only_never_changes_routing(
    write_policy: Callable[..., Path], make_settings: Callable[..., Settings], client_for: Any,
    registry: CollectorRegistry, upstream: Upstream, redis_db: redis.Redis,
) -> None:
    client = client_for(make_settings(write_policy(edit=shadow("alert"))))
    for i in range(15):
        r = await client.post("/v1/classify", json={"task": "sentiment", "input": f"{CONFIDENT} [[label:negative]] {i}"})
        assert r.json()["path"] == "specialist"
        await _drain(client)
    assert registry.get_sample_value("hybrid_router_shadow_agreement", {"route": "sentiment"}) == 0.0
    assert registry.get_sample_value("hybrid_router_shadow_tripped", {"route": "sentiment"}) == 0
    await asyncio.sleep(0)
