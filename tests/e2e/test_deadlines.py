"""Deadlines, measured from a real client against a real server: a hung or slow upstream never
holds a caller past the route's deadline."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from router.app import create_app
from router.settings import Settings
from tests.fake_upstream import Upstream
from tests.server_thread import ServerThread

UNSURE = "the film runs two hours ."


@pytest.fixture
def serve(make_settings: Callable[..., Settings]) -> Iterator[Callable[[Path], ServerThread]]:
    servers: list[ServerThread] = []

    def start(policy: Path) -> ServerThread:
        server = ServerThread(create_app(make_settings(policy, use_redis=False))).start()
        servers.append(server)
        ready_by = time.monotonic() + 60  # litellm loads in a thread at start-up: time from ready on
        while httpx.get(server.url + "/readyz").status_code != 200:
            assert time.monotonic() < ready_by, "the gateway did not become ready"
            time.sleep(0.05)
        return server

    yield start
    for s in servers:
        s.stop()


def escalating(model: str, deadline_s: float | None = None, **alias: Any) -> Callable[[Any], None]:
    """Policy edit: sentiment always escalates to `cheap` on `model`, without fallbacks."""

    def edit(doc: Any) -> None:
        doc["routes"]["sentiment"]["min_confidence"] = 1.0
        if deadline_s is not None:
            doc["routes"]["sentiment"]["deadline_s"] = deadline_s
        doc["aliases"]["cheap"]["fallbacks"] = []
        doc["aliases"]["cheap"]["model"] = f"openai/{model}"
        doc["aliases"]["cheap"]["timeout_s"] = 30
        for key, value in alias.items():
            doc["aliases"]["cheap"][key] = value

    return edit


def test_a_hung_upstream_gets_the_specialist_answer_at_the_deadline(
    write_policy: Callable[..., Path], serve: Callable[[Path], ServerThread], upstream: Upstream,
) -> None:
    gw = serve(write_policy(edit=escalating("fake-hang")))  # the default deadline: 2 s
    with httpx.Client(base_url=gw.url, timeout=30) as client:
        for i in range(3):
            t0 = time.perf_counter()
            r = client.post("/v1/classify", json={"task": "sentiment", "input": f"{UNSURE} {i}"})
            elapsed = time.perf_counter() - t0
            assert r.status_code == 200, r.text
            body = r.json()
            assert (body["path"], body["reason"]) == ("degraded", "deadline")
            assert r.headers["x-router-reason"] == "deadline"
            assert body["label"] in ("negative", "positive")
            assert 2.0 <= elapsed < 2.1, elapsed
        metrics = client.get("/metrics").text
    assert 'hybrid_router_requests_total{path="degraded",reason="deadline",route="sentiment"} 3.0' in metrics


def test_background_calls_stay_within_the_alias_limit(
    write_policy: Callable[..., Path], serve: Callable[[Path], ServerThread], upstream: Upstream,
) -> None:
    gw = serve(write_policy(edit=escalating("fake-hang", deadline_s=0.3, max_concurrency=2, max_queue=1)))
    with httpx.Client(base_url=gw.url, timeout=30) as client:
        reasons = [client.post("/v1/classify", json={"task": "sentiment", "input": f"{UNSURE} {i}"}).json()["reason"]
                   for i in range(6)]
    # Two calls hang upstream, one waits for a slot, the rest are refused at once: never more.
    assert sum(1 for b in upstream.received if b["model"] == "fake-hang") == 2
    assert reasons[:3] == ["deadline"] * 3
    assert set(reasons[3:]) == {"foundation_error"}


def test_an_answer_after_the_deadline_fills_the_cache(
    write_policy: Callable[..., Path], serve: Callable[[Path], ServerThread], upstream: Upstream,
) -> None:
    gw = serve(write_policy(edit=escalating("fake-slow", deadline_s=0.5)))  # the fake answers after 3 s
    text = UNSURE + " [[label:positive]]"
    with httpx.Client(base_url=gw.url, timeout=30) as client:
        first = client.post("/v1/classify", json={"task": "sentiment", "input": text}).json()
        assert (first["path"], first["reason"]) == ("degraded", "deadline")
        deadline = time.monotonic() + 10
        while True:
            later = client.post("/v1/classify", json={"task": "sentiment", "input": text}).json()
            if later["path"] != "degraded" or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    assert (later["path"], later["reason"], later["label"]) == ("cache", "cache_hit", "positive")
    assert sum(1 for b in upstream.received if b["model"] == "fake-slow") == 1


def chat_policy(model: str, deadline_s: float, fallback_model: str | None = None) -> Callable[[Any], None]:
    """Policy edit: the `support` chat route escalates everything to `strong` on `model`."""

    def edit(doc: Any) -> None:
        route = doc["routes"]["support"]
        route["min_confidence"] = 1.0
        route["deadline_s"] = deadline_s
        doc["aliases"]["strong"]["model"] = f"openai/{model}"
        doc["aliases"]["strong"]["timeout_s"] = 30
        doc["aliases"]["strong"]["max_retries"] = 1
        doc["aliases"]["strong"]["deadline_s"] = deadline_s
        if fallback_model is not None:
            doc["aliases"]["backup"] = {"model": f"openai/{fallback_model}", "api_base": doc["aliases"]["strong"][
                "api_base"], "price_as": "gpt-4o-mini", "timeout_s": 30}
            doc["aliases"]["strong"]["fallbacks"] = ["backup"]

    return edit


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("model", ["support", "strong"])
def test_a_chat_request_ends_at_its_deadline_with_a_504_naming_the_alias(
    write_policy: Callable[..., Path], serve: Callable[[Path], ServerThread], upstream: Upstream, stream: bool,
    model: str,
) -> None:
    gw = serve(write_policy(edit=chat_policy("fake-500", 2.0, fallback_model="fake-hang")))
    t0 = time.perf_counter()
    r = httpx.post(gw.url + "/v1/chat/completions", timeout=30, json={
        "model": model, "stream": stream, "messages": [{"role": "user", "content": "tell me a long story"}]})
    elapsed = time.perf_counter() - t0
    assert r.status_code == 504, r.text
    error = r.json()["error"]
    assert error["code"] == "deadline_exceeded"
    assert error["message"] == "foundation alias 'backup' did not answer before the request's deadline"
    assert 2.0 <= elapsed < 3.0, elapsed  # not the 30 s timeout of the fallback
    # strong failed fast (500, retried), then the fallback hung until the deadline cut it.
    assert [b["model"] for b in upstream.received] == ["fake-500"] * 2 + ["fake-hang"]


def test_a_stream_that_stalls_ends_in_band_at_the_deadline(
    write_policy: Callable[..., Path], serve: Callable[[Path], ServerThread], upstream: Upstream,
) -> None:
    gw = serve(write_policy(edit=chat_policy("fake-stall", 1.0)))
    t0 = time.perf_counter()
    with httpx.stream("POST", gw.url + "/v1/chat/completions", timeout=30, json={
            "model": "strong", "stream": True, "messages": [{"role": "user", "content": "a b c"}]}) as r:
        assert r.status_code == 200
        events = [line.removeprefix("data: ") for line in r.iter_lines() if line.startswith("data: ")]
    elapsed = time.perf_counter() - t0
    assert json.loads(events[0])["choices"][0]["delta"]["content"] == "echo:"
    assert json.loads(events[1])["error"]["code"] == "deadline_exceeded"
    assert events[2:] == ["[DONE]"]
    assert 1.0 <= elapsed < 2.0, elapsed  # not the 30 s timeout, nor 3 retries of it
