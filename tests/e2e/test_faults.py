"""Short variants of the fault matrix (`python -m bench.faults`): steady mixed traffic against a
real `serve` process with its own Redis and upstream, one fault at a time; nothing may be lost and
the gateway must count exactly what was sent."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.faults import Stack, run_case

pytestmark = [
    pytest.mark.skipif(shutil.which("redis-server") is None,
                       reason="no redis-server binary: the fault cases start their own Redis"),
    pytest.mark.timeout(400),  # the first case also starts the stack (gateway start-up on a busy machine)
]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack.start(tmp_path_factory.mktemp("faults"), ROUTER_HEADER_TIMEOUT_S="2")
    s.shared()
    yield s
    s.stop()


def gateway_log_errors(stack: Stack) -> list[str]:
    """ERROR lines and tracebacks in the gateways' logs, except the (wanted) rejected policy reloads."""
    return [line for gw in stack.gateways for line in Path(gw.server.log).read_text(errors="replace").splitlines()
            if (" ERROR " in line and "policy reload (file_change) rejected" not in line) or "Traceback" in line]


@pytest.mark.parametrize("case", ["redis_kill", "redis_slow", "upstream_flaky", "upstream_hang", "policy_flip"])
def test_a_fault_loses_nothing(stack: Stack, case: str) -> None:
    result = run_case(stack, case, seconds=4, rate=15)
    assert result.tally["lost"] == 0, result.tally
    assert result.counted == result.tally["sent"], (result.counted, result.tally)
    assert sum(result.tally["answered"].values()) > 0
    if case == "upstream_hang":  # classifications still answer (degraded), chat ends at its deadline
        assert result.tally["answered"].get("degraded", 0) > 0
    assert not gateway_log_errors(stack)


def test_aborted_uploads_and_slow_clients_lose_nothing(stack: Stack) -> None:
    aborted = run_case(stack, "aborted_uploads", seconds=3, rate=15, hostile=300)
    assert aborted.tally["lost"] == 0 and aborted.counted == aborted.tally["sent"], aborted
    slow = run_case(stack, "slow_clients", seconds=4, rate=15, hostile=300)
    assert slow.tally["lost"] == 0 and slow.counted == slow.tally["sent"], slow
    assert slow.extra["hostile"] == {"opened": 300, "cut_by_server": 300}  # after the 2 s header timeout
    assert not gateway_log_errors(stack)


def test_one_of_two_workers_killed_loses_nothing(stack: Stack) -> None:
    result = run_case(stack, "worker_killed", seconds=5, rate=15)
    assert result.tally["lost"] == 0, result.tally
    assert result.counted == result.tally["sent"], (result.counted, result.tally)
