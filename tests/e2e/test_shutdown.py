"""SIGTERM on a real `serve` process under load: requests and streams in flight finish, new
connections are refused, the process exits; with two workers both drain."""

from __future__ import annotations

import concurrent.futures
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.gateway_process import GatewayProcess

pytestmark = [pytest.mark.redis]


def slow_everything(doc: Any) -> None:
    """Every request needs the foundation model, which takes 3 s (fake-slow)."""
    doc["routes"]["sentiment"]["min_confidence"] = 1.0
    doc["routes"]["sentiment"]["deadline_s"] = 20
    for alias in doc["aliases"].values():
        alias["model"] = "openai/fake-slow"
        alias["timeout_s"] = 20


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_lets_requests_and_streams_in_flight_finish(
    write_policy: Callable[..., Path], redis_url: str, redis_db: redis.Redis, tmp_path: Path, workers: int,
) -> None:
    # redis_db: a flushed database, so the second case's inputs are not cache hits of the first's
    env = {"ROUTER_REDIS__URL": redis_url, "ROUTER_WORKERS": str(workers), "ROUTER_SHUTDOWN_GRACE_S": "15"}
    if workers > 1:
        (tmp_path / "metrics").mkdir()
        env["ROUTER_METRICS_DIR"] = str(tmp_path / "metrics")
    gw = GatewayProcess(write_policy(edit=slow_everything), env).wait_ready()

    try:
        drain_under_load(gw)
    finally:
        gw.stop()


def drain_under_load(gw: GatewayProcess) -> None:
    def classify(i: int) -> tuple[int, str]:
        r = httpx.post(gw.url + "/v1/classify", timeout=30,
                       json={"task": "sentiment", "input": f"the film runs two hours {i} ."})
        return r.status_code, r.json()["path"]

    def stream(i: int) -> tuple[int, str]:
        with httpx.stream("POST", gw.url + "/v1/chat/completions", timeout=30, json={
                "model": "strong", "stream": True, "messages": [{"role": "user", "content": f"story {i}"}]}) as r:
            return r.status_code, r.read().decode()[-14:]

    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        answers = [pool.submit(classify, i) for i in range(6)]
        streams = [pool.submit(stream, i) for i in range(6)]
        time.sleep(1.5)  # all twelve are in flight, waiting for the 3 s upstream
        gw.signal(signal.SIGTERM)
        time.sleep(1.0)  # uvicorn's supervisor looks at signals every 0.5 s, its workers every 0.1 s
        # New connections are refused (the listening socket is closed in every process).
        with pytest.raises(httpx.ConnectError):
            httpx.get(gw.url + "/healthz", timeout=2)
        assert [a.result() for a in answers] == [(200, "foundation")] * 6
        assert [s.result() for s in streams] == [(200, "data: [DONE]\n\n")] * 6
    # uvicorn re-raises the signal once it has drained, so the exit status says "terminated by SIGTERM".
    assert gw.wait(timeout_s=20) in (0, -signal.SIGTERM)
