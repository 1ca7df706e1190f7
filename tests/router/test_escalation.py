"""Escalation through litellm to the local upstream over HTTP: labels, failures, limits."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from router.errors import (
    RateLimitedError,
    ServiceUnavailableError,
    UpstreamError,
    UpstreamTimeoutError,
)
from router.escalation import Escalator, InvalidLabelError
from router.policy import AliasSpec
from router.pricing import PriceTable
from router.settings import FoundationSettings, read_secret_env
from tests.fake_upstream import Upstream

pytestmark = pytest.mark.anyio
LABELS = ("negative", "positive")
PRICES = PriceTable.load()


def build(upstream: Upstream, outcomes: Counter[tuple[str, str]], **aliases: dict[str, object]) -> Escalator:
    specs = {}
    for name, fields in aliases.items():
        base: dict[str, object] = {"api_base": upstream.api_base, "price_as": "gpt-4o-mini", "timeout_s": 1.0,
                                   "max_retries": 0}
        base.update(fields)
        specs[name] = AliasSpec.model_validate(base)
    return Escalator(specs, FoundationSettings(), read_secret_env,
                     lambda alias, outcome: outcomes.update([(alias, outcome)]), PRICES)


async def test_label_from_a_strict_prompt(upstream: Upstream) -> None:
    seen: Counter[tuple[str, str]] = Counter()
    esc = build(upstream, seen, a={"model": "openai/fake-ok"})
    result = await esc.classify("a", LABELS, "so-so [[label:positive]]", None)
    assert (result.label, result.alias) == ("positive", "a")
    assert result.usage.prompt_tokens > 0 and result.usage.cost_usd > 0
    assert "response_format" not in upstream.received[-1]
    assert seen[("a", "ok")] == 1


async def test_label_from_structured_output(upstream: Upstream) -> None:
    esc = build(upstream, Counter(), a={"model": "openai/fake-ok", "structured_output": "json_schema"})
    result = await esc.classify("a", LABELS, "so-so", None)
    assert result.label == "negative"  # the fake answers the enum's first value as JSON
    schema = upstream.received[-1]["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["label"]["enum"] == list(LABELS)


async def test_custom_prompt_template(upstream: Upstream) -> None:
    esc = build(upstream, Counter(), a={"model": "openai/fake-ok"})
    await esc.classify("a", LABELS, "text here [[label:negative]]", "Pick one of {labels}. Text: {input}")
    assert upstream.received[-1]["messages"] == [
        {"role": "user", "content": "Pick one of negative, positive. Text: text here [[label:negative]]"}]


async def test_label_outside_the_set_is_refused(upstream: Upstream) -> None:
    seen: Counter[tuple[str, str]] = Counter()
    esc = build(upstream, seen, a={"model": "openai/fake-badlabel"})
    with pytest.raises(InvalidLabelError):
        await esc.classify("a", LABELS, "x", None)
    assert seen[("a", "invalid_label")] == 1


@pytest.mark.parametrize(("model", "error", "outcome"), [
    ("fake-500", UpstreamError, "error"),
    ("fake-429", RateLimitedError, "rate_limited"),
    ("fake-slow", UpstreamTimeoutError, "timeout"),
    ("fake-garbage", UpstreamError, "error"),
])
async def test_failures_map_to_gateway_errors(upstream: Upstream, model: str, error: type[Exception],
                                              outcome: str) -> None:
    seen: Counter[tuple[str, str]] = Counter()
    esc = build(upstream, seen, a={"model": f"openai/{model}", "timeout_s": 0.5})
    with pytest.raises(error):
        await esc.chat("a", [{"role": "user", "content": "hi"}], {})
    assert seen[("a", outcome)] >= 1


async def test_retries_then_falls_back(upstream: Upstream) -> None:
    seen: Counter[tuple[str, str]] = Counter()
    esc = build(upstream, seen, a={"model": "openai/fake-500", "max_retries": 2, "fallbacks": ["b"]},
                b={"model": "openai/fake-ok"})
    result = await esc.chat("a", [{"role": "user", "content": "hi"}], {})
    assert result.alias == "b"
    assert seen[("a", "error")] == 3  # first try + 2 retries
    assert [r["model"] for r in upstream.received] == ["fake-500"] * 3 + ["fake-ok"]


async def test_breaker_opens_after_consecutive_failures(upstream: Upstream) -> None:
    seen: Counter[tuple[str, str]] = Counter()
    esc = build(upstream, seen, a={"model": "openai/fake-500", "breaker_failures": 2, "breaker_reset_s": 60})
    for _ in range(2):
        with pytest.raises(UpstreamError):
            await esc.chat("a", [{"role": "user", "content": "hi"}], {})
    assert not esc.available("a")
    with pytest.raises(ServiceUnavailableError) as info:
        await esc.chat("a", [{"role": "user", "content": "hi"}], {})
    assert info.value.retry_after_s == 60
    assert seen[("a", "breaker_open")] == 1
    assert len(upstream.received) == 2


async def test_full_queue_is_a_429_with_retry_after(upstream: Upstream) -> None:
    seen: Counter[tuple[str, str]] = Counter()
    esc = build(upstream, seen, a={"model": "openai/fake-slow", "timeout_s": 5, "max_concurrency": 1,
                                   "max_queue": 1})
    messages = [{"role": "user", "content": "hi"}]
    first = asyncio.create_task(esc.chat("a", messages, {}))
    await asyncio.sleep(0.2)
    second = asyncio.create_task(esc.chat("a", messages, {}))
    await asyncio.sleep(0.05)
    with pytest.raises(RateLimitedError) as info:
        await esc.chat("a", messages, {})
    assert info.value.headers() == {"retry-after": "1"}
    assert seen[("a", "queue_full")] == 1
    first.cancel()
    second.cancel()
    await asyncio.gather(first, second, return_exceptions=True)


async def test_unconfigured_alias_is_unavailable(upstream: Upstream) -> None:
    esc = build(upstream, Counter(), a={})
    assert not esc.available("a")
    with pytest.raises(ServiceUnavailableError):
        await esc.chat("a", [{"role": "user", "content": "hi"}], {})


async def test_streaming_yields_chunks_and_usage(upstream: Upstream) -> None:
    esc = build(upstream, Counter(), a={"model": "openai/fake-ok"})
    alias, chunks, usage = await esc.stream("a", [{"role": "user", "content": "x y z"}], {})
    parts = [c async for c in chunks]
    text = "".join((c.get("choices") or [{}])[0].get("delta", {}).get("content") or "" for c in parts)
    assert alias == "a" and text == "echo: x y z"
    assert usage().completion_tokens > 0 and usage().cost_usd > 0
