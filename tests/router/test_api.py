"""The classify API end to end in process: every path, the cache, bad input, metrics, health."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from prometheus_client import CollectorRegistry

from router.settings import Settings
from tests.fake_upstream import Upstream

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

POSITIVE = "a gorgeous , witty , seductive movie ."
PLAIN = "the film runs two hours ."


def _threshold(value: float) -> Callable[[Any], None]:
    def edit(doc: Any) -> None:
        doc["routes"]["sentiment"]["min_confidence"] = value
    return edit


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def test_confident_input_is_answered_by_the_specialist(
    write_policy: Callable[..., Path], make_settings: Callable[..., Settings], client_for: Any,
    registry: CollectorRegistry, upstream: Upstream, redis_db: redis.Redis,
) -> None:
    client = client_for(make_settings(write_policy(edit=_threshold(0.0))))
    r = await client.post("/v1/classify", json={"task": "sentiment", "input": POSITIVE})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["label"] == "positive"
    assert body["path"] == "specialist" and body["reason"] == "confident"
    assert body["route"] == "sentiment"
    assert body["cost_usd"] > 0 and body["cost_avoided_usd"] > 0
    assert body["policy_version"] == r.headers["x-router-policy-version"]
    assert r.headers["x-router-path"] == "specialist"
    assert r.headers["x-request-id"]
    assert upstream.received == []
    assert sample(registry, "hybrid_router_requests_total", route="sentiment", path="specialist",
                  reason="confident") == 1


async def test_unsure_input_escalates_then_repeats_from_cache(
    write_policy: Callable[..., Path], make_settings: Callable[..., Settings], client_for: Any,
    registry: CollectorRegistry, upstream: Upstream, redis_db: redis.Redis,
) -> None:
    client = client_for(make_settings(write_policy(edit=_threshold(1.0))))
    text = f"{PLAIN} [[label:negative]]"
    r = await client.post("/v1/classify", json={"task": "sentiment", "input": text})
    body = r.json()
    assert r.status_code == 200, body
    assert (body["path"], body["reason"], body["label"]) == ("foundation", "low_confidence", "negative")
    assert body["foundation_alias"] == "cheap"
    assert body["cost_usd"] > 0
    assert len(upstream.received) == 1
    # The escalation prompt lists exactly the specialist's labels.
    system = upstream.received[0]["messages"][0]["content"]
    assert "negative, positive" in system or "positive, negative" in system
    keys = redis_db.keys("gw:v1:resp:*")
    assert len(keys) == 1 and 0 < redis_db.ttl(keys[0]) <= 86400

    again = await client.post("/v1/classify", json={"task": "sentiment", "input": "  " + text + " "})
    cached = again.json()
    assert (cached["path"], cached["reason"], cached["label"]) == ("cache", "cache_hit", "negative")
    assert cached["cost_usd"] < body["cost_usd"] / 100  # only the specialist ran
    assert cached["cost_avoided_usd"] == pytest.approx(body["cost_usd"], rel=0.5)
    assert len(upstream.received) == 1
    assert sample(registry, "hybrid_router_requests_total", route="sentiment", path="cache", reason="cache_hit") == 1
    assert sample(registry, "hybrid_router_escalations_total", route="sentiment", reason="low_confidence") == 1
    assert sample(registry, "hybrid_router_cost_usd_total", route="sentiment", path="foundation", alias="cheap") > 0


async def test_without_foundation_model_low_confidence_is_degraded(
    tmp_path: Path, make_settings: Callable[..., Settings], client_for: Any, redis_db: redis.Redis,
) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text("version: 1\naliases:\n  cheap: {}\nroutes:\n  sentiment:\n    kind: classify\n"
                      "    specialist: sentiment\n    min_confidence: 1.0\n    escalate_to: cheap\n")
    client = client_for(make_settings(policy))
    r = await client.post("/v1/classify", json={"task": "sentiment", "input": PLAIN})
    body = r.json()
    assert r.status_code == 200
    assert (body["path"], body["reason"]) == ("degraded", "foundation_unavailable")
    assert body["label"] in ("positive", "negative")
    assert redis_db.keys("gw:v1:resp:*") == []  # degraded answers are not cached


async def test_failing_foundation_degrades_and_is_not_cached(
    write_policy: Callable[..., Path], make_settings: Callable[..., Settings], client_for: Any,
    registry: CollectorRegistry, redis_db: redis.Redis,
) -> None:
    client = client_for(make_settings(write_policy(models={"cheap": "fake-500", "strong": "fake-500"},
                                                   edit=_threshold(1.0))))
    r = await client.post("/v1/classify", json={"task": "sentiment", "input": PLAIN})
    assert r.status_code == 200
    assert (r.json()["path"], r.json()["reason"]) == ("degraded", "foundation_error")
    assert sample(registry, "hybrid_router_foundation_calls_total", alias="cheap", outcome="error") >= 1
    assert sample(registry, "hybrid_router_foundation_calls_total", alias="strong", outcome="error") >= 1
    assert redis_db.keys("gw:v1:resp:*") == []


async def test_label_outside_the_task_is_refused(
    write_policy: Callable[..., Path], make_settings: Callable[..., Settings], client_for: Any,
    redis_db: redis.Redis,
) -> None:
    client = client_for(make_settings(write_policy(models={"cheap": "fake-badlabel", "strong": "fake-badlabel"},
                                                   edit=_threshold(1.0))))
    r = await client.post("/v1/classify", json={"task": "sentiment", "input": PLAIN})
    assert (r.json()["path"], r.json()["reason"]) == ("degraded", "invalid_label")
    assert r.json()["label"] in ("positive", "negative")


async def test_batch_keeps_order_and_mixes_paths(
    write_policy: Callable[..., Path], make_settings: Callable[..., Settings], client_for: Any,
    upstream: Upstream, redis_db: redis.Redis,
) -> None:
    client = client_for(make_settings(write_policy(edit=_threshold(0.97))))
    texts = [POSITIVE, f"{PLAIN} [[label:positive]]", "a dull , lifeless and tedious mess .",
             "it is a film [[label:negative]]"] * 5
    r = await client.post("/v1/classify", json={"task": "sentiment", "input": texts})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == len(texts)
    for text, res in zip(texts, results, strict=True):
        if "[[label:" in text and res["path"] in ("foundation", "cache"):
            assert res["label"] == text.split("[[label:")[1].rstrip("]"), (text, res)
        if text == POSITIVE:
            assert res["label"] == "positive"  # answers stay with their inputs
    paths = {res["path"] for res in results}
    assert "foundation" in paths and paths & {"specialist"}, paths
    assert len(upstream.received) <= 2  # identical escalations in one batch are asked once each


@pytest.mark.parametrize(
    ("content", "status", "code"),
    [
        (b"{not json", 400, "invalid_request"),
        (b"[1, 2]", 400, "invalid_request"),
        (b'{"task": "sentiment"}', 400, "missing_required_parameter"),
        (b'{"task": "sentiment", "input": ""}', 400, "string_below_min_length"),
        (b'{"task": "sentiment", "input": 42}', 400, "invalid_type"),
        (b'{"task": "sentiment", "input": []}', 400, "empty_array"),
        (b'{"task": "sentiment", "input": "x", "extra": 1}', 400, "unsupported_parameter"),
        (b'{"task": "sentiment", "input": "  \\n\\t "}', 400, "invalid_value"),
        (b'{"task": "sentiment", "input": ["fine", " "]}', 400, "invalid_value"),
        (b'{"task": "no-such-task", "input": "hello"}', 404, "model_not_found"),
        (b'{"task": "sentiment", "input": "\xff\xfe"}', 400, "invalid_request"),
    ],
)
async def test_bad_input_is_a_clear_4xx(
    content: bytes, status: int, code: str, write_policy: Callable[..., Path],
    make_settings: Callable[..., Settings], client_for: Any, redis_db: redis.Redis,
) -> None:
    client = client_for(make_settings(write_policy()))
    r = await client.post("/v1/classify", content=content, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code and err["message"]
    assert r.headers["x-request-id"]
    ok = await client.post("/v1/classify", json={"task": "sentiment", "input": POSITIVE})
    assert ok.status_code == 200  # nothing lost: the app keeps serving


async def test_oversized_body_and_batch_are_refused(
    write_policy: Callable[..., Path], make_settings: Callable[..., Settings], client_for: Any,
    redis_db: redis.Redis,
) -> None:
    client = client_for(make_settings(write_policy(), max_body_bytes=4096, max_batch=3))
    r = await client.post("/v1/classify", json={"task": "sentiment", "input": "x" * 10_000})
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
    r = await client.post("/v1/classify", json={"task": "sentiment", "input": ["a", "b", "c", "d"]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "input"


async def test_control_characters_and_long_text_are_answered(
    write_policy: Callable[..., Path], make_settings: Callable[..., Settings], client_for: Any,
    redis_db: redis.Redis,
) -> None:
    client = client_for(make_settings(write_policy(edit=_threshold(0.0))))
    for text in ["\x00\x01\x02 great \x7f", "great " * 50_000, "\u200b\u200b", "\U0001f600 wonderful"]:
        r = await client.post("/v1/classify", json={"task": "sentiment", "input": text})
        assert r.status_code == 200, r.text
        assert r.json()["label"] in ("positive", "negative")
    # JSON escapes: a surrogate pair is one character; a lone surrogate is not valid text.
    pair = await client.post("/v1/classify", content=b'{"task": "sentiment", "input": "\\ud83d\\ude00 good"}')
    assert pair.status_code == 200
    lone = await client.post("/v1/classify", content=b'{"task": "sentiment", "input": "\\ud800 good"}')
    assert lone.status_code in (200, 400)


async def test_health_ready_models_and_unknown_paths(
    write_policy: Callable[..., Path], make_settings: Callable[..., Settings], client_for: Any,
    redis_db: redis.Redis,
) -> None:
    client = client_for(make_settings(write_policy()))
    health = (await client.get("/healthz")).json()
    assert (health["status"], health["draining"], health["redis"]) == ("ok", False, {"backend": "redis", "state": "ok"})
    assert health["aliases"]["cheap"] == {"configured": True, "breaker": "closed", "waiting": 0}
    assert set(health["budget"]) == {"hour", "day"}
    ready = await client.get("/readyz")
    body = ready.json()
    assert body["cache"] == {"backend": "redis", "state": "ok"}
    assert "sentiment" in body["specialists"]
    models = (await client.get("/v1/models")).json()
    ids = {m["id"] for m in models["data"]}
    assert {"sentiment", "cheap", "strong"} <= ids
    missing = await client.get("/nope")
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")
    wrong = await client.get("/v1/classify")
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"


async def test_metrics_endpoint_shows_paths_latency_and_cost(
    write_policy: Callable[..., Path], make_settings: Callable[..., Settings], client_for: Any,
    redis_db: redis.Redis,
) -> None:
    client = client_for(make_settings(write_policy(edit=_threshold(0.9))))
    await client.post("/v1/classify", json={"task": "sentiment", "input": POSITIVE})
    await client.post("/v1/classify", json={"task": "sentiment", "input": PLAIN})
    await client.post("/v1/classify", json={"task": "sentiment", "input": PLAIN})
    text = (await client.get("/metrics")).text
    assert 'hybrid_router_requests_total{path="cache",reason="cache_hit",route="sentiment"} 1.0' in text
    assert 'hybrid_router_request_duration_seconds_bucket{le="5e-05",path="cache"}' in text
    assert 'hybrid_router_cost_usd_total{alias="none",path="specialist",route="sentiment"}' in text or \
        'hybrid_router_cost_usd_total{alias="cheap",path="foundation",route="sentiment"}' in text


async def test_in_process_cache_when_no_redis(
    write_policy: Callable[..., Path], make_settings: Callable[..., Settings], client_for: Any,
    upstream: Upstream,
) -> None:
    client = client_for(make_settings(write_policy(edit=_threshold(1.0)), use_redis=False))
    for _ in range(2):
        r = await client.post("/v1/classify", json={"task": "sentiment", "input": PLAIN})
    assert r.json()["path"] == "cache"
    assert (await client.get("/readyz")).json()["cache"] == {"backend": "memory", "state": "memory"}
    assert len(upstream.received) == 1


async def test_redis_down_fails_open(
    write_policy: Callable[..., Path], make_settings: Callable[..., Settings], client_for: Any,
    registry: CollectorRegistry, upstream: Upstream,
) -> None:
    from router.settings import RedisSettings

    settings = make_settings(write_policy(edit=_threshold(1.0)))
    dead = settings.model_copy(update={"redis": RedisSettings(url="redis://127.0.0.1:1/0", timeout_s=0.05,
                                                              near_cache_ttl_s=0)})
    client = client_for(dead)
    for _ in range(6):
        r = await client.post("/v1/classify", json={"task": "sentiment", "input": PLAIN})
        assert r.status_code == 200 and r.json()["path"] == "foundation"
    # Three consecutive errors open the breaker; after that Redis is not asked at all.
    assert sample(registry, "hybrid_router_cache_events_total", event="error") == 3
    assert sample(registry, "hybrid_router_cache_events_total", event="skipped") >= 6
    assert (await client.get("/readyz")).json()["cache"]["state"] == "unreachable"
    health = await client.get("/healthz")  # liveness does not fail for what the gateway degrades around
    assert health.status_code == 200 and health.json()["redis"]["state"] == "unreachable"


async def test_readiness_turns_false_while_draining(
    write_policy: Callable[..., Path], make_settings: Callable[..., Settings], client_for: Any,
    redis_db: redis.Redis,
) -> None:
    client = client_for(make_settings(write_policy()))
    gw = client.app.state.gateway
    gw.escalator.start()  # what the lifespan does (the in-process client runs none): litellm loads
    await gw.escalator.wait_loaded()
    assert (await client.get("/readyz")).status_code == 200
    client.app.state.gateway.draining = True  # what SIGTERM sets (tests/e2e/test_shutdown.py sends one)
    ready = await client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["draining"] is True
    assert (await client.get("/healthz")).status_code == 200


async def test_confident_answers_never_touch_redis(
    write_policy: Callable[..., Path], make_settings: Callable[..., Settings], client_for: Any,
    registry: CollectorRegistry,
) -> None:
    from router.settings import RedisSettings

    settings = make_settings(write_policy(edit=_threshold(0.0)))
    dead = settings.model_copy(update={"redis": RedisSettings(url="redis://127.0.0.1:1/0", timeout_s=0.05)})
    client = client_for(dead)
    for _ in range(3):
        r = await client.post("/v1/classify", json={"task": "sentiment", "input": POSITIVE})
        assert r.json()["path"] == "specialist"
    assert registry.get_sample_value("hybrid_router_cache_events_total", {"event": "error"}) is None


async def test_cache_is_namespaced_per_api_key(
    write_policy: Callable[..., Path], make_settings: Callable[..., Settings], client_for: Any,
    upstream: Upstream, redis_db: redis.Redis,
) -> None:
    client = client_for(make_settings(write_policy(edit=_threshold(1.0))))
    body = {"task": "sentiment", "input": PLAIN}
    a1 = await client.post("/v1/classify", json=body, headers={"authorization": "Bearer tenant-a"})
    a2 = await client.post("/v1/classify", json=body, headers={"authorization": "Bearer tenant-a"})
    b1 = await client.post("/v1/classify", json=body, headers={"authorization": "Bearer tenant-b"})
    assert [r.json()["path"] for r in (a1, a2, b1)] == ["foundation", "cache", "foundation"]
    assert len(upstream.received) == 2
    assert not any(b"tenant-a" in k for k in redis_db.keys("*"))


async def test_errors_and_budget_are_metered(
    write_policy: Callable[..., Path], make_settings: Callable[..., Settings], client_for: Any,
    registry: CollectorRegistry, redis_db: redis.Redis,
) -> None:
    def edit(doc: Any) -> None:
        doc["budgets"]["usd_per_hour"] = 2.5

    client = client_for(make_settings(write_policy(edit=edit)))
    await client.post("/v1/classify", json={"task": "nope", "input": "x"})
    await client.post("/v1/classify", json={"task": "sentiment", "input": ""})
    await client.get("/metrics")
    assert sample(registry, "hybrid_router_request_errors_total", route="unknown", code="model_not_found") == 1
    assert sample(registry, "hybrid_router_request_errors_total", route="sentiment", code="string_below_min_length") == 1
    assert sample(registry, "hybrid_router_budget_limit_usd", window="hour") == 2.5
    assert registry.get_sample_value("hybrid_router_budget_limit_usd", {"window": "day"}) is None
    assert sample(registry, "hybrid_router_budget_spent_usd", window="hour") == 0.0
