"""One request followed end to end by its id: access log, escalation stream, upstream headers.

`hybrid-router serve` runs as a real subprocess whose stderr is a pipe (as in a container), so it
logs JSON by default; Redis is real and the foundation model is the fake upstream on loopback,
reached through litellm over HTTP, which records the headers it received.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from router.escalation_log import STREAM
from tests.fake_upstream import Upstream
from tests.gateway_process import GatewayProcess

pytestmark = [pytest.mark.redis]

SECRET_TEXT = "zorblax quintessify flumbergast"  # novel words: the sentiment route escalates them


def _stream_ids(r: redis.Redis) -> list[str]:
    return [fields.get(b"request_id", b"").decode() for _, fields in r.xrange(STREAM)]


def test_a_client_request_id_reaches_the_access_log_the_escalation_stream_and_the_upstream(
    write_policy: Callable[..., Path], upstream: Upstream, redis_url: str, redis_db: redis.Redis,
) -> None:
    def edit(doc: Any) -> None:
        doc["aliases"]["strong"]["model"] = "openai/fake-500"  # for a 503 with its cause
        doc["aliases"]["strong"]["breaker_failures"] = 1
        doc["aliases"]["strong"]["max_retries"] = 0

    gw = GatewayProcess(write_policy(edit=edit), {"ROUTER_REDIS__URL": redis_url, "ROUTER_LOG_LEVEL": "INFO"})
    rid = "trace-3f2a9c:client.7"
    reason = ""
    try:
        gw.wait_ready(timeout_s=90)
        with httpx.Client(base_url=gw.url, timeout=30) as client:
            r = client.post("/v1/classify", json={"task": "sentiment", "input": f"{SECRET_TEXT} [[label:negative]]"},
                            headers={"x-request-id": rid})
            assert r.status_code == 200, r.text
            assert r.headers["x-request-id"] == rid
            assert r.headers["x-router-path"] == "foundation"
            reason = r.headers["x-router-reason"]
            # An unsafe id is replaced, never echoed or logged.
            bad = client.post("/v1/classify", json={"task": "sentiment", "input": "a fine film ."},
                              headers={"x-request-id": "evil id\twith spaces"})
            assert bad.status_code == 200 and len(bad.headers["x-request-id"]) == 32
            # Two 503s that say why: a breaker opened by a failure, then refusing.
            for _ in range(2):
                down = client.post("/v1/chat/completions", headers={"x-request-id": "trace-503"},
                                   json={"model": "strong", "messages": [{"role": "user", "content": SECRET_TEXT}]})
            assert down.status_code == 503, down.text
            assert "circuit breaker" in down.json()["error"]["message"]

        assert any(h.get("x-request-id") == rid for h in upstream.received_headers), "not sent upstream"
        deadline = time.monotonic() + 10
        while rid not in _stream_ids(redis_db):  # written off the request path
            assert time.monotonic() < deadline, f"{rid} not in {STREAM}: {_stream_ids(redis_db)}"
            time.sleep(0.05)
    finally:
        stderr = gw.stop()

    lines = [line for line in stderr.splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    access = [rec for rec in records if rec["msg"] == "access" and rec.get("request_id") == rid]
    assert len(access) == 1, lines
    line = access[0]
    assert {k: line[k] for k in ("method", "endpoint", "status", "route", "path", "reason", "alias")} == {
        "method": "POST", "endpoint": "/v1/classify", "status": 200, "route": "sentiment", "path": "foundation",
        "reason": reason, "alias": "cheap"}
    assert line["latency_ms"] > 0 and line["cost_usd"] > 0 and line["level"] == "INFO"
    assert line["time"].endswith("Z")

    refused = [rec for rec in records if rec["msg"] == "access" and rec.get("request_id") == "trace-503"]
    assert [rec["status"] for rec in refused] == [502, 503]
    assert refused[1]["error"] == "foundation_unavailable" and "circuit breaker" in refused[1]["detail"]
    events = [rec.get("event") for rec in records]
    assert "breaker_opened" in events and "foundation_failed" in events

    assert not [line for line in lines if SECRET_TEXT in line or "evil" in line], "a prompt or raw id was logged"
    assert not [rec for rec in records if rec["logger"].lower().startswith("litellm") and rec["level"] == "INFO"]
