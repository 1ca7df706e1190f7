"""The closed parameter surface, in process over real litellm to loopback listeners.

A caller can change nothing about where, how and with which key the gateway calls its
foundation model: every parameter outside the documented set is a 400 naming it, through every
kind of chat route, and neither the attacker's listener nor the real upstream sees a request.
Accepted parameters are checked for type and range, and arrive upstream exactly as validated.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from router.params import FORWARDED, LOCAL
from router.schemas import ChatRequest
from router.settings import Settings
from tests.attacker import AttackerListener
from tests.fake_upstream import Upstream

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

OPEN_ENDED = "write me a poem about the colour of the sea"
# One model per kind of chat route: classification route, chat route, auto route, alias.
ROUTE_KINDS = ("sentiment", "support", "auto", "cheap")


@pytest.fixture(scope="module")
def attacker() -> Iterator[AttackerListener]:
    listener = AttackerListener().start()
    yield listener
    listener.stop()


def _escalate_everything(doc: Any) -> None:
    # Every route would call the foundation model for OPEN_ENDED: the attacks below are tried
    # where they would matter.
    doc["routes"]["sentiment"]["min_confidence"] = 1.0
    doc["routes"]["support"]["min_confidence"] = 1.0


def _forbidden(url: str) -> dict[str, Any]:
    """litellm keyword arguments and other names a caller must never get through, with attack values."""
    return {
        "base_url": url + "/v1",
        "api_base": url + "/v1",
        "api_key": "sk-attacker",
        "mock_response": "forged answer",
        "extra_headers": {"authorization": "Bearer attacker", "host": url},
        "extra_body": {"api_base": url},
        "custom_llm_provider": "openai",
        "model_list": [{"model_name": "cheap", "litellm_params": {"model": "openai/x", "api_base": url}}],
        "timeout": 0.0001,
        "num_retries": 50,
        "fallbacks": [{"model": "openai/x", "api_base": url}],
        "api_version": "2099-01-01",
        "headers": {"x": "y"},
        "service_tier": "priority",
        "functions": [{"name": "f"}],
        "temprature": 0.5,
        "__proto__": {"admin": True},
    }


async def test_listener_detects_a_redirected_call(attacker: AttackerListener) -> None:
    # The detector works: litellm given the attacker's base URL does reach it (a real call).
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # as the gateway: no network fetches
    os.environ.setdefault("LITELLM_OFFLINE_MODE", "true")
    import litellm

    before = len(attacker.hits)
    await litellm.acompletion(model="openai/x", api_base=attacker.url + "/v1", api_key="k", num_retries=0,
                              timeout=2, messages=[{"role": "user", "content": "hi"}])
    assert len(attacker.hits) == before + 1 and attacker.hits[-1].startswith(b"POST ")


async def test_forbidden_parameters_are_refused_on_every_route_kind(
    write_policy: Callable[..., Path], make_settings: Callable[..., Settings], client_for: Any,
    upstream: Upstream, attacker: AttackerListener, redis_db: redis.Redis,
) -> None:
    client = client_for(make_settings(write_policy(edit=_escalate_everything)))
    attacker.hits.clear()
    for model in ROUTE_KINDS:
        for name, value in _forbidden(attacker.url).items():
            for stream in (False, True):
                body = {"model": model, "messages": [{"role": "user", "content": OPEN_ENDED}], name: value,
                        "stream": stream}
                r = await client.post("/v1/chat/completions", json=body)
                assert r.status_code == 400, (model, name, r.text)
                err = r.json()["error"]
                assert (err["param"], err["code"]) == (name, "unsupported_parameter"), (model, err)
                assert err["message"] == f"unsupported parameter: {name}"
    assert attacker.hits == []
    assert upstream.received == []
    # Control: the same routes do reach the foundation model when asked properly.
    for model in ROUTE_KINDS:
        r = await client.post("/v1/chat/completions",
                              json={"model": model, "messages": [{"role": "user", "content": OPEN_ENDED}]})
        assert r.status_code == 200 and r.headers["x-router-path"] == "foundation", (model, r.text)
    assert len(upstream.received) == len(ROUTE_KINDS)
    assert attacker.hits == []


NESTED: list[tuple[str, dict[str, Any]]] = [
    ("messages.0.api_base", {"messages": [{"role": "user", "content": OPEN_ENDED, "api_base": "{url}"}]}),
    ("messages.0.content.0.base_url",
     {"messages": [{"role": "user", "content": [{"type": "text", "text": OPEN_ENDED, "base_url": "{url}"}]}]}),
    ("stream_options.api_base", {"stream": True, "stream_options": {"include_usage": True, "api_base": "{url}"}}),
    ("response_format.api_base", {"response_format": {"type": "text", "api_base": "{url}"}}),
    ("tools.0.function.api_base", {"tools": [{"type": "function", "function": {"name": "f", "api_base": "{url}"}}]}),
    ("response_format.json_schema.extra_body",
     {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "extra_body": {"a": "{url}"}}}}),
]


async def test_nested_smuggling_is_refused(
    write_policy: Callable[..., Path], make_settings: Callable[..., Settings],
    client_for: Any, upstream: Upstream, attacker: AttackerListener, redis_db: redis.Redis,
) -> None:
    client = client_for(make_settings(write_policy(edit=_escalate_everything)))
    attacker.hits.clear()
    for where, body in NESTED:
        raw = {"model": "cheap", "messages": [{"role": "user", "content": OPEN_ENDED}], **body}
        for model in ROUTE_KINDS:
            r = await client.post("/v1/chat/completions", json={**raw, "model": model})
            assert r.status_code == 400, r.text
            assert r.json()["error"]["param"] == where
            assert r.json()["error"]["message"] == f"unsupported field: {where}"
    assert attacker.hits == [] and upstream.received == []


async def test_twenty_malformed_requests_then_a_legitimate_one_is_answered_by_the_foundation(
    write_policy: Callable[..., Path], make_settings: Callable[..., Settings], client_for: Any,
    upstream: Upstream, attacker: AttackerListener, redis_db: redis.Redis,
) -> None:
    def edit(doc: Any) -> None:
        _escalate_everything(doc)
        for alias in doc["aliases"].values():
            alias["breaker_failures"] = 2  # two counted failures would open it

    client = client_for(make_settings(write_policy(edit=edit)))
    attacker.hits.clear()
    attacks = list(_forbidden(attacker.url).items()) + [
        ("temperature", "x"), ("temperature", 9), ("max_tokens", 0), ("n", 1000)]
    for i in range(20):
        name, value = attacks[i % len(attacks)]
        r = await client.post("/v1/chat/completions", json={
            "model": ROUTE_KINDS[i % len(ROUTE_KINDS)], "messages": [{"role": "user", "content": OPEN_ENDED}],
            name: value})
        assert r.status_code == 400, r.text
    for model in ("cheap", "strong", "support"):
        ok = await client.post("/v1/chat/completions",
                               json={"model": model, "messages": [{"role": "user", "content": OPEN_ENDED}]})
        assert ok.status_code == 200 and ok.headers["x-router-path"] == "foundation", ok.text
    assert attacker.hits == []


# ---- accepted parameters -------------------------------------------------------------------
ACCEPTED: dict[str, Any] = {
    "temperature": 0.3,
    "top_p": 0.9,
    "max_tokens": 64,
    "max_completion_tokens": 64,
    "stop": ["\n\n", "END"],
    "seed": 7,
    "response_format": {"type": "json_schema", "json_schema": {
        "name": "answer", "strict": True, "schema": {"type": "object", "properties": {"a": {"type": "string"}},
                                                     "required": ["a"], "additionalProperties": False}}},
    "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                                                "parameters": {"type": "object",
                                                               "properties": {"city": {"type": "string"}}}}}],
    "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    "parallel_tool_calls": False,
    "presence_penalty": -0.5,
    "frequency_penalty": 1.5,
    "logit_bias": {"50256": -100, "11": 3},
    "logprobs": True,
    "top_logprobs": 5,
    "reasoning_effort": "low",
}


async def test_accepted_parameters_arrive_upstream_as_validated(
    write_policy: Callable[..., Path], make_settings: Callable[..., Settings], client_for: Any,
    upstream: Upstream, redis_db: redis.Redis,
) -> None:
    client = client_for(make_settings(write_policy()))
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "what is in this picture?"},
                                     {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=",
                                                                         "detail": "low"}}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "user", "content": "and tomorrow?", "name": "alice"},
    ]
    body = {"model": "cheap", "messages": messages, **ACCEPTED, "user": "end-user-1",
            "metadata": {"api_base": "http://evil", "team": "a"}}
    r = await client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    sent = upstream.received[-1]
    assert set(sent) == {"model", "messages", *ACCEPTED}
    for name, value in ACCEPTED.items():
        assert sent[name] == value, name
    assert sent["messages"] == [{k: v for k, v in m.items() if v is not None} for m in messages]
    assert "user" not in sent and "metadata" not in sent  # accepted, never forwarded


async def test_n_choices_on_an_alias_and_refused_on_routes(
    write_policy: Callable[..., Path], make_settings: Callable[..., Settings], client_for: Any,
    upstream: Upstream, redis_db: redis.Redis,
) -> None:
    client = client_for(make_settings(write_policy()))
    one = await client.post("/v1/chat/completions", json={
        "model": "cheap", "messages": [{"role": "user", "content": "a b c"}]})
    three = await client.post("/v1/chat/completions", json={
        "model": "cheap", "messages": [{"role": "user", "content": "a b c"}], "n": 3})
    assert three.status_code == 200, three.text
    assert len(three.json()["choices"]) == 3 and upstream.received[-1]["n"] == 3
    # Billed per choice: the provider's usage counts every choice's tokens.
    assert float(three.headers["x-router-cost-usd"]) > float(one.headers["x-router-cost-usd"])
    for model in ("sentiment", "support", "auto"):
        r = await client.post("/v1/chat/completions", json={
            "model": model, "messages": [{"role": "user", "content": OPEN_ENDED}], "n": 2})
        assert r.status_code == 400 and r.json()["error"]["param"] == "n", r.text


OUT_OF_RANGE: list[tuple[str, Any]] = [
    ("temperature", "0.5"), ("temperature", -0.1), ("temperature", 2.01), ("temperature", True),
    ("top_p", 1.5), ("top_p", -1), ("max_tokens", 0), ("max_tokens", 1.5), ("max_tokens", "10"),
    ("max_completion_tokens", 10**9), ("stop", ["a", "b", "c", "d", "e"]), ("stop", ""), ("stop", [1]),
    ("seed", 2**64), ("seed", 1.0), ("n", 0), ("n", 99), ("presence_penalty", 2.5), ("frequency_penalty", -3),
    ("logit_bias", {"abc": 1}), ("logit_bias", {"1": 101}), ("logit_bias", {str(i): 1 for i in range(301)}),
    ("logprobs", "yes"), ("top_logprobs", 21), ("response_format", {"type": "xml"}),
    ("response_format", {"type": "json_schema", "json_schema": {"name": "has space"}}),
    ("tools", [{"type": "retrieval"}]), ("tools", [{"type": "function", "function": {"name": "a/b"}}]),
    ("tools", []), ("reasoning_effort", "max"), ("user", "u" * 300), ("metadata", {"k": 1}),
    ("metadata", {f"k{i}": "v" for i in range(17)}), ("stream", "true"), ("stream_options", {"include_usage": 1}),
    ("model", ""), ("messages", [{"role": "user", "content": "hi"}] * 3000),
]


async def test_each_accepted_parameter_is_checked_for_type_and_range(
    write_policy: Callable[..., Path], make_settings: Callable[..., Settings],
    client_for: Any, upstream: Upstream, redis_db: redis.Redis,
) -> None:
    client = client_for(make_settings(write_policy()))
    for name, value in OUT_OF_RANGE:
        body = {"model": "cheap", "messages": [{"role": "user", "content": "hi"}], name: value}
        r = await client.post("/v1/chat/completions", json=body)
        assert r.status_code == 400, (name, value, r.text)
        assert r.json()["error"]["param"].split(".")[0] == name, r.json()
    assert upstream.received == []


INCONSISTENT: list[tuple[dict[str, Any], str]] = [
    ({"stream_options": {"include_usage": True}}, "stream_options"),
    ({"top_logprobs": 2}, "top_logprobs"),
    ({"tool_choice": "auto"}, "tool_choice"),
    ({"parallel_tool_calls": True}, "parallel_tool_calls"),
    ({"messages": [{"role": "system", "content": "only a system prompt"}]}, "messages"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {
        "url": "http://169.254.169.254/latest/meta-data"}}]}]}, "messages.0.content.0.image_url.url"),
    ({"messages": [{"role": "tool", "content": "x"}, {"role": "user", "content": "y"}]}, "messages.0.tool_call_id"),
    ({"messages": [{"role": "root", "content": "x"}]}, "messages.0"),
]


async def test_inconsistent_or_unsafe_shapes_are_refused(
    write_policy: Callable[..., Path], make_settings: Callable[..., Settings],
    client_for: Any, upstream: Upstream, redis_db: redis.Redis,
) -> None:
    client = client_for(make_settings(write_policy()))
    for body, param in INCONSISTENT:
        r = await client.post("/v1/chat/completions", json={
            "model": "cheap", "messages": [{"role": "user", "content": "hi"}], **body})
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == param
    assert upstream.received == []


BLANK: list[Any] = ["", "   ", "\n\t  \r\n", [{"type": "text", "text": "  "}],
                    [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]]


async def test_blank_input_on_a_route_is_a_400_and_never_escalated(
    write_policy: Callable[..., Path], make_settings: Callable[..., Settings], client_for: Any,
    upstream: Upstream, redis_db: redis.Redis,
) -> None:
    client = client_for(make_settings(write_policy(edit=_escalate_everything)))
    for content in BLANK:
        for model in ("sentiment", "support", "auto"):
            r = await client.post("/v1/chat/completions",
                                  json={"model": model, "messages": [{"role": "user", "content": content}]})
            assert r.status_code == 400, r.text
            assert r.json()["error"]["param"] == "messages"
            assert "no text" in r.json()["error"]["message"]
    r = await client.post("/v1/classify", json={"task": "sentiment", "input": " \n "})
    assert r.status_code == 400 and r.json()["error"]["param"] == "input"
    assert upstream.received == []


async def test_chat_cache_key_is_the_exact_request(
    write_policy: Callable[..., Path], make_settings: Callable[..., Settings], client_for: Any,
    upstream: Upstream, redis_db: redis.Redis,
) -> None:
    client = client_for(make_settings(write_policy()))
    flat = "def f():\n  return 1\n"
    deep = "def f():\n        return 1\n"
    paths = []
    for text in (flat, deep, flat, deep, flat + " "):
        r = await client.post("/v1/chat/completions",
                              json={"model": "cheap", "messages": [{"role": "user", "content": text}]})
        assert r.status_code == 200
        assert r.json()["choices"][0]["message"]["content"] == f"echo: {text}"  # its own answer, never another's
        paths.append(r.headers["x-router-path"])
    assert paths == ["foundation", "foundation", "cache", "cache", "foundation"]
    # Parameters are part of the key too; their order in the body is not.
    a = await client.post("/v1/chat/completions", json={
        "model": "cheap", "messages": [{"role": "user", "content": flat}], "temperature": 0.2, "seed": 1})
    b = await client.post("/v1/chat/completions", json={
        "seed": 1, "temperature": 0.2, "messages": [{"role": "user", "content": flat}], "model": "cheap"})
    assert (a.headers["x-router-path"], b.headers["x-router-path"]) == ("foundation", "cache")
    assert len(upstream.received) == 4


def test_every_chat_field_is_either_forwarded_or_local() -> None:
    # A new parameter must be placed deliberately: forwarded to litellm or used by the gateway.
    assert set(ChatRequest.model_fields) == set(FORWARDED) | set(LOCAL)
    assert not set(FORWARDED) & set(LOCAL)


_RANGES: dict[str, tuple[float, float, bool]] = {
    "temperature": (0, 2, False), "top_p": (0, 1, False), "presence_penalty": (-2, 2, False),
    "frequency_penalty": (-2, 2, False), "max_tokens": (1, 1_000_000, True), "n": (1, 8, True),
    "top_logprobs": (0, 20, True),
}


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(sorted(_RANGES)),
       value=st.one_of(st.integers(-10**7, 10**7), st.floats(-1e7, 1e7, allow_nan=False),
                       st.sampled_from([0, 1, 2, -2, 20, 21, 8, 9, 0.0, 1.0, 2.0000001, -2.0000001])))
def test_numeric_ranges_property(name: str, value: float) -> None:
    low, high, integral = _RANGES[name]
    body: dict[str, Any] = {"model": "cheap", "messages": [{"role": "user", "content": "x"}], name: value}
    if name == "top_logprobs":
        body["logprobs"] = True
    valid = low <= value <= high and (not integral or isinstance(value, int))
    try:
        req = ChatRequest.model_validate(body)
    except ValidationError:
        assert not valid
    else:
        assert valid
        assert req.forwarded()[name] == value
