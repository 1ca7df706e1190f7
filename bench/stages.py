"""Where a request's time goes: the gateway's stage histogram plus in-process timing of the rest.

- `scrape_stages` / `stage_delta`: `hybrid_router_stage_duration_seconds` from /metrics, before
  and after a load run, give the mean (and a bucket-resolution median) of the cache, specialist
  and foundation stages as the server saw them under load.
- `time_pieces`: the steps the histogram does not cover (body parse and validation, cache key,
  decision, metrics updates, response serialization), and the whole in-process
  `Gateway.classify` (in-memory cache), each timed in a loop in this process with the bench
  policy. What an HTTP request costs beyond their sum is the server and framework (uvicorn,
  httptools, Starlette routing, Redis round trip).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson

__all__ = ["scrape_stages", "stage_delta", "time_pieces"]

_LINE = re.compile(r'^hybrid_router_stage_duration_seconds_(bucket|sum|count)\{(.*?)\} ([0-9.eE+-]+|\+Inf)$')


def scrape_stages(url: str) -> dict[str, dict[str, Any]]:
    text = httpx.get(url + "/metrics", timeout=5).text
    stages: dict[str, dict[str, Any]] = {}
    for line in text.splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        kind, labels, value = m.groups()
        attrs = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        entry = stages.setdefault(attrs["stage"], {"sum": 0.0, "count": 0.0, "buckets": {}})
        if kind == "bucket":
            entry["buckets"][attrs["le"]] = float(value)
        else:
            entry[kind] = float(value)
    return stages


def stage_delta(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per stage over the interval: count, mean µs, and the upper bound of the median's bucket (µs)."""
    out: dict[str, dict[str, float]] = {}
    for stage, a in after.items():
        b = before.get(stage, {"sum": 0.0, "count": 0.0, "buckets": {}})
        count = a["count"] - b["count"]
        if count <= 0:
            continue
        median_le = float("inf")
        for le in sorted(a["buckets"], key=lambda s: float(s)):
            if a["buckets"][le] - b["buckets"].get(le, 0.0) >= count / 2:
                median_le = float(le)
                break
        out[stage] = {"count": count, "mean_us": round((a["sum"] - b["sum"]) / count * 1e6, 2),
                      "median_bucket_le_us": round(median_le * 1e6, 1)}
    return out


def _loop_us(fn: Callable[[], object], n: int) -> float:
    for _ in range(min(200, n)):
        fn()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return round((time.perf_counter() - t0) / n * 1e6, 3)


def time_pieces(policy_path: Path, route_name: str, text: str, n: int) -> dict[str, float]:
    """Mean µs per call of each piece of the specialist path, in this process."""
    from prometheus_client import CollectorRegistry
    from starlette.responses import Response

    from router.app import build_gateway
    from router.cache import fingerprint
    from router.decision import decide
    from router.gateway import Outcome, normalize
    from router.schemas import ClassifyRequest
    from router.settings import RedisSettings, Settings

    gw = build_gateway(Settings(policy_path=policy_path, redis=RedisSettings(url=None)), CollectorRegistry())
    policy = gw.policy
    route = gw.classify_route(policy, route_name)
    spec = gw.specialists[route.specialist]
    body = orjson.dumps({"task": route_name, "input": text})
    pred = spec.predict([text])[0]
    m = gw.metrics

    def parse() -> object:
        return ClassifyRequest.model_validate(orjson.loads(body))

    def key() -> object:
        return fingerprint("classify", route_name, normalize(text), spec.version, policy.version,
                           route.escalate_to or "")

    def outcome() -> Outcome:
        return Outcome(route_name, pred.label, pred.confidence, "specialist", "confident", 0.0,
                       gw.avoided_cost(route.escalate_to, text), 0.0, policy.version, spec.version, pred.novelty)

    o = outcome()

    def observe() -> None:
        # What one specialist-path request records: stage histograms, cache event, confidence and
        # novelty, then `Gateway.observe`.
        m.stage_latency.labels("cache").observe(1e-4)
        m.cache_event("miss")
        m.stage_latency.labels("specialist").observe(1e-4)
        m.confidence.labels(route_name).observe(pred.confidence)
        m.novelty.labels(route_name).observe(pred.novelty)
        gw.observe(o, 1e-4)

    def serialize() -> Response:
        return Response(orjson.dumps(o.to_dict()), media_type="application/json", headers={
            "x-request-id": "0" * 32, "x-router-route": o.route, "x-router-path": o.path,
            "x-router-reason": o.reason, "x-router-confidence": f"{o.confidence:.4f}",
            "x-router-cost-usd": f"{o.cost_usd:.8f}", "x-router-policy-version": o.policy_version})

    import uuid

    pieces = {
        "parse_validate": _loop_us(parse, n),
        "cache_key": _loop_us(key, n),
        "specialist_predict_list": _loop_us(lambda: spec.predict([text]), n),
        "specialist_predict_one": _loop_us(lambda: spec.predict_one(text), n),
        "decision": _loop_us(lambda: decide(route, pred), n),
        "outcome_and_avoided_cost": _loop_us(outcome, n),
        "metrics_updates": _loop_us(observe, n),
        "serialize_response": _loop_us(serialize, n),
        "request_id_uuid4": _loop_us(lambda: uuid.uuid4().hex, n),
    }

    async def classify_loop() -> float:
        for _ in range(200):
            await gw.classify(route_name, [text])
        t0 = time.perf_counter()
        for _ in range(n):
            await gw.classify(route_name, [text])
        return round((time.perf_counter() - t0) / n * 1e6, 3)

    pieces["gateway_classify_in_process_memory_cache"] = asyncio.run(classify_loop())
    return pieces
