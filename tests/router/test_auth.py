"""API keys on /v1/*: created with the real CLI, checked by a real gateway (in process or served
on loopback), through httpx and the official openai SDK. Keys live in a keys file (no Redis) or
in the test Redis.
"""

from __future__ import annotations

import concurrent.futures
import logging
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis
from prometheus_client import CollectorRegistry
from typer.testing import CliRunner, Result

from ops.cli import app as cli_app
from router.app import create_app
from router.auth import ExposureError, check_exposure
from router.settings import AuthSettings, Settings
from tests.conftest import ROOT
from tests.fake_upstream import Upstream
from tests.gateway_process import GatewayProcess, free_port
from tests.server_thread import ServerThread

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

SECRET = secrets.token_urlsafe(32)
POSITIVE = "a gorgeous , witty , seductive movie ."
UNSURE = "the film runs two hours ."


def escalate_all(doc: Any) -> None:
    for route in ("sentiment", "spam", "support"):
        doc["routes"][route]["min_confidence"] = 1.0


def answer_positive(doc: Any) -> None:
    """The tf-idf `sentiment` answers POSITIVE (0.97) itself, whatever threshold the policy ships."""
    doc["routes"]["sentiment"]["min_confidence"] = 0.9


@pytest.fixture
def keys_env(tmp_path: Path) -> dict[str, str | None]:
    """Environment for `hybrid-router keys` against a keys file (no Redis)."""
    return {"ROUTER_AUTH__SECRET": SECRET, "ROUTER_AUTH__KEYS_FILE": str(tmp_path / "state" / "keys.json"),
            "ROUTER_REDIS__URL": None}


def invoke(env: dict[str, str | None], *args: str) -> Result:
    """`hybrid-router keys ...` in process; in a thread, since it runs its own event loop."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(CliRunner().invoke, cli_app, ["keys", *args], env=env).result()


def keys_cli(env: dict[str, str | None], *args: str) -> str:
    result = invoke(env, *args)
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


@pytest.fixture
def auth_settings(write_policy: Callable[..., Path], make_settings: Callable[..., Settings],
                  keys_env: dict[str, str | None]) -> Callable[..., Settings]:
    def make(use_redis: bool = False, edit: Callable[[Any], None] = escalate_all, **auth: Any) -> Settings:
        return make_settings(write_policy(edit=edit), use_redis=use_redis, auth=AuthSettings(
            secret=SECRET, keys_file=Path(str(keys_env["ROUTER_AUTH__KEYS_FILE"])), refresh_s=0.2, **auth))
    return make


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def error_of(r: httpx.Response) -> dict[str, Any]:
    return dict(r.json()["error"])


async def test_missing_wrong_and_unknown_keys_get_401_with_www_authenticate(
    auth_settings: Callable[..., Settings], client_for: Any, keys_env: dict[str, str | None], upstream: Upstream,
) -> None:
    key = keys_cli(keys_env, "create", "--name", "team-a")
    assert key.startswith("hr-") and len(key) == 35
    client = client_for(auth_settings(edit=answer_positive))
    body = {"task": "sentiment", "input": POSITIVE}
    cases = {
        "missing_api_key": {},
        "invalid_api_key": bearer("hr-" + secrets.token_urlsafe(24)),  # well formed, never issued
    }
    for code, headers in cases.items():
        r = await client.post("/v1/classify", json=body, headers=headers)
        assert r.status_code == 401, r.text
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert error_of(r)["type"] == "authentication_error" and error_of(r)["code"] == code
    for garbage in (key + "x", key[:-1], "Basic " + key, key.upper()):
        headers = {"authorization": garbage if garbage.startswith("Basic") else f"Bearer {garbage}"}
        assert (await client.post("/v1/classify", json=body, headers=headers)).status_code == 401
    for path in ("/v1/models",):
        assert (await client.get(path)).status_code == 401
    r = await client.post("/v1/classify", json=body, headers=bearer(key))
    assert r.status_code == 200, r.text
    assert r.json()["label"] == "positive"
    assert upstream.received == []
    # Health endpoints stay open: probes carry no key.
    assert (await client.get("/healthz")).status_code == 200


def test_a_revoked_key_is_refused_within_the_refresh_interval(
    auth_settings: Callable[..., Settings], keys_env: dict[str, str | None],
) -> None:
    key = keys_cli(keys_env, "create", "--name", "team-a")
    server = ServerThread(create_app(auth_settings(edit=answer_positive))).start()
    try:
        body = {"task": "sentiment", "input": POSITIVE}
        assert httpx.post(server.url + "/v1/classify", json=body, headers=bearer(key)).status_code == 200
        assert keys_cli(keys_env, "revoke", "team-a") == "revoked 'team-a'"
        revoked_at = time.monotonic()
        while (r := httpx.post(server.url + "/v1/classify", json=body, headers=bearer(key))).status_code == 200:
            assert time.monotonic() - revoked_at < 2.0, "revocation not applied within 10 x refresh_s"
            time.sleep(0.05)
        assert r.status_code == 401 and error_of(r)["message"] == "API key revoked"
    finally:
        server.stop()


async def test_routes_and_aliases_outside_the_key_get_403_naming_them(
    auth_settings: Callable[..., Settings], client_for: Any, keys_env: dict[str, str | None], upstream: Upstream,
) -> None:
    key = keys_cli(keys_env, "create", "--name", "team-a", "--routes", "sentiment,support", "--aliases", "cheap")
    client = client_for(auth_settings())
    r = await client.post("/v1/classify", json={"task": "spam", "input": "win money now"}, headers=bearer(key))
    assert r.status_code == 403, r.text
    assert error_of(r) == {"message": "this API key may not use route 'spam'", "type": "permission_error",
                           "param": "task", "code": "model_not_permitted"}
    chat = {"messages": [{"role": "user", "content": "hello"}]}
    r = await client.post("/v1/chat/completions", json={"model": "strong", **chat}, headers=bearer(key))
    assert r.status_code == 403 and "alias 'strong'" in error_of(r)["message"]
    # A permitted route whose escalation needs an alias the key may not use: the chat route
    # (escalates to `strong`) is refused naming the alias; nothing reached the upstream.
    r = await client.post("/v1/chat/completions", json={"model": "support", **chat}, headers=bearer(key))
    assert r.status_code == 403 and "alias 'strong'" in error_of(r)["message"], r.text
    assert upstream.received == []
    # Permitted: sentiment escalates to cheap.
    r = await client.post("/v1/classify", json={"task": "sentiment", "input": UNSURE + " [[label:negative]]"},
                          headers=bearer(key))
    assert r.status_code == 200 and r.json()["path"] == "foundation", r.text
    models = await client.get("/v1/models", headers=bearer(key))
    assert sorted(m["id"] for m in models.json()["data"]) == ["cheap", "sentiment", "support"]


async def test_a_classification_escalating_to_a_forbidden_alias_degrades(
    auth_settings: Callable[..., Settings], client_for: Any, keys_env: dict[str, str | None], upstream: Upstream,
) -> None:
    key = keys_cli(keys_env, "create", "--name", "team-a", "--aliases", "strong")
    client = client_for(auth_settings())
    r = await client.post("/v1/classify", json={"task": "sentiment", "input": UNSURE}, headers=bearer(key))
    assert r.status_code == 200
    assert (r.json()["path"], r.json()["reason"]) == ("degraded", "alias_not_permitted")
    assert upstream.received == []


async def test_over_the_request_rate_gets_429_with_retry_after(
    auth_settings: Callable[..., Settings], client_for: Any, keys_env: dict[str, str | None],
    registry: CollectorRegistry,
) -> None:
    key = keys_cli(keys_env, "create", "--name", "team-a", "--rpm", "3")
    other = keys_cli(keys_env, "create", "--name", "team-b", "--rpm", "3")
    client = client_for(auth_settings(edit=answer_positive))
    body = {"task": "sentiment", "input": POSITIVE}
    for _ in range(3):
        assert (await client.post("/v1/classify", json=body, headers=bearer(key))).status_code == 200
    r = await client.post("/v1/classify", json=body, headers=bearer(key))
    assert r.status_code == 429, r.text
    assert error_of(r)["code"] == "rate_limit_exceeded" and error_of(r)["type"] == "rate_limit_error"
    assert 1 <= int(r.headers["retry-after"]) <= 60
    assert (await client.post("/v1/classify", json=body, headers=bearer(other))).status_code == 200
    assert registry.get_sample_value("hybrid_router_key_requests_total", {"key": "team-a", "outcome": "ok"}) == 3
    assert registry.get_sample_value("hybrid_router_key_requests_total",
                                     {"key": "team-a", "outcome": "rate_limited"}) == 1


async def test_token_limit_counts_foundation_tokens_after_the_call(
    auth_settings: Callable[..., Settings], client_for: Any, keys_env: dict[str, str | None], upstream: Upstream,
) -> None:
    key = keys_cli(keys_env, "create", "--name", "team-a", "--tpm", "5")
    client = client_for(auth_settings())
    first = await client.post("/v1/classify", json={"task": "sentiment", "input": UNSURE}, headers=bearer(key))
    assert first.json()["path"] == "foundation"  # this call's tokens cross the limit; it completes
    r = await client.post("/v1/classify", json={"task": "sentiment", "input": "another " + UNSURE},
                          headers=bearer(key))
    assert r.status_code == 429 and "tokens per minute" in error_of(r)["message"]
    assert len(upstream.received) == 1


async def test_over_the_spend_budget_gets_429_insufficient_quota(
    auth_settings: Callable[..., Settings], client_for: Any, keys_env: dict[str, str | None], upstream: Upstream,
) -> None:
    key = keys_cli(keys_env, "create", "--name", "team-a", "--usd-per-hour", "0.000000001")
    client = client_for(auth_settings())
    assert (await client.post("/v1/classify", json={"task": "sentiment", "input": UNSURE},
                              headers=bearer(key))).json()["path"] == "foundation"
    r = await client.post("/v1/classify", json={"task": "sentiment", "input": POSITIVE}, headers=bearer(key))
    assert r.status_code == 429
    assert error_of(r)["type"] == "insufficient_quota" and error_of(r)["code"] == "insufficient_quota"
    assert 1 <= int(r.headers["retry-after"]) <= 3600
    assert r.headers["x-should-retry"] == "false"  # the OpenAI SDKs then do not retry at once


async def test_the_key_tenant_namespaces_the_cache(
    auth_settings: Callable[..., Settings], client_for: Any, keys_env: dict[str, str | None], upstream: Upstream,
) -> None:
    a = keys_cli(keys_env, "create", "--name", "team-a")
    b = keys_cli(keys_env, "create", "--name", "team-b")
    a2 = keys_cli(keys_env, "create", "--name", "team-a-ci", "--tenant", "team-a")
    client = client_for(auth_settings())
    body = {"task": "sentiment", "input": UNSURE + " [[label:negative]]"}
    paths = [(await client.post("/v1/classify", json=body, headers=bearer(k))).json()["path"] for k in (a, b, a2)]
    assert paths == ["foundation", "foundation", "cache"]
    assert len(upstream.received) == 2


async def test_metric_labels_are_capped_key_names(
    auth_settings: Callable[..., Settings], client_for: Any, keys_env: dict[str, str | None],
    registry: CollectorRegistry,
) -> None:
    keys = [keys_cli(keys_env, "create", "--name", f"team-{i}") for i in range(3)]
    client = client_for(auth_settings(edit=lambda doc: None, metric_keys=2))
    for k in keys:
        await client.post("/v1/classify", json={"task": "sentiment", "input": POSITIVE}, headers=bearer(k))
    await client.post("/v1/classify", json={"task": "sentiment", "input": POSITIVE})
    values = {(s.labels["key"], s.labels["outcome"]): s.value for m in registry.collect()
              if m.name == "hybrid_router_key_requests" for s in m.samples if s.name.endswith("_total")}
    assert values == {("team-0", "ok"): 1, ("team-1", "ok"): 1, ("other", "ok"): 1, ("none", "invalid_key"): 1}


async def test_metrics_token_protects_metrics(
    make_settings: Callable[..., Settings], write_policy: Callable[..., Path], client_for: Any,
) -> None:
    client = client_for(make_settings(write_policy(), use_redis=False, metrics_token="m" * 20))
    r = await client.get("/metrics")
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    assert (await client.get("/metrics", headers=bearer("m" * 20))).status_code == 200
    # /v1 stays open without an auth secret on loopback.
    assert (await client.post("/v1/classify", json={"task": "sentiment", "input": POSITIVE})).status_code == 200


# ---- the official SDK ---------------------------------------------------------------------------

@pytest.fixture
def served(auth_settings: Callable[..., Settings]) -> Iterator[ServerThread]:
    server = ServerThread(create_app(auth_settings(edit=answer_positive))).start()
    yield server
    server.stop()


def test_the_openai_sdk_sees_401_403_and_200(served: ServerThread, keys_env: dict[str, str | None]) -> None:
    key = keys_cli(keys_env, "create", "--name", "sdk", "--routes", "sentiment", "--aliases", "cheap")
    messages: Any = [{"role": "user", "content": POSITIVE}]
    wrong = openai.OpenAI(base_url=served.url + "/v1", api_key="hr-" + "x" * 32, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as denied:
        wrong.chat.completions.create(model="sentiment", messages=messages)
    assert denied.value.code == "invalid_api_key"
    sdk = openai.OpenAI(base_url=served.url + "/v1", api_key=key, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError) as forbidden:
        sdk.chat.completions.create(model="spam", messages=messages)
    assert forbidden.value.code == "model_not_permitted" and "'spam'" in forbidden.value.message
    done = sdk.chat.completions.create(model="sentiment", messages=messages)
    assert done.choices[0].message.content == "positive"
    assert [m.id for m in sdk.models.list()] == ["sentiment", "cheap"]


# ---- secure by default --------------------------------------------------------------------------

def test_no_keys_on_a_public_address_refuses_to_start(tmp_path: Path) -> None:
    env = {"ROUTER_AUTH__SECRET": "", "ROUTER_HOST": "0.0.0.0", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "router", "serve", "--port", str(free_port())], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "refusing to serve /v1/* on 0.0.0.0 without API keys" in done.stderr
    assert "ROUTER_AUTH__DISABLED=true" in done.stderr


def test_a_served_loopback_gateway_without_keys_warns_once(write_policy: Callable[..., Path]) -> None:
    env = {"ROUTER_AUTH__SECRET": "", "ROUTER_AUTH__DISABLED": "false"}
    gw = GatewayProcess(write_policy(), env).wait_ready()
    logs = gw.stop()
    assert logs.count("no ROUTER_AUTH__SECRET") == 1, logs[-2000:]


def test_exposure_rules(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ExposureError):
        check_exposure("0.0.0.0", AuthSettings())
    with pytest.raises(ExposureError):
        check_exposure("gateway.example", AuthSettings())
    with caplog.at_level(logging.WARNING, "router.auth"):
        for host in ("127.0.0.1", "::1", "localhost"):
            check_exposure(host, AuthSettings())
        check_exposure("0.0.0.0", AuthSettings(disabled=True))
        check_exposure("0.0.0.0", AuthSettings(secret=SECRET))  # keys on: nothing to say
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 4
    assert all("without API keys" in m for m in messages[:3]) and "switched off" in messages[3]
    with pytest.raises(ValueError, match="at least 32"):
        AuthSettings(secret="short")


def test_keys_cli_refuses_without_a_secret_and_validates_names(keys_env: dict[str, str | None]) -> None:
    result = invoke({**keys_env, "ROUTER_AUTH__SECRET": None}, "create", "--name", "a")
    assert result.exit_code == 2 and "ROUTER_AUTH__SECRET" in result.output
    result = invoke(keys_env, "create", "--name", "Team A")
    assert result.exit_code == 2 and "name" in result.output
    keys_cli(keys_env, "create", "--name", "a")
    result = invoke(keys_env, "create", "--name", "a")
    assert result.exit_code == 1 and "active" in result.output
    path = Path(str(keys_env["ROUTER_AUTH__KEYS_FILE"]))
    assert path.stat().st_mode & 0o777 == 0o600
    listing = keys_cli(keys_env, "list")
    assert listing.splitlines()[1].split()[:2] == ["a", "a"]


# ---- what is stored and shown ----------------------------------------------------------------------

async def test_no_key_reaches_redis_metrics_or_logs(
    auth_settings: Callable[..., Settings], client_for: Any, keys_env: dict[str, str | None], redis_url: str,
    redis_db: redis.Redis, upstream: Upstream, caplog: pytest.LogCaptureFixture,
) -> None:
    env = {**keys_env, "ROUTER_REDIS__URL": redis_url}
    key = keys_cli(env, "create", "--name", "team-a", "--usd-per-day", "5", "--rpm", "100", "--tpm", "100000")
    revoked = keys_cli(env, "create", "--name", "team-b")
    keys_cli(env, "revoke", "team-b")
    wrong = "hr-" + secrets.token_urlsafe(24)
    client = client_for(auth_settings(use_redis=True))
    with caplog.at_level(logging.DEBUG):
        for k in (key, revoked, wrong):
            await client.post("/v1/classify", json={"task": "sentiment", "input": UNSURE}, headers=bearer(k))
            await client.post("/v1/chat/completions", headers=bearer(k),
                              json={"model": "cheap", "messages": [{"role": "user", "content": "hi"}]})
        await client.app.state.auth.flush()  # type: ignore[attr-defined]
        metrics = (await client.get("/metrics")).text
    assert 'key="team-a"' in metrics
    stored = b""
    for name in redis_db.keys("*"):
        kind = redis_db.type(name)
        stored += name
        if kind == b"string":
            stored += redis_db.get(name) or b""
        elif kind == b"hash":
            stored += b"".join(f + v for f, v in redis_db.hgetall(name).items())
        elif kind == b"stream":
            stored += repr(redis_db.xrange(name)).encode()
    assert redis_db.hlen("gw:v1:keys") == 2
    assert any(n.startswith(b"gw:v1:budget:{key:team-a}:") for n in redis_db.keys("*"))
    logs = "\n".join(r.getMessage() for r in caplog.records) + caplog.text
    for k in (key, revoked, wrong):
        secret_part = k.removeprefix("hr-")
        assert secret_part.encode() not in stored
        assert secret_part not in metrics and secret_part not in logs
    # Nor the prompt (escalated: it went through litellm), even with logging at DEBUG.
    assert UNSURE.encode() not in stored and UNSURE not in metrics and UNSURE not in logs


async def test_the_access_line_names_the_key_and_never_shows_it(
    auth_settings: Callable[..., Settings], client_for: Any, keys_env: dict[str, str | None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    key = keys_cli(keys_env, "create", "--name", "team-a")
    client = client_for(auth_settings(edit=answer_positive))
    with caplog.at_level(logging.INFO, logger="router.access"):
        ok = await client.post("/v1/classify", json={"task": "sentiment", "input": POSITIVE},
                               headers={**bearer(key), "x-request-id": "keyed-1"})
        refused = await client.post("/v1/classify", json={"task": "sentiment", "input": POSITIVE},
                                    headers={**bearer(key + "x"), "x-request-id": "keyed-2"})
    assert (ok.status_code, refused.status_code) == (200, 401)
    lines = {r.request_id: r for r in caplog.records if r.name == "router.access"}  # type: ignore[attr-defined]
    assert lines["keyed-1"].key == "team-a" and lines["keyed-1"].status == 200  # type: ignore[attr-defined]
    assert not hasattr(lines["keyed-2"], "key") and lines["keyed-2"].error == "invalid_api_key"  # type: ignore[attr-defined]
    assert not [r for r in caplog.records if key[3:] in str(vars(r))], "a key reached a log record"
