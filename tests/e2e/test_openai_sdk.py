"""Real clients against a real server: the official openai SDK (sync, async, streaming) and
litellm itself as an OpenAI-compatible client, over HTTP to the gateway on 127.0.0.1."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import redis

from router.app import create_app
from router.settings import Settings
from tests.fake_upstream import Upstream
from tests.server_thread import ServerThread

pytestmark = [pytest.mark.redis]


@pytest.fixture
def gateway(write_policy: Callable[..., Path], make_settings: Callable[..., Settings],
            redis_db: redis.Redis) -> Iterator[ServerThread]:
    def edit(doc: Any) -> None:
        doc["routes"]["sentiment"]["min_confidence"] = 0.0

    server = ServerThread(create_app(make_settings(write_policy(edit=edit)))).start()
    yield server
    server.stop()


@pytest.fixture
def sdk(gateway: ServerThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0)


def test_classification_route_answers_with_the_label(sdk: openai.OpenAI) -> None:
    raw = sdk.chat.completions.with_raw_response.create(
        model="sentiment", messages=[{"role": "user", "content": "a gorgeous , witty , seductive movie ."}])
    completion = raw.parse()
    assert completion.choices[0].message.content == "positive"
    assert raw.headers["x-router-path"] == "specialist"
    assert raw.headers["x-router-route"] == "sentiment"
    assert float(raw.headers["x-router-confidence"]) > 0.5
    assert raw.headers["x-router-policy-version"]
    assert raw.headers["x-request-id"]


def test_foundation_alias_passes_through_and_is_cached(sdk: openai.OpenAI, upstream: Upstream) -> None:
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}]
    first = sdk.chat.completions.with_raw_response.create(model="strong", messages=messages, temperature=0)
    assert first.parse().choices[0].message.content == "echo: hello there"
    assert first.headers["x-router-path"] == "foundation"
    assert first.parse().usage is not None and first.parse().usage.total_tokens > 0
    assert upstream.received[-1]["messages"] == messages
    assert upstream.received[-1]["temperature"] == 0
    second = sdk.chat.completions.with_raw_response.create(model="strong", messages=messages, temperature=0)
    assert second.headers["x-router-path"] == "cache"
    assert second.parse().choices[0].message.content == "echo: hello there"
    assert len(upstream.received) == 1


def test_streaming_passthrough_with_usage(sdk: openai.OpenAI) -> None:
    stream = sdk.chat.completions.create(model="cheap", messages=[{"role": "user", "content": "one two three"}],
                                         stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: one two three"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_streaming_a_specialist_answer(sdk: openai.OpenAI) -> None:
    stream = sdk.chat.completions.create(model="sentiment", stream=True,
                                         messages=[{"role": "user", "content": "a dull , tedious mess ."}])
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text in ("positive", "negative")


def test_unknown_model_raises_not_found_with_code(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        sdk.chat.completions.create(model="gpt-17", messages=[{"role": "user", "content": "hi"}])
    assert info.value.code == "model_not_found"
    assert info.value.request_id


def test_bad_request_raises_bad_request(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        sdk.chat.completions.create(model="sentiment", messages=[])
    assert info.value.code == "empty_array"
    assert info.value.param == "messages"


def test_models_lists_routes_and_aliases(sdk: openai.OpenAI) -> None:
    ids = {m.id for m in sdk.models.list()}
    assert {"sentiment", "cheap", "strong"} <= ids


@pytest.mark.anyio
async def test_async_client(gateway: ServerThread) -> None:
    client = openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0)
    completion = await client.chat.completions.create(
        model="sentiment", messages=[{"role": "user", "content": "an utterly charming , funny film ."}])
    assert completion.choices[0].message.content in ("positive", "negative")
    await client.close()


def test_chat_route_canned_answer_and_escalation(sdk: openai.OpenAI, upstream: Upstream) -> None:
    raw = sdk.chat.completions.with_raw_response.create(
        model="support", messages=[{"role": "user", "content": "hello there, good morning"}])
    assert raw.headers["x-router-path"] == "specialist"
    assert raw.parse().choices[0].message.content == "Hello! How can I help you today?"
    assert upstream.received == []
    oos = sdk.chat.completions.with_raw_response.create(
        model="support", messages=[{"role": "system", "content": "you are a bank"},
                                   {"role": "user", "content": "write me a poem about the color of the sea"}])
    assert oos.headers["x-router-path"] == "foundation"
    assert oos.headers["x-router-reason"] in ("escalate_label", "low_confidence", "no_canned_answer")
    assert upstream.received[-1]["messages"][0] == {"role": "system", "content": "you are a bank"}


def test_auto_route_picks_a_tier(sdk: openai.OpenAI, upstream: Upstream) -> None:
    raw = sdk.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "Write a short story about a dragon who loves tea."}])
    assert raw.headers["x-router-path"] == "foundation"
    assert raw.headers["x-router-reason"] in ("request_type", "low_confidence")
    assert raw.parse().choices[0].message.content.startswith("echo:")


def test_litellm_as_a_client_of_the_gateway(gateway: ServerThread) -> None:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("LITELLM_OFFLINE_MODE", "true")
    import litellm

    resp = litellm.completion(model="openai/sentiment", api_base=gateway.url + "/v1", api_key="unused",
                              messages=[{"role": "user", "content": "a gorgeous , witty , seductive movie ."}])
    assert resp.choices[0].message.content == "positive"


@pytest.fixture
def limited_gateway(write_policy: Callable[..., Path], make_settings: Callable[..., Settings],
                    redis_db: redis.Redis) -> Iterator[ServerThread]:
    def edit(doc: Any) -> None:
        doc["routes"]["sentiment"]["min_confidence"] = 1.0
        doc["aliases"]["cheap"].update({"max_concurrency": 1, "max_queue": 0, "timeout_s": 10, "fallbacks": []})
        doc["budgets"]["usd_per_hour"] = 0.0

    server = ServerThread(create_app(make_settings(write_policy(models={"cheap": "fake-slow"}, edit=edit)))).start()
    yield server
    server.stop()


def test_open_ended_request_with_budget_spent_is_503_with_retry_after(limited_gateway: ServerThread) -> None:
    sdk = openai.OpenAI(base_url=limited_gateway.url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.InternalServerError) as info:
        sdk.chat.completions.create(model="strong", messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 503
    assert info.value.code == "budget_spent"  # the hourly budget of 0 USD is spent from the start
    assert int(info.value.response.headers["retry-after"]) > 0


def test_classification_with_budget_spent_is_degraded(limited_gateway: ServerThread) -> None:
    sdk = openai.OpenAI(base_url=limited_gateway.url + "/v1", api_key="unused", max_retries=0)
    raw = sdk.chat.completions.with_raw_response.create(
        model="sentiment", messages=[{"role": "user", "content": "the film runs two hours ."}])
    assert (raw.headers["x-router-path"], raw.headers["x-router-reason"]) == ("degraded", "budget_spent")
    assert raw.parse().choices[0].message.content in ("positive", "negative")


@pytest.fixture
def slow_gateway(write_policy: Callable[..., Path], make_settings: Callable[..., Settings],
                 redis_db: redis.Redis) -> Iterator[ServerThread]:
    def edit(doc: Any) -> None:
        doc["aliases"]["cheap"].update({"max_concurrency": 1, "max_queue": 0, "timeout_s": 10, "fallbacks": []})

    server = ServerThread(create_app(make_settings(write_policy(models={"cheap": "fake-slow"}, edit=edit)))).start()
    yield server
    server.stop()


def test_full_alias_queue_is_a_429_rate_limit_error(slow_gateway: ServerThread) -> None:
    import threading

    sdk = openai.OpenAI(base_url=slow_gateway.url + "/v1", api_key="unused", max_retries=0, timeout=20)
    first = threading.Thread(target=lambda: sdk.chat.completions.create(
        model="cheap", messages=[{"role": "user", "content": "occupy the only slot"}]))
    first.start()
    time.sleep(0.5)
    with pytest.raises(openai.RateLimitError) as info:
        sdk.chat.completions.create(model="cheap", messages=[{"role": "user", "content": "no room"}])
    assert info.value.code == "rate_limited"
    assert info.value.response.headers["retry-after"] == "1"
    first.join(timeout=20)
