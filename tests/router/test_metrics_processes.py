"""Multi-process metrics with real processes writing real metric files.

Each step runs `GatewayMetrics` in its own Python process with PROMETHEUS_MULTIPROC_DIR set
before prometheus_client is imported, exactly as `hybrid-router serve --workers N` starts its
workers. A process that has exited is a dead worker: its counts must stay, its gauges must go.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from prometheus_client import CollectorRegistry

from router.metrics import GatewayMetrics

ROOT = Path(__file__).resolve().parents[2]

_WORKER = """
import sys
from pathlib import Path
from prometheus_client import CollectorRegistry
from router.metrics import GatewayMetrics

m = GatewayMetrics(CollectorRegistry(), Path(sys.argv[1]))
m.prepare(["sentiment"], ["cheap"], 0.9 if sys.argv[2] == "new" else None)
m.set_policy_version(sys.argv[2])
m.answered("sentiment", "specialist", "confident", 0.001, 0.0, "none", 0.0)
m.shadow_agreement.labels("sentiment").set(0.5 if sys.argv[2] == "old" else 0.95)
if sys.argv[2] == "new":
    m.set_budget({"hour": {"limit": 2.0, "spent": 1.0}, "day": {"limit": None, "spent": 1.0}})
    first = m.render().decode()
    m.set_budget({"hour": {"limit": None, "spent": 1.0}, "day": {"limit": None, "spent": 1.0}})
    sys.stdout.write(first + "\\n=====\\n" + m.render().decode())
"""


def _run(directory: Path, version: str) -> str:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    done = subprocess.run([sys.executable, "-c", _WORKER, str(directory), version], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _value(text: str, sample: str) -> float | None:
    m = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.MULTILINE)
    return None if m is None else float(m.group(1))


def test_a_dead_workers_gauges_leave_with_it_and_its_counts_stay(tmp_path: Path) -> None:
    _run(tmp_path, "old")  # a worker that served the old policy version, then died
    first, _, after_removal = _run(tmp_path, "new").partition("\n=====\n")
    for text in (first, after_removal):
        assert _value(text, 'hybrid_router_policy_info{version="new"}') == 1.0
        assert 'version="old"' not in text, "a dead worker's policy version is still exported"
        assert _value(text, 'hybrid_router_shadow_agreement{route="sentiment"}') == 0.95
        assert _value(text, 'hybrid_router_requests_total{path="specialist",reason="confident",route="sentiment"}') \
            == 2.0, "both workers' requests are counted"
        assert _value(text, 'hybrid_router_foundation_calls_total{alias="cheap",outcome="breaker_open"}') == 0.0
        assert _value(text, "hybrid_router_shadow_min_agreement") == 0.9
    assert _value(first, 'hybrid_router_budget_limit_usd{window="hour"}') == 2.0
    assert 'hybrid_router_budget_limit_usd{window="day"}' not in first
    assert "hybrid_router_budget_limit_usd{" not in after_removal, "a removed budget limit is still exported"
    assert _value(after_removal, 'hybrid_router_budget_spent_usd{window="hour"}') == 1.0


def test_a_metrics_directory_in_a_single_process_exports_everything(tmp_path: Path) -> None:
    # This process imported prometheus_client without PROMETHEUS_MULTIPROC_DIR: its values live in
    # memory, so the directory must not be what /metrics reads (it would export nothing).
    registry = CollectorRegistry()
    m = GatewayMetrics(registry, tmp_path)
    m.set_policy_version("abc")
    m.answered("sentiment", "specialist", "confident", 0.001, 0.0, "none", 0.0)
    text = m.render().decode()
    assert _value(text, 'hybrid_router_requests_total{path="specialist",reason="confident",route="sentiment"}') == 1.0
    assert _value(text, 'hybrid_router_policy_info{version="abc"}') == 1.0
    assert list(tmp_path.iterdir()) == []
