"""Cache pressure never evicts spend: the cache lives in its own Redis (`ROUTER_REDIS__CACHE_URL`).

Budget counters carry a TTL (their window), so `volatile-lru` would evict them like any cached
answer; the deployment therefore runs two Redis servers: `redis-cache` (`allkeys-lru`, nothing
persisted) and `redis-state` (`noeviction`, AOF). Here both are real servers started on free
ports, the cache one with a small `maxmemory`, filled far beyond it by the gateway's own cache
writes. The control runs the same fill against one shared `allkeys-lru` server and shows the
counters do get evicted there, so the assertion above it can fail.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from prometheus_client import CollectorRegistry

from router.app import create_app
from router.cache import fingerprint
from router.escalation_log import STREAM
from router.settings import FoundationSettings, RedisSettings, Settings
from tests.fake_upstream import Upstream
from tests.router.test_redis_servers import RedisServer

pytestmark = [pytest.mark.redis, pytest.mark.anyio]

CACHE_ARGS = ("--maxmemory", "4mb", "--maxmemory-policy", "allkeys-lru")
STATE_ARGS = ("--maxmemory", "64mb", "--maxmemory-policy", "noeviction", "--appendonly", "yes",
              "--appendfsync", "everysec")


def _escalate_all(doc: Any) -> None:
    doc["routes"]["sentiment"]["min_confidence"] = 1.0
    # Wait for the foundation answers (the first call loads litellm): this test needs spend.
    doc["routes"]["sentiment"]["deadline_s"] = 60


async def _spend_then_fill(settings: Settings) -> int:
    """Escalate 8 requests (spend + escalation log), then write ~24 MB of cache entries."""
    app = create_app(settings, registry=CollectorRegistry())
    gw = app.state.gateway
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
        texts = [f"review number {i} [[label:positive]]" for i in range(8)]
        r = await client.post("/v1/classify", json={"task": "sentiment", "input": texts})
        assert r.status_code == 200
        assert {x["path"] for x in r.json()["results"]} == {"foundation"}
    await gw.budget.drain()
    await gw.escalation_log.drain()
    blob = b"x" * 200_000
    for i in range(120):
        await gw.cache.set(fingerprint("filler", str(i)), blob, 3600)
    await gw.cache.close()
    if gw.state is not gw.cache.state:
        await gw.state.close()
    return len(texts)


def _budget_keys(client: redis.Redis) -> dict[bytes, float]:
    return {k: float(client.get(k) or 0) for k in client.scan_iter("gw:v1:budget:*")}


async def test_cache_pressure_never_evicts_budget_counters_or_the_escalation_log(
    tmp_path: Path, write_policy: Callable[..., Path], upstream: Upstream,
) -> None:
    (tmp_path / "cache").mkdir()
    (tmp_path / "state").mkdir()
    cache = RedisServer(tmp_path / "cache", None, *CACHE_ARGS).start()
    state = RedisServer(tmp_path / "state", None, *STATE_ARGS).start()
    state.fixed_port = True  # restarted below on the same port and directory
    try:
        settings = Settings(policy_path=write_policy(edit=_escalate_all), foundation=FoundationSettings(),
                            redis=RedisSettings(url=f"redis://127.0.0.1:{state.port}/0",
                                                cache_url=f"redis://127.0.0.1:{cache.port}/0", timeout_s=0.5),
                            _env_file=None)  # type: ignore[call-arg]
        n = await _spend_then_fill(settings)

        cache_client = redis.Redis(port=cache.port)
        assert int(cache_client.info("stats")["evicted_keys"]) > 0, "the fill must have caused evictions"
        assert not list(cache_client.scan_iter("gw:v1:budget:*")), "spend is never written to the cache Redis"
        cache_client.close()

        state_client = redis.Redis(port=state.port)
        budgets = _budget_keys(state_client)
        assert len(budgets) == 2 and all(v > 0 for v in budgets.values()), budgets  # hour and day windows
        assert state_client.xlen(STREAM) == n
        assert not list(state_client.scan_iter("gw:v1:resp:*")), "answers are cached in the cache Redis only"
        state_client.close()

        # The state server persists (AOF): a restart keeps what was spent.
        state.stop()
        state.start()
        state_client = redis.Redis(port=state.port)
        assert _budget_keys(state_client) == budgets
        assert state_client.xlen(STREAM) == n
        state_client.close()
    finally:
        cache.stop()
        state.stop()


async def test_control_one_shared_allkeys_lru_redis_loses_budget_counters(
    tmp_path: Path, write_policy: Callable[..., Path], upstream: Upstream,
) -> None:
    shared = RedisServer(tmp_path, None, *CACHE_ARGS).start()
    try:
        settings = Settings(policy_path=write_policy(edit=_escalate_all), foundation=FoundationSettings(),
                            redis=RedisSettings(url=f"redis://127.0.0.1:{shared.port}/0", timeout_s=0.5),
                            _env_file=None)  # type: ignore[call-arg]
        await _spend_then_fill(settings)
        client = redis.Redis(port=shared.port)
        assert len(_budget_keys(client)) < 2 or not client.exists(STREAM), \
            "without a separate state Redis, cache pressure evicts spend or the log"
        client.close()
    finally:
        shared.stop()


async def test_api_keys_live_in_the_state_redis_and_survive_cache_pressure(
    tmp_path: Path, write_policy: Callable[..., Path],
) -> None:
    """A key made by `hybrid-router keys create` (the CLI writes to ROUTER_REDIS__URL) is the key
    every replica checks, with the cache in its own Redis; filling that cache does not revoke it."""
    import concurrent.futures
    import secrets

    from typer.testing import CliRunner

    from ops.cli import app as cli_app
    from router.settings import AuthSettings

    (tmp_path / "cache").mkdir()
    (tmp_path / "state").mkdir()
    cache = RedisServer(tmp_path / "cache", None, *CACHE_ARGS).start()
    state = RedisServer(tmp_path / "state", None, *STATE_ARGS).start()
    try:
        secret = secrets.token_urlsafe(32)
        state_url, cache_url = f"redis://127.0.0.1:{state.port}/0", f"redis://127.0.0.1:{cache.port}/0"
        env = {"ROUTER_AUTH__SECRET": secret, "ROUTER_REDIS__URL": state_url, "ROUTER_REDIS__CACHE_URL": cache_url}
        with concurrent.futures.ThreadPoolExecutor(1) as pool:  # the CLI runs its own event loop
            result = pool.submit(CliRunner().invoke, cli_app, ["keys", "create", "--name", "team-a"], env=env).result()
        assert result.exit_code == 0, result.output
        key = result.stdout.strip().splitlines()[-1].split()[-1]
        settings = Settings(policy_path=write_policy(), foundation=FoundationSettings(),
                            redis=RedisSettings(url=state_url, cache_url=cache_url, timeout_s=0.5),
                            auth=AuthSettings(secret=secret, refresh_s=0.2), _env_file=None)  # type: ignore[call-arg]
        app = create_app(settings, registry=CollectorRegistry())
        gw = app.state.gateway
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
            body = {"task": "sentiment", "input": "a wonderful film ."}
            assert (await client.post("/v1/classify", json=body)).status_code == 401
            ok = await client.post("/v1/classify", json=body, headers={"authorization": f"Bearer {key}"})
            assert ok.status_code == 200, ok.text
            blob = b"x" * 200_000
            for i in range(120):
                await gw.cache.set(fingerprint("filler", str(i)), blob, 3600)
            again = await client.post("/v1/classify", json=body, headers={"authorization": f"Bearer {key}"})
            assert again.status_code == 200, again.text
        state_client, cache_client = redis.Redis(port=state.port), redis.Redis(port=cache.port)
        assert state_client.exists("gw:v1:keys") and not cache_client.exists("gw:v1:keys")
        assert int(cache_client.info("stats")["evicted_keys"]) > 0
        state_client.close()
        cache_client.close()
    finally:
        cache.stop()
        state.stop()
