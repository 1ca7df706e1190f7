"""Live policy changes under load: file change, admin endpoint, SIGHUP; invalid files are refused."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from prometheus_client import CollectorRegistry

from router.app import create_app
from router.settings import Settings
from tests.conftest import ROOT
from tests.server_thread import ServerThread

pytestmark = [pytest.mark.redis]


def threshold(value: float) -> Callable[[Any], None]:
    def edit(doc: Any) -> None:
        doc["routes"]["sentiment"]["min_confidence"] = value
    return edit


def escalations(text: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith('hybrid_router_escalations_total{') and 'route="sentiment"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.anyio
async def test_threshold_change_under_load_moves_escalations_without_failures(
    write_policy: Callable[..., Path], make_settings: Callable[..., Settings], redis_db: redis.Redis,
) -> None:
    path = write_policy(edit=threshold(0.0))
    app = create_app(make_settings(path, policy_poll_s=0.2, admin_token="s3cret"), registry=CollectorRegistry())
    server = ServerThread(app).start()
    statuses: list[int] = []
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            async def load(stop_at: float, worker: int) -> None:
                i = 0
                while time.monotonic() < stop_at and i < 400:  # bounded in time and count
                    r = await client.post("/v1/classify", json={"task": "sentiment",
                                                                 "input": f"movie number {worker}-{i} ."})
                    statuses.append(r.status_code)
                    i += 1

            before = escalations((await client.get("/metrics")).text)
            stop_at = time.monotonic() + 4.0
            workers = [asyncio.create_task(load(stop_at, w)) for w in range(4)]
            await asyncio.sleep(1.0)
            write_policy(edit=threshold(1.0))  # the operator edits the file
            deadline = time.monotonic() + 5
            while escalations((await client.get("/metrics")).text) == before:
                assert time.monotonic() < deadline, "escalation rate did not move after the threshold change"
                await asyncio.sleep(0.1)
            await asyncio.gather(*workers)

            admin = await client.get("/admin/policy", headers={"authorization": "Bearer s3cret"})
            assert admin.json()["last_reload"]["trigger"] == "file_change"
            assert admin.json()["last_reload"]["changed"] is True

            # An invalid file is refused; the old policy keeps serving.
            version = admin.json()["version"]
            path.write_text(path.read_text().replace("min_confidence: 1.0", "min_confidence: 7"))
            bad = await client.post("/admin/policy/reload", headers={"authorization": "Bearer s3cret"})
            assert bad.status_code == 422
            assert "routes.sentiment.min_confidence" in " ".join(bad.json()["errors"])
            ok = await client.post("/v1/classify", json={"task": "sentiment", "input": "fine ."})
            assert ok.status_code == 200 and ok.json()["policy_version"] == version
            metrics = (await client.get("/metrics")).text
            assert 'hybrid_router_policy_reloads_total{result="invalid"}' in metrics
            assert f'hybrid_router_policy_info{{version="{version}"}} 1.0' in metrics

            denied = await client.post("/admin/policy/reload", headers={"authorization": "Bearer nope"})
            assert denied.status_code == 401
            assert denied.headers["content-type"].startswith("application/problem+json")
    finally:
        server.stop()
    assert len(statuses) > 50
    assert set(statuses) == {200}, "no request may fail during a reload"


def test_sighup_reloads_a_served_gateway(tmp_path: Path, write_policy: Callable[..., Path],
                                         redis_url: str) -> None:
    path = write_policy(edit=threshold(0.0))
    port = _free_port()
    env = {**os.environ, "ROUTER_REDIS__URL": redis_url, "ROUTER_POLICY_POLL_S": "3600"}
    proc = subprocess.Popen([sys.executable, "-m", "router", "serve", "--port", str(port), "--policy", str(path)],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_ready(base, proc)
        v1 = httpx.post(base + "/v1/classify", json={"task": "sentiment", "input": "ok ."}).json()["policy_version"]
        write_policy(edit=threshold(0.5))
        time.sleep(0.2)
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while True:
            v2 = httpx.post(base + "/v1/classify", json={"task": "sentiment", "input": "ok ."}).json()["policy_version"]
            if v2 != v1:
                break
            assert time.monotonic() < deadline, "SIGHUP did not reload the policy"
            time.sleep(0.1)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert proc.returncode in (0, -signal.SIGTERM), err.decode()[-2000:]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(base: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read().decode() if proc.stderr else "server exited")
        try:
            if httpx.get(base + "/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("gateway did not become ready")
