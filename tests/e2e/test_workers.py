"""Several worker processes: the counts scraped from /metrics equal the requests sent."""

from __future__ import annotations

import concurrent.futures
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.gateway_process import GatewayProcess

pytestmark = [pytest.mark.redis]

ROOT = Path(__file__).resolve().parents[2]


def _stale_counts(directory: Path) -> None:
    """Leave 1,000 counted sentiment requests in `directory`, written by a process that has exited."""
    directory.mkdir()
    script = ("import sys; from pathlib import Path; from prometheus_client import CollectorRegistry; "
              "from router.metrics import GatewayMetrics; m = GatewayMetrics(CollectorRegistry(), Path(sys.argv[1])); "
              "m.requests.labels('sentiment', 'specialist', 'confident').inc(1000); m.set_policy_version('stale')")
    subprocess.run([sys.executable, "-c", script, str(directory)], cwd=ROOT, check=True, timeout=120,
                   env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)})
    assert list(directory.glob("counter_*.db"))


def test_two_workers_report_every_request(write_policy: Callable[..., Path], redis_url: str,
                                          redis_db: redis.Redis, tmp_path: Path) -> None:
    def edit(doc: Any) -> None:
        doc["routes"]["sentiment"]["min_confidence"] = 0.0

    metrics_dir = tmp_path / "metrics"
    _stale_counts(metrics_dir)  # an earlier run's files: `serve` must clean them, not add them up
    gw = GatewayProcess(write_policy(edit=edit), {"ROUTER_WORKERS": "2", "ROUTER_REDIS__URL": redis_url,
                                                  "ROUTER_METRICS_DIR": str(metrics_dir)})
    try:
        gw.wait_ready(timeout_s=180)  # two workers load the specialists; slow on a busy machine
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
                assert 'version="stale"' not in text
    finally:
        gw.stop()
