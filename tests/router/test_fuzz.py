"""Arbitrary bodies never make the gateway answer 5xx (hypothesis, in process, no foundation)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from router.app import create_app
from router.settings import FoundationSettings, RedisSettings, Settings
from tests.conftest import ROOT

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
_MESSAGE = st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "assistant", "tool", "x"]),
                                  "content": st.one_of(st.text(max_size=60), st.none(), _JSON)})
_CLASSIFY = st.fixed_dictionaries(
    {"task": st.one_of(st.sampled_from(["sentiment", "spam", "intent", "support", "auto", "x"]), _JSON),
     "input": st.one_of(st.text(max_size=200), st.lists(st.text(max_size=50), max_size=5), _JSON)})
_CHAT = st.fixed_dictionaries(
    {"model": st.one_of(st.sampled_from(["sentiment", "support", "auto", "cheap", "nope"]), _JSON),
     "messages": st.one_of(st.lists(_MESSAGE, max_size=4), _JSON)},
    optional={"stream": st.one_of(st.booleans(), _JSON), "n": _JSON, "temperature": _JSON,
              "top_p": _JSON, "max_tokens": _JSON, "stop": _JSON, "seed": _JSON, "response_format": _JSON,
              "tools": _JSON, "tool_choice": _JSON, "logit_bias": _JSON, "logprobs": _JSON, "top_logprobs": _JSON,
              "stream_options": _JSON, "metadata": _JSON, "user": _JSON, "api_base": _JSON, "timeout": _JSON})


def _client() -> httpx.AsyncClient:
    # No foundation model and no Redis: every path stays in process and fast.
    settings = Settings(policy_path=ROOT / "policies" / "default.yaml", redis=RedisSettings(),
                        foundation=FoundationSettings(), _env_file=None)  # type: ignore[call-arg]
    app = create_app(settings, registry=CollectorRegistry())
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url="http://gw")


CLIENT = _client()


def _post(path: str, body: bytes) -> httpx.Response:
    async def go() -> httpx.Response:
        return await CLIENT.post(path, content=body, headers={"content-type": "application/json"})
    return asyncio.run(go())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.one_of(_CLASSIFY, _JSON))
def test_classify_never_5xx(body: Any) -> None:
    r = _post("/v1/classify", json.dumps(body).encode())
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        assert r.json()["error"]["code"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.one_of(_CHAT, _JSON))
def test_chat_never_5xx_except_foundation_unavailable(body: Any) -> None:
    r = _post("/v1/chat/completions", json.dumps(body).encode())
    if r.status_code >= 500:
        # Open-ended requests without a foundation model configured: the documented 503.
        assert r.status_code == 503 and r.json()["error"]["code"] == "foundation_unavailable", r.text
    if r.status_code >= 400:
        assert r.json()["error"]["code"]


@settings(max_examples=60, deadline=None)
@given(raw=st.binary(max_size=300))
def test_raw_bytes_never_5xx(raw: bytes) -> None:
    for path in ("/v1/classify", "/v1/chat/completions"):
        assert _post(path, raw).status_code < 500
