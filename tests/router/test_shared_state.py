"""Several replicas sharing one Redis: cache, coalescing, budgets, escalation log, policy changes.

The gateways are real `hybrid-router serve` processes on loopback; the upstream is the local
fake; Redis is the test database.
"""

from __future__ import annotations

import concurrent.futures
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from router.escalation_log import STREAM
from tests.fake_upstream import Upstream
from tests.gateway_process import ROOT, GatewayProcess

pytestmark = [pytest.mark.redis]

UNSURE = "the film runs two hours ."


def escalate_all(doc: Any) -> None:
    doc["routes"]["sentiment"]["min_confidence"] = 1.0


@pytest.fixture
def replicas(write_policy: Callable[..., Path], redis_url: str, redis_db: redis.Redis,
             tmp_path: Path) -> Iterator[Callable[..., list[GatewayProcess]]]:
    started: list[GatewayProcess] = []

    def start(n: int = 2, models: dict[str, str] | None = None,
              edit: Callable[[Any], None] = escalate_all, token: str = "t0k") -> list[GatewayProcess]:
        env = {"ROUTER_REDIS__URL": redis_url, "ROUTER_ADMIN_TOKEN": token, "ROUTER_POLICY_POLL_S": "3600",
               "ROUTER_POLICY_SIGNING_KEY": "shared-by-the-replicas-0123456789abcdef"}
        gws = []
        for i in range(n):
            policy = write_policy(models=models, edit=edit, name=f"policy-{i}.yaml")
            gws.append(GatewayProcess(policy, env))
        started.extend(gws)
        return [g.wait_ready() for g in gws]

    yield start
    for g in started:
        g.stop()


def classify(gw: GatewayProcess, text: str, task: str = "sentiment") -> dict[str, Any]:
    r = httpx.post(gw.url + "/v1/classify", json={"task": task, "input": text}, timeout=20)
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_an_answer_cached_by_one_replica_is_read_by_the_other(
    replicas: Callable[..., list[GatewayProcess]], upstream: Upstream,
) -> None:
    a, b = replicas()
    first = classify(a, UNSURE + " [[label:negative]]")
    assert first["path"] == "foundation"
    second = classify(b, UNSURE + " [[label:negative]]")
    assert (second["path"], second["label"]) == ("cache", "negative")
    assert len(upstream.received) == 1


def test_identical_concurrent_escalations_make_one_call_across_replicas(
    replicas: Callable[..., list[GatewayProcess]], upstream: Upstream,
) -> None:
    a, b = replicas(models={"cheap": "fake-slow", "strong": "fake-slow"},
                    edit=lambda doc: (escalate_all(doc), doc["aliases"]["cheap"].update(timeout_s=10),
                                      doc["routes"]["sentiment"].update(deadline_s=10)))
    text = "a slow , slow film . [[label:positive]]"
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda gw: classify(gw, text), [a, b, a, b, a, b]))
    assert len(upstream.received) == 1, [(r["path"], r["reason"], r["latency_ms"]) for r in results]
    assert {r["label"] for r in results} == {"positive"}
    paths = sorted(r["path"] for r in results)
    assert paths.count("foundation") == 1 and paths.count("cache") == 5
    assert {r["reason"] for r in results if r["path"] == "cache"} <= {"coalesced", "cache_hit"}


def test_budget_spent_on_one_replica_stops_the_other(
    replicas: Callable[..., list[GatewayProcess]], upstream: Upstream,
) -> None:
    def tiny_budget(doc: Any) -> None:
        escalate_all(doc)
        doc["budgets"]["usd_per_hour"] = 1e-9  # the first call spends it

    a, b = replicas(edit=tiny_budget)
    assert classify(a, "first unsure film .")["path"] == "foundation"
    deadline = time.monotonic() + 10
    while True:  # b reads the shared total within its one-second refresh
        result = classify(b, f"another unsure film {time.monotonic()} .")
        if result["path"] == "degraded":
            break
        assert time.monotonic() < deadline, "replica b never saw the budget spent on replica a"
        time.sleep(0.2)
    assert result["reason"] == "budget_spent"


def test_escalations_are_logged_without_inputs_by_default(
    replicas: Callable[..., list[GatewayProcess]], redis_db: redis.Redis,
) -> None:
    (a,) = replicas(n=1)
    classify(a, UNSURE + " [[label:positive]]")
    deadline = time.monotonic() + 5
    while not redis_db.xlen(STREAM):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    (_, fields), = redis_db.xrange(STREAM)
    entry = {k.decode(): v.decode() for k, v in fields.items()}
    assert entry["route"] == "sentiment" and entry["foundation_label"] == "positive"
    assert entry["reason"] == "low_confidence" and entry["alias"] == "cheap"
    assert "text" not in entry


def test_a_policy_reloaded_on_one_replica_reaches_the_other_within_a_second(
    replicas: Callable[..., list[GatewayProcess]], tmp_path: Path, redis_db: redis.Redis,
) -> None:
    """With a shared signing key, the other replica applies the signed text (its own file differs)."""
    a, b = replicas()
    # Pub/sub delivers to current subscribers only: wait until both replicas listen.
    deadline = time.monotonic() + 10
    while dict(redis_db.pubsub_numsub("gw:v1:policy")).get(b"gw:v1:policy", 0) < 2:
        assert time.monotonic() < deadline, "replicas did not subscribe to policy announcements"
        time.sleep(0.05)
    version_b = classify(b, "fine .")["policy_version"]
    policy_a = tmp_path / "policy-0.yaml"
    policy_a.write_text(policy_a.read_text().replace("min_confidence: 1.0", "min_confidence: 0.5", 1))
    r = httpx.post(a.url + "/admin/policy/reload", headers={"authorization": "Bearer t0k"})
    assert r.status_code == 200 and r.json()["changed"]
    new_version = r.json()["version"]
    assert new_version != version_b
    deadline = time.monotonic() + 1.5
    while classify(b, "fine .")["policy_version"] != new_version:
        assert time.monotonic() < deadline, "replica b did not switch within a second"
        time.sleep(0.05)
    admin = httpx.get(b.url + "/admin/policy", headers={"authorization": "Bearer t0k"}).json()
    assert admin["last_reload"]["trigger"] == "announce"


def test_a_key_budget_spent_on_one_replica_stops_the_key_on_the_other(
    write_policy: Callable[..., Path], redis_url: str, redis_db: redis.Redis, upstream: Upstream, tmp_path: Path,
) -> None:
    secret = secrets.token_urlsafe(32)
    env = {"ROUTER_REDIS__URL": redis_url, "ROUTER_AUTH__SECRET": secret, "ROUTER_POLICY_POLL_S": "3600"}
    created = subprocess.run([sys.executable, "-m", "router", "keys", "create", "--name", "team-a",
                              "--usd-per-hour", "0.000000001"], cwd=ROOT, env={**os.environ, **env},
                             capture_output=True, text=True, timeout=60, check=False)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    other = subprocess.run([sys.executable, "-m", "router", "keys", "create", "--name", "team-b"], cwd=ROOT,
                           env={**os.environ, **env}, capture_output=True, text=True, timeout=60,
                           check=True).stdout.strip()
    gws = [GatewayProcess(write_policy(edit=escalate_all, name=f"policy-{i}.yaml"), env) for i in range(2)]
    try:
        a, b = (g.wait_ready(timeout_s=90) for g in gws)
        headers = {"authorization": f"Bearer {key}"}
        r = httpx.post(a.url + "/v1/classify", json={"task": "sentiment", "input": UNSURE}, headers=headers,
                       timeout=20)
        assert r.status_code == 200 and r.json()["path"] == "foundation", r.text
        deadline = time.monotonic() + 10
        while True:  # b learns a's spend from Redis within about a second
            r = httpx.post(b.url + "/v1/classify", json={"task": "sentiment", "input": "fine ."}, headers=headers,
                           timeout=20)
            if r.status_code == 429:
                break
            assert r.status_code == 200, r.text
            assert time.monotonic() < deadline, "replica b never saw the key's budget spent on replica a"
            time.sleep(0.2)
        assert r.json()["error"]["code"] == "insufficient_quota" and int(r.headers["retry-after"]) >= 1
        # Another key is not affected.
        r = httpx.post(b.url + "/v1/classify", json={"task": "sentiment", "input": "fine ."},
                       headers={"authorization": f"Bearer {other}"}, timeout=20)
        assert r.status_code == 200
    finally:
        logs = "".join(g.stop() for g in gws)
    assert key.removeprefix("hr-") not in logs and other.removeprefix("hr-") not in logs
    assert "API keys: 2 active in redis hash gw:v1:keys" in logs
