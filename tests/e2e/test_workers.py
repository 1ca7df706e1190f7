"""Several worker processes: the counts scraped from /metrics equal the requests sent."""

from __future__ import annotations

import concurrent.futures
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.gateway_process import GatewayProcess

pytestmark = [pytest.mark.redis]


def test_two_workers_report_every_request(write_policy: Callable[..., Path], redis_url: str,
                                          redis_db: redis.Redis, tmp_path: Path) -> None:
    def edit(doc: Any) -> None:
        doc["routes"]["sentiment"]["min_confidence"] = 0.0

    gw = GatewayProcess(write_policy(edit=edit), {"ROUTER_WORKERS": "2", "ROUTER_REDIS__URL": redis_url,
                                                  "ROUTER_METRICS_DIR": str(tmp_path / "metrics")})
    (tmp_path / "metrics").mkdir()
    try:
        gw.wait_ready()
        sent = 300
        with httpx.Client(base_url=gw.url, timeout=10) as client, concurrent.futures.ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(lambda i: client.post(
                "/v1/classify", json={"task": "sentiment", "input": f"film {i} ."}).status_code, range(sent)))
            assert set(statuses) == {200}
            for _ in range(20):  # whichever worker answers the scrape, it reports all of them
                text = client.get("/metrics").text
                total = sum(float(v) for v in re.findall(
                    r'^hybrid_router_requests_total\{[^}]*route="sentiment"[^}]*\} (\S+)$', text, re.MULTILINE))
                assert total == sent
    finally:
        gw.stop()
