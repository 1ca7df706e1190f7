"""Against Redis servers the tests start themselves: a 3-master Cluster, and a server that is
stopped and restarted in the middle of traffic (never the machine's shared Redis)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from prometheus_client import CollectorRegistry
from redis.cluster import RedisCluster

from router.app import create_app
from router.settings import FoundationSettings, RedisSettings, Settings
from tests.gateway_process import free_port

pytestmark = [pytest.mark.redis, pytest.mark.anyio]


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} not found (CI installs redis-server)")
        pytest.skip(f"{name} not found: install Debian's redis-server to run this test")
    return path


class RedisServer:
    def __init__(self, workdir: Path, port: int | None = None, *extra: str) -> None:
        self.fixed_port = port is not None
        self.port = port or free_port()
        self.workdir = workdir
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        """Start the server; if its port was taken meanwhile (the process exits), try another."""
        for attempt in range(3):
            log = (self.workdir / f"redis-{self.port}.log").open("wb")
            self.proc = subprocess.Popen(
                [_binary("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(self.workdir), *self.extra],
                stdout=log, stderr=subprocess.STDOUT)
            client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=0.5)
            deadline = time.monotonic() + 10
            try:
                while self.proc.poll() is None:
                    try:
                        client.ping()
                        return self
                    except redis.RedisError:
                        assert time.monotonic() < deadline, "redis-server did not answer within 10 s"
                        time.sleep(0.05)
            finally:
                client.close()
                log.close()
            if attempt < 2 and not self.fixed_port:
                self.port = free_port()
        raise AssertionError(f"redis-server exited: {(self.workdir / f'redis-{self.port}.log').read_text()[-500:]}")

    def start_authenticated(self, password: str) -> RedisServer:
        """`start` for a server with `requirepass`: an unauthenticated PING answers NOAUTH, which
        proves the server is up."""
        self.proc = subprocess.Popen(
            [_binary("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir), *self.extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(host="127.0.0.1", port=self.port, password=password, socket_timeout=0.5)
        deadline = time.monotonic() + 10
        try:
            while True:
                try:
                    client.ping()
                    return self
                except redis.RedisError:
                    assert self.proc.poll() is None, "redis-server exited"
                    assert time.monotonic() < deadline, "redis-server did not answer within 10 s"
                    time.sleep(0.05)
        finally:
            client.close()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


def _settings(write_policy: Callable[..., Path], redis_settings: RedisSettings) -> Settings:
    def edit(doc: Any) -> None:
        doc["routes"]["sentiment"]["min_confidence"] = 1.0

    return Settings(policy_path=write_policy(edit=edit), redis=redis_settings, foundation=FoundationSettings(),
                    _env_file=None)  # type: ignore[call-arg]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[list[int]]:
    servers = []
    for i in range(3):
        d = tmp_path / f"node{i}"
        d.mkdir()
        servers.append(RedisServer(d, None, "--cluster-enabled", "yes", "--cluster-config-file",
                                   str(d / "nodes.conf"), "--cluster-node-timeout", "2000").start())
    ports = [s.port for s in servers]
    try:
        subprocess.run([_binary("redis-cli"), "--cluster", "create", *[f"127.0.0.1:{p}" for p in ports],
                        "--cluster-replicas", "0", "--cluster-yes"], check=True, capture_output=True, timeout=30)
        deadline = time.monotonic() + 15
        while b"cluster_state:ok" not in subprocess.run(
                [_binary("redis-cli"), "-p", str(ports[0]), "cluster", "info"], capture_output=True, check=False).stdout:
            assert time.monotonic() < deadline, "cluster did not become ok"
            time.sleep(0.1)
        yield ports
    finally:
        for s in servers:
            s.stop()


async def test_gateway_on_a_three_master_cluster(cluster: list[int], write_policy: Callable[..., Path]) -> None:
    settings = _settings(write_policy, RedisSettings(url=f"redis://127.0.0.1:{cluster[0]}", cluster=True,
                                                     timeout_s=0.5))
    registry = CollectorRegistry()
    app = create_app(settings, registry=registry)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
        texts = [f"film number {i} [[label:positive]]" for i in range(12)]
        first = await client.post("/v1/classify", json={"task": "sentiment", "input": texts})
        assert {r["path"] for r in first.json()["results"]} == {"foundation"}
        again = await client.post("/v1/classify", json={"task": "sentiment", "input": texts})
        assert {r["path"] for r in again.json()["results"]} == {"cache"}
        assert (await client.get("/readyz")).json()["cache"]["state"] == "ok"
        await app.state.gateway.escalation_log.drain()
        await app.state.gateway.cache.close()
    assert registry.get_sample_value("hybrid_router_cache_events_total", {"event": "error"}) is None
    rc = RedisCluster(host="127.0.0.1", port=cluster[0])
    keys = [k for node_keys in [rc.keys(target_nodes=RedisCluster.ALL_NODES)] for k in node_keys]
    resp = [k for k in keys if k.startswith(b"gw:v1:resp:")]
    assert len(resp) == 12
    assert len({rc.keyslot(k) for k in resp}) > 1, "answers spread over the cluster's slots"
    assert rc.xlen("gw:v1:escalations") == 12
    rc.close()


async def test_redis_restarted_mid_traffic_loses_no_request(tmp_path: Path, write_policy: Callable[..., Path]) -> None:
    server = RedisServer(tmp_path).start()
    server.fixed_port = True  # the restart must come back where the gateway looks
    settings = _settings(write_policy, RedisSettings(url=f"redis://127.0.0.1:{server.port}/0", timeout_s=0.05,
                                                     breaker_failures=3, breaker_reset_s=0.5,
                                                     near_cache_ttl_s=0))  # exercise Redis itself
    registry = CollectorRegistry()
    app = create_app(settings, registry=registry)
    statuses: list[int] = []
    paths: list[str] = []
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
            async def send(n: int) -> None:
                for i in range(n):
                    r = await client.post("/v1/classify", json={"task": "sentiment", "input": f"film {i % 5} ."})
                    statuses.append(r.status_code)
                    paths.append(r.json().get("path", "?"))

            await send(20)
            server.stop()
            await send(40)  # Redis down: served from foundation / degraded, never an error
            server.start()
            deadline = time.monotonic() + 10
            while (await client.get("/readyz")).json()["cache"]["state"] != "ok":
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.6)  # past the breaker's reset: the next request probes Redis again
            await send(20)
            await app.state.gateway.cache.close()
    finally:
        server.stop()
    assert set(statuses) == {200}
    assert registry.get_sample_value("hybrid_router_cache_events_total", {"event": "error"}) >= 1
    assert paths[-5:] == ["cache"] * 5, "after the restart, answers are cached and served again"


SENTINEL_PASSWORD = "sentinel-pass"
MASTER_PASSWORD = "master-pass"


@pytest.fixture(scope="module")
def sentinel_with_passwords(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int]]:
    """A master with `requirepass` and a Sentinel with its own `requirepass`: (master port, sentinel port).

    Shared by this module's Sentinel tests (only the one with the right passwords writes to it)."""
    tmp_path = tmp_path_factory.mktemp("sentinel")
    master = RedisServer(tmp_path, None, "--requirepass", MASTER_PASSWORD).start_authenticated(MASTER_PASSWORD)
    sentinel_port = free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(f"port {sentinel_port}\nbind 127.0.0.1\ndir {tmp_path}\nrequirepass {SENTINEL_PASSWORD}\n"
                    f"sentinel monitor mymaster 127.0.0.1 {master.port} 1\n"
                    f"sentinel auth-pass mymaster {MASTER_PASSWORD}\n")
    sentinel = subprocess.Popen([_binary("redis-server"), str(conf), "--sentinel"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        probe = redis.Redis(host="127.0.0.1", port=sentinel_port, password=SENTINEL_PASSWORD, socket_timeout=0.5)
        deadline = time.monotonic() + 10
        while True:
            try:
                if probe.sentinel_get_master_addr_by_name("mymaster"):
                    break
            except redis.RedisError:
                pass
            assert time.monotonic() < deadline, "sentinel did not come up"
            time.sleep(0.1)
        with pytest.raises(redis.AuthenticationError):  # the Sentinel really wants its password
            redis.Redis(host="127.0.0.1", port=sentinel_port, socket_timeout=0.5).sentinel_masters()
        probe.close()
        yield master.port, sentinel_port
    finally:
        sentinel.terminate()
        sentinel.wait(timeout=10)
        master.stop()


async def test_gateway_through_sentinel_with_passwords(
    sentinel_with_passwords: tuple[int, int], write_policy: Callable[..., Path],
) -> None:
    """As README says: the Sentinels' password in SENTINEL_PASSWORD, the master's in the URL."""
    master_port, sentinel_port = sentinel_with_passwords
    settings = _settings(write_policy, RedisSettings(
        url=f"redis://:{MASTER_PASSWORD}@mymaster/0", sentinels=(f"127.0.0.1:{sentinel_port}",),
        sentinel_master="mymaster", sentinel_password=SENTINEL_PASSWORD, timeout_s=0.5))
    registry = CollectorRegistry()
    app = create_app(settings, registry=registry)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
        body = {"task": "sentiment", "input": "sentinel film [[label:negative]]"}
        assert (await client.post("/v1/classify", json=body)).json()["path"] == "foundation"
        assert (await client.post("/v1/classify", json=body)).json()["path"] == "cache"
        assert (await client.get("/readyz")).json()["cache"]["state"] == "ok"
        await app.state.gateway.escalation_log.drain()
        await app.state.gateway.cache.close()
    assert registry.get_sample_value("hybrid_router_cache_events_total", {"event": "error"}) is None
    direct = redis.Redis(host="127.0.0.1", port=master_port, password=MASTER_PASSWORD)
    assert len(direct.keys("gw:v1:resp:*")) == 1
    direct.close()


@pytest.mark.parametrize("wrong", ["sentinel", "master"])
async def test_a_wrong_sentinel_or_master_password_degrades_to_no_cache(
    wrong: str, sentinel_with_passwords: tuple[int, int], write_policy: Callable[..., Path],
) -> None:
    _, sentinel_port = sentinel_with_passwords
    settings = _settings(write_policy, RedisSettings(
        url=f"redis://:{'nope' if wrong == 'master' else MASTER_PASSWORD}@mymaster/0",
        sentinels=(f"127.0.0.1:{sentinel_port}",), sentinel_master="mymaster",
        sentinel_password="nope" if wrong == "sentinel" else SENTINEL_PASSWORD, timeout_s=0.5))
    registry = CollectorRegistry()
    app = create_app(settings, registry=registry)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
        r = await client.post("/v1/classify", json={"task": "sentiment", "input": "a film [[label:positive]]"})
        assert r.status_code == 200 and r.json()["path"] == "foundation"
        assert (await client.get("/readyz")).json()["cache"]["state"] == "unreachable"
        await app.state.gateway.cache.close()
    assert registry.get_sample_value("hybrid_router_cache_events_total", {"event": "error"}) >= 1
