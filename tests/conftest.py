"""Small shared fixtures: a real Redis, the local OpenAI-compatible upstream, apps and clients.

Redis: the session starts its own `redis-server` (the binary on PATH) on a free loopback port,
without persistence, and stops it at the end; tests write only to that server. To use another
server instead, set `ROUTER_TEST_REDIS_URL` explicitly (its database is FLUSHED before each test,
so point it at a dedicated database). Without the binary and without the variable, Redis tests
skip with the reason on a developer's machine and fail in CI (`CI` set), where `.ci/run` installs
the binary.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import redis
from prometheus_client import CollectorRegistry
from ruamel.yaml import YAML

from router.app import create_app
from router.settings import FoundationSettings, RedisSettings, Settings
from tests.fake_upstream import Upstream
from tests.redis_server import RedisServer, ping

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    explicit = os.environ.get("ROUTER_TEST_REDIS_URL")
    if explicit:
        if not ping(explicit):
            pytest.fail("ROUTER_TEST_REDIS_URL is set but nothing answers there")
        yield explicit
        return
    server = RedisServer()
    try:
        server.start()
    except FileNotFoundError:
        if os.environ.get("CI"):
            pytest.fail("no redis-server binary (CI must provide one; .ci/run installs it)")
        pytest.skip("no redis-server binary on PATH and ROUTER_TEST_REDIS_URL unset: Redis tests skipped")
    yield server.url
    server.close()


@pytest.fixture
def redis_db(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()  # before, as arq does: a failed test leaves its keys for inspection
    yield client
    client.close()


@pytest.fixture(scope="session")
def upstream_server() -> Iterator[Upstream]:
    server = Upstream(slow_s=3.0).start()
    yield server
    server.stop()


@pytest.fixture
def upstream(upstream_server: Upstream) -> Upstream:
    upstream_server.received.clear()
    upstream_server.received_headers.clear()
    return upstream_server


def bundled_names() -> set[str]:
    return {p.name for p in (ROOT / "specialists" / "bundled").iterdir() if (p / "manifest.json").exists()}


@pytest.fixture
def write_policy(tmp_path: Path, upstream: Upstream) -> Callable[..., Path]:
    """Write a policy: default.yaml's routes (those whose specialists exist) + aliases on the upstream.

    `models` maps alias -> fake model (default `fake-ok` for every alias); `edit(doc)` may change
    the parsed document before it is written. The routes' `cascade` tiers are dropped unless
    `cascades=True`: tests force an escalation by raising the route's own `min_confidence`, which a
    tier-2 specialist would otherwise answer (tests/router/test_cascade.py keeps them).
    """

    def write(models: dict[str, str] | None = None, edit: Callable[[Any], None] | None = None,
              name: str = "policy.yaml", cascades: bool = False) -> Path:
        yaml = YAML(typ="rt")
        doc = yaml.load((ROOT / "policies" / "default.yaml").read_text())
        present = bundled_names()
        for route in list(doc["routes"]):
            if doc["routes"][route]["specialist"] not in present:
                del doc["routes"][route]
            elif not cascades:
                doc["routes"][route].pop("cascade", None)
        for alias, spec in doc["aliases"].items():
            spec["model"] = "openai/" + (models or {}).get(alias, "fake-ok")
            spec["api_base"] = upstream.api_base
            spec["price_as"] = "gpt-4o-mini"
            spec["max_retries"] = 0
            spec["timeout_s"] = 2
        if edit is not None:
            edit(doc)
        path = tmp_path / name
        with path.open("w") as f:
            yaml.dump(doc, f)
        return path

    return write


@pytest.fixture
def make_settings(redis_url: str) -> Callable[..., Settings]:
    def make(policy_path: Path, *, use_redis: bool = True, **kwargs: Any) -> Settings:
        redis_settings = RedisSettings(url=redis_url) if use_redis else RedisSettings()
        return Settings(policy_path=policy_path, redis=redis_settings, foundation=FoundationSettings(),
                        _env_file=None, **kwargs)  # type: ignore[call-arg]

    return make


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
async def client_for(registry: CollectorRegistry) -> AsyncIterator[Callable[[Settings], httpx.AsyncClient]]:
    """Factory: Settings -> an httpx client driving a fresh app in process (lifespan not run).

    litellm is imported first, as the lifespan does before ``/readyz`` turns true: its import
    takes 7-12 s of CPU on a loaded 2-core machine, and a process's first escalation would
    otherwise wait for it and miss its route's 2 s deadline.
    """
    await anyio.to_thread.run_sync(importlib.import_module, "litellm")
    clients: list[httpx.AsyncClient] = []

    def make(settings: Settings) -> httpx.AsyncClient:
        app = create_app(settings, registry=registry)
        c = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway")
        c.app = app  # type: ignore[attr-defined]
        clients.append(c)
        return c

    yield make
    for c in clients:
        await c.app.state.gateway.cache.close()  # type: ignore[attr-defined]
        await c.aclose()


def requires_shared_data() -> pytest.MarkDecorator:
    return pytest.mark.skipif(not SHARED_DATA.exists(), reason=f"{SHARED_DATA} not present (a fresh clone "
                              "without the shared datasets): dataset checks skipped")
